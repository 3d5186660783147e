"""SVCCA: canonical correlations between the top-``dim`` singular subspaces of column-standardised features."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg

if TYPE_CHECKING:
    from prh.metrics.shared import KernelCache

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - optional
    threadpool_limits = None


def _single_threaded_lapack() -> AbstractContextManager:
    """Run small dense LAPACK calls on one BLAS thread (multithreaded OpenBLAS eigh/svd spins badly on busy cores)."""
    return threadpool_limits(1, user_api="blas") if threadpool_limits is not None else nullcontext()


def standardised(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d) float64 columns with mean 0 and sample std 1 (ddof = 1); constant columns become 0."""
    z = x.astype(np.float64)
    z -= z.mean(axis=0)
    std = np.sqrt(np.einsum("ij,ij->j", z, z) / (z.shape[0] - 1))
    scale = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    z *= scale
    return z


def top_left_singular(z: np.ndarray, dim: int) -> np.ndarray:
    """(n, d) float64 -> (n, dim) orthonormal top-``dim`` left singular vectors (exact, deterministic LAPACK).

    Uses the top-``dim`` eigenpairs (LAPACK syevr, subset) of the smaller Gram (d x d or n x n) when the top ``dim``
    singular values are well separated from zero (equal to the thin SVD's subspace to ~1e-12), else a full SVD.
    """
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    m = gram.shape[0]
    with _single_threaded_lapack():
        w, v = scipy.linalg.eigh(gram, subset_by_index=(m - dim, m - 1), driver="evr", check_finite=False)
    w, v = w[::-1], v[:, ::-1]
    if w[-1] > 1e-8 * max(w[0], 1e-300):
        return (z @ v) / np.sqrt(w) if d <= n else v
    with _single_threaded_lapack():
        u, _, _ = np.linalg.svd(z, full_matrices=False)
    return u[:, :dim]


def svcca_state(x: np.ndarray, dim: int) -> dict[str, np.ndarray]:
    """(n, d) features -> {"u": (n, dim) float64 top left singular vectors of the standardised features}."""
    return {"u": top_left_singular(standardised(x), dim)}


def svcca_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """Mean singular value of U_a^T U_b (the canonical correlations of the two reduced subspaces)."""
    return float(np.linalg.svd(sa["u"].T @ sb["u"], compute_uv=False).mean())


def svcca_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) SVCCA from batched (dim x dim) products of cached subspace bases."""
    m = np.einsum("anp,bnq->abpq", sa["u"], sb["u"], optimize=True)
    return np.linalg.svd(m, compute_uv=False).mean(axis=-1)


def svcca_layer_state(cache: KernelCache, i: int, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Layer i's SVCCA state: the subspace basis, memoised in the cache (shared by every use of layer i and dim)."""
    dim = params["dim"]
    return {"u": cache.memo(("basis", i, dim), lambda: svcca_state(cache.layers[i], dim)["u"])}


def svcca_resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Layer i's SVCCA state on resample ``idx`` (rows resampled, subspace recomputed; copies carry double weight)."""
    return svcca_state(cache.layers[i][idx], params["dim"])


def svcca_permuted(state: dict[str, np.ndarray], perm: np.ndarray) -> dict[str, np.ndarray]:
    """SVCCA state of inputs x[perm]: the basis rows reordered ((..., n, dim) stacks)."""
    return {"u": state["u"][..., perm, :]}
