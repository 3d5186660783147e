"""The paper's roster in the installed timm: build every timm model of configs/paper.yaml with random weights,
extract 2 images at its native input size through prh's extraction path, and print its layer count, parameter
count and whether the preprocessing prh digests (from timm's pretrained config, without building the model) is the
one the built model resolves. With --write, each entry's n_params in the config becomes the counted one (so job
resources are right). Not a test: ~15-30 min on 2 CPU cores, ~5 GB peak for ViT-g/14.

    python benchmarks/paper_roster.py [--config configs/paper.yaml] [--write] [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import gc
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from prh.config import load_config
from prh.data import load_dataset, make_dataset
from prh.errors import PrhError
from prh.extract import extract
from prh.models import load_model
from prh.models.vision import timm_data_config


def images(n: int = 2) -> np.ndarray:
    """n real Fashion-MNIST images as 224 px RGB (each model resizes them to its own input size)."""
    small = load_dataset("f", {"source": "fashion-mnist", "split": "test", "n": n, "seed": 0}).images
    return np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)


def check(name: str, spec: dict, batch: np.ndarray) -> dict:
    """Build one timm model with random weights, extract 2 images, compare preprocessing: one table row."""
    from timm.data import resolve_model_data_config

    row: dict = {"model": name, "id": spec["id"]}
    start = time.perf_counter()
    try:
        loaded = load_model(name, {**spec, "pretrained": False})
        row["built"] = "yes"
        row["params"] = loaded.n_params
        digested = {k: v for k, v in timm_data_config(name, spec).items() if k != "crop_mode"}
        built = resolve_model_data_config(loaded.module)
        built = {k: list(v) if isinstance(v, tuple) else v for k, v in built.items() if k in digested}
        row["preprocess"] = "same" if built == digested else f"differs: {built} vs {digested}"
        row["input"] = int(built["input_size"][-1])
        feats = extract(loaded, make_dataset("x", images=batch), {}, progress=False)
        row["extracted"] = "yes" if all(np.isfinite(f).all() for f in feats.layers) else "non-finite"
        row["layers"] = len(feats.layers)
    except (PrhError, RuntimeError, TypeError, ValueError) as e:
        row.setdefault("built", "no")
        row["extracted"] = "no"
        row["why"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
    row["s"] = round(time.perf_counter() - start, 1)
    gc.collect()
    return row


def write_n_params(config: Path, counts: dict[str, int]) -> int:
    """Set ``n_params: N`` in each counted model's one-line entry of the config (inserted before its closing brace
    when absent); returns how many lines changed."""
    lines, changed = config.read_text().splitlines(keepends=True), 0
    for i, line in enumerate(lines):
        name = line.strip().split(":", 1)[0]
        if name not in counts or not line.rstrip().endswith("}"):
            continue
        if "n_params:" in line:
            new = re.sub(r"n_params: [0-9.e+]+", f"n_params: {counts[name]}", line)
        else:
            body = line.rstrip()
            new = f"{body[:-1]}, n_params: {counts[name]}}}\n"
        changed += new != line
        lines[i] = new
    config.write_text("".join(lines))
    return changed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/paper.yaml")
    p.add_argument("--write", action="store_true", help="write the counted n_params into the config")
    p.add_argument("--only", help="only models whose name contains this")
    args = p.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(args.config)
    timm_models = {m: s for m, s in cfg["models"].items() if s["source"] == "timm" and (args.only or "") in m}
    batch = images()
    print(f"{len(timm_models)} timm models of {args.config}; torch {torch.__version__}, "
          f"timm {__import__('timm').__version__}; floor: import torch, see README", flush=True)
    print(f"{'model':48s} {'built':5s} {'extracted':9s} {'layers':>6s} {'params':>14s} {'input':>5s} {'s':>6s}  preprocess")
    rows = []
    for name, spec in timm_models.items():
        row = check(name, spec, batch)
        rows.append(row)
        params = f"{row['params']:,}" if "params" in row else "-"
        print(f"{name:48s} {row['built']:5s} {row['extracted']:9s} {row.get('layers', '-'):>6} {params:>14} "
              f"{row.get('input', '-'):>5} {row['s']:>6}  {row.get('preprocess', row.get('why', ''))}", flush=True)
    ok = [r for r in rows if r["extracted"] == "yes"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"built {sum(r['built'] == 'yes' for r in rows)} / {len(rows)}, extracted {len(ok)} / {len(rows)}, "
          f"preprocessing as digested {sum(r.get('preprocess') == 'same' for r in rows)} / {len(rows)}, "
          f"{sum(r['s'] for r in rows):.0f} s, peak RSS {peak:.1f} GB")  # fmt: skip
    if args.write:
        changed = write_n_params(Path(args.config), {r["model"]: r["params"] for r in rows if "params" in r})
        print(f"n_params written for {changed} models of {args.config}")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
