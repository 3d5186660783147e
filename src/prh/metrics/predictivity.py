"""Linear predictivity (Brain-Score style): cross-validated ridge regression from A's features to B's, scored by the
variance-weighted out-of-fold R^2 (spec: METRICS.md, "The field's other measures").

Asymmetric: model A (model_x, first) predicts model B (model_y). The n inputs fall into ``folds`` folds (input i in
fold ``permutation(n)[i] % folds`` of ``default_rng(fold_seed)``: seeded, deterministic, sizes within 1). For each
fold, ridge with an unpenalised intercept is fitted on the other folds (centred by their means) and predicts the
held-out inputs; its alpha is chosen from ``ridge_alphas`` on the training folds by generalised cross-validation
(Golub, Heath and Wahba 1979: GCV(alpha) = n_tr RSS / (n_tr - tr H)^2, tr H = 1 + sum_k w_k / (w_k + alpha); one
alpha for all of B's columns, the first of the smallest). Score: R^2 = 1 - sum_j SSE_j / sum_j SST_j over B's
columns (sklearn's ``r2_score(multioutput="variance_weighted")`` of the out-of-fold predictions), at most 1,
negative when predictions are worse than B's mean.

Per layer, once (A's role): for each fold the eigendecomposition Kc = Q diag(w) Q^T of the centred training Gram (the
dual form, so a 10,000-wide layer costs as much as an n-wide one) and the held-out inputs' cross-Gram in that basis,
E = Kc_te,tr Q. B's role needs only F, any matrix with B's Gram (B itself when d <= n, else U diag(sqrt(lambda)) of
B's Gram): SSE, SST and GCV depend on B through its Gram alone. A pair is then per fold Z = Q^T Fc_tr (one GEMM
for all B layers), GCV of every alpha from the row norms of Z, and the held-out predictions E diag(1 / (w + alpha)) Z.
Bootstrap resamples keep every copy of an input in that input's fold, so a held-out input's copy is never in the
training folds; GCV inside the training folds does see copies (it picks alpha only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg

from prh.metrics.shared import one_layer, padded_stack

if TYPE_CHECKING:
    from prh.metrics.shared import KernelCache

State = dict[str, np.ndarray]
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
RANK_TOL = 1e-12  # eigenvalues below RANK_TOL * w_max of a training Gram are dropped (shrunk to ~0 by any alpha)


def state_bytes(n: int, d: int) -> int:
    """Memory of one layer's state: float64 F (n, min(n, d)), each fold's Q (n_tr, r) and E (n_te, r) (r <= min(n, d))
    and the training Gram of the fold being decomposed (n_tr^2)."""
    r = min(n, d)
    return 8 * (n * r + 5 * n * r + n * n)


def fold_assignment(n: int, folds: int, seed: int) -> np.ndarray:
    """(n,) int64 fold of each input: ``default_rng(seed).permutation(n) % folds``."""
    return (np.random.default_rng(seed).permutation(n) % folds).astype(np.int64)


def gram_coordinates(x: np.ndarray) -> np.ndarray:
    """(n, d) features -> float64 F with F F^T = x x^T: x itself when d <= n, else U diag(sqrt(lambda)) (n, n)."""
    z = x.astype(np.float64)
    if z.shape[1] <= z.shape[0]:
        return z
    w, u = scipy.linalg.eigh(z @ z.T, check_finite=False)
    return u * np.sqrt(np.maximum(w, 0.0))


def predictor_parts(f: np.ndarray, fold: np.ndarray, folds: int) -> State:
    """A's per-fold dual ridge parts: "q{g}" (n_tr, r) eigenvectors and "w{g}" (r,) eigenvalues of the centred
    training Gram, "e{g}" (n_te, r) held-out cross-Gram in that basis (r = the Gram's numerical rank)."""
    out = {}
    for g in range(folds):
        tr, te = fold != g, fold == g
        ftc = f[tr] - f[tr].mean(axis=0)
        w, q = scipy.linalg.eigh(ftc @ ftc.T, check_finite=False)
        keep = w > RANK_TOL * w[-1] if w.size and w[-1] > 0 else np.zeros(w.size, dtype=bool)
        q, w = q[:, keep], w[keep]
        out[f"q{g}"], out[f"w{g}"] = q, w
        out[f"e{g}"] = ((f[te] - f[tr].mean(axis=0)) @ ftc.T) @ q
    return out


def ridge_state(f: np.ndarray, fold: np.ndarray, folds: int, alphas: tuple[float, ...]) -> State:
    """A layer's state in both roles: F and the fold of each position (B), the per-fold dual parts (A), the alphas."""
    return {"f": f, "fold": fold, "alphas": np.asarray(alphas, dtype=np.float64),
            **predictor_parts(f, fold, folds)}  # fmt: skip


def with_predictor(state: State) -> State:
    """A state with A's per-fold parts, recomputed from F where a permutation dropped them ((..., n, r) stacks)."""
    folds = int(state["fold"].max()) + 1
    if "q0" in state:
        return state
    if state["f"].ndim == 2:
        return {**state, **predictor_parts(state["f"], state["fold"], folds)}
    parts = padded_stack([predictor_parts(f, fold, folds) for f, fold in zip(state["f"], state["fold"])])
    return {**state, **parts}


def _gcv_alpha(z2: np.ndarray, w: np.ndarray, ss: np.ndarray, n_tr: int, alphas: np.ndarray) -> np.ndarray:
    """(Lb,) alpha minimising GCV per B layer: z2 (r, Lb) squared row norms of Z, ss (Lb,) ||Fc_tr||^2."""
    shrink = alphas[:, None] / (w[None, :] + alphas[:, None])  # (A, r)
    rss = (shrink * shrink) @ z2 + (ss - z2.sum(axis=0))[None, :]  # (A, Lb)
    dof = 1.0 + (w[None, :] / (w[None, :] + alphas[:, None])).sum(axis=1)  # (A,)
    slack = n_tr - dof
    gcv = np.where(slack[:, None] > 0, n_tr * rss / np.where(slack > 0, slack, 1.0)[:, None] ** 2, np.inf)
    return alphas[np.argmin(gcv, axis=0)]


def ridge_all(sa: State, sb: State) -> np.ndarray:
    """(La, Lb) out-of-fold variance-weighted R^2 of predicting every B layer from every A layer."""
    sa = with_predictor(sa)
    fb = sb["f"]  # (Lb, n, rb)
    lb, _, rb = fb.shape
    fold, alphas = sa["fold"][0], sa["alphas"][0]
    la = sa["f"].shape[0]
    sse = np.zeros((la, lb))
    for g in range(int(fold.max()) + 1):
        tr, te = fold != g, fold == g
        mu = fb[:, tr].mean(axis=1, keepdims=True)
        ftc, fte = fb[:, tr] - mu, fb[:, te] - mu
        ss = np.einsum("bij,bij->b", ftc, ftc)
        flat = np.ascontiguousarray(ftc.transpose(1, 0, 2)).reshape(int(tr.sum()), lb * rb)
        for a in range(la):
            q, w, e = sa[f"q{g}"][a], sa[f"w{g}"][a], sa[f"e{g}"][a]
            z = (q.T @ flat).reshape(-1, lb, rb)  # (r, Lb, rb)
            best = _gcv_alpha(np.einsum("kbj,kbj->kb", z, z), w, ss, int(tr.sum()), alphas)
            for b in range(lb):
                resid = fte[b] - (e / (w + best[b])) @ z[:, b, :]
                sse[a, b] += np.einsum("ij,ij->", resid, resid)
    centred = fb - fb.mean(axis=1, keepdims=True)
    sst = np.einsum("bij,bij->b", centred, centred)
    return _r2(sse, sst)


def _r2(sse: np.ndarray, sst: np.ndarray) -> np.ndarray:
    """1 - SSE / SST per (a, b); NaN (with a warning) where B is constant (SST = 0)."""
    import warnings

    bad = ~(sst > 0)
    if bad.any():
        warnings.warn(f"ridge: predicted side constant for {int(bad.sum())} layer(s); R^2 is NaN", RuntimeWarning,
                      stacklevel=3)  # fmt: skip
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bad[None, :], np.nan, 1.0 - sse / np.where(bad, 1.0, sst)[None, :])


def ridge_pair(sa: State, sb: State) -> float:
    """Out-of-fold variance-weighted R^2 of predicting B from A (one layer pair)."""
    return float(ridge_all(one_layer(sa), one_layer(sb))[0, 0])


# ----------------------------------------------------------------------------- states from a KernelCache


def _settings(params: dict[str, Any]) -> tuple[int, int, tuple[float, ...]]:
    """(folds, fold_seed, alphas) of the resolved parameters."""
    return int(params["folds"]), int(params["fold_seed"]), tuple(params["ridge_alphas"])


def ridge_layer_state(cache: KernelCache, i: int, params: dict[str, Any]) -> State:
    """Layer i's ridge state (F memoised in the cache)."""
    folds, seed, alphas = _settings(params)
    f = cache.memo(("gram-coordinates", i), lambda: gram_coordinates(cache.layers[i]))
    return ridge_state(f, fold_assignment(cache.n, folds, seed), folds, alphas)


def ridge_resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> State:
    """Layer i's state on bootstrap resample ``idx``: rows of F resampled, each copy in its input's fold."""
    folds, seed, alphas = _settings(params)
    f = cache.memo(("gram-coordinates", i), lambda: gram_coordinates(cache.layers[i]))
    return ridge_state(f[idx], fold_assignment(cache.n, folds, seed)[idx], folds, alphas)


def ridge_permuted(state: State, perm: np.ndarray) -> State:
    """State of inputs x[perm]: F's rows reordered (folds stay with positions); A's per-fold parts are dropped and
    rebuilt from F only if this state is used to predict (the calibration permutes the predicted side)."""
    return {"f": state["f"][..., perm, :], "fold": state["fold"], "alphas": state["alphas"]}
