"""Per-layer caches and the two entry points: one layer pair (``pairwise``) and all layer pairs (``layerwise``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from prh.errors import PrhError
from prh.metrics import cka as _cka
from prh.metrics import knn as _knn
from prh.metrics import svcca as _svcca
from prh.metrics._inputs import (
    checked_pair,
    KNN_METRICS,
    check_metric,
    check_same_n,
    check_svcca_dim,
    metric_params,
)
from prh.metrics.kernels import linear_kernel, rbf_kernel
from prh.metrics.shared import KernelCache, prepare_kernels

State = dict[str, np.ndarray]

_PAIR: dict[str, Callable[[State, State], float]] = {
    "mutual_knn": _knn.mutual_knn_pair,
    "cycle_knn": _knn.cycle_knn_pair,
    "lcs_knn": _knn.lcs_knn_pair,
    "edit_distance_knn": _knn.edit_distance_knn_pair,
    "cka": _cka.cka_pair,
    "unbiased_cka": _cka.unbiased_cka_pair,
    "cknna": _cka.cknna_pair,
    "svcca": _svcca.svcca_pair,
}
_ALL: dict[str, Callable[[State, State], np.ndarray]] = {
    "mutual_knn": _knn.mutual_knn_all,
    "cycle_knn": _knn.cycle_knn_all,
    "lcs_knn": _knn.lcs_knn_all,
    "edit_distance_knn": _knn.edit_distance_knn_all,
    "cka": _cka.cka_all,
    "unbiased_cka": _cka.unbiased_cka_all,
    "cknna": _cka.cknna_all,
    "svcca": _svcca.svcca_all,
}


@dataclass(frozen=True)
class LayerCache:
    """One model's per-layer work for one metric: arrays stacked over layers (axis 0), reusable against many models."""

    metric: str
    params: dict[str, Any]
    n: int
    dims: tuple[int, ...]
    arrays: State = field(repr=False)

    def __len__(self) -> int:
        """Number of layers."""
        return len(self.dims)


def base_of(metric: str, x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """(n, d) float32 features -> the per-layer object a metric's state is built from: (n, n) kernel, or (n, dim) basis."""
    if metric == "svcca":
        return _svcca.svcca_state(x, params["dim"])["u"]
    if metric == "cka" and params["kernel"] == "rbf":
        return rbf_kernel(x, params["sigma"])
    return linear_kernel(x)


def state_of(metric: str, base: np.ndarray, params: dict[str, Any], exclude: np.ndarray | None = None) -> State:
    """Per-layer state (neighbours, indicators, centred kernels, ...) from a kernel or basis; ``exclude`` masks pairs."""
    if metric in KNN_METRICS:
        return _knn.knn_state(base, params["k"], exclude)
    if metric == "cka":
        return _cka.cka_state(base, exclude)
    if metric == "unbiased_cka":
        return _cka.unbiased_state(base, exclude)
    if metric == "cknna":
        return _cka.cknna_state(base, params["k"], exclude)
    return {"u": base}


def score_pair(metric: str, sa: State, sb: State) -> float:
    """Score one layer pair from two per-layer states."""
    return _PAIR[metric](sa, sb)


def cache_state(metric: str, cache: KernelCache, i: int, params: dict[str, Any]) -> State:
    """Per-layer state of layer i built from a KernelCache's shared Gram / RBF / neighbours / basis."""
    if metric in KNN_METRICS:
        return _knn.knn_state_from(cache.neighbours(i, params["k"]), cache.indicator(i, params["k"]))
    if metric == "cka":
        return _cka.cka_state(cache.rbf(i, params["sigma"]) if params["kernel"] == "rbf" else cache.gram(i))
    if metric == "unbiased_cka":
        return _cka.unbiased_state(cache.gram(i))
    if metric == "cknna":
        k = params["k"]
        return _cka.cknna_state(cache.gram(i), k, nbrs=cache.neighbours(i, k), ind=cache.indicator(i, k))
    return {"u": cache.basis(i, params["dim"])}


def pairwise(metric: str, a: Any, b: Any, **params: Any) -> float:
    """Score (n, d_a) features ``a`` against (n, d_b) features ``b`` (numpy or torch, used as given) -> float."""
    xa, xb, p = checked_pair(metric, a, b, params)
    sa = cache_state(metric, KernelCache([xa]), 0, p)
    sb = cache_state(metric, KernelCache([xb]), 0, p)
    return score_pair(metric, sa, sb)


def prepare_layers(metric: str, layers: Any, **params: Any) -> LayerCache:
    """Do one model's per-layer work once: (n, d_l) arrays, (L, n, d) array or a KernelCache -> LayerCache.

    Pass a :class:`KernelCache` (``prepare_kernels(layers)``) to share Grams and neighbour lists across metrics.
    """
    check_metric(metric)
    kc = prepare_kernels(layers)
    n = kc.n
    p = metric_params(metric, params, n)
    if metric == "svcca":
        for d in kc.dims:
            check_svcca_dim(p["dim"], n, d, d)
    states = [cache_state(metric, kc, i, p) for i in range(len(kc))]
    arrays = {key: np.stack([s[key] for s in states]) for key in states[0]}
    return LayerCache(metric=metric, params=p, n=n, dims=kc.dims, arrays=arrays)


def score_caches(metric: str, cache_a: LayerCache, cache_b: LayerCache, **params: Any) -> np.ndarray:
    """All layer pairs of two prepared models -> (len(cache_a), len(cache_b)) float64 scores, model A first."""
    check_metric(metric)
    for name, c in (("cache_a", cache_a), ("cache_b", cache_b)):
        if c.metric != metric:
            raise PrhError(f"{name}: prepared for metric {c.metric!r}, not {metric!r}")
    n = check_same_n(cache_a.n, cache_b.n)
    p = metric_params(metric, params, n) if params else cache_a.params
    if cache_a.params != p or cache_b.params != p:
        raise PrhError(f"params: caches were prepared with {cache_a.params} / {cache_b.params}, scoring asked for {p}")
    if metric == "svcca":
        check_svcca_dim(p["dim"], n, min(cache_a.dims), min(cache_b.dims))
    return np.asarray(_ALL[metric](cache_a.arrays, cache_b.arrays), dtype=np.float64)


def layerwise(metric: str, layers_a: Any, layers_b: Any, **params: Any) -> np.ndarray:
    """Score every layer pair: A, B sequences of (n, d_l) arrays, (L, n, d) arrays or KernelCaches -> (len(A), len(B))."""
    cache_a = prepare_layers(metric, layers_a, **params)
    cache_b = prepare_layers(metric, layers_b, **params)
    return score_caches(metric, cache_a, cache_b, **params)


def layerwise_many(
    metrics: Sequence[str] | Mapping[str, Mapping[str, Any]], layers_a: Any, layers_b: Any
) -> dict[str, np.ndarray]:
    """Several metrics on the same two models, each layer's Gram / neighbours computed once -> {metric: matrix}.

    ``metrics``: metric names (default parameters) or a mapping metric -> its parameters.
    """
    specs = dict(metrics) if isinstance(metrics, Mapping) else {m: {} for m in metrics}
    for m in specs:
        check_metric(m)
    ka, kb = prepare_kernels(layers_a), prepare_kernels(layers_b)
    return {m: layerwise(m, ka, kb, **dict(p)) for m, p in specs.items()}


def layer_states(metric: str, layers: Sequence[np.ndarray], params: dict[str, Any]) -> list[State]:
    """Per-layer states of already-validated float32 layers (helper for calibration)."""
    return [state_of(metric, base_of(metric, x, params), params) for x in layers]
