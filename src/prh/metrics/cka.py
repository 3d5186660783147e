"""Kernel metrics: CKA (linear / RBF), unbiased CKA (HSIC_1 of Song et al. 2012) and CKNNA, per pair and batched."""

from __future__ import annotations

import numpy as np

from prh.metrics.kernels import centred, flat_inner, indicator, neighbours, ratio_or_nan

_BLOCK_BYTES = 32 * 2**20


def _drop(kernel: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    """(n, n) kernel with the excluded (bootstrap-duplicate) off-diagonal entries set to 0 (a copy if changed)."""
    if exclude is None:
        return kernel
    out = kernel.copy()
    out[exclude] = 0.0
    return out


def cka_state(kernel: np.ndarray, exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(n, n) kernel -> {"kc": (n, n) float32 H K H, "norm": () float64 ||H K H||_F}."""
    kc = centred(_drop(kernel, exclude))
    k64 = kc.astype(np.float64).ravel()
    return {"kc": kc, "norm": np.array(np.sqrt(k64 @ k64))}


def cka_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """tr(K H L H) / sqrt(tr(K H K H) tr(L H L H)) for one layer pair."""
    num = sa["kc"].astype(np.float64).ravel() @ sb["kc"].astype(np.float64).ravel()
    return float(ratio_or_nan(np.array(num), np.array(sa["norm"] ** 2 * sb["norm"] ** 2), "cka"))


def cka_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) CKA from inner products of flattened centred kernels."""
    num = flat_inner(sa["kc"], sb["kc"])
    return ratio_or_nan(num, np.outer(sa["norm"] ** 2, sb["norm"] ** 2), "cka")


def hsic1(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC_1 of two (n, n) zero-diagonal (possibly asymmetric) matrices, formula as written, float64."""
    n = k.shape[0]
    k64, l64 = k.astype(np.float64), l.astype(np.float64)
    trace = np.sum(k64 * l64.T)
    sums = k64.sum() * l64.sum() / ((n - 1) * (n - 2))
    cross = k64.sum(axis=0) @ l64.sum(axis=1)
    return float((trace + sums - 2.0 / (n - 2) * cross) / (n * (n - 3)))


def _hsic1_terms(trace: np.ndarray, sum_k: np.ndarray, sum_l: np.ndarray, cross: np.ndarray, n: int) -> np.ndarray:
    """HSIC_1 from its terms tr(K~L~), 1^T K~ 1, 1^T L~ 1 and 1^T K~ L~ 1 (broadcasting)."""
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def unbiased_state(kernel: np.ndarray, exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(n, n) kernel -> zero-diagonal K~ (float32), its float64 row sums, total and self HSIC_1(K~, K~)."""
    kt = _drop(kernel, exclude).copy()
    np.fill_diagonal(kt, 0.0)
    rows = kt.astype(np.float64).sum(axis=1)
    return {"kt": kt, "rows": rows, "total": np.array(rows.sum()), "self": np.array(hsic1(kt, kt))}


def unbiased_cka_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L)) for one layer pair; NaN if the product is <= 0."""
    num = hsic1(sa["kt"], sb["kt"])
    return float(ratio_or_nan(np.array(num), np.array(sa["self"] * sb["self"]), "unbiased_cka"))


def unbiased_cka_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) unbiased CKA from a flattened inner product plus sums and row-sum products."""
    n = sa["kt"].shape[1]
    trace = flat_inner(sa["kt"], sb["kt"])
    cross = sa["rows"] @ sb["rows"].T
    num = _hsic1_terms(trace, sa["total"][:, None], sb["total"][None, :], cross, n)
    return ratio_or_nan(num, np.outer(sa["self"], sb["self"]), "unbiased_cka")


def cknna_state(kernel: np.ndarray, k: int, exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(n, n) kernel -> kNN indicator M (bool), X = M o K, P = M o M^T o K (float32) and S(K, K)."""
    n = kernel.shape[0]
    ind = indicator(neighbours(kernel, k, exclude), n)
    x = np.where(ind, _drop(kernel, exclude), np.float32(0.0)).astype(np.float32)
    p = np.where(ind.T, x, np.float32(0.0))
    return {"ind": ind, "x": x, "p": p, "self": np.array(hsic1(x, x))}


def cknna_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """HSIC_1(M o K, M o L) / sqrt(S(K, K) S(L, L)), M = M_K o M_L, for one layer pair."""
    mutual = sa["ind"] & sb["ind"]
    num = hsic1(np.where(mutual, sa["x"], 0.0), np.where(mutual, sb["x"], 0.0))
    return float(ratio_or_nan(np.array(num), np.array(sa["self"] * sb["self"]), "cknna"))


def cknna_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) CKNNA: HSIC_1 terms from flattened inner products and batched column/row sums of masked kernels."""
    n = sa["x"].shape[1]
    trace = flat_inner(sa["p"], sb["p"])
    sum_k = flat_inner(sa["x"], sb["ind"])
    sum_l = flat_inner(sa["ind"], sb["x"])
    cross = _cknna_cross(sa, sb)
    num = _hsic1_terms(trace, sum_k, sum_l, cross, n)
    return ratio_or_nan(num, np.outer(sa["self"], sb["self"]), "cknna")


def _cknna_cross(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) sum_j colsum(M o K)_j rowsum(M o L)_j, with batched matmuls over blocks of j (float64)."""
    la, n, _ = sa["x"].shape
    lb = sb["x"].shape[0]
    block = max(1, _BLOCK_BYTES // (8 * n * (la + lb)))
    out = np.zeros((la, lb), dtype=np.float64)
    for j0 in range(0, n, block):
        j1 = min(n, j0 + block)
        col = np.matmul(
            sa["x"][:, :, j0:j1].transpose(2, 0, 1).astype(np.float64),
            sb["ind"][:, :, j0:j1].transpose(2, 1, 0).astype(np.float64),
        )
        row = np.matmul(
            sa["ind"][:, j0:j1, :].transpose(1, 0, 2).astype(np.float64),
            sb["x"][:, j0:j1, :].transpose(1, 2, 0).astype(np.float64),
        )
        out += (col * row).sum(axis=0)
    return out
