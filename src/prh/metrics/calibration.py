"""Calibration of an alignment score: analytic chance level, permutation null, bootstrap interval, calibrated score.

Both resampling schemes reuse each side's per-layer kernel (or SVCCA basis), computed once:
permuting B's rows permutes the rows and columns of its kernel, after which its neighbour lists / centring are
rebuilt from that kernel (no Gram recomputation). A bootstrap resample ``idx`` takes ``K[idx][:, idx]``; pairs of
positions drawn from the same input (``idx[i] == idx[j]``, i != j) are excluded like the diagonal: never each
other's neighbours (kNN metrics, CKNNA) and their off-diagonal kernel entries set to 0 in both kernels
(CKA, unbiased CKA, CKNNA), so duplicates cannot manufacture agreement. SVCCA resamples the feature rows and
recomputes the standardised subspaces (duplicated rows simply carry double weight there).

Because a resample holds only ~63% distinct inputs, kNN-family replicates are biased at fixed k (either way: one
n = 200 pair scored 0.19 with replicates 0.195-0.233, entirely above it). The bootstrap is therefore used for the spread only:
the interval is the percentile interval of the replicates re-centred on the observed score (their mean bias
removed), so it always brackets the score and keeps the replicates' width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from prh.errors import PrhError
from prh.metrics._inputs import KNN_METRICS, checked_pair, check_metric, metric_params
from prh.metrics.engine import base_of, score_pair, state_of
from prh.metrics.kernels import indicator, resampled_neighbours
from prh.metrics.knn import knn_state_from


@dataclass(frozen=True)
class Calibration:
    """A raw score with its chance level, permutation null, bootstrap interval and calibrated value."""

    metric: str
    params: dict[str, Any]
    score: float
    chance: float | None
    null_mean: float
    null_std: float
    p_value: float
    ci_low: float
    ci_high: float
    calibrated: float
    n_perm: int
    n_boot: int


def chance_level(metric: str, n: int, k: int = 10) -> float | None:
    """Analytic expected score for unrelated kernels, where one is known; None otherwise.

    mutual_knn: k / (n - 1) (exact). cycle_knn: 1 - (1 - k / (n - 1))^k (treats the k events "i in N_A(j)" as
    independent, each with probability k / (n - 1)). unbiased_cka: 0 (HSIC_1 is unbiased, zero under independence).
    """
    check_metric(metric)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise PrhError(f"n: must be an integer >= 2, got {n!r}")
    if metric == "mutual_knn" or metric == "cycle_knn":
        k = metric_params(metric, {"k": k}, n)["k"]
        p = k / (n - 1)
        return p if metric == "mutual_knn" else 1.0 - (1.0 - p) ** k
    if metric == "unbiased_cka":
        return 0.0
    return None


def calibrated(score: float, null_mean: float, ceiling: float = 1.0) -> float:
    """(score - null_mean) / (ceiling - null_mean): 0 at the null, 1 at the ceiling (NaN if ceiling == null)."""
    denom = ceiling - null_mean
    return float((score - null_mean) / denom) if denom != 0 else float("nan")


def _setup(metric: str, a: Any, b: Any, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Validate inputs -> float32 (n, d_a), (n, d_b) arrays and the completed parameters."""
    return checked_pair(metric, a, b, params)


def _check_count(value: Any, name: str) -> int:
    """Return a positive integer resampling count or raise naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PrhError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def _permuted(base: np.ndarray, perm: np.ndarray, metric: str) -> np.ndarray:
    """A kernel with rows and columns permuted (a basis: rows permuted)."""
    return base[perm] if metric == "svcca" else base[np.ix_(perm, perm)]


def _relabelled_knn(nbrs: np.ndarray, perm: np.ndarray) -> dict[str, np.ndarray]:
    """kNN state of the kernel ``K[perm][:, perm]`` from K's neighbour lists: N'(i) = perm^-1(N(perm(i))).

    O(n k) instead of a new top-k over n x n; identical unless a row has exactly tied similarities (duplicate
    inputs), whose order then follows the original labels.  Pair scores read only B's lists (``nbrs``).
    """
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    return {"nbrs": inv[nbrs[perm]].astype(np.int32)}


def _null_scores(metric: str, base_a: np.ndarray, base_b: np.ndarray, p: dict[str, Any], n_perm: int, seed: int) -> np.ndarray:
    """(n_perm,) scores of A against B with B's rows shuffled, from cached kernels (kNN: relabelled lists)."""
    rng = np.random.default_rng(seed)
    sa = state_of(metric, base_a, p)
    n = base_a.shape[0]
    if metric in KNN_METRICS:
        nb = state_of(metric, base_b, p)["nbrs"]
        return np.array([score_pair(metric, sa, _relabelled_knn(nb, rng.permutation(n))) for _ in range(n_perm)])
    return np.array([score_pair(metric, sa, state_of(metric, _permuted(base_b, rng.permutation(n), metric), p)) for _ in range(n_perm)])


def _null_summary(observed: float, null: np.ndarray) -> tuple[float, float, float]:
    """(mean, std (ddof=1), p-value = (1 + #{null >= observed}) / (1 + P)) of a null sample."""
    finite = null[np.isfinite(null)]
    mean = float(finite.mean()) if finite.size else float("nan")
    std = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
    return mean, std, float((1 + np.count_nonzero(finite >= observed)) / (1 + null.size))


def permutation_null(
    metric: str, a: Any, b: Any, n_perm: int = 200, seed: int = 0, **params: Any
) -> tuple[float, float, float, np.ndarray]:
    """Permutation null of ``pairwise(metric, a, b)`` shuffling B's rows -> (mean, std, p_value, (n_perm,) samples)."""
    xa, xb, p = _setup(metric, a, b, params)
    n_perm = _check_count(n_perm, "n_perm")
    base_a, base_b = base_of(metric, xa, p), base_of(metric, xb, p)
    observed = score_pair(metric, state_of(metric, base_a, p), state_of(metric, base_b, p))
    null = _null_scores(metric, base_a, base_b, p, n_perm, seed)
    return (*_null_summary(observed, null), null)


def _resampled_knn_states(bases: tuple[np.ndarray, np.ndarray], idx: np.ndarray, k: int) -> tuple[dict, dict] | None:
    """kNN states of both sides on resample ``idx`` (copies never neighbours), or None if too few distinct inputs."""
    states = []
    for kernel in bases:
        nbrs = resampled_neighbours(kernel, idx, k)
        if nbrs is None:
            return None
        states.append(knn_state_from(nbrs, indicator(nbrs, idx.size)))
    return states[0], states[1]


def _boot_scores(
    metric: str, xa: np.ndarray, xb: np.ndarray, bases: tuple[np.ndarray, np.ndarray], p: dict[str, Any], n_boot: int, seed: int
) -> np.ndarray:
    """(n_boot,) scores on inputs resampled with replacement, duplicates excluded from each other's neighbourhoods."""
    rng = np.random.default_rng(seed)
    n = xa.shape[0]
    out = np.empty(n_boot)
    for t in range(n_boot):
        idx = np.sort(rng.integers(0, n, size=n))
        if metric == "svcca":
            sa, sb = state_of(metric, base_of(metric, xa[idx], p), p), state_of(metric, base_of(metric, xb[idx], p), p)
        elif metric in KNN_METRICS and (fast := _resampled_knn_states(bases, idx, p["k"])) is not None:
            sa, sb = fast
        else:
            dup = idx[:, None] == idx[None, :]
            np.fill_diagonal(dup, False)
            ex = dup if dup.any() else None
            sa = state_of(metric, bases[0][np.ix_(idx, idx)], p, ex)
            sb = state_of(metric, bases[1][np.ix_(idx, idx)], p, ex)
        out[t] = score_pair(metric, sa, sb)
    return out


def bootstrap_scores(metric: str, a: Any, b: Any, n_boot: int = 200, seed: int = 0, **params: Any) -> np.ndarray:
    """(n_boot,) bootstrap replicates of ``pairwise(metric, a, b)`` (inputs resampled with replacement)."""
    xa, xb, p = _setup(metric, a, b, params)
    n_boot = _check_count(n_boot, "n_boot")
    bases = (base_of(metric, xa, p), base_of(metric, xb, p)) if metric != "svcca" else (xa, xb)
    return _boot_scores(metric, xa, xb, bases, p, n_boot, seed)


def _interval(samples: np.ndarray, level: float, center: float | None = None) -> tuple[float, float]:
    """Percentile interval of the finite samples at ``level``; with ``center``, shifted so their mean sits there."""
    if not 0 < level < 1:
        raise PrhError(f"level: must be in (0, 1), got {level}")
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    shift = 0.0 if center is None else center - float(finite.mean())
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2]) + shift
    return float(low), float(high)


def bootstrap_ci(
    metric: str, a: Any, b: Any, n_boot: int = 200, seed: int = 0, level: float = 0.95, **params: Any
) -> tuple[float, float]:
    """Bias-corrected bootstrap interval (low, high) of ``pairwise(metric, a, b)`` at ``level`` (see module doc)."""
    xa, xb, p = _setup(metric, a, b, params)
    n_boot = _check_count(n_boot, "n_boot")
    base_a, base_b = base_of(metric, xa, p), base_of(metric, xb, p)
    score = score_pair(metric, state_of(metric, base_a, p), state_of(metric, base_b, p))
    bases = (base_a, base_b) if metric != "svcca" else (xa, xb)
    return _interval(_boot_scores(metric, xa, xb, bases, p, n_boot, seed), level, center=score)


def calibrate(
    metric: str, a: Any, b: Any, *, n_perm: int = 200, n_boot: int = 200, seed: int = 0, level: float = 0.95, **params: Any
) -> Calibration:
    """Score one layer pair and calibrate it (chance, permutation null, bootstrap CI), sharing the per-side kernels."""
    xa, xb, p = _setup(metric, a, b, params)
    n_perm, n_boot = _check_count(n_perm, "n_perm"), _check_count(n_boot, "n_boot")
    base_a, base_b = base_of(metric, xa, p), base_of(metric, xb, p)
    score = score_pair(metric, state_of(metric, base_a, p), state_of(metric, base_b, p))
    null = _null_scores(metric, base_a, base_b, p, n_perm, seed)
    mean, std, p_value = _null_summary(score, null)
    bases = (base_a, base_b) if metric != "svcca" else (xa, xb)
    low, high = _interval(_boot_scores(metric, xa, xb, bases, p, n_boot, seed + 1), level, center=score)
    chance = chance_level(metric, xa.shape[0], p.get("k", 10)) if metric != "svcca" else None
    return Calibration(metric, p, score, chance, mean, std, p_value, low, high, calibrated(score, mean), n_perm, n_boot)
