"""Calibration of a model-level score, the aggregate (max or mean) over all layer pairs (METRICS.md, "Calibration").

The null is the null of the aggregate (Groger, Wen, Brbic, ICML 2026, Algorithm 2; PyPI ``calibrated-similarity``):
each permutation pi reorders the rows of EVERY layer of y, all (L_x + 1) x (L_y + 1) layer pairs are rescored and
the same aggregate is taken. A null taken at the single best pair ignores the search over layer pairs and is invalid
(two independent random 6-layer stacks got p < 0.05 in every seed).

Cost: every layer's state is built once per model; a draw is the registry's ``permute_state`` on a model's stacked
states plus ``all_pairs``; nothing a permutation leaves unchanged is recomputed. Every metric is invariant to
reordering both sides' rows jointly, so score(x, y[pi]) = score(x[pi^-1], y): the side holding fewer layers is
the one permuted (by pi^-1 when it is x). :func:`calibrate_models` shares this across many model pairs: in each draw
each permuted model is permuted once and reused by every pair it is in, and each model is resampled once per
bootstrap draw. :func:`calibrate_layers` is its one-pair case.

Bootstrap interval: inputs resampled with replacement (``resample_state``: copies of one input are never each
other's neighbours or kernel pairs), all layer pairs rescored, the aggregate re-taken per draw. The interval is the
(1 - alpha) percentile interval of those aggregates re-centred on the observed score (their mean bias removed): a
resample holds ~63% distinct inputs, which biases fixed-k metrics, and a maximum over noisy layer pairs is biased
upwards too, so the replicates are used for the spread only (see :mod:`prh.metrics.calibration`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prh.errors import PrhError
from prh.metrics.calibration import recentred_interval
from prh.metrics.engine import best_pair
from prh.metrics.kernels import inverse_permutation
from prh.metrics.registry import Metric, State, get_metric, resolve_params
from prh.metrics.shared import KernelCache, prepare_kernels

AGGREGATES = ("max", "mean")
CI_METHOD = "percentile-recentred"
_EPS = 1e-12  # floor of smax - tau, as in calibrated-similarity


@dataclass(frozen=True, eq=False)
class LayerCalibration:
    """A model-level score (aggregate over layer pairs) with its permutation null of the aggregate and bootstrap CI.

    ``chance`` is the record's chance level of ONE layer pair (the null of a maximum lies above it; ``null_mean``
    is the null of the aggregate itself).
    """

    metric: str
    params: dict[str, Any]
    score: float
    best: tuple[int, int]  # argmax layer pair (x, y), first in row-major order (also for aggregate="mean")
    matrix: np.ndarray  # (L_x, L_y) float64 scores of every layer pair
    null: np.ndarray  # (K,) aggregates with y's rows permuted
    null_mean: float
    null_std: float
    tau: float  # the ceil((1 - alpha)(K + 1))-th smallest of {score} + null
    p_value: float  # (1 + #{null >= score}) / (K + 1)
    calibrated: float  # clamp((score - tau) / (max_value - tau), 0, 1)
    effect: float  # (score - null_mean) / (max_value - null_mean)
    ci_low: float
    ci_high: float
    chance: float | None
    permutations: int
    bootstrap: int
    alpha: float
    aggregate: str

    def summary(self) -> np.ndarray:
        """(9,) float64 [null_mean, null_std, tau, p_value, calibrated, effect, ci_low, ci_high, score]."""
        return np.array([getattr(self, f) for f in SUMMARY_FIELDS], dtype=np.float64)


SUMMARY_FIELDS = ("null_mean", "null_std", "tau", "p_value", "calibrated", "effect", "ci_low", "ci_high", "score")


# ----------------------------------------------------------------------------- arguments


def permutation_array(n: int, count: int, seed: int = 0) -> np.ndarray:
    """(count, n) int64 permutations of the n inputs, row k = ``default_rng(seed)``'s k-th ``permutation(n)``."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(count)]) if count else np.empty((0, n), dtype=np.int64)


def bootstrap_indices(n: int, count: int, seed: int = 0) -> np.ndarray:
    """(count, n) int64 sorted resamples with replacement of the n inputs, from ``default_rng(seed + 1)``."""
    rng = np.random.default_rng(seed + 1)
    return np.stack([np.sort(rng.integers(0, n, size=n)) for _ in range(count)]) if count else np.empty((0, n), np.int64)


def _count(value: Any, name: str, minimum: int) -> int:
    """A resampling count >= minimum, or a one-line PrhError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PrhError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def checked_permutations(permutations: Any, n: int, seed: int) -> np.ndarray:
    """A count (drawn from ``seed``) or a (K, n) integer array whose rows are permutations -> (K, n) int64."""
    if isinstance(permutations, (int, np.integer)) and not isinstance(permutations, bool):
        return permutation_array(n, _count(permutations, "permutations", 1), seed)
    perms = np.asarray(permutations)
    if perms.ndim != 2 or perms.shape[0] < 1 or perms.shape[1] != n or not np.issubdtype(perms.dtype, np.integer):
        raise PrhError(f"permutations: expected a count or a (K, n = {n}) integer array, got {perms.dtype} {perms.shape}")
    if not (np.sort(perms, axis=1) == np.arange(n)).all():
        raise PrhError("permutations: every row must be a permutation of 0 .. n - 1")
    return perms.astype(np.int64)


def _check_alpha_aggregate(alpha: Any, aggregate: Any) -> None:
    """Raise naming ``alpha`` unless 0 < alpha < 1, or ``aggregate`` unless it is one of AGGREGATES."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise PrhError(f"alpha: must be in (0, 1), got {alpha!r}")
    if aggregate not in AGGREGATES:
        raise PrhError(f"aggregate: must be {' or '.join(map(repr, AGGREGATES))}, got {aggregate!r}")


# ----------------------------------------------------------------------------- statistics of one pair


def aggregated(matrix: np.ndarray, aggregate: str) -> float:
    """Max or mean of a (L_x, L_y) score matrix, NaN entries (undefined pairs) ignored; NaN if all are NaN."""
    finite = matrix[~np.isnan(matrix)]
    if finite.size == 0:
        return float("nan")
    return float(finite.max() if aggregate == "max" else finite.mean())


def critical_value(score: float, null: np.ndarray, alpha: float) -> float:
    """tau: the ceil((1 - alpha)(K + 1))-th smallest of {score} + null (K values; NaN sorted last)."""
    combined = np.sort(np.concatenate([[score], null]))
    idx = min(max(math.ceil((1.0 - alpha) * (null.size + 1)) - 1, 0), null.size)
    return float(combined[idx])


def permutation_p_value(score: float, null: np.ndarray) -> float:
    """(1 + #{null >= score}) / (K + 1), NaN null values never counting; NaN if the score is NaN."""
    if np.isnan(score):
        return float("nan")
    return float((1 + np.count_nonzero(null >= score)) / (null.size + 1))


def clamped_calibrated(score: float, tau: float, smax: float) -> float:
    """clamp((score - tau) / max(smax - tau, 1e-12), 0, 1): 0 = not above the permutation null at level alpha."""
    if np.isnan(score) or np.isnan(tau):
        return float("nan")
    return float(min(max((score - tau) / max(smax - tau, _EPS), 0.0), 1.0))


def effect_size(score: float, null_mean: float, smax: float) -> float:
    """(score - null_mean) / (smax - null_mean): 0 at the null mean, 1 at the maximum (NaN if they coincide)."""
    denom = smax - null_mean
    return float((score - null_mean) / denom) if denom != 0 else float("nan")


def pair_calibration(
    record: Metric, params: dict[str, Any], matrix: np.ndarray, null: np.ndarray, boot: np.ndarray, n: int,
    alpha: float, aggregate: str,
) -> LayerCalibration:  # fmt: skip
    """The record of one model pair from its (L_x, L_y) matrix, (K,) null and (B,) bootstrap aggregates."""
    score = aggregated(matrix, aggregate)
    finite = null[np.isfinite(null)]
    mean = float(finite.mean()) if finite.size else float("nan")
    std = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
    tau = critical_value(score, null, alpha) if not np.isnan(score) else float("nan")
    low, high = recentred_interval(boot, 1.0 - alpha, center=score) if boot.size else (float("nan"), float("nan"))
    smax = record.max_value
    return LayerCalibration(
        record.name, params, score, best_pair(matrix)[1], matrix, null, mean, std, tau,
        permutation_p_value(score, null), clamped_calibrated(score, tau, smax), effect_size(score, mean, smax),
        low, high, record.chance(n, params), int(null.size), int(boot.size), float(alpha), aggregate,
    )  # fmt: skip


# ----------------------------------------------------------------------------- many model pairs sharing work


def _common_n(caches: Mapping[str, KernelCache]) -> int:
    """The models' shared sample count, or a PrhError naming the model that differs."""
    n = next(iter(caches.values())).n
    for name, kc in caches.items():
        if kc.n != n:
            raise PrhError(f"models: {name!r} has {kc.n} samples, others {n}; rows must describe the same inputs")
    return n


def _y_only(pairs: Sequence[tuple[str, str]]) -> set[str]:
    """The models that are model_y in every pair they are in (an asymmetric metric's lighter y state serves them)."""
    return {y for _, y in pairs} - {x for x, _ in pairs}


def _draws(rows: np.ndarray, label: str | None, what: str) -> Any:
    """The (draws, n) index array, iterated under a progress bar when ``label`` is given."""
    if label is None:
        return rows
    from tqdm.auto import tqdm

    return tqdm(rows, desc=f"{label} {what}", mininterval=5)


def _permute_x(record: Metric, caches: Mapping[str, KernelCache], pairs: Sequence[tuple[str, str]]) -> bool:
    """Whether to permute the x models by pi^-1 instead of the y models by pi: they hold fewer layers (and the
    metric does not ask for y, e.g. ridge predictivity, whose predictor states are costly to permute)."""
    if record.permute_side == "y":
        return False
    layers = lambda names: sum(len(caches[m]) for m in dict.fromkeys(names))
    return layers(x for x, _ in pairs) < layers(y for _, y in pairs)


def null_aggregates(
    record: Metric, states: Mapping[str, State], pairs: Sequence[tuple[str, str]], perms: np.ndarray, aggregate: str,
    permute_x: bool = False,
) -> np.ndarray:  # fmt: skip
    """(len(pairs), K) aggregates of all_pairs(x, y[pi_k]); each model permuted once per draw, reused by its pairs.

    ``permute_x``: compute all_pairs(x[pi_k^-1], y) instead (equal: metrics are invariant to joint reordering).
    """
    side = 0 if permute_x else 1
    moved = list(dict.fromkeys(p[side] for p in pairs))
    out = np.empty((len(pairs), len(perms)))
    for k, perm in enumerate(perms):
        pi = inverse_permutation(perm) if permute_x else perm
        shuffled = {m: record.permute_state(states[m], pi) for m in moved}
        for t, (x, y) in enumerate(pairs):
            sx, sy = (shuffled[x], states[y]) if permute_x else (states[x], shuffled[y])
            out[t, k] = aggregated(np.asarray(record.all_pairs(sx, sy), dtype=np.float64), aggregate)
    return out


def bootstrap_aggregates(
    record: Metric, caches: Mapping[str, KernelCache], pairs: Sequence[tuple[str, str]], indices: np.ndarray,
    params: dict[str, Any], aggregate: str,
) -> np.ndarray:  # fmt: skip
    """(len(pairs), B) aggregates on bootstrap resamples; each model resampled once per draw, reused by its pairs.

    A symmetric metric's reversed pair (y, x) reuses the aggregate of (x, y) (the transposed matrix).
    """
    models = list(dict.fromkeys(m for p in pairs for m in p))
    y_only = _y_only(pairs)
    out = np.empty((len(pairs), len(indices)))
    for b, idx in enumerate(indices):
        states = {m: record.resampled_states(caches[m], idx, params, m in y_only) for m in models}
        done: dict[tuple[str, str], float] = {}
        for t, (x, y) in enumerate(pairs):
            if record.symmetric and (y, x) in done:
                out[t, b] = done[(y, x)]
                continue
            out[t, b] = done[(x, y)] = aggregated(np.asarray(record.all_pairs(states[x], states[y]), np.float64), aggregate)
    return out


def calibrate_models(
    models: Mapping[str, Any], pairs: Sequence[tuple[str, str]], metric: str, *, permutations: Any = 200,
    bootstrap: int = 200, alpha: float = 0.05, aggregate: str = "max", seed: int = 0, progress: str | None = None,
    **metric_params: Any,
) -> dict[tuple[str, str], LayerCalibration]:  # fmt: skip
    """Calibrate many model pairs of one dataset at once -> {(x, y): LayerCalibration}.

    ``models``: name -> prepared layers as scored (sequence of (n, d_l) float32 arrays, (L, n, d) array, or a
    :class:`KernelCache` to share Grams and neighbour lists across metrics). ``pairs``: ordered (x, y) names; y's
    rows are the ones permuted. ``permutations``: a count drawn from ``seed``, or a (K, n) integer array (row k
    permutes y as y[perm[k]]); pass the same array to every metric to compare them on equal terms. ``bootstrap``:
    resamples drawn from ``seed + 1`` (0: no interval, NaN). Per-model states are computed once; in each draw each
    permuted (or resampled) model is processed once and reused by all its pairs. ``progress``: a label to show
    progress bars over the draws under.
    """
    record = get_metric(metric)
    _check_alpha_aggregate(alpha, aggregate)
    n_boot = _count(bootstrap, "bootstrap", 0)
    pairs = [(str(x), str(y)) for x, y in pairs]
    missing = sorted({m for p in pairs for m in p} - set(models))
    if missing:
        raise PrhError(f"pairs: unknown model(s) {', '.join(map(repr, missing))}")
    caches = {m: prepare_kernels(models[m]) for m in dict.fromkeys(m for p in pairs for m in p)}
    n = _common_n(caches)
    params = resolve_params(record, metric_params, n, tuple(d for kc in caches.values() for d in kc.dims))
    perms = checked_permutations(permutations, n, seed)
    y_only = _y_only(pairs)
    states = {m: record.layer_states(kc, params, m in y_only) for m, kc in caches.items()}
    null = null_aggregates(record, states, pairs, _draws(perms, progress, "null"), aggregate, _permute_x(record, caches, pairs))
    boot = bootstrap_aggregates(record, caches, pairs, _draws(bootstrap_indices(n, n_boot, seed), progress, "bootstrap"),
                                params, aggregate)  # fmt: skip
    out = {}
    for t, (x, y) in enumerate(pairs):
        matrix = np.asarray(record.all_pairs(states[x], states[y]), dtype=np.float64)
        out[(x, y)] = pair_calibration(record, params, matrix, null[t], boot[t], n, alpha, aggregate)
    return out


def calibrate_layers(
    x_layers: Any, y_layers: Any, metric: str, *, permutations: Any = 200, bootstrap: int = 200, alpha: float = 0.05,
    aggregate: str = "max", seed: int = 0, **metric_params: Any,
) -> LayerCalibration:  # fmt: skip
    """Score x against y over all layer pairs and calibrate the aggregate (the one-pair :func:`calibrate_models`).

    ``x_layers``, ``y_layers``: the prepared layers exactly as scored (lists of (n, d_l) float32 arrays; nothing is
    preprocessed here). See :func:`calibrate_models` for the other arguments and the module doc for the method.
    """
    return calibrate_models({"x": x_layers, "y": y_layers}, [("x", "y")], metric, permutations=permutations,
                            bootstrap=bootstrap, alpha=alpha, aggregate=aggregate, seed=seed,
                            **metric_params)[("x", "y")]  # fmt: skip
