"""Benchmark: batched all-layer-pairs ``layerwise`` vs a per-pair loop recomputing each pair with ``pairwise``.

Usage: .venv/bin/python benchmarks/align_speed.py [--n 1024 --d 768 --layers-a 13 --layers-b 25]
       [--baseline-pairs P] [--metrics mutual_knn,cka] [--quick]
The baseline recomputes both kernels / neighbour lists / bases for every pair (as the reference code does).
With --baseline-pairs P it times a random subset of P pairs and extrapolates to all pairs (printed as such);
values are checked on the timed pairs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from prh.align import prepare
from prh.metrics import METRICS, layerwise, pairwise

PARAMS = {"svcca": {"dim": 10}}


def correlated_layers(n: int, d: int, n_layers: int, seed: int, shared: np.ndarray) -> list[np.ndarray]:
    """(n, d) float32 layers drifting from a shared latent (so neighbours are non-trivial and related across models)."""
    rng = np.random.default_rng(seed)
    h = shared @ rng.standard_normal((shared.shape[1], d)) + rng.standard_normal((n, d))
    out = []
    for _ in range(n_layers):
        h = 0.9 * h + 0.45 * rng.standard_normal((n, d)) @ (rng.standard_normal((d, d)) / np.sqrt(d))
        out.append(h.astype(np.float32))
    return out


def time_layerwise(metric: str, a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """Seconds for one batched layerwise call, and its (La, Lb) result."""
    t0 = time.perf_counter()
    m = layerwise(metric, a, b, **PARAMS.get(metric, {}))
    return time.perf_counter() - t0, m


def time_baseline(metric: str, a: list[np.ndarray], b: list[np.ndarray], pairs: list[tuple[int, int]]) -> tuple[float, np.ndarray]:
    """Seconds for scoring ``pairs`` one at a time from scratch, and the scores."""
    t0 = time.perf_counter()
    vals = np.array([pairwise(metric, a[i], b[j], **PARAMS.get(metric, {})) for i, j in pairs])
    return time.perf_counter() - t0, vals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--layers-a", type=int, default=13)
    ap.add_argument("--layers-b", type=int, default=25)
    ap.add_argument("--baseline-pairs", type=int, default=0, help="time P random pairs and extrapolate (0 = all)")
    ap.add_argument("--metrics", default=",".join(METRICS))
    ap.add_argument("--quick", action="store_true", help="n=256, d=128, 4 x 6 layers")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.n, args.d, args.layers_a, args.layers_b = 256, 128, 4, 6
    rng = np.random.default_rng(args.seed)
    shared = rng.standard_normal((args.n, 32))
    a = prepare(correlated_layers(args.n, args.d, args.layers_a - 1, args.seed + 1, shared), q=0.95)
    b = prepare(correlated_layers(args.n, args.d, args.layers_b - 1, args.seed + 2, shared), q=0.95)
    all_pairs = [(i, j) for i in range(len(a)) for j in range(len(b))]
    p = args.baseline_pairs if 0 < args.baseline_pairs < len(all_pairs) else len(all_pairs)
    chosen = [all_pairs[t] for t in np.sort(rng.choice(len(all_pairs), size=p, replace=False))]
    scale = len(all_pairs) / p
    note = f" (baseline timed on {p} random pairs, extrapolated x{scale:.1f})" if p < len(all_pairs) else ""
    print(f"n={args.n} d={args.d} layers {len(a)} x {len(b)} = {len(all_pairs)} pairs (prepared, incl. concat){note}")
    print(f"{'metric':<18} {'layerwise s':>11} {'per-pair s':>11} {'speed-up':>9} {'max |diff|':>11} {'best pair':>10}")
    tot_fast = tot_slow = 0.0
    worst = 0.0
    for metric in args.metrics.split(","):
        t_fast, m = time_layerwise(metric, a, b)
        t_slow, vals = time_baseline(metric, a, b, chosen)
        t_slow *= scale
        diff = float(np.nanmax(np.abs(np.array([m[i, j] for i, j in chosen]) - vals)))
        worst = max(worst, diff)
        tot_fast, tot_slow = tot_fast + t_fast, tot_slow + t_slow
        best = np.unravel_index(int(np.nanargmax(m)), m.shape)
        print(f"{metric:<18} {t_fast:11.2f} {t_slow:11.1f} {t_slow / t_fast:8.1f}x {diff:11.1e} {str(tuple(map(int, best))):>10}")
    print(f"{'overall':<18} {tot_fast:11.2f} {tot_slow:11.1f} {tot_slow / tot_fast:8.1f}x {worst:11.1e}")


if __name__ == "__main__":
    main()
