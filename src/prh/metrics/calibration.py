"""Calibration of an alignment score: analytic chance level, permutation null, bootstrap interval, calibrated score.

Both resampling schemes start from each side's per-layer state, built once, and ask the metric's registry record
how the resampling acts on it. A permutation of B's rows maps B's state directly (``permute_state``: kernels
P K P^T, neighbour lists relabelled; no Gram, top-k or centring recomputed). A bootstrap resample ``idx`` builds
each side's state on ``K[idx][:, idx]`` (``resample_state``), where pairs of positions drawn from the same input
(``idx[i] == idx[j]``, i != j) are excluded like the diagonal: never each other's neighbours (kNN metrics, CKNNA),
their off-diagonal kernel entries set to 0 in both kernels (CKA, unbiased CKA, CKNNA), so duplicates cannot
manufacture agreement. SVCCA resamples the feature rows and recomputes the standardised subspaces (duplicated rows
simply carry double weight there).

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
from prh.metrics.engine import checked_pair
from prh.metrics.registry import Metric, State, get_metric, resolve_params
from prh.metrics.shared import KernelCache


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


def chance_level(metric: str, n: int, k: int = 10, **params: Any) -> float | None:
    """Analytic expected score of unrelated inputs of n samples from the metric's record (e.g. k / (n - 1) for
    mutual_knn), None where none is known. ``k`` is ignored by metrics that do not take it."""
    record = get_metric(metric)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise PrhError(f"n: must be an integer >= 2, got {n!r}")
    return record.chance(int(n), resolve_params(record, {"k": k, **params}, int(n)))


def calibrated(score: float, null_mean: float, ceiling: float = 1.0) -> float:
    """(score - null_mean) / (ceiling - null_mean): 0 at the null, 1 at the ceiling (NaN if ceiling == null)."""
    denom = ceiling - null_mean
    return float((score - null_mean) / denom) if denom != 0 else float("nan")


def _check_count(value: Any, name: str) -> int:
    """Return a positive integer resampling count or raise naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PrhError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class _Pair:
    """One validated layer pair: the metric's record, parameters, both sides' kernel caches and states."""

    record: Metric
    params: dict[str, Any]
    caches: tuple[KernelCache, KernelCache]
    states: tuple[State, State]

    @property
    def n(self) -> int:
        """Number of inputs."""
        return self.caches[0].n

    def score(self) -> float:
        """The observed score of A against B."""
        return self.record.pair(*self.states)


def _prepared_pair(metric: str, a: Any, b: Any, params: dict[str, Any]) -> _Pair:
    """Validate inputs and build both sides' per-layer states once."""
    record, xa, xb, p = checked_pair(metric, a, b, params)
    caches = (KernelCache([xa]), KernelCache([xb]))
    state_y = record.y_state or record.state  # B is only ever model_y here
    return _Pair(record, p, caches, (record.state(caches[0], 0, p), state_y(caches[1], 0, p)))


def _null_scores(pair: _Pair, n_perm: int, seed: int) -> np.ndarray:
    """(n_perm,) scores of A against B with B's rows shuffled (B's state permuted, nothing recomputed)."""
    rng = np.random.default_rng(seed)
    record, (sa, sb) = pair.record, pair.states
    return np.array([record.pair(sa, record.permute_state(sb, rng.permutation(pair.n))) for _ in range(n_perm)])


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
    pair = _prepared_pair(metric, a, b, params)
    null = _null_scores(pair, _check_count(n_perm, "n_perm"), seed)
    return (*_null_summary(pair.score(), null), null)


def _boot_scores(pair: _Pair, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot,) scores on inputs resampled with replacement, duplicates excluded from each other's neighbourhoods."""
    rng = np.random.default_rng(seed)
    record, p, (ca, cb) = pair.record, pair.params, pair.caches
    resample_y = record.y_resample_state or record.resample_state
    out = np.empty(n_boot)
    for t in range(n_boot):
        idx = np.sort(rng.integers(0, pair.n, size=pair.n))
        out[t] = record.pair(record.resample_state(ca, 0, idx, p), resample_y(cb, 0, idx, p))
    return out


def bootstrap_scores(metric: str, a: Any, b: Any, n_boot: int = 200, seed: int = 0, **params: Any) -> np.ndarray:
    """(n_boot,) bootstrap replicates of ``pairwise(metric, a, b)`` (inputs resampled with replacement)."""
    pair = _prepared_pair(metric, a, b, params)
    return _boot_scores(pair, _check_count(n_boot, "n_boot"), seed)


def recentred_interval(samples: np.ndarray, level: float, center: float | None = None) -> tuple[float, float]:
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
    pair = _prepared_pair(metric, a, b, params)
    return recentred_interval(_boot_scores(pair, _check_count(n_boot, "n_boot"), seed), level, center=pair.score())


def calibrate(
    metric: str, a: Any, b: Any, *, n_perm: int = 200, n_boot: int = 200, seed: int = 0, level: float = 0.95, **params: Any
) -> Calibration:
    """Score ONE layer pair and calibrate it (chance, permutation null, bootstrap CI), sharing the per-side kernels.

    ``calibrated`` here is that pair's effect size (score - null mean) / (max - null mean). A model-level score (the
    max over layer pairs) needs the null of that max: use :func:`prh.metrics.calibrate_layers`, whose clamped
    tau-based ``calibrated`` is what the tables report.
    """
    pair = _prepared_pair(metric, a, b, params)
    n_perm, n_boot = _check_count(n_perm, "n_perm"), _check_count(n_boot, "n_boot")
    score = pair.score()
    null = _null_scores(pair, n_perm, seed)
    mean, std, p_value = _null_summary(score, null)
    low, high = recentred_interval(_boot_scores(pair, n_boot, seed + 1), level, center=score)
    record, p = pair.record, pair.params
    return Calibration(metric, p, score, record.chance(pair.n, p), mean, std, p_value, low, high,
                       calibrated(score, mean, record.max_value), n_perm, n_boot)  # fmt: skip
