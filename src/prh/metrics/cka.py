"""Kernel metrics: CKA (linear / RBF), unbiased CKA (HSIC_1 of Song et al. 2012) and CKNNA, per pair and batched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from prh.metrics.kernels import (
    duplicate_pairs,
    flat_inner_symmetric,
    indicator,
    inverse_permutation,
    kernel_sums64,
    neighbours,
    permuted_square,
    ratio_or_nan,
    relabelled_neighbours,
)
from prh.metrics.shared import one_layer, stacked

if TYPE_CHECKING:
    from prh.metrics.shared import KernelCache


def _drop(kernel: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    """(n, n) kernel with the excluded (bootstrap-duplicate) off-diagonal entries set to 0 (a copy if changed)."""
    if exclude is None:
        return kernel
    out = kernel.copy()
    out[exclude] = 0.0
    return out


def _hsic_b(inner: np.ndarray, cross: np.ndarray, sum_k: np.ndarray, sum_l: np.ndarray, n: int) -> np.ndarray:
    """tr(K H L H) of symmetric K, L = <K, L> - 2/n 1'K L 1 + (1'K 1)(1'L 1) / n^2 (broadcasting).

    Every term is a float64 sum of exact products of float32 kernel values, so the large uncentred terms cancel
    in float64 (relative error ~1e-16 of <K, L>); the centred kernels are never formed.
    """
    return inner - 2.0 / n * cross + sum_k * sum_l / (n * n)


def cka_state(kernel: np.ndarray, exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(n, n) symmetric kernel -> {"k": K, "rows": (n,) float64 row sums, "total": 1'K1, "self": tr(K H K H)}."""
    kern = _drop(kernel, exclude)
    return {"k": kern, **_cka_sums(kern)}


def _cka_sums(kern: np.ndarray) -> dict[str, np.ndarray]:
    """A kernel's float64 row sums, total and tr(K H K H)."""
    rows, sq = kernel_sums64(kern)
    total = rows.sum()
    return {"rows": rows, "total": np.array(total), "self": np.array(_hsic_b(sq, rows @ rows, total, total, rows.size))}


def cka_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """tr(K H L H) / sqrt(tr(K H K H) tr(L H L H)) for one layer pair."""
    return float(cka_all(one_layer(sa), one_layer(sb))[0, 0])


def cka_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) CKA from the kernels' upper-triangle inner products, row sums and totals (float64)."""
    n = sa["k"].shape[1]
    num = _hsic_b(flat_inner_symmetric(sa["k"], sb["k"]), sa["rows"] @ sb["rows"].T, sa["total"][:, None],
                  sb["total"][None, :], n)  # fmt: skip
    return ratio_or_nan(num, np.outer(sa["self"], sb["self"]), "cka")


def _hsic1_terms(trace: np.ndarray, sum_k: np.ndarray, sum_l: np.ndarray, cross: np.ndarray, n: int) -> np.ndarray:
    """HSIC_1 from its terms tr(K~L~), 1^T K~ 1, 1^T L~ 1 and 1^T K~ L~ 1 (broadcasting)."""
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def unbiased_state(kernel: np.ndarray, exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(n, n) symmetric kernel K -> K, float64 diagonal d, row sums and total of K~ = K - diag(d), HSIC_1(K~, K~).

    K~ is never formed: tr(K~ L~) = <K, L> - d_K . d_L, and K~'s row sums are K's minus d (float64).
    """
    kern = _drop(kernel, exclude)
    return {"k": kern, **_unbiased_sums(kern)}


def _unbiased_sums(kern: np.ndarray) -> dict[str, np.ndarray]:
    """A kernel's float64 diagonal d, row sums and total of K - diag(d), and HSIC_1 of K - diag(d) with itself."""
    rows, sq = kernel_sums64(kern)
    diag = np.diagonal(kern).astype(np.float64)
    rows -= diag
    total = rows.sum()
    own = _hsic1_terms(sq - diag @ diag, total, total, rows @ rows, rows.size)
    return {"diag": diag, "rows": rows, "total": np.array(total), "self": np.array(own)}


def unbiased_cka_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L)) for one layer pair; NaN if the product is <= 0."""
    return float(unbiased_cka_all(one_layer(sa), one_layer(sb))[0, 0])


def unbiased_cka_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) unbiased CKA from the kernels' upper-triangle inner products, diagonals and row sums (float64)."""
    n = sa["k"].shape[1]
    trace = flat_inner_symmetric(sa["k"], sb["k"]) - sa["diag"] @ sb["diag"].T
    cross = sa["rows"] @ sb["rows"].T
    num = _hsic1_terms(trace, sa["total"][:, None], sb["total"][None, :], cross, n)
    return ratio_or_nan(num, np.outer(sa["self"], sb["self"]), "unbiased_cka")


def cknna_state(
    kernel: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    nbrs: np.ndarray | None = None,
    ind: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """(n, n) kernel -> neighbour lists, indicator, kernel, float64 values at the neighbours, mirror positions, S(K, K).

    ``nbrs`` / ``ind``: the kernel's precomputed neighbour lists and indicator (shared across metrics).
    """
    n = kernel.shape[0]
    if nbrs is None:
        nbrs = neighbours(kernel, k, exclude)
    if ind is None:
        ind = indicator(nbrs, n)
    kern = _drop(kernel, exclude)
    kv = kern[np.arange(n)[:, None], nbrs].astype(np.float64)
    state = {"nbrs": nbrs, "ind": ind, "kern": kern, "kv": kv, "mirror": mirror_positions(nbrs)}
    state["self"] = np.array(_cknna_hsic(state, one_layer(state))[0])
    return state


def mirror_positions(nbrs: np.ndarray) -> np.ndarray:
    """(n, k) lists -> (n, k) int64 flat position j k + q of the mirror (j, i) of each (i, j = N(i)[p]), -1 if none.

    q is i's place in N(j) (N(j)[q] = i); -1 where i is not among its neighbour j's neighbours.
    """
    n, k = nbrs.shape
    place = np.zeros((n, n), dtype=np.int32)  # place[j, m] = q + 1 where N(j)[q] = m, else 0
    np.put_along_axis(place, nbrs, np.arange(1, k + 1, dtype=np.int32)[None, :], axis=1)
    q = place[nbrs, np.arange(n)[:, None]].astype(np.int64) - 1
    return np.where(q >= 0, nbrs * k + q, -1)


def _cknna_hsic(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """One A layer vs a stack of B layers -> (Lb,) HSIC_1(M o K, M o L), M = M_K o M_L, summed over the k-sparse masks.

    X = M o K and Y = M o L are non-zero only at mutual positions, a subset of A's neighbour positions (i, N_A(i)),
    so every term is a sum over B's indicator and kernel gathered there (row-local, (Lb, n k), float64 sums):
    1'XY1 = sum_ij X_ij (row sums of Y)_j, and tr(XY) pairs X_ij with Y_ji, which is again at one of A's positions
    (its mirror) when i is among j's neighbours too (Y_ji = L_ij, L symmetric).
    """
    na, kv = sa["nbrs"], sa["kv"].ravel()
    lb, n, k = sb["nbrs"].shape
    if "perm" in sb:  # B's inputs reordered by perm: its kernel and indicator read at (perm(i), perm(N_A(i)[p]))
        p = sb["perm"].reshape(lb, n)
        fwd = (p[:, :, None] * n + p[:, na]).reshape(lb, n * k)
        mb = np.take_along_axis(sb["ind"].reshape(lb, n * n), fwd, axis=1)
        lv = np.take_along_axis(sb["kern"].reshape(lb, n * n), fwd, axis=1)
    else:
        fwd = (np.arange(n)[:, None] * n + na).ravel()  # flat (i, N_A(i)[p])
        mb = np.take(sb["ind"].reshape(lb, n * n), fwd, axis=1)  # (Lb, n k): also a B neighbour
        lv = np.take(sb["kern"].reshape(lb, n * n), fwd, axis=1)  # (Lb, n k) float32 L at A's positions
    x = mb * kv
    y_rows = np.where(mb, lv, np.float32(0.0)).reshape(lb, n, k).sum(axis=2, dtype=np.float64)
    mirror = sa["mirror"].ravel()
    both = np.flatnonzero(mirror >= 0)
    trace = np.einsum("bi,bi->b", x[:, both] * mb[:, mirror[both]], lv[:, both])
    cross = np.einsum("bi,bi->b", x, np.take(y_rows, na.ravel(), axis=1))
    return _hsic1_terms(trace, x.sum(axis=1), y_rows.sum(axis=1), cross, n)


def cknna_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """HSIC_1(M o K, M o L) / sqrt(S(K, K) S(L, L)), M = M_K o M_L, for one layer pair.

    Not bounded by 1. HSIC_1 is an inner product of U-centred matrices, so Cauchy-Schwarz bounds
    HSIC_1(X, Y) by sqrt(HSIC_1(X, X) HSIC_1(Y, Y)) only for the SAME X, Y; here the numerator's X = M o K uses
    the mutual mask while S(K, K) = HSIC_1(M_K o K, M_K o K) uses K's own (and the masks are asymmetric, so the
    trace term pairs X_ij with Y_ji). On anisotropic features (every cosine large) at large k, M_K is nearly all
    ones, M_K o K is nearly constant on it and U-centring removes most of it, while the sparser M o K keeps a 0 /
    large on-off pattern with more variance: S(K, K) < HSIC_1(M o K, M o K) and the ratio exceeds 1. Evidence
    (n = 256, two noisy views of an 8-d latent plus a common offset giving mean cosine 0.76, k = 200): CKNNA =
    1.212 while S(K, K) = 5.67e-2 < HSIC_1(M o K, M o K) = 6.92e-2, and the same-mask ratio is 0.998; without the
    offset (mean cosine 0) CKNNA = 0.71 at k = 200. The default locality experiment (language-model features,
    n = 256) reaches 1.76 at k = 200. At k = n - 1 every mask is all ones and CKNNA is unbiased CKA (in [-1, 1]).
    The locality figure excludes and reports rows above 1 (prh.figures.metrics.in_range).
    """
    num = _cknna_hsic(sa, one_layer(sb))
    return float(ratio_or_nan(num, np.array([sa["self"] * sb["self"]]), "cknna")[0])


def cknna_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) CKNNA, one A layer at a time against the stacked B layers (sparse mask sums)."""
    num = np.stack([_cknna_hsic({key: v[a] for key, v in sa.items()}, sb) for a in range(sa["nbrs"].shape[0])])
    return ratio_or_nan(num, np.outer(sa["self"], sb["self"]), "cknna")


# ----------------------------------------------------------------------------- per-layer states from a KernelCache


def _kernel(cache: KernelCache, i: int, params: dict[str, Any]) -> np.ndarray:
    """Layer i's (n, n) kernel: RBF when ``params["kernel"] == "rbf"``, else the Gram matrix."""
    if params.get("kernel", "linear") == "rbf":
        return cache.rbf(i, params["sigma"])
    return cache.gram(i)


def _kernels(cache: KernelCache, params: dict[str, Any]) -> np.ndarray:
    """All layers' (L, n, n) kernels, the cache's own read-only buffer: RBF or Gram matrices as for :func:`_kernel`."""
    if params.get("kernel", "linear") == "rbf":
        return cache.rbfs(params["sigma"])
    return cache.grams()


def _resampled(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Layer i's kernel on bootstrap resample ``idx`` -> (K[idx][:, idx], mask of pairs of copies or None)."""
    return _kernel(cache, i, params)[np.ix_(idx, idx)], duplicate_pairs(idx)


def cka_layer_state(cache: KernelCache, i: int, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Layer i's CKA state (linear or RBF kernel, its row sums, total and self HSIC)."""
    return cka_state(_kernel(cache, i, params))


def cka_stacked_state(cache: KernelCache, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """All layers' CKA states; the kernels are the cache's stacked buffer (not copied)."""
    kernels = _kernels(cache, params)
    return {"k": kernels, **stacked([_cka_sums(k) for k in kernels])}


def cka_resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Layer i's CKA state on resample ``idx``, kernel entries between copies of one input set to 0."""
    return cka_state(*_resampled(cache, i, idx, params))


def cka_permuted(state: dict[str, np.ndarray], perm: np.ndarray) -> dict[str, np.ndarray]:
    """CKA state of inputs x[perm]: kernel permuted (P K P^T), row sums reordered, totals and self HSIC unchanged."""
    return {"k": permuted_square(state["k"], perm), "rows": state["rows"][..., perm], "total": state["total"],
            "self": state["self"]}  # fmt: skip


def unbiased_layer_state(cache: KernelCache, i: int, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Layer i's unbiased-CKA state from its Gram matrix."""
    return unbiased_state(cache.gram(i))


def unbiased_stacked_state(cache: KernelCache, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """All layers' unbiased-CKA states; the Gram matrices are the cache's stacked buffer (not copied)."""
    grams = cache.grams()
    return {"k": grams, **stacked([_unbiased_sums(g) for g in grams])}


def unbiased_resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Layer i's unbiased-CKA state on resample ``idx``, kernel entries between copies set to 0."""
    return unbiased_state(*_resampled(cache, i, idx, params))


def unbiased_permuted(state: dict[str, np.ndarray], perm: np.ndarray) -> dict[str, np.ndarray]:
    """Unbiased-CKA state of inputs x[perm]: kernel permuted, diagonal and row sums reordered, totals unchanged."""
    return {"k": permuted_square(state["k"], perm), "diag": state["diag"][..., perm], "rows": state["rows"][..., perm],
            "total": state["total"], "self": state["self"]}  # fmt: skip


def cknna_layer_state(cache: KernelCache, i: int, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Layer i's CKNNA state from the cache's shared Gram matrix, neighbour lists and indicator."""
    k = params["k"]
    return cknna_state(cache.gram(i), k, nbrs=cache.neighbours(i, k), ind=cache.indicator(i, k))


def cknna_stacked_state(cache: KernelCache, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """All layers' CKNNA states; the Gram matrices are the cache's stacked buffer (not copied)."""
    layers = [cknna_layer_state(cache, i, params) for i in range(len(cache))]
    return {"kern": cache.grams(), **stacked([{key: v for key, v in s.items() if key != "kern"} for s in layers])}


def cknna_resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Layer i's CKNNA state on resample ``idx``: copies never neighbours, their kernel entries 0."""
    kernel, exclude = _resampled(cache, i, idx, params)
    return cknna_state(kernel, params["k"], exclude)


def cknna_permuted(state: dict[str, np.ndarray], perm: np.ndarray) -> dict[str, np.ndarray]:
    """CKNNA state of inputs x[perm] in O(n k) per layer: lists, values and mirrors relabelled, S(K, K) kept.

    The (n, n) kernel and indicator are not permuted: the state keeps them with ``perm`` (one row per layer, so
    per-layer slicing keeps working), and :func:`_cknna_hsic` reads them at permuted positions when the state is B.
    As A, only its lists, values and mirrors are read. Permuting an already permuted state composes the two.
    """
    n = perm.size
    base = state.get("perm")
    combined = np.broadcast_to(perm, state["nbrs"].shape[:-2] + (n,)) if base is None else base[..., perm]
    return {"nbrs": relabelled_neighbours(state["nbrs"], perm), "ind": state["ind"], "kern": state["kern"],
            "kv": state["kv"][..., perm, :], "mirror": _relabelled_mirrors(state["mirror"], perm),
            "self": state["self"], "perm": combined}  # fmt: skip


def _relabelled_mirrors(mirror: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """(..., n, k) mirror positions of inputs x -> those of x[perm] (lists keep their order, so q is unchanged)."""
    k = mirror.shape[-1]
    moved = mirror[..., perm, :]
    return np.where(moved >= 0, inverse_permutation(perm)[moved // k] * k + moved % k, -1)
