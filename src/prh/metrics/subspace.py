"""Feature-space measures from each layer's centred SVD: orthogonal Procrustes, the generalised shape metric
(Williams et al. 2021, netrep), CCA and PWCCA (Morcos et al. 2018) (spec: METRICS.md, "The field's other measures").

Per layer, once: Xc = X - column means = U diag(s) V^T (thin SVD, float64; r = rank(Xc) by numpy's ``matrix_rank``
rule for float32 data: singular values <= s_max max(n, d) eps_float32 are float32 rounding and are dropped). Every measure of a layer pair is then read off M = diag(t_x) U_x^T U_y diag(t_y), the
cross-product of the two orthonormal bases re-weighted per direction:

- Procrustes (t = s): ||M||_* = ||Xc^T Yc||_*; similarity ||Xc^T Yc||_* / (||Xc||_F ||Yc||_F) in [0, 1].
- shape metric (alpha): t = alpha s + (1 - alpha), i.e. netrep's partial whitening Xc (alpha I + (1 - alpha)
  (Xc^T Xc)^(-1/2)); similarity ||M||_* / (||t_x|| ||t_y||) = cos of netrep's angular distance (alpha = 1: Procrustes;
  alpha = 0: the sum of canonical correlations / sqrt(r_x r_y)).
- CCA: the singular values of M with t = 1 are the canonical correlations (exact, when both widths are < n). When
  either width is >= n the centred covariances are singular and every canonical correlation is 1, so both sides get a
  ridge: covariance Xc^T Xc / (n - 1) + reg I (reg = 1e-6 by default, Aristotelian's value), i.e.
  t = s / sqrt(s^2 + (n - 1) reg). Reported: the mean of the min(r_x, r_y) largest canonical correlations.
- PWCCA: the same correlations weighted by Morcos et al.'s alpha_i = sum_j |<h_i, x_j>| (h_i the i-th canonical
  variate of X = A, x_j X's j-th centred column); asymmetric: the weights come from A (model_x).

A pair's singular values are the square roots of the eigenvalues of its smaller Gram G = M^T M (or M M^T) by LAPACK
syevd (with forming G, about half of gesdd's time on M), under a precision guard. Forming G in float64 moves it by at
most gamma_r ||M||_F^2 <= r eps tr(G) in 2-norm (r: G's order), and syevd's eigenvalues are exact for a matrix within
p(r) eps ||G|| of that one (p(r) = r taken), so |lambda_i - sigma_i^2| <= delta = r eps (tr(G) + max |lambda|) (Weyl)
and sigma_i = sqrt(max(lambda_i, 0)) is within e_i = min(sqrt(delta), delta / sigma_i) of M's i-th singular value.
Where the bound this puts on the score (sum e_i / (||t_x|| ||t_y||); CCA: mean e_i; PWCCA: the alpha-weighted mean)
exceeds EIG_TOL, the pair takes gesdd on M instead (error ~eps sigma_max per value), so every score is within EIG_TOL
of the exact one for the computed M. The bound charges tiny singular values sqrt(delta) >= sqrt(r eps) sigma_max each,
though on graded M (Procrustes) the eigen route is far better than that: on 768-wide layers at n = 1024 the bound is
3e-9 to 4e-7 (Procrustes), 3e-10 to 2e-8 (shape metric, alpha = 0.5), 1.3e-10 to 2.3e-10 (ridge CCA) while the scores
differ from gesdd's by <= 3e-13. The exception is exactly orthogonal directions with unit weights (M's zero singular
values come out as ~sqrt(eps) = 1.5e-8 each). PWCCA takes M's left singular vectors as M M^T's eigenvectors; the guard
bounds the correlations, not the vectors, which agree with gesdd's to ~delta / gap where the correlations are
distinct (where they are not, the L1 weights, so PWCCA itself, depend on the basis chosen within the degenerate
space, by either route).

With unit weights (CCA's pairs without the ridge, the shape metric at alpha = 0) M = U_x^T U_y, whose nuclear norm also
follows from the complements W (orthonormal bases of the rest of the (n - 1)-dimensional centred space): by the CS
decomposition, U_x^T U_y and W_x^T W_y share their singular values in (0, 1) and their counts of ones differ by
r_x + r_y - (n - 1), so ||U_x^T U_y||_* = ||W_x^T W_y||_* + r_x + r_y - (n - 1). Where both ranks exceed (n - 1) / 2
the pair decomposes the smaller (n - 1 - r_x) x (n - 1 - r_y) matrix (255 x 255 instead of 768 x 768 at n = 1024).
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import scipy.linalg

from prh.metrics.kernels import ratio_or_nan
from prh.metrics.shared import one_layer

if TYPE_CHECKING:
    from prh.metrics.shared import KernelCache

State = dict[str, np.ndarray]
EPS32 = float(np.finfo(np.float32).eps)  # features are float32: rank tolerance s_max max(n, d) eps (numpy's rule)
CCA_REG = 1e-6  # covariance ridge when a width is >= n (Aristotelian's reg)
EPS = float(np.finfo(np.float64).eps)
EIG_TOL = 1e-6  # the eigen route's largest bound on |score - exact score| (issue 33's agreement); above it: gesdd


def centred(x: np.ndarray) -> np.ndarray:
    """(n, d) features -> the column-centred float64 copy Xc."""
    z = x.astype(np.float64)
    z -= z.mean(axis=0)
    return z


def centred_svd(x: np.ndarray, projections: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(n, d) features -> (U (n, r), s (r,), V diag(s) (d, r)) of the column-centred float64 features, r = rank.

    From the eigendecomposition of the smaller Gram (d x d or n x n; LAPACK syevr), singular values descending.
    V diag(s) is a by-product where d <= n; where d > n it is the extra product Xc^T U, skipped (None) unless
    ``projections``. The three are views of one buffer (see :func:`svd_parts`).
    """
    return split_svd(svd_parts(x, projections), x.shape[0])


def svd_parts(x: np.ndarray, projections: bool = True) -> np.ndarray:
    """(n, d) features -> one (n + 1 [+ d], r) float64 buffer [U; s [; V diag(s)]] (see :func:`centred_svd`)."""
    z = centred(x)
    n, d = z.shape
    w, vec = scipy.linalg.eigh(z.T @ z if d <= n else z @ z.T, overwrite_a=True, check_finite=False)
    s = np.sqrt(np.maximum(w[::-1], 0.0))
    keep = s > s[0] * max(n, d) * EPS32 if s[0] > 0 else np.zeros(s.size, dtype=bool)
    s, vec = s[keep], np.ascontiguousarray(vec[:, ::-1][:, keep])
    parts = np.empty((n + 1 + (d if d <= n or projections else 0), s.size))
    parts[n] = s
    if d <= n:
        np.matmul(z, vec, out=parts[:n])
        parts[:n] /= s
        np.multiply(vec, s, out=parts[n + 1 :])
    else:
        parts[:n] = vec
        if projections:
            np.matmul(z.T, vec, out=parts[n + 1 :])
    return parts


def split_svd(parts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A :func:`svd_parts` buffer -> (U, s, V diag(s) or None), views."""
    return parts[:n], parts[n], parts[n + 1 :] if parts.shape[0] > n + 1 else None


def complement_basis(u: np.ndarray, rough: bool = True) -> np.ndarray:
    """(n, r) orthonormal basis, orthogonal to 1 -> (n, n - 1 - r) orthonormal basis of the rest of the centred space
    (the complement of span(1, u)). Only where r > (n - 1) / 2, the complement being the smaller side; else (n, 0)
    and the flag says so (see :func:`unit_nuclear`).

    A fixed Gaussian (n, n - 1 - r) block projected off span(1, u) and orthonormalised (QR), then projected again
    ("twice is enough": orthogonal to span(1, u) to rounding) and re-orthonormalised by Cholesky QR: two thin products
    with u instead of a complete n x n QR. ``rough``: the first pass in float32 (half the time), kept where the second
    pass leaves the block within 0.5 of orthonormal (Frobenius), so that Cholesky QR is exact; else both in float64."""
    n, r = u.shape
    c = n - 1 - r
    if 2 * r <= n - 1 or c <= 0:
        return np.zeros((n, max(c, 0)))
    if rough:
        w = _off_span(_gaussian(n, c).astype(np.float32), u.astype(np.float32))
        w = _off_span(np.linalg.qr(w)[0].astype(np.float64), u)
        gram = w.T @ w
        if np.linalg.norm(gram - np.eye(c)) <= 0.5:
            return _cholesky_qr(w, gram)
    w = _off_span(np.linalg.qr(_off_span(_gaussian(n, c), u))[0], u)
    return _cholesky_qr(w, w.T @ w)


def _cholesky_qr(w: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """The orthonormal factor Q of w = Q R from its Gram w^T w = R^T R (exact where w is near-orthonormal)."""
    chol = scipy.linalg.cholesky(gram, check_finite=False)
    return scipy.linalg.solve_triangular(chol, w.T, trans="T", check_finite=False).T


@functools.lru_cache(maxsize=4)
def _gaussian_block(n: int, c: int) -> np.ndarray:
    """The fixed read-only (n, c) standard Gaussian block :func:`complement_basis` starts from (seed 0)."""
    block = np.random.default_rng(0).standard_normal((n, c))
    block.flags.writeable = False
    return block


def _gaussian(n: int, c: int) -> np.ndarray:
    """A writable copy of :func:`_gaussian_block`."""
    return _gaussian_block(n, c).copy()


def _off_span(w: np.ndarray, u: np.ndarray) -> np.ndarray:
    """(n, c) block projected off span(1, u) (u orthonormal and orthogonal to 1), in place."""
    w -= w.mean(axis=0)
    w -= u @ (u.T @ w)
    return w


def subspace_state(x: np.ndarray, weights: bool = False, complement: bool = False) -> State:
    """(n, d) features -> {"u": (n, r) basis, "s": (r,) singular values, "wide": () d >= n[, "vs": (d, r) V diag(s)]
    [, "w": (n, n - 1 - r) complement basis, "cs": () whether "w" was formed]}."""
    u, s, vs = centred_svd(x, projections=weights)
    state = {"u": u, "s": s, "wide": np.array(x.shape[1] >= x.shape[0])}
    if weights:
        state["vs"] = vs
    if complement:
        state["w"] = complement_basis(u)
        state["cs"] = np.array(2 * u.shape[1] > x.shape[0] - 1)
    return state


def _products(sa: State, sb: State, ta: np.ndarray, tb: np.ndarray, need: np.ndarray, variant: np.ndarray | None = None,
              key: str = "u", ra: np.ndarray | None = None,
              rb: np.ndarray | None = None) -> Iterator[tuple[int, int, np.ndarray]]:  # fmt: skip
    """(a, b, M) for every pair with ``need[a, b]``: M = diag(t_a) U_a^T U_b diag(t_b), C-contiguous, cut to the ranks
    ``ra[a]`` x ``rb[b]`` (default: the layers' ranks), one GEMM per pair. ``ta`` (V, La, Ra), ``tb`` (V, Lb, Rb): V
    weight variants, the pair taking ``variant[a, b]`` (default 0; CCA: exact or ridge); ``key``: "u", or "w" for the
    complements."""
    ra = _ranks(sa) if ra is None else ra
    rb = _ranks(sb) if rb is None else rb
    variant = np.zeros(need.shape, dtype=np.intp) if variant is None else variant
    for a in range(need.shape[0]):
        scaled: dict[int, np.ndarray] = {}  # A's weighted basis (n, r_a) per variant
        for b in np.flatnonzero(need[a]):
            v = int(variant[a, b])
            if v not in scaled:
                scaled[v] = sa[key][a][:, : ra[a]] * ta[v, a, : ra[a]]
            m = scaled[v].T @ sb[key][b][:, : rb[b]]
            m *= tb[v, b, : rb[b]]
            yield a, b, m


def unit_nuclear(sa: State, sb: State) -> np.ndarray:
    """(La, Lb) ||U_a' U_b||_* (the sum of the canonical correlations of the two column spaces) from the complements
    where both layers have one ("cs"), NaN elsewhere.

    CS decomposition of the orthogonal [U_a W_a]' [U_b W_b] in the (N = n - 1)-dimensional centred space: U_a' U_b
    and W_a' W_b share their singular values in (0, 1), and their counts of ones differ by r_a + r_b - N (Frobenius
    norms of the blocks), so ||U_a' U_b||_* = ||W_a' W_b||_* + r_a + r_b - N exactly: an (N - r_a) x (N - r_b)
    decomposition instead of r_a x r_b (255 for 768 at n = 1024, 27x fewer flops), by the guarded eigen route at the
    scale min(r_a, r_b) (the divisor of CCA's mean; the shape metric's sqrt(r_a r_b) is at least that).
    """
    la, lb = sa["u"].shape[0], sb["u"].shape[0]
    out = np.full((la, lb), np.nan)
    if "cs" not in sa or "cs" not in sb:
        return out
    ra, rb = _ranks(sa), _ranks(sb)
    n = sa["u"].shape[-2]
    ca, cb = n - 1 - ra, n - 1 - rb
    need = sa["cs"][:, None] & sb["cs"][None, :]
    ones_a, ones_b = np.ones((1, la, sa["w"].shape[2])), np.ones((1, lb, sb["w"].shape[2]))
    for a, b, m in _products(sa, sb, ones_a, ones_b, need, key="w", ra=ca, rb=cb):
        out[a, b] = guarded_sum(m, float(min(ra[a], rb[b]))) + ra[a] + rb[b] - (n - 1)
    return out


def svd(m: np.ndarray, vectors: bool = False) -> Any:
    """LAPACK's divide-and-conquer SVD (gesdd), or the QR-iteration one (gesvd) where gesdd does not converge (absolute
    error ~eps s_max on every singular value either way). ``vectors``: (U, s, Vh) thin, else s."""
    for driver in ("gesdd", "gesvd"):
        try:
            return scipy.linalg.svd(m, full_matrices=False, compute_uv=vectors, check_finite=False, lapack_driver=driver)
        except np.linalg.LinAlgError:
            if driver == "gesvd":
                raise
    raise AssertionError("unreachable")


def singular_values(m: np.ndarray) -> np.ndarray:
    """(p, q) -> (min(p, q),) singular values, descending."""
    return svd(m) if m.size else np.zeros(0)


def eigen_singular(m: np.ndarray, left: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(p, q) -> (sigma, e, W): the k = min(p, q) largest singular values of m, descending, as square roots of the
    eigenvalues of its smaller Gram (LAPACK syevd), each within e_i of the exact one (the bound of the module doc),
    and with ``left`` m's (p, k) left singular vectors (the eigenvectors of m m^T, whatever its size), else None."""
    p, q = m.shape
    k = min(p, q)
    if k == 0:
        return np.zeros(0), np.zeros(0), np.zeros((p, 0)) if left else None
    g = m @ m.T if left or p < q else m.T @ m
    trace = float(np.trace(g))
    if left:
        lam, vec = scipy.linalg.eigh(g, overwrite_a=True, check_finite=False, driver="evd")
        w = vec[:, ::-1][:, :k]
    else:
        lam, w = scipy.linalg.eigh(g, eigvals_only=True, overwrite_a=True, check_finite=False, driver="evd"), None
    delta = g.shape[0] * EPS * (trace + max(abs(lam[0]), abs(lam[-1])))
    sigma = np.sqrt(np.maximum(lam[::-1][:k], 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):  # delta = 0 (m = 0): NaN bounds, which fail every guard
        bound = np.minimum(np.sqrt(delta), delta / sigma)
    return sigma, bound, w


def guarded_sum(m: np.ndarray, scale: float) -> float:
    """||m||_* from :func:`eigen_singular` where its bound is <= EIG_TOL scale, else from gesdd."""
    sigma, bound, _ = eigen_singular(m)
    if bound.sum() <= EIG_TOL * scale:
        return float(sigma.sum())
    return float(singular_values(m).sum())


def _ranks(state: State) -> np.ndarray:
    """(L,) number of non-padded directions of each layer."""
    return np.count_nonzero(state["s"] > 0, axis=-1)


def _weighted_all(sa: State, sb: State, weight: Callable[[State], np.ndarray], name: str,
                  unit: bool = False) -> np.ndarray:  # fmt: skip
    """(La, Lb) ||diag(t_a) U_a^T U_b diag(t_b)||_* / (||t_a|| ||t_b||), t = weight(state) (0 on padded directions).
    ``unit``: t is 1 on every rank direction, so pairs with complements take :func:`unit_nuclear`."""
    ta, tb = weight(sa), weight(sb)
    num = unit_nuclear(sa, sb) if unit else np.full((ta.shape[0], tb.shape[0]), np.nan)
    prod = np.outer(np.einsum("ij,ij->i", ta, ta), np.einsum("ij,ij->i", tb, tb))
    for a, b, m in _products(sa, sb, ta[None], tb[None], np.isnan(num)):
        num[a, b] = guarded_sum(m, float(np.sqrt(prod[a, b])))
    return ratio_or_nan(num, prod, name)


def procrustes_all(sa: State, sb: State) -> np.ndarray:
    """(La, Lb) orthogonal Procrustes similarity ||Xc^T Yc||_* / (||Xc||_F ||Yc||_F)."""
    return _weighted_all(sa, sb, lambda s: s["s"], "procrustes")


def shape_weights(alpha: float) -> Callable[[State], np.ndarray]:
    """t = alpha s + (1 - alpha) on each layer's rank directions (0 on padding): netrep's partial whitening."""
    return lambda s: np.where(s["s"] > 0, alpha * s["s"] + (1.0 - alpha), 0.0)


def shape_all(sa: State, sb: State) -> np.ndarray:
    """(La, Lb) cosine of the generalised shape metric's angle (netrep LinearMetric, alpha in the states)."""
    alpha = float(sa["alpha"].flat[0])
    return _weighted_all(sa, sb, shape_weights(alpha), "shape_metric", unit=alpha == 0.0)


def _cca_weights(state: State, wide: np.ndarray, reg: float) -> np.ndarray:
    """(L, R) t per layer: 1 (exact CCA) or s / sqrt(s^2 + (n - 1) reg) where ``wide`` asks for the ridge."""
    s = state["s"]
    n = state["u"].shape[-2]
    ridge = s / np.sqrt(s * s + (n - 1) * reg)
    return np.where(wide[..., None], ridge, (s > 0).astype(np.float64))


def _canonical(sa: State, sb: State, need: np.ndarray) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(a, b, M, t_a) per pair with ``need[a, b]``: M = diag(t_a) U_a^T U_b diag(t_b), whose singular values are the
    canonical correlations, t exact on both sides or ridge on both where either width is >= n."""
    reg = float(sa["reg"].flat[0])
    ta = np.stack([_cca_weights(sa, np.array(w), reg) for w in (False, True)])
    tb = np.stack([_cca_weights(sb, np.array(w), reg) for w in (False, True)])
    variant = (sa["wide"][:, None] | sb["wide"][None, :]).astype(np.intp)
    ra = _ranks(sa)
    for a, b, m in _products(sa, sb, ta, tb, need, variant):
        yield a, b, m, ta[variant[a, b], a, : ra[a]]


def _warn_empty(out: np.ndarray, name: str) -> np.ndarray:
    """``out`` unchanged, with a warning when some pairs are NaN (a side of rank 0: constant features)."""
    bad = int(np.isnan(out).sum())
    if bad:
        warnings.warn(f"{name}: a side has no variance for {bad} pair(s); score is NaN", RuntimeWarning, stacklevel=3)
    return out


def cca_all(sa: State, sb: State) -> np.ndarray:
    """(La, Lb) mean canonical correlation (ridge-regularised where a width is >= n; exact pairs with complements
    from :func:`unit_nuclear`)."""
    ra, rb = _ranks(sa), _ranks(sb)
    exact = ~(sa["wide"][:, None] | sb["wide"][None, :])
    low = np.minimum(ra[:, None], rb[None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(exact & (low > 0), unit_nuclear(sa, sb) / low, np.nan)
    for a, b, m, _ in _canonical(sa, sb, np.isnan(out) & (low > 0)):
        out[a, b] = guarded_sum(m, float(low[a, b])) / low[a, b]
    return _warn_empty(out, "cca")


def stack_width(vs: np.ndarray) -> int:
    """Rows of a (D, R) V diag(s) up to its last nonzero one: the layer's width, past which the stack pads with zeros
    (a zero row inside adds nothing to PWCCA's L1 weights either)."""
    nonzero = np.flatnonzero(vs.any(axis=1))
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def pwcca_all(sa: State, sb: State) -> np.ndarray:
    """(La, Lb) projection-weighted CCA: sum_i alpha_i rho_i / sum_i alpha_i, alpha_i = ||Xc^T h_i||_1 (A's columns)."""
    out = np.full((sa["u"].shape[0], sb["u"].shape[0]), np.nan)
    low = np.minimum(_ranks(sa)[:, None], _ranks(sb)[None, :])
    rows = [stack_width(vs) for vs in sa["vs"]]
    for a, b, m, ta in _canonical(sa, sb, low > 0):
        # h_i = U_a diag(t_a) w_i, so Xc^T h_i = V_a diag(s_a t_a) w_i
        proj = sa["vs"][a][: rows[a], : ta.size] * ta
        rho, bound, w = eigen_singular(m, left=True)
        alpha = np.abs(proj @ w).sum(axis=0)
        if alpha @ bound > EIG_TOL * alpha.sum():
            w, rho, _ = svd(m, vectors=True)
            alpha = np.abs(proj @ w).sum(axis=0)
        if alpha.sum() > 0:
            out[a, b] = float(alpha @ rho / alpha.sum())
    return _warn_empty(out, "pwcca")


def _one(all_pairs: Callable[[State, State], np.ndarray]) -> Callable[[State, State], float]:
    """The single-pair scorer of an all-pairs scorer."""

    def pair(sa: State, sb: State) -> float:
        return float(all_pairs(one_layer(sa), one_layer(sb))[0, 0])

    pair.__doc__ = f"One layer pair: {all_pairs.__doc__}"
    return pair


procrustes_pair = _one(procrustes_all)
shape_pair = _one(shape_all)
cca_pair = _one(cca_all)
pwcca_pair = _one(pwcca_all)


# ----------------------------------------------------------------------------- states from a KernelCache


def _params_state(params: dict[str, Any]) -> State:
    """The parameters a pair scorer reads, as 0-d arrays ("alpha" of the shape metric, "reg" of CCA / PWCCA)."""
    out = {}
    if "shape_alpha" in params:
        out["alpha"] = np.array(float(params["shape_alpha"]))
    if "reg" in params:
        out["reg"] = np.array(float(params["reg"]))
    return out


def _svd(cache: KernelCache, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Layer i's (U, s, V diag(s) where d <= n (the eigendecomposition's by-product) else None), memoised in the cache
    as one :func:`svd_parts` buffer."""
    return split_svd(cache.memo(("svd", i), lambda: svd_parts(cache.layers[i], projections=False)), cache.n)


def _projections(cache: KernelCache, i: int) -> np.ndarray:
    """Layer i's V diag(s) (d, r): the SVD's by-product where d <= n, else Xc^T U, memoised on its own (only PWCCA's
    model_x reads it)."""
    u, _, vs = _svd(cache, i)
    return vs if vs is not None else cache.memo(("svd-vs", i), lambda: centred(cache.layers[i]).T @ u)


def _wants_complement(params: dict[str, Any]) -> bool:
    """Whether a measure scores pairs with unit weights, from complements: CCA, and the shape metric at alpha 0."""
    return "reg" in params or params.get("shape_alpha") == 0.0


def _complement(u: np.ndarray, params: dict[str, Any], wide: bool, make: Callable[[], np.ndarray]) -> State:
    """{"w": complement basis, "cs": whether it was formed}: ``make()`` where some pair reads it, i.e. not for CCA's
    layers at least n wide (their pairs all take the ridge) nor where the complement is the larger side."""
    n, r = u.shape
    if "reg" in params and wide or 2 * r <= n - 1:
        return {"w": np.zeros((n, 0)), "cs": np.array(False)}
    return {"w": make(), "cs": np.array(True)}


def layer_state(cache: KernelCache, i: int, params: dict[str, Any], weights: bool = False) -> State:
    """Layer i's centred SVD state (shared through the cache by Procrustes, shape metric, CCA and PWCCA), with the
    complement basis for CCA and the shape metric at alpha 0, V diag(s) with ``weights`` (PWCCA's model_x)."""
    u, s, _ = _svd(cache, i)
    wide = cache.dims[i] >= cache.n
    state = {"u": u, "s": s, "wide": np.array(wide), **_params_state(params)}
    if weights:
        state["vs"] = _projections(cache, i)
    elif _wants_complement(params):
        state |= _complement(u, params, wide, lambda: cache.memo(("svd-complement", i), lambda: complement_basis(u)))
    return state


def pwcca_layer_state(cache: KernelCache, i: int, params: dict[str, Any]) -> State:
    """Layer i's PWCCA state: the centred SVD with V diag(s) (A's column projections)."""
    return layer_state(cache, i, params, weights=True)


def pwcca_y_state(cache: KernelCache, i: int, params: dict[str, Any]) -> State:
    """Layer i's PWCCA state as model_y: the centred SVD alone (V diag(s) is read from model_x only)."""
    u, s, _ = _svd(cache, i)
    return {"u": u, "s": s, "wide": np.array(cache.dims[i] >= cache.n), **_params_state(params)}


def resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any], weights: bool = False) -> State:
    """Layer i's state on bootstrap resample ``idx`` (rows resampled, SVD recomputed; copies carry double weight)."""
    x = cache.layers[i][idx]
    state = {**subspace_state(x, weights), **_params_state(params)}
    if not weights and _wants_complement(params):
        state |= _complement(state["u"], params, x.shape[1] >= x.shape[0], lambda: complement_basis(state["u"]))
    return state


def pwcca_resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> State:
    """Layer i's PWCCA state on bootstrap resample ``idx``."""
    return resampled_state(cache, i, idx, params, weights=True)


def pwcca_y_resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> State:
    """Layer i's PWCCA state as model_y on bootstrap resample ``idx`` (no V diag(s))."""
    return {**subspace_state(cache.layers[i][idx]), **_params_state(params)}


def permuted(state: State, perm: np.ndarray) -> State:
    """The state of inputs x[perm]: the basis rows (and the complement's) reordered; s, V diag(s) and the parameters
    unchanged."""
    moved = {**state, "u": state["u"][..., perm, :]}
    if "w" in state:
        moved["w"] = state["w"][..., perm, :]
    return moved
