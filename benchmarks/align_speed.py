"""Benchmark: batched all-layer-pairs ``layerwise`` vs per-pair loops that recompute every pair from scratch.

Usage: .venv/bin/python benchmarks/align_speed.py [--n 1024 --d 768 --layers-a 13 --layers-b 25]
       [--baseline-pairs P] [--metrics mutual_knn,cka] [--threads 1] [--reps 5] [--floor-only] [--quick]

The floor table compares each metric's ``layerwise`` time with the work no all-layer-pairs scheme can skip, timed
in the same run: one Gram matrix per layer (``x @ x.T``, float32), plus a ``torch.topk`` of it for the metrics
that need neighbour lists (the four kNN metrics and CKNNA; the top-k timed on Grams computed beforehand, so BLAS
and torch threads never contend in the floor). Floors and metrics are timed in turn, ``--reps`` rounds, and each
takes its fastest round (the machine is shared); a metric passes at most 1.5x its floor.

Two baselines, timed on the same layer pairs and inputs:
* reference-style: a per-pair loop written like github minyoungg/platonic-rep ``metrics.py`` (float32 torch on CPU):
  per pair it builds both kernels with torch.mm, sorts / torch.topk's neighbours, centres with an explicit n x n
  H (trace(K H L H)), forms K~ L~ with a matmul for HSIC_1, and runs an SVD + CCA per pair for SVCCA.
  It follows METRICS.md where the reference has known bugs (no 1e-6 epsilon, LCS normalised by k, cycle kNN
  A first, stable tie rule, exact SVD instead of its randomised svd_lowrank + iterative sklearn CCA). The exact
  SVD is taken as the float64 eigendecomposition of the smaller Gram of the standardised features (full
  torch.linalg.eigh); a float32 torch.linalg.svd per pair was ~10x slower and only matched to ~1e-6.
* prh's own ``pairwise`` called once per pair.
``layerwise`` is timed per metric alone (its own Grams) and for all metrics at once through ``layerwise_many``,
where each layer's Gram matrix and neighbour lists are computed once and shared across metrics (per-layer work).
With --baseline-pairs P the baselines run on P pairs drawn at random within strata (plain / concat rows / concat
columns / both) and each stratum's mean time is extrapolated to its size (printed as such).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from prh.align import prepare
from prh.metrics import METRICS, layerwise, layerwise_many, pairwise

PARAMS: dict[str, dict] = {"svcca": {"dim": 10}}
K = 10
Pair = tuple[int, int]


def correlated_layers(n: int, d: int, n_layers: int, seed: int, shared: np.ndarray) -> list[np.ndarray]:
    """(n, d) float32 layers drifting from a shared latent (so neighbours are non-trivial and related across models)."""
    rng = np.random.default_rng(seed)
    h = shared @ rng.standard_normal((shared.shape[1], d)) + rng.standard_normal((n, d))
    out = []
    for _ in range(n_layers):
        h = 0.9 * h + 0.45 * rng.standard_normal((n, d)) @ (rng.standard_normal((d, d)) / np.sqrt(d))
        out.append(h.astype(np.float32))
    return out


# ---- reference-style per-pair baseline (float32 torch, everything recomputed for every pair) ----


def ref_knn(f: torch.Tensor, k: int) -> torch.Tensor:
    """(n, d) -> (n, k) neighbours: full Gram, self excluded, descending stable argsort (ties to smaller j)."""
    kern = torch.mm(f, f.T)
    kern.fill_diagonal_(float("-inf"))
    return torch.argsort(kern, dim=1, descending=True, stable=True)[:, :k]


def ref_mutual_knn(fa: torch.Tensor, fb: torch.Tensor) -> float:
    """Mutual kNN from two dense float n x n neighbour masks."""
    na, nb = ref_knn(fa, K), ref_knn(fb, K)
    n = na.shape[0]
    rows = torch.arange(n).unsqueeze(1)
    ma, mb = torch.zeros(n, n), torch.zeros(n, n)
    ma[rows, na] = 1.0
    mb[rows, nb] = 1.0
    return ((ma * mb).sum(dim=1) / K).mean().item()


def ref_cycle_knn(fa: torch.Tensor, fb: torch.Tensor) -> float:
    """Cycle kNN (A first): is i among A's neighbours of one of its B neighbours."""
    na, nb = ref_knn(fa, K), ref_knn(fb, K)
    n = na.shape[0]
    hit = na[nb] == torch.arange(n).view(-1, 1, 1)
    return hit.float().view(n, -1).max(dim=1).values.mean().item()


def lcs_py(x: list[int], y: list[int]) -> int:
    """Longest common subsequence length, plain Python DP table."""
    dp = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            dp[i][j] = dp[i - 1][j - 1] + 1 if x[i - 1] == y[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
    return dp[len(x)][len(y)]


def levenshtein_py(x: list[int], y: list[int]) -> int:
    """Unit-cost edit distance, plain Python two-row DP."""
    prev = list(range(len(y) + 1))
    for i in range(1, len(x) + 1):
        cur = [i] + [0] * len(y)
        for j in range(1, len(y) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x[i - 1] != y[j - 1]))
        prev = cur
    return prev[len(y)]


def ref_lcs_knn(fa: torch.Tensor, fb: torch.Tensor) -> float:
    """LCS kNN, normalised by k (the reference forgets 1/k)."""
    na, nb = ref_knn(fa, K).tolist(), ref_knn(fb, K).tolist()
    return float(np.mean([lcs_py(x, y) for x, y in zip(na, nb)]) / K)


def ref_edit_distance_knn(fa: torch.Tensor, fb: torch.Tensor) -> float:
    """1 - mean edit distance / k."""
    na, nb = ref_knn(fa, K).tolist(), ref_knn(fb, K).tolist()
    return float(1.0 - np.mean([levenshtein_py(x, y) for x, y in zip(na, nb)]) / K)


def hsic_biased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """trace(K H L H) with an explicit centring matrix H = I - 11^T / n."""
    h = torch.eye(k.shape[0]) - 1.0 / k.shape[0]
    return torch.trace(k @ h @ l @ h)


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """HSIC_1 of Song et al. with zeroed diagonals and the K~ L~ matrix product."""
    m = k.shape[0]
    kt, lt = k.clone().fill_diagonal_(0), l.clone().fill_diagonal_(0)
    val = torch.sum(kt * lt.T) + torch.sum(kt) * torch.sum(lt) / ((m - 1) * (m - 2)) - 2 * torch.sum(torch.mm(kt, lt)) / (m - 2)
    return val / (m * (m - 3))


def ref_cka(fa: torch.Tensor, fb: torch.Tensor, unbiased: bool = False) -> float:
    """(Unbiased) linear CKA: both kernels by torch.mm, three HSIC evaluations, no epsilon."""
    k, l = torch.mm(fa, fa.T), torch.mm(fb, fb.T)
    hsic = hsic_unbiased if unbiased else hsic_biased
    return (hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l))).item()


def ref_unbiased_cka(fa: torch.Tensor, fb: torch.Tensor) -> float:
    """Unbiased CKA (HSIC_1)."""
    return ref_cka(fa, fb, unbiased=True)


def ref_cknna(fa: torch.Tensor, fb: torch.Tensor) -> float:
    """CKNNA: per similarity call, torch.topk masks of both kernels, their product, HSIC_1 of the masked kernels."""
    k, l = torch.mm(fa, fa.T), torch.mm(fb, fb.T)
    n = k.shape[0]

    def similarity(kk: torch.Tensor, ll: torch.Tensor) -> torch.Tensor:
        mk = torch.zeros(n, n).scatter_(1, torch.topk(kk.clone().fill_diagonal_(float("-inf")), K, dim=1).indices, 1)
        ml = torch.zeros(n, n).scatter_(1, torch.topk(ll.clone().fill_diagonal_(float("-inf")), K, dim=1).indices, 1)
        mask = mk * ml
        return hsic_unbiased(mask * kk, mask * ll)

    return (similarity(k, l) / torch.sqrt(similarity(k, k) * similarity(l, l))).item()


def ref_svcca(fa: torch.Tensor, fb: torch.Tensor, dim: int = 10) -> float:
    """SVCCA: standardise, exact top-dim left singular vectors per side, then CCA of the two bases (QR + SVD)."""

    def basis(f: torch.Tensor) -> np.ndarray:
        z = f.double() - f.double().mean(dim=0)
        std = z.std(dim=0)
        z = torch.where(std > 0, z / torch.where(std > 0, std, 1.0), 0.0)
        small_d = z.shape[1] <= z.shape[0]
        w, v = torch.linalg.eigh(z.T @ z if small_d else z @ z.T)
        w, v = w.flip(0)[:dim], v.flip(1)[:, :dim]
        return (z @ v / w.sqrt() if small_d else v).numpy()

    ua, ub = basis(fa), basis(fb)
    qa, _ = np.linalg.qr(ua - ua.mean(axis=0))
    qb, _ = np.linalg.qr(ub - ub.mean(axis=0))
    return float(np.linalg.svd(qa.T @ qb, compute_uv=False).mean())


REFERENCE: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "mutual_knn": ref_mutual_knn,
    "cycle_knn": ref_cycle_knn,
    "lcs_knn": ref_lcs_knn,
    "edit_distance_knn": ref_edit_distance_knn,
    "cka": ref_cka,
    "unbiased_cka": ref_unbiased_cka,
    "cknna": ref_cknna,
    "svcca": ref_svcca,
}


# ---- timing ----


def stratified_pairs(la: int, lb: int, p: int, rng: np.random.Generator) -> list[tuple[list[Pair], int]]:
    """Split all pairs by (row is concat, column is concat); draw about p pairs proportionally (>= 1 per stratum)."""
    strata: dict[tuple[bool, bool], list[Pair]] = {}
    for i in range(la):
        for j in range(lb):
            strata.setdefault((i == la - 1, j == lb - 1), []).append((i, j))
    total = la * lb
    out = []
    for pairs in strata.values():
        take = len(pairs) if p >= total else min(len(pairs), max(1, round(p * len(pairs) / total)))
        idx = np.sort(rng.choice(len(pairs), size=take, replace=False))
        out.append(([pairs[t] for t in idx], len(pairs)))
    return out


def time_pairs(score: Callable[[int, int], float], strata: list[tuple[list[Pair], int]]) -> tuple[float, dict[Pair, float]]:
    """Extrapolated seconds for all pairs (each stratum's mean time x its size) and the scores of the timed pairs."""
    est, vals = 0.0, {}
    for pairs, size in strata:
        t0 = time.perf_counter()
        for i, j in pairs:
            vals[(i, j)] = score(i, j)
        est += (time.perf_counter() - t0) / len(pairs) * size
    return est, vals


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def max_diff(m: np.ndarray, vals: dict[Pair, float]) -> float:
    """Largest |layerwise - baseline| over the timed pairs."""
    return float(np.nanmax([abs(m[i, j] - v) for (i, j), v in vals.items()]))


def load() -> str:
    """The 1 / 5 / 15-minute load averages and the core count."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--layers-a", type=int, default=13, help="prepared layers incl. concat")
    ap.add_argument("--layers-b", type=int, default=25, help="prepared layers incl. concat")
    ap.add_argument("--baseline-pairs", type=int, default=24, help="time about P pairs (stratified) and extrapolate; 0 = all")
    ap.add_argument("--metrics", default=",".join(m for m in METRICS if m in REFERENCE))  # those with a baseline
    ap.add_argument("--threads", type=int, default=1, help="BLAS / torch threads for every timed code path")
    ap.add_argument("--no-prh-baseline", action="store_true", help="skip the loop over prh.pairwise")
    ap.add_argument("--reps", type=int, default=5, help="rounds of the floor table (each entry: its fastest round)")
    ap.add_argument("--floor-only", action="store_true", help="print the floor table only (no per-pair baselines)")
    ap.add_argument("--quick", action="store_true", help="n=256, d=128, 4 x 6 layers")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.n, args.d, args.layers_a, args.layers_b = 256, 128, 4, 6
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    """Build the inputs, time every code path, print the table."""
    metrics = args.metrics.split(",")
    rng = np.random.default_rng(args.seed)
    shared = rng.standard_normal((args.n, 32))
    a = prepare(correlated_layers(args.n, args.d, args.layers_a - 1, args.seed + 1, shared), q=0.95)
    b = prepare(correlated_layers(args.n, args.d, args.layers_b - 1, args.seed + 2, shared), q=0.95)
    ta, tb = [torch.from_numpy(x) for x in a], [torch.from_numpy(x) for x in b]
    total = len(a) * len(b)
    p = args.baseline_pairs if 0 < args.baseline_pairs < total else total
    strata = stratified_pairs(len(a), len(b), p, rng)
    timed_n = sum(len(s) for s, _ in strata)
    note = f"; baselines timed on {timed_n} stratified random pairs, extrapolated to {total}" if timed_n < total else ""
    print(f"n={args.n} d={args.d} (concat {len(a) - 1}x{args.d} / {len(b) - 1}x{args.d}) k={K} svcca dim=10")
    print(f"layers {len(a)} x {len(b)} = {total} pairs (prepared, incl. concat){note}; threads={args.threads}")
    print(f"start: {load()}")
    print_floor_table(floor_rows(a, b, args.reps))
    if args.floor_only:
        print(f"end: {load()}")
        return

    t_many, many = timed(lambda: layerwise_many({m: PARAMS.get(m, {}) for m in metrics}, a, b))
    no_sv = [m for m in metrics if m != "svcca"]
    t_many_no_sv = timed(lambda: layerwise_many(no_sv, a, b))[0] if len(no_sv) < len(metrics) else None
    rows = []
    for metric in metrics:
        t_alone, m = timed(lambda: layerwise(metric, a, b, **PARAMS.get(metric, {})))
        assert np.array_equal(m, many[metric], equal_nan=True), f"{metric}: shared-kernel path differs"
        t_ref, ref_vals = time_pairs(lambda i, j: REFERENCE[metric](ta[i], tb[j]), strata)
        t_prh, prh_vals = (0.0, {}) if args.no_prh_baseline else time_pairs(
            lambda i, j: pairwise(metric, a[i], b[j], **PARAMS.get(metric, {})), strata
        )
        rows.append((metric, t_alone, t_ref, max_diff(m, ref_vals), t_prh, max_diff(m, prh_vals) if prh_vals else np.nan))
        best = np.unravel_index(int(np.nanargmax(m)), m.shape)
        print(f"  {metric}: done, best pair {tuple(map(int, best))}, {load()}", flush=True)
    print_table(rows, t_many, t_many_no_sv, args.no_prh_baseline)
    print(f"end: {load()}")


FLOOR_METRICS: tuple[tuple[str, str, dict], ...] = (
    ("mutual_knn", "mutual_knn", {"k": K}),
    ("cycle_knn", "cycle_knn", {"k": K}),
    ("lcs_knn", "lcs_knn", {"k": K}),
    ("edit_distance_knn", "edit_distance_knn", {"k": K}),
    ("cka", "cka", {}),
    ("cka (rbf)", "cka", {"kernel": "rbf", "sigma": 1.0}),
    ("unbiased_cka", "unbiased_cka", {}),
    ("cknna", "cknna", {"k": K}),
)
NEEDS_TOPK = {"mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn", "cknna"}
FLOOR_LIMIT = 1.5


def gram_floor(layers: list[np.ndarray]) -> None:
    """The work no all-pairs scheme skips: each layer's float32 Gram matrix (one buffer, reused)."""
    for x in layers:
        x @ x.T


def topk_floor(grams: list[torch.Tensor]) -> None:
    """The neighbour metrics' extra floor: torch.topk(k) of each layer's Gram matrix (computed beforehand)."""
    for g in grams:
        torch.topk(g, K, dim=1)


FloorRow = tuple[str, str, tuple[float, float], tuple[float, float]]  # label, floor name, (wall, cpu) s each


def floor_rows(a: list[np.ndarray], b: list[np.ndarray], reps: int) -> list[FloorRow]:
    """(label, floor name, layerwise (wall, CPU) s, floor (wall, CPU) s) per metric; fastest of ``reps`` rounds.

    Floors and metrics are timed in turn within each round, so a slow spell of the machine hits them alike. The
    top-k floor is timed on Grams computed beforehand (BLAS and torch threads never wait on each other there).
    """
    grams = [torch.from_numpy(x @ x.T) for x in a + b]
    best: dict[str, tuple[float, float]] = {}
    for _ in range(reps):
        runs = {"gram": lambda: gram_floor(a + b), "topk": lambda: topk_floor(grams)}
        runs |= {label: (lambda m=m, p=p: layerwise(m, a, b, **p)) for label, m, p in FLOOR_METRICS}
        for label, fn in runs.items():
            cpu = time.process_time()
            wall = timed(fn)[0]
            cpu = time.process_time() - cpu
            old = best.get(label, (np.inf, np.inf))
            best[label] = (min(old[0], wall), min(old[1], cpu))
    best["gram+topk"] = (best["gram"][0] + best["topk"][0], best["gram"][1] + best["topk"][1])
    kinds = {label: "gram+topk" if m in NEEDS_TOPK else "gram" for label, m, _ in FLOOR_METRICS}
    return [(label, kinds[label], best[label], best[kinds[label]]) for label, _, _ in FLOOR_METRICS]


def print_floor_table(rows: list[FloorRow]) -> None:
    """Per metric: layerwise and floor seconds (wall and CPU), their ratios, the verdict (wall) against FLOOR_LIMIT."""
    print(f"\n{'metric':<22} {'floor':>10} {'layerwise s':>11} {'floor s':>8} {'ratio':>6}  {'cpu s':>6} {'floor':>6}"
          f" {'ratio':>6}  within {FLOOR_LIMIT}x")
    for label, kind, (t, cpu), (floor, floor_cpu) in rows:
        verdict = "pass" if t <= FLOOR_LIMIT * floor else "FAIL"
        print(f"{label:<22} {kind:>10} {t:11.3f} {floor:8.3f} {t / floor:6.2f}  {cpu:6.3f} {floor_cpu:6.3f}"
              f" {cpu / floor_cpu:6.2f}  {verdict}")
    print("floor: every layer's Gram matrix x @ x.T (float32), plus torch.topk(k) of it for neighbour metrics (the\n"
          "two timed apart, each the fastest of --reps rounds); floors and metrics timed in turn in this process.\n"
          "The verdict is on wall time; the CPU-time ratio (all threads' process time) is steadier on a shared machine.\n")


def print_table(rows: list[tuple], t_many: float, t_many_no_sv: float | None, no_prh: bool) -> None:
    """Per-metric and overall timings, speed-ups and value differences."""
    print(f"\n{'metric':<22} {'layerwise s':>11} {'ref-style s':>11} {'speed-up':>9} {'prh-pairs s':>11} {'speed-up':>9}"
          f" {'|diff| ref':>10} {'|diff| prh':>10}")
    for metric, t_alone, t_ref, d_ref, t_prh, d_prh in rows:
        print(f"{metric:<22} {t_alone:11.2f} {_ratio(t_ref, t_alone)} {_ratio(t_prh, t_alone, no_prh)} {d_ref:10.1e} {d_prh:10.1e}")
    ref, prh, alone = (sum(r[c] for r in rows) for c in (2, 4, 1))
    print(f"{'sum, each alone':<22} {alone:11.2f} {_ratio(ref, alone)} {_ratio(prh, alone, no_prh)}")
    print(f"{'OVERALL (shared)':<22} {t_many:11.2f} {_ratio(ref, t_many)} {_ratio(prh, t_many, no_prh)}")
    if t_many_no_sv is not None:
        ref_ns, prh_ns = (sum(r[c] for r in rows if r[0] != "svcca") for c in (2, 4))
        print(f"{'OVERALL excl. svcca':<22} {t_many_no_sv:11.2f} {_ratio(ref_ns, t_many_no_sv)} {_ratio(prh_ns, t_many_no_sv, no_prh)}")
    print("layerwise s: layerwise(metric) alone from raw layers (computes its own Grams). OVERALL (shared): one\n"
          "layerwise_many call for all metrics, each layer's Gram matrix and neighbour lists computed once and shared\n"
          "across metrics (per-layer work), against the sum of the per-metric per-pair baselines.")


def _ratio(slow: float, fast: float, skip: bool = False) -> str:
    """Baseline seconds and speed-up columns."""
    return f"{'-':>11} {'-':>9}" if skip else f"{slow:11.1f} {slow / fast:8.1f}x"


if __name__ == "__main__":
    main()
