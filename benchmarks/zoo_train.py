"""Benchmark: train the default vision zoo into a fresh cache; per-model wall time, total, and trained-vs-untrained metrics.

Usage: python benchmarks/zoo_train.py [--threads 2] [--cache DIR] [--models a,b] [--probe-n 2000]
Headline per model: its objective's held-out metric before/after training (accuracy for supervised,
loss otherwise) and a logistic-regression probe accuracy (Fashion-MNIST class) on pooled features,
trained checkpoint vs the same architecture at its seeded random init.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from prh.data import load_dataset
from prh.models import load_model
from prh.models.vision import create_timm_model
from prh.zoo.objectives import pooled
from prh.zoo.vision import DATA_CONFIG, DEFAULT_VISION_ZOO, ensure_trained, make_preprocess, normalise_recipe


@torch.no_grad()
def features(module: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Pooled pre-logits features (n, d) in batches of 500."""
    return torch.cat([pooled(module, x[i : i + 500]) for i in range(0, len(x), 500)]).float().numpy()


def probe_accuracy(feats: np.ndarray, y: np.ndarray, is_train: np.ndarray) -> float:
    """Test accuracy of a logistic-regression probe on standardised features."""
    scaler = StandardScaler().fit(feats[is_train])
    clf = LogisticRegression(max_iter=1000).fit(scaler.transform(feats[is_train]), y[is_train])
    return float(clf.score(scaler.transform(feats[~is_train]), y[~is_train]))


def main() -> None:
    """Train every default zoo recipe (cache miss), then report times and metrics."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None, help="zoo cache root (default: a fresh temp dir)")
    ap.add_argument("--models", default="", help="comma-separated subset of DEFAULT_VISION_ZOO")
    ap.add_argument("--probe-n", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n] or list(DEFAULT_VISION_ZOO)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="prh-zoo-bench-"))
    probe = load_dataset("probe", {"source": "fashion-mnist", "split": "test", "n": args.probe_n, "seed": 1})
    px = make_preprocess(DATA_CONFIG)(probe.images)
    assert probe.is_train is not None
    print(f"threads={torch.get_num_threads()} cache={cache} models={len(names)}")
    header = f"{'model':22s} {'objective':10s} {'steps':>5s} {'params':>8s} {'train_s':>8s} {'cpu_s':>7s} {'metric':14s} {'untrained':>9s} {'trained':>9s} {'probe_init':>10s} {'probe':>7s}"
    rows, total, total_cpu = [], 0.0, 0.0
    for name in names:
        recipe = normalise_recipe(DEFAULT_VISION_ZOO[name], name)
        t0, c0 = time.perf_counter(), time.process_time()
        path = ensure_trained(recipe, cache, name)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        total, total_cpu = total + dt, total_cpu + cpu
        cfg = json.loads((path / "config.json").read_text())
        model = load_model(name, {"source": "zoo", "modality": "vision", "checkpoint": str(path)})
        torch.manual_seed(recipe["seed"])
        init = create_timm_model(recipe["arch"], recipe["arch_kwargs"], num_classes=0).eval()
        acc = probe_accuracy(features(model.module, px), probe.labels["class"], probe.is_train)
        acc0 = probe_accuracy(features(init, px), probe.labels["class"], probe.is_train)
        m = cfg["metric"]
        fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        rows.append(f"{name:22s} {recipe['objective']:10s} {recipe['steps']:5d} {cfg['n_params']:8d} {dt:8.1f} {cpu:7.1f} "
                    f"{m['name']:14s} {fmt(m['untrained']):>9s} {fmt(m['trained']):>9s} {acc0:10.3f} {acc:7.3f}")
        print(rows[-1], flush=True)
    print("\n" + header + "\n" + "\n".join(rows))
    print(f"\ntotal training wall time: {total:.1f} s, CPU time {total_cpu:.1f} s, for {len(names)} models "
          f"({torch.get_num_threads()} threads; on an idle machine wall ~= CPU / threads)")


if __name__ == "__main__":
    main()
