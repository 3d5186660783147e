"""RSA: Spearman correlation of two representational dissimilarity matrices (RDM = 1 - Pearson r between rows).

As rsatoolbox's 'correlation' RDM compared with 'spearman': over the strict upper triangle (m = n (n - 1) / 2 input
pairs), ties ranked by their average. Each layer's triangle is ranked once; its state is the centred rank vector, so a
pair score is one inner product and all layer pairs are one matrix product (float64).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from prh.metrics.kernels import ratio_or_nan

if TYPE_CHECKING:
    from prh.metrics.shared import KernelCache

DECIMALS = 10  # dissimilarities equal to 10 decimals tie (float noise would otherwise break ties of discrete data)


def correlation_rdm(x: np.ndarray) -> np.ndarray:
    """(n, d) features -> (n, n) float64 1 - Pearson correlation between rows, rounded to ``DECIMALS``.

    A constant row (zero variance) has correlation 0, i.e. dissimilarity 1, with every other row.
    """
    z = x.astype(np.float64)
    z -= z.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", z, z))[:, None]
    z = np.divide(z, norm, out=np.zeros_like(z), where=norm > 0)
    return np.round(1.0 - z @ z.T, DECIMALS)


def upper_triangle(m: np.ndarray) -> np.ndarray:
    """(n, n) -> (n (n - 1) / 2,) strict upper triangle in row-major order."""
    return m[np.triu_indices(m.shape[0], 1)]


def centred_ranks(values: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """(m,) values -> (m,) float64 average ranks minus their mean; entries outside ``keep`` (bool mask) are 0."""
    out = np.zeros(values.shape, dtype=np.float64)
    sel = slice(None) if keep is None else keep
    from scipy.stats import rankdata  # imported here: scipy.stats costs ~0.5 s at import, and only RSA needs it

    ranks = rankdata(values[sel])
    out[sel] = ranks - ranks.mean()
    return out


def rsa_state(rdm: np.ndarray, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """(n, n) RDM -> {"z": (m,) float64 centred ranks of its upper triangle, "ss": () float64 sum of z^2}."""
    z = centred_ranks(upper_triangle(rdm), keep)
    return {"z": z, "ss": np.array(z @ z)}


def rsa_pair(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> float:
    """Spearman correlation of two RDMs' upper triangles (Pearson of centred ranks); NaN if one is constant."""
    return float(ratio_or_nan(np.array(sa["z"] @ sb["z"]), np.array(sa["ss"] * sb["ss"]), "rsa"))


def rsa_all(sa: dict[str, np.ndarray], sb: dict[str, np.ndarray]) -> np.ndarray:
    """(La, Lb) RSA from one product of the stacked (L, m) centred rank vectors."""
    return ratio_or_nan(sa["z"] @ sb["z"].T, np.outer(sa["ss"], sb["ss"]), "rsa")


def rsa_layer_state(cache: KernelCache, i: int, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Layer i's RSA state: the centred ranks of its correlation RDM's upper triangle."""
    return rsa_state(correlation_rdm(cache.layers[i]))


def rsa_resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Layer i's RSA state on sorted resample ``idx``; pairs of copies of one input (dissimilarity 0) left out."""
    rdm = cache.memo(("rdm", i), lambda: correlation_rdm(cache.layers[i]))
    return rsa_state(rdm[np.ix_(idx, idx)], keep=upper_triangle(idx[:, None] != idx[None, :]))


def pair_positions(perm: np.ndarray) -> np.ndarray:
    """(n,) permutation -> (m,) position in the upper triangle of the pair (perm[i], perm[j]) for each pair i < j."""
    n = perm.size
    i, j = np.triu_indices(n, 1)
    a, b = np.minimum(perm[i], perm[j]), np.maximum(perm[i], perm[j])
    return a * n - a * (a + 1) // 2 + (b - a - 1)


def rsa_permuted(state: dict[str, np.ndarray], perm: np.ndarray) -> dict[str, np.ndarray]:
    """RSA state of inputs x[perm]: the rank vector gathered at the permuted pairs ((..., m) stacks)."""
    return {"z": state["z"][..., pair_positions(perm)], "ss": state["ss"]}
