"""Per-layer caches and the entry points: one layer pair (``pairwise``), all layer pairs (``layerwise``), and their
bounded-memory versions for large n (``large_n_pair``, ``large_n_layerwise``; prh.metrics.blockwise)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from prh.errors import PrhError
from prh.metrics._inputs import as_float32, check_same_n
from prh.metrics.blockwise import LargeLayers
from prh.metrics.registry import Metric, State, get_metric, resolve_params
from prh.metrics.shared import KernelCache, prepare_kernels


@dataclass(frozen=True)
class LayerCache:
    """One model's per-layer work for one metric: arrays stacked over layers (axis 0), reusable against many models
    (``y_only``: as model_y only, see :func:`prepare_layers`)."""

    metric: str
    params: dict[str, Any]
    n: int
    dims: tuple[int, ...]
    arrays: State = field(repr=False)
    y_only: bool = False

    def __len__(self) -> int:
        """Number of layers."""
        return len(self.dims)


def checked_pair(metric: str, a: Any, b: Any, params: dict[str, Any]) -> tuple[Metric, np.ndarray, np.ndarray, dict[str, Any]]:
    """Validate one layer pair -> the metric's record, float32 (n, d_a), (n, d_b) arrays and completed parameters."""
    record = get_metric(metric)
    xa, xb = as_float32(a, "a"), as_float32(b, "b")
    n = check_same_n(xa.shape[0], xb.shape[0])
    return record, xa, xb, resolve_params(record, params, n, (xa.shape[1], xb.shape[1]))


def pairwise(metric: str, a: Any, b: Any, **params: Any) -> float:
    """Score (n, d_a) features ``a`` against (n, d_b) features ``b`` (numpy or torch, used as given) -> float.

    Where the dense states would not fit in available memory, the bounded-memory :func:`large_n_pair` scores it
    (metrics with a large-n form), or a one-line PrhError says how much memory the dense form needs.
    """
    record, xa, xb, p = checked_pair(metric, a, b, params)
    if not fits_in_memory(record, xa.shape[0], (xa.shape[1], xb.shape[1])):
        return large_n_pair(metric, xa, xb, **params)
    return record.pair(record.state(KernelCache([xa]), 0, p), record.state(KernelCache([xb]), 0, p))


def available_memory() -> int:
    """Bytes of memory available to new allocations now (Linux ``MemAvailable``; else free physical pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def dense_bytes(record: Metric, n: int, dims: Sequence[int]) -> int:
    """Estimated peak memory of the dense engine on layers of widths ``dims`` (both models): every layer's state, plus
    one float64 n x n working array."""
    return sum(record.state_bytes(n, d) for d in dims) + 8 * n * n


def fits_in_memory(record: Metric, n: int, dims: Sequence[int]) -> bool:
    """True if the dense engine fits in available memory; else, for a metric without a large-n form, a one-line
    PrhError naming the memory it needs and the bounded entry point."""
    need = dense_bytes(record, n, dims)
    have = available_memory()
    if need <= have:
        return True
    if record.large_n is None:
        from prh.metrics.registry import RECORDS

        able = ", ".join(m.name for m in RECORDS if m.large_n is not None)
        raise PrhError(f"metric: {record.name} at n = {n} needs about {need / 2**30:.1f} GiB for its dense n x n states, "
                       f"{have / 2**30:.1f} GiB available; it has no bounded-memory form "
                       f"(prh.metrics.large_n_layerwise computes {able})")  # fmt: skip
    return False


def prepare_layers(metric: str, layers: Any, *, y_only: bool = False, **params: Any) -> LayerCache:
    """Do one model's per-layer work once: (n, d_l) arrays, (L, n, d) array or a KernelCache -> LayerCache.

    Pass a :class:`KernelCache` (``prepare_kernels(layers)``) to share Grams and neighbour lists across metrics.
    ``y_only``: the model is scored only as model_y (``score_caches``' cache_b); an asymmetric metric then leaves out
    what only model_x's state is read for (PWCCA: V diag(s), up to 4 GiB for 26 layers at n = 1024 padded to the
    19,200-wide concatenation).
    """
    record = get_metric(metric)
    kc = prepare_kernels(layers)
    p = resolve_params(record, params, kc.n, kc.dims)
    arrays = record.layer_states(kc, p, y_only)
    return LayerCache(metric=metric, params=p, n=kc.n, dims=kc.dims, arrays=arrays, y_only=y_only)


def score_caches(metric: str, cache_a: LayerCache, cache_b: LayerCache, **params: Any) -> np.ndarray:
    """All layer pairs of two prepared models -> (len(cache_a), len(cache_b)) float64 scores, model A first."""
    record = get_metric(metric)
    for name, c in (("cache_a", cache_a), ("cache_b", cache_b)):
        if c.metric != metric:
            raise PrhError(f"{name}: prepared for metric {c.metric!r}, not {metric!r}")
    if cache_a.y_only:
        raise PrhError("cache_a: prepared with y_only=True (as model_y only); prepare model_x without it")
    n = check_same_n(cache_a.n, cache_b.n)
    p = resolve_params(record, params, n, cache_a.dims + cache_b.dims) if params else cache_a.params
    if cache_a.params != p or cache_b.params != p:
        raise PrhError(f"params: caches were prepared with {cache_a.params} / {cache_b.params}, scoring asked for {p}")
    return np.asarray(record.all_pairs(cache_a.arrays, cache_b.arrays), dtype=np.float64)


def layerwise(metric: str, layers_a: Any, layers_b: Any, **params: Any) -> np.ndarray:
    """Score every layer pair: A, B sequences of (n, d_l) arrays, (L, n, d) arrays or KernelCaches -> (len(A), len(B)).

    Where the dense states would not fit in available memory (:func:`dense_bytes`), the bounded-memory
    :func:`large_n_layerwise` scores them (same values up to float rounding), or, for a metric without a large-n form,
    a one-line PrhError names the memory the dense form needs.
    """
    ka, kb = prepare_kernels(layers_a), prepare_kernels(layers_b)
    if not fits_in_memory(get_metric(metric), check_same_n(ka.n, kb.n), ka.dims + kb.dims):
        return large_n_layerwise(metric, list(ka.layers), list(kb.layers), **params)
    layers_a, layers_b = ka, kb
    cache_a = prepare_layers(metric, layers_a, **params)
    cache_b = prepare_layers(metric, layers_b, y_only=True, **params)
    return score_caches(metric, cache_a, cache_b, **params)


def layerwise_many(
    metrics: Sequence[str] | Mapping[str, Mapping[str, Any]], layers_a: Any, layers_b: Any
) -> dict[str, np.ndarray]:
    """Several metrics on the same two models, each layer's Gram / neighbours computed once -> {metric: matrix}.

    ``metrics``: metric names (default parameters) or a mapping metric -> its parameters.
    """
    specs = dict(metrics) if isinstance(metrics, Mapping) else {m: {} for m in metrics}
    for m in specs:
        get_metric(m)
    ka, kb = prepare_kernels(layers_a), prepare_kernels(layers_b)
    return {m: layerwise(m, ka, kb, **dict(p)) for m, p in specs.items()}


def best_pair(matrix: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Maximum of a score matrix ignoring NaN, and its first (row-major) position; NaN, (0, 0) if all NaN."""
    filled = np.where(np.isnan(matrix), -np.inf, matrix)
    i, j = np.unravel_index(int(np.argmax(filled)), matrix.shape)
    return float(matrix[i, j]), (int(i), int(j))


def _large_record(metric: str) -> Metric:
    """The record of a metric with a bounded-memory scorer, or a PrhError naming those that have one."""
    record = get_metric(metric)
    if record.large_n is None:
        from prh.metrics.registry import RECORDS

        able = ", ".join(m.name for m in RECORDS if m.large_n is not None)
        raise PrhError(f"metric: {metric} needs the n x n kernel; the large-n path computes {able}")
    return record


def large_n_layerwise(
    metric: str, layers_a: Any, layers_b: Any, *, device: str = "cpu", block_rows: int | None = None, **params: Any
) -> np.ndarray:
    """All layer pairs in bounded memory (no n x n matrix) -> (len(A), len(B)) float64, model A first.

    ``layers_a`` / ``layers_b``: :class:`LargeLayers` (to share neighbour lists across metrics), or sequences of
    (n, d_l) arrays, tensors or iterables of sample chunks. Values equal :func:`layerwise` up to float rounding
    (neighbour lists exactly, where the two Gram computations agree bitwise).
    """
    record = _large_record(metric)
    a, b = (x if isinstance(x, LargeLayers) else LargeLayers(x, device, block_rows) for x in (layers_a, layers_b))
    n = check_same_n(a.n, b.n)
    p = resolve_params(record, params, n, tuple(a.dims) + tuple(b.dims))
    assert record.large_n is not None
    return np.asarray(record.large_n(a, b, p), dtype=np.float64)


def large_n_pair(
    metric: str, a: Any, b: Any, *, device: str = "cpu", block_rows: int | None = None, **params: Any
) -> float:
    """One layer pair in bounded memory: (n, d_a), (n, d_b) arrays, tensors or iterables of sample chunks -> float."""
    return float(large_n_layerwise(metric, [a], [b], device=device, block_rows=block_rows, **params)[0, 0])
