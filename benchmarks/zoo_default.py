"""Train the whole zoo of a config (default: config.yaml) from an empty cache, as the workflow does, and time it.

Every zoo model goes through `prh.pipeline.train_zoo_model` (the workflow's own job function) one after another
with all cores; prints seconds per model, the total, and the ratio to the 5-minute budget of DESIGN.md.
    .venv/bin/python benchmarks/zoo_default.py [--config config.yaml] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from prh.config import load_config, model_modality
from prh.pipeline import train_zoo_model

BUDGET_S = 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    zoo = {m: s for m, s in cfg["models"].items() if s["source"] == "zoo"}
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'model':<24}{'modality':<10}{'steps':>6}{'seconds':>9}")
        for name, spec in zoo.items():
            start = time.perf_counter()
            train_zoo_model(name, spec, str(Path(tmp) / "zoo"), str(Path(tmp) / f"{name}.json"))
            seconds = time.perf_counter() - start
            total += seconds
            print(f"{name:<24}{model_modality(name, spec):<10}{spec.get('steps', 0):>6}{seconds:>9.1f}", flush=True)
    print(f"{'total':<40}{total:>9.1f}  ({total / BUDGET_S:.2f} x the {BUDGET_S:.0f} s budget, {args.threads} threads)")


if __name__ == "__main__":
    main()
