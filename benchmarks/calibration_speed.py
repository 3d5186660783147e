"""Benchmark: ``prh.calibrate_layers`` vs ``calibrated_similarity.calibrate_layers`` (the null of the max over layer pairs).

Usage: .venv/bin/python benchmarks/calibration_speed.py [--n 1024 --d 768 --layers-x 13 --layers-y 25]
       [--permutations 200] [--metrics mutual_knn,cka,unbiased_cka,cknna] [--package-draws 1] [--bootstrap-draws 3]
       [--threads 1] [--quick]

Both compute the same thing: the observed (L_x + 1) x (L_y + 1) matrix (concatenation included) and K permutation
draws, each permuting the rows of every y layer by one permutation, rescoring all layer pairs and taking the max.
* The package (PyPI ``calibrated-similarity``, Algorithm 2) calls ``sim(X, Y[pi])`` for every layer pair of every
  draw. ``sim`` is a lean per-pair torch similarity (below): both Grams by ``torch.mm``, ``torch.topk`` neighbour
  masks, centring by row / column means, float64 sums; every pair recomputes both sides from the features, as any
  ``sim(X, Y)`` callable must. (The reference-style loops of ``align_speed.py`` are 2-5x slower per pair.) It is
  timed on ``--package-draws`` draws (plus its observed matrix) and scaled to K + 1 matrix evaluations.
* prh builds each layer's state once and per draw permutes the stacked states of the side with fewer layers
  (``permute_state``) and rescores with ``all_pairs``.
Both get the same (K, n) permutation array (the package through ``perm_fn``, in order); the observed matrix and the
null maxima of the draws both ran are compared. Timings are for the permutation null alone (``bootstrap=0``; the
package has no bootstrap); prh's bootstrap is timed separately on ``--bootstrap-draws`` resamples.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from prh.align import prepare
from prh.metrics import calibrate_layers, permutation_array

sys.path.insert(0, str(Path(__file__).resolve().parent))
from align_speed import correlated_layers

K_NN = 10
PARAMS: dict[str, dict] = {"mutual_knn": {"k": K_NN}, "cknna": {"k": K_NN}, "cka": {}, "unbiased_cka": {}}


# ---- lean per-pair torch similarities (what a user hands the package) ----


def knn_mask(gram: torch.Tensor, k: int) -> torch.Tensor:
    """(n, n) Gram -> (n, n) float 0/1 mask of each row's k most similar other rows."""
    g = gram.clone().fill_diagonal_(float("-inf"))
    return torch.zeros_like(gram).scatter_(1, g.topk(k, dim=1).indices, 1.0)


def mutual_knn_sim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean fraction of shared k nearest neighbours."""
    n = x.shape[0]
    return float((knn_mask(x @ x.T, K_NN) * knn_mask(y @ y.T, K_NN)).sum(dtype=torch.float64) / (n * K_NN))


def centred(gram: torch.Tensor) -> torch.Tensor:
    """H K H by row, column and grand means."""
    return gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()


def cka_sim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA: <HKH, HLH> / (||HKH|| ||HLH||), sums in float64."""
    kc, lc = centred(x @ x.T), centred(y @ y.T)
    num = (kc * lc).sum(dtype=torch.float64)
    return float(num / torch.sqrt((kc * kc).sum(dtype=torch.float64) * (lc * lc).sum(dtype=torch.float64)))


def hsic1(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC_1 of two (possibly asymmetric) matrices, diagonals zeroed, float64 sums."""
    n = k.shape[0]
    kt, lt = k.clone().fill_diagonal_(0).double(), l.clone().fill_diagonal_(0).double()
    return ((kt * lt.T).sum() + kt.sum() * lt.sum() / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (kt.sum(0) @ lt.sum(1))) / (n * (n - 3))  # fmt: skip


def unbiased_cka_sim(x: torch.Tensor, y: torch.Tensor) -> float:
    """HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L))."""
    k, l = x @ x.T, y @ y.T
    return float(hsic1(k, l) / torch.sqrt(hsic1(k, k) * hsic1(l, l)))


def cknna_sim(x: torch.Tensor, y: torch.Tensor) -> float:
    """HSIC_1(M o K, M o L) / sqrt(HSIC_1(M_K o K, .) HSIC_1(M_L o L, .)), M = M_K o M_L."""
    k, l = x @ x.T, y @ y.T
    mk, ml = knn_mask(k, K_NN), knn_mask(l, K_NN)
    m = mk * ml
    return float(hsic1(m * k, m * l) / torch.sqrt(hsic1(mk * k, mk * k) * hsic1(ml * l, ml * l)))


SIMS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "mutual_knn": mutual_knn_sim, "cka": cka_sim, "unbiased_cka": unbiased_cka_sim, "cknna": cknna_sim,
}  # fmt: skip


# ---- timing ----


def load() -> str:
    """The 1 / 5 / 15-minute load averages and the core count."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds of one call (process time: single-threaded here, and robust to other jobs on a shared machine)."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def package_run(xs: list, ys: list, metric: str, perms: np.ndarray, draws: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(CPU seconds, observed (Lx, Ly) matrix, (draws,) null maxima) of the package on the first ``draws`` permutations."""
    from calibrated_similarity import calibrate_layers as package_calibrate_layers

    values: list[float] = []
    sim = SIMS[metric]

    def recorded(a: torch.Tensor, b: torch.Tensor) -> float:
        values.append(sim(a, b))
        return values[-1]

    rows = iter(perms[:draws])
    t0 = time.process_time()
    package_calibrate_layers(xs, ys, recorded, K=draws, perm_fn=lambda n, device: torch.from_numpy(next(rows)))
    seconds = time.process_time() - t0
    mats = np.array(values).reshape(draws + 1, len(xs), len(ys))
    return seconds, mats[0], mats[1:].reshape(draws, -1).max(axis=1)


def run(args: argparse.Namespace) -> None:
    """Build the inputs, time both on every metric, print the table."""
    rng = np.random.default_rng(args.seed)
    shared = rng.standard_normal((args.n, 32))
    a = prepare(correlated_layers(args.n, args.d, args.layers_x, args.seed + 1, shared), q=0.95)
    b = prepare(correlated_layers(args.n, args.d, args.layers_y, args.seed + 2, shared), q=0.95)
    ta, tb = [torch.from_numpy(x) for x in a], [torch.from_numpy(y) for y in b]
    perms = permutation_array(args.n, args.permutations, args.seed)
    pairs = len(a) * len(b)
    print(f"n={args.n} d={args.d}; layers {len(a)} x {len(b)} = {pairs} pairs (concat included); K={args.permutations} "
          f"permutations; k={K_NN}; threads={args.threads}; package timed on {args.package_draws} draw(s) + its observed "
          f"matrix, scaled to K + 1 = {args.permutations + 1} matrix evaluations")
    print(f"start: {load()}")
    rows = []
    for metric in args.metrics.split(","):
        p = PARAMS[metric]
        t0, c0 = time.perf_counter(), time.process_time()
        ours = calibrate_layers(a, b, metric, permutations=perms, bootstrap=0, **p)
        t_prh, wall_prh = time.process_time() - c0, time.perf_counter() - t0
        t_pkg, observed, null = package_run(ta, tb, metric, perms, args.package_draws)
        t_pkg_full = t_pkg / (args.package_draws + 1) * (args.permutations + 1)
        d_obs = float(np.abs(observed - ours.matrix).max())
        d_null = float(np.abs(null - ours.null[: args.package_draws]).max())
        t_one = timed(lambda m=metric, p=p: calibrate_layers(a, b, m, permutations=perms[:1], bootstrap=0, **p))
        t_boot = timed(lambda m=metric, p=p: calibrate_layers(a, b, m, permutations=perms[:1],
                                                             bootstrap=args.bootstrap_draws, **p))  # fmt: skip
        rows.append((metric, t_prh, t_pkg, t_pkg_full, d_obs, d_null, max(t_boot - t_one, 0.0) / args.bootstrap_draws))
        print(f"  {metric}: prh {t_prh:.1f} CPU s ({wall_prh:.1f} wall), package {t_pkg:.1f} s for {args.package_draws + 1} evaluations; "
              f"score {ours.score:.4f} p {ours.p_value:.4f} tau {ours.tau:.4f}; {load()}", flush=True)
    print(f"\n{'metric':<14} {'prh s':>8} {'package s (est.)':>17} {'speed-up':>9} {'|d| observed':>13} {'|d| null max':>13}"
          f" {'prh boot s/draw':>16}")
    for metric, t_prh, _, t_full, d_obs, d_null, t_b in rows:
        print(f"{metric:<14} {t_prh:8.2f} {t_full:17.0f} {t_full / t_prh:8.0f}x {d_obs:13.1e} {d_null:13.1e} {t_b:16.3f}")
    print(f"end: {load()}")
    print("All times are CPU seconds (process time, one thread), robust to other jobs on a shared machine. "
          "prh s: calibrate_layers with K permutations, bootstrap=0 (setup: every layer's state once). package s: "
          "measured seconds per matrix evaluation x (K + 1). |d|: largest difference of the observed matrix and of the "
          "null maxima on the draws both ran. prh boot s/draw: one bootstrap resample (all layers resampled, all "
          "pairs rescored); the default 200 resamples cost 200 x that.")


def main() -> None:
    """Parse arguments and run under the thread limit."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--layers-x", type=int, default=13, help="layers before the concat layer is added")
    ap.add_argument("--layers-y", type=int, default=25, help="layers before the concat layer is added")
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--metrics", default="mutual_knn,cka,unbiased_cka,cknna")
    ap.add_argument("--package-draws", type=int, default=1, help="permutation draws the package is timed on")
    ap.add_argument("--bootstrap-draws", type=int, default=3, help="bootstrap resamples prh is timed on")
    ap.add_argument("--threads", type=int, default=1, help="BLAS / torch threads for both")
    ap.add_argument("--quick", action="store_true", help="n=256, d=128, 4 x 6 layers, K=20")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.n, args.d, args.layers_x, args.layers_y, args.permutations = 256, 128, 4, 6, 20
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        run(args)


if __name__ == "__main__":
    main()
