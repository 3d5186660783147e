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

Everything depends on B through its Gram L = Y Y^T alone, so a pair costs O(n^2), not O(n^2 d):

- A, per layer and fold, once (the dual form, so a 10,000-wide layer costs as much as an n-wide one): the
  eigendecomposition Kc = Q diag(w) Q^T of the centred training Gram and the held-out inputs' centred cross-Gram in
  that basis, E = Kc_te,tr Q. The held-out prediction of any Y is S Y_tr with the smoother
  S = 1 1^T / n_tr + E diag(1 / (w + alpha)) Q^T P (P = I - 1 1^T / n_tr), so
  SSE = ||Y_te - S Y_tr||^2 = tr(L_te,te) - 2 <S, L_te,tr> + <S^T S, L_tr,tr>, and GCV's training residual
  RSS = tr(P L_tr,tr P) - <G, L_tr,tr> with G = PQ diag(1 - alpha^2 / (w + alpha)^2) (PQ)^T.
- All pairs, per fold: one product of every A layer's (S, S^T S, G) per alpha, flattened, with every B layer's
  (L_te,tr, L_tr,tr), flattened; alpha per (A, B, fold) by GCV, then its SSE.

B's Gram is centred (J L J): the residuals are invariant to a shift of B (S's rows sum to 1), and the centred Gram
cancels less. Bootstrap resamples keep every copy of an input in that input's fold, so a held-out input's copy is
never in the training folds; GCV inside the training folds does see copies (it picks alpha only).
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
    """Memory of one layer's state: the float64 n x n Gram, each fold's Q (n_tr, r) and E (n_te, r) (r <= min(n, d)),
    the training Gram of the fold being decomposed (n_tr^2) and one fold's flattened Gram blocks (n^2)."""
    r = min(n, d)
    return 8 * (3 * n * n + 5 * n * r)


def fold_assignment(n: int, folds: int, seed: int) -> np.ndarray:
    """(n,) int64 fold of each input: ``default_rng(seed).permutation(n) % folds``."""
    return (np.random.default_rng(seed).permutation(n) % folds).astype(np.int64)


def centred_gram(x: np.ndarray) -> np.ndarray:
    """(n, d) features -> (n, n) float64 Gram of the column-centred features, J x x^T J."""
    z = x.astype(np.float64)
    z -= z.mean(axis=0)
    return z @ z.T


def _centred_blocks(gram: np.ndarray, tr: np.ndarray, te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Kc_tr,tr, Kc_te,tr): the Gram blocks of the features centred by the training inputs' mean."""
    k_tr, k_te = gram[np.ix_(tr, tr)], gram[np.ix_(te, tr)]
    mean = k_tr.mean(axis=0)  # m_j = mean over training l of <f_l, f_j>
    grand = mean.mean()
    return k_tr - mean[:, None] - mean[None, :] + grand, k_te - k_te.mean(axis=1, keepdims=True) - mean[None, :] + grand


def predictor_parts(gram: np.ndarray, fold: np.ndarray, alphas: np.ndarray) -> State:
    """A's per-fold dual ridge parts from its Gram. One alpha: "s{g}" (n_te, n_tr) the smoother S (Cholesky of
    Kc + alpha I). Several: "q{g}" (n_tr, r) eigenvectors and "w{g}" (r,) eigenvalues of the centred training Gram,
    "e{g}" (n_te, r) the held-out centred cross-Gram in that basis (r = the numerical rank)."""
    out = {}
    for g in range(int(fold.max()) + 1):
        tr, te = np.flatnonzero(fold != g), np.flatnonzero(fold == g)
        kc, kc_te = _centred_blocks(gram, tr, te)
        if alphas.size == 1:  # S = 1 1'/n_tr + Kc_te,tr (Kc + alpha I)^-1 (Kc_te,tr 1 = 0, so P drops out)
            kc[np.diag_indices_from(kc)] += alphas[0]
            factor = scipy.linalg.cho_factor(kc, check_finite=False)
            out[f"s{g}"] = scipy.linalg.cho_solve(factor, kc_te.T, check_finite=False).T + 1.0 / tr.size
            continue
        w, q = scipy.linalg.eigh(kc, check_finite=False)
        keep = w > RANK_TOL * w[-1] if w.size and w[-1] > 0 else np.zeros(w.size, dtype=bool)
        q, w = q[:, keep], w[keep]
        out[f"q{g}"], out[f"w{g}"], out[f"e{g}"] = q, w, kc_te @ q
    return out


def ridge_state(gram: np.ndarray, fold: np.ndarray, alphas: tuple[float, ...]) -> State:
    """A layer's state: its centred Gram, the fold of each position and the alphas (A's per-fold parts are added on
    first use as predictor, :func:`with_predictor`)."""
    return {"gram": gram, "fold": fold, "alphas": np.asarray(alphas, dtype=np.float64)}


def with_predictor(state: State) -> State:
    """``state`` with A's per-fold parts, computed from the Gram on first use and kept in it ((..., n, n) stacks):
    a model's states are scored against many models, and only a predicting side needs the parts."""
    if "s0" not in state and "q0" not in state:
        alphas = state["alphas"].reshape(-1, state["alphas"].shape[-1])[0]
        if state["gram"].ndim == 2:
            state.update(predictor_parts(state["gram"], state["fold"], alphas))
        else:
            state.update(padded_stack([predictor_parts(k, f, alphas) for k, f in zip(state["gram"], state["fold"])]))
    return state


def smoother_rows(part: dict[str, np.ndarray], alphas: np.ndarray) -> np.ndarray:
    """One A layer's weights on one fold's flattened B blocks [L_te,tr, L_tr,tr]: per alpha [-2 S, S'S] (SSE minus
    tr(L_te,te)), then, with several alphas, per alpha [0, -G] (GCV's RSS minus tr(P L_tr,tr P)); see the module doc.
    ``part``: {"s"} or {"q", "w", "e"} of one layer and fold."""
    if "s" in part:
        smoothers = [part["s"]]
    else:
        q, w, e = part["q"], part["w"], part["e"]
        pq = q - q.mean(axis=0)  # P Q (Q is orthogonal to 1 up to rounding)
        smoothers = [(e / (w + alpha)) @ pq.T + 1.0 / q.shape[0] for alpha in alphas]
    n_te, n_tr = smoothers[0].shape
    gcv = "s" not in part
    rows = np.zeros((len(smoothers) * (2 if gcv else 1), n_te * n_tr + n_tr * n_tr))
    for t, s in enumerate(smoothers):
        rows[t, : n_te * n_tr] = -2.0 * s.ravel()
        rows[t, n_te * n_tr :] = (s.T @ s).ravel()  # numpy hands a product with its own transpose to syrk
        if gcv:
            h = pq * np.sqrt(1.0 - (alphas[t] / (w + alphas[t])) ** 2)
            rows[len(smoothers) + t, n_te * n_tr :] = -(h @ h.T).ravel()
    return rows


def _gcv_choice(rss: np.ndarray, w: np.ndarray, n_tr: int, alphas: np.ndarray) -> np.ndarray:
    """(Lb,) index of the alpha minimising GCV = n_tr RSS / (n_tr - tr H)^2 per B layer, rss (alphas, Lb) (first of
    the smallest; alphas with tr H >= n_tr excluded)."""
    dof = 1.0 + (w[None, :] / (w[None, :] + alphas[:, None])).sum(axis=1)  # (A,)
    slack = n_tr - dof
    gcv = np.where(slack[:, None] > 0, n_tr * rss / np.where(slack > 0, slack, 1.0)[:, None] ** 2, np.inf)
    return np.argmin(gcv, axis=0)


def ridge_all(sa: State, sb: State) -> np.ndarray:
    """(La, Lb) out-of-fold variance-weighted R^2 of predicting every B layer from every A layer."""
    sa = with_predictor(sa)
    grams = sb["gram"]
    lb, la = grams.shape[0], sa["gram"].shape[0]
    fold, alphas = sa["fold"][0], sa["alphas"][0]
    keys = ("s",) if alphas.size == 1 else ("q", "w", "e")
    sse = np.zeros((la, lb))
    for g in range(int(fold.max()) + 1):
        tr, te = np.flatnonzero(fold != g), np.flatnonzero(fold == g)
        l_tr = grams[:, tr][:, :, tr]
        blocks = np.concatenate([grams[:, te][:, :, tr].reshape(lb, -1), l_tr.reshape(lb, -1)], axis=1).T
        base = np.einsum("bii->b", grams[:, te][:, :, te])  # tr(L_te,te)
        ss = np.einsum("bii->b", l_tr) - l_tr.sum(axis=(1, 2)) / tr.size  # tr(P L_tr,tr P)
        for a in range(la):
            part = {k: sa[f"{k}{g}"][a] for k in keys}
            terms = smoother_rows(part, alphas) @ blocks  # (alphas [x 2], Lb)
            pick = np.zeros(lb, dtype=np.int64)
            if alphas.size > 1:
                pick = _gcv_choice(ss[None, :] + terms[alphas.size :], part["w"], tr.size, alphas)
            sse[a] += base + terms[pick, np.arange(lb)]
    return _r2(sse, np.einsum("bii->b", grams))


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


def _gram(cache: KernelCache, i: int) -> np.ndarray:
    """Layer i's float64 centred Gram, memoised in the cache."""
    return cache.memo(("centred-gram64", i), lambda: centred_gram(cache.layers[i]))


def ridge_layer_state(cache: KernelCache, i: int, params: dict[str, Any]) -> State:
    """Layer i's ridge state (its centred Gram memoised in the cache)."""
    folds, seed, alphas = _settings(params)
    return ridge_state(_gram(cache, i), fold_assignment(cache.n, folds, seed), alphas)


def ridge_resampled_state(cache: KernelCache, i: int, idx: np.ndarray, params: dict[str, Any]) -> State:
    """Layer i's state on bootstrap resample ``idx``: its Gram's rows and columns resampled and re-centred, each copy
    in its input's fold."""
    folds, seed, alphas = _settings(params)
    gram = _gram(cache, i)[np.ix_(idx, idx)]
    gram = gram - gram.mean(axis=0) - gram.mean(axis=1, keepdims=True) + gram.mean()
    return ridge_state(gram, fold_assignment(cache.n, folds, seed)[idx], alphas)


def ridge_permuted(state: State, perm: np.ndarray) -> State:
    """State of inputs x[perm]: the Gram's rows and columns reordered (folds stay with positions); A's per-fold parts
    are dropped and rebuilt from the Gram only if this state is used to predict (the calibration permutes the
    predicted side)."""
    return {"gram": state["gram"][..., perm, :][..., perm], "fold": state["fold"], "alphas": state["alphas"]}
