"""DAG build time of `snakemake -n` for the paper config and a synthetic 500-model x 3-dataset config.

Target (DESIGN.md): under 30 s for 500 models on this machine. Prints the job counts and seconds, and the ratio
to a baseline measured in the same run: the dry run of the small offline default.
    .venv/bin/python benchmarks/dag_build.py [--models 500]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def synthetic_config(n_models: int) -> dict:
    """n_models timm models, 3 hub datasets, one vision-vision experiment over all three, probes on one."""
    datasets = {f"set{i}": {"source": "hf", "id": f"org/set{i}", "split": "test", "image_column": "image",
                            "label_columns": ["label"], "n": 1000, "size": 224} for i in range(3)}  # fmt: skip
    models = {f"model{i:04d}": {"source": "timm", "id": "resnet18.a1_in1k", "n_params": 11_000_000} for i in range(n_models)}
    return {
        "results": "results-synthetic",
        "datasets": datasets,
        "models": models,
        "alignment": {"experiments": {"vv": {"dataset": list(datasets), "x": "vision", "y": "vision",
                                             "metrics": [{"name": "mutual_knn", "k": 10}]}}},  # fmt: skip
        "probes": {"tasks": {"t0": {"dataset": "set0", "label": "label", "group": "natural"}}},
        "report": {"vision_vision": "vv"},
    }


def dry_run(workdir: Path, configfile: str | None) -> tuple[float, int]:
    """Seconds and job count of one `snakemake -n`."""
    cmd = [SNAKEMAKE, "-n", "--cores", "1"] + (["--configfile", configfile] if configfile else [])
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed: {proc.stderr.strip().splitlines()[-1]}")
    total = re.search(r"^total\s+(\d+)", proc.stdout, re.M)
    return seconds, int(total.group(1)) if total else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in ("Snakefile", "rules", "workflow", "schemas", "config.yaml", "configs"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
        cfg = synthetic_config(args.models)
        (work / "synthetic.yaml").write_text(yaml.safe_dump(cfg))
        base_s, base_jobs = dry_run(work, None)
        print(f"{'config':<28}{'jobs':>8}{'seconds':>10}{'x default':>11}")
        print(f"{'default (baseline)':<28}{base_jobs:>8}{base_s:>10.1f}{1.0:>11.2f}")
        for label, path in (("configs/paper.yaml", "configs/paper.yaml"), (f"synthetic {args.models} x 3", "synthetic.yaml")):
            s, jobs = dry_run(work, path)
            print(f"{label:<28}{jobs:>8}{s:>10.1f}{s / base_s:>11.2f}")


if __name__ == "__main__":
    main()
