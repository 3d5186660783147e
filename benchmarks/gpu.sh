#!/usr/bin/env bash
# Every GPU check of prh in one command, one printed line per figure; under 8 minutes on one H200.
#   1. extraction throughput vs a bare forward loop on the same model and batches (images/s, tokens/s; <= 1.10x)
#   2. all layer pairs at n = 1024 on the device vs the dense CPU engine (values within 1e-5)
#   3. one layer pair at n = 1,048,576 on the device (mutual_knn, linear CKA); device vs CPU at n = 32,768
#   4. the CUDA tests of the suite (tests/test_blockwise.py, tests/test_extract.py; they skip without a GPU)
#   5. the GPU subset of the default DAG with device: cuda (benchmarks/gpu_checks.py dag_config says what it holds)
# The GPU machine has python3 with torch + CUDA, timm, transformers, numpy, scipy, scikit-learn, pandas, matplotlib,
# seaborn, tqdm, pyyaml, safetensors, tokenizers, sentencepiece and no network: first run benchmarks/gpu_wheels.sh
# here, then run this there with `carry: [".whl"]` (the wheels prh lacks there, Fashion-MNIST, MiniLM's tokenizer).
# Dry run on this machine: GPU_SH_DEVICE=cpu GPU_SH_QUICK=1 GPU_SH_PYTHON=.venv/bin/python bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${GPU_SH_DEVICE:-cuda}
PY=${GPU_SH_PYTHON:-python3}
QUICK=${GPU_SH_QUICK:+--quick}
# Private temp dirs (mktemp -d: mode 0700, a fresh name): nobody else on the machine can plant modules on our
# PYTHONPATH or files in the DAG's store. GPU_SH_WORK names a folder to keep the DAG's config, store and results in.
WORK=${GPU_SH_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/prh-gpu.XXXXXXXX")}
START=$SECONDS
if "$PY" -c "import zarr, snakemake, jsonschema, pytest" 2>/dev/null; then
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
else
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/prh-site.XXXXXXXX")
  trap 'rm -rf "$SITE"' EXIT
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
  export PYTHONPATH=$PWD/src:$SITE
fi
[ -d /usr/share/datasets/fashion-mnist ] || export PRH_FASHION_MNIST=$PWD/.whl/fashion-mnist
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1  # one line per figure, no progress bars
"$PY" - "$DEVICE" <<'EOF'
import sys, torch
dev = sys.argv[1]
name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu (dry run)"
print(f"gpu.sh: torch {torch.__version__}, device {dev}: {name}, float32 matmul precision "
      f"{torch.get_float32_matmul_precision()} (no TF32), {torch.get_num_threads()} CPU threads")
EOF
"$PY" benchmarks/gpu_checks.py extract --device "$DEVICE" $QUICK
"$PY" benchmarks/gpu_checks.py align --device "$DEVICE" $QUICK
"$PY" benchmarks/gpu_checks.py large --device "$DEVICE" $QUICK
{ "$PY" -m pytest -q -p no:randomly -p no:cacheprovider tests/test_blockwise.py tests/test_extract.py -k cuda 2>&1 ||
  true; } | tail -1 | sed 's/^/tests cuda (tests\/test_blockwise.py tests\/test_extract.py -k cuda): /'
mkdir -p "$WORK" && rm -rf "$WORK/features" "$WORK/results"  # the DAG runs from an empty store (only what it made goes)
"$PY" benchmarks/gpu_checks.py dag-config --device "$DEVICE" $QUICK --out "$WORK/config.yaml"
T0=$SECONDS
if "$PY" -m snakemake --cores all --scheduler greedy --configfile "$WORK/config.yaml" --quiet rules \
    > "$WORK/snakemake.log" 2>&1; then
  STEPS=$(grep -o '[0-9]* of [0-9]* steps (100%) done' "$WORK/snakemake.log" | tail -1 || true)
  echo "dag default-subset device=$DEVICE ${STEPS:-nothing to do} in $((SECONDS - T0)) s: $WORK/results/report.html"
  grep -h "^" "$WORK"/results/figures/sample_size.json 2>/dev/null | "$PY" -c \
    "import json,sys; r=json.load(sys.stdin); print('dag sample_size reading:', r['reading'].replace(chr(10), ' | '))" || true
else
  echo "dag default-subset device=$DEVICE FAILED after $((SECONDS - T0)) s; last lines of $WORK/snakemake.log:"
  tail -15 "$WORK/snakemake.log"
fi
echo "gpu.sh: all checks in $((SECONDS - START)) s"
