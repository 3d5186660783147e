"""Distance correlation (Szekely, Rizzo and Bakirov 2007), the V-statistic, per pair and batched over layer pairs.

Per layer, once: the Euclidean distance matrix D (from the float64 Gram matrix, diagonal exactly 0) double-centred,
A = D - row means - column means + grand mean, kept in float32 with its float64 self term dVar^2 = mean(A * A).
dCov^2(X, Y) = mean(A * B) (the V-statistic, which counts the i = j terms; ``dcor.distance_correlation`` and
``dcor.distance_covariance_sqr`` compute the same); dCor = sqrt(dCov^2(X, Y) / sqrt(dVar^2(X) dVar^2(Y))), in
[0, 1]. A pair is one inner product of two flattened centred matrices (the CKA scheme); all layer pairs one blocked
float64 product. The bias-corrected U-statistic (``dcor.u_distance_correlation_sqr``) is a different estimator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from prh.metrics.kernels import flat_inner_symmetric, kernel_sums64, permuted_square, ratio_or_nan
from prh.metrics.shared import one_layer

if TYPE_CHECKING:
    from prh.metrics.shared import KernelCache

State = dict[str, np.ndarray]


def centred_distances(x: np.ndarray) -> np.ndarray:
    """(n, d) features -> (n, n) float32 double-centred Euclidean distance matrix (computed in float64)."""
    z = x.astype(np.float64)
    sq = np.einsum("ij,ij->i", z, z)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0))
    np.fill_diagonal(d, 0.0)
    return double_centred(d)


def double_centred(d: np.ndarray) -> np.ndarray:
    """(n, n) symmetric float64 distances -> float32 D - row means - column means + grand mean."""
    rows = d.mean(axis=1)
    return (d - rows[:, None] - rows[None, :] + rows.mean()).astype(np.float32)


def dcor_state(a: np.ndarray) -> State:
    """(n, n) double-centred distances -> {"a": A, "self": () float64 sum(A * A)}."""
    return {"a": a, "self": np.array(kernel_sums64(a)[1])}


def dcor_all(sa: State, sb: State) -> np.ndarray:
    """(La, Lb) distance correlation: sqrt(<A, B> / sqrt(<A, A> <B, B>)) (the 1/n^2 factors cancel); NaN (with a
    warning) where a side's distance variance is 0 (constant features)."""
    ratio = ratio_or_nan(flat_inner_symmetric(sa["a"], sb["a"]), np.outer(sa["self"], sb["self"]), "distance_correlation")
    return np.sqrt(np.maximum(ratio, 0.0))


def dcor_pair(sa: State, sb: State) -> float:
    """Distance correlation of one layer pair."""
    return float(dcor_all(one_layer(sa), one_layer(sb))[0, 0])


def dcor_layer_state(cache: KernelCache, i: int, params: dict[str, Any]) -> State:
    """Layer i's double-centred distance matrix (memoised in the cache)."""
    return dcor_state(cache.memo(("dcentred", i), lambda: centred_distances(cache.layers[i])))


def dcor_resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> State:
    """Layer i's state on bootstrap resample ``idx``: distances of the resampled rows re-centred (copies of one input
    are at distance 0, as the V-statistic's own i = j terms)."""
    return dcor_state(centred_distances(cache.layers[i][idx]))


def dcor_permuted(state: State, perm: np.ndarray) -> State:
    """State of inputs x[perm]: the centred matrix permuted (P A P^T); the self term unchanged."""
    return {"a": permuted_square(state["a"], perm), "self": state["self"]}
