"""The field's other measures (issue 33) against independent computations from their definitions (numpy / scipy,
explicit loops and matrices), on random, structured and degenerate inputs (constant columns, n < d, duplicated rows),
plus each record's chance level, symmetry, orientation and bootstrap rules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.stats
from test_metrics import bf_neighbours, gram64

from prh.metrics import bootstrap_scores, get_metric, layerwise, pairwise, permutation_null
from prh.metrics.predictivity import ALPHAS, fold_assignment

EPS32 = float(np.finfo(np.float32).eps)


def rand(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def related(n: int, da: int, db: int, seed: int, noise: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Two views of a shared 6-d latent with their own noise."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 6))
    a = z @ rng.standard_normal((6, da)) + noise * rng.standard_normal((n, da))
    b = np.tanh(z @ rng.standard_normal((6, db))) + noise * rng.standard_normal((n, db))
    return a.astype(np.float32), b.astype(np.float32)


def degenerate(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs of one degenerate kind: constant columns, fewer inputs than features, duplicated rows (n = 30-40)."""
    if kind == "plain":
        return related(40, 7, 9, 1)
    if kind == "constant_columns":
        a, b = related(40, 7, 9, 2)
        a[:, 2] = 3.0
        b[:, [0, 5]] = -1.0
        return a, b
    if kind == "n_below_d":
        return related(20, 30, 26, 3)
    rows = np.arange(40) % 28  # inputs 0-11 appear twice
    a, b = related(28, 7, 9, 4)
    return a[rows], b[rows]


KINDS = ["plain", "constant_columns", "n_below_d", "duplicated_rows"]


# ----------------------------------------------------------------------------- independent computations


def centred(x: np.ndarray) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64)
    return z - z.mean(axis=0)


def svd_rank(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full SVD (scipy gesvd) cut at numpy's matrix_rank tolerance for float32 data."""
    u, s, vt = scipy.linalg.svd(z, full_matrices=False, lapack_driver="gesvd")
    keep = s > s[0] * max(z.shape) * EPS32
    return u[:, keep], s[keep], vt[keep].T


def ref_procrustes(a: np.ndarray, b: np.ndarray) -> float:
    """1 - min_Q ||A/|A| - B/|B| Q||^2 / 2 over orthogonal Q (scipy's orthogonal_procrustes, zero-padded)."""
    xa, xb = centred(a), centred(b)
    width = max(xa.shape[1], xb.shape[1])
    xa, xb = (np.pad(x, ((0, 0), (0, width - x.shape[1]))) / np.linalg.norm(x) for x in (xa, xb))
    q, _ = scipy.linalg.orthogonal_procrustes(xb, xa)
    return 1.0 - np.linalg.norm(xa - xb @ q) ** 2 / 2.0


def ref_shape(a: np.ndarray, b: np.ndarray, alpha: float) -> float:
    """cos of netrep's angle: partial whitening X (alpha I + (1 - alpha) (X'X)^(-1/2)) on X's range, then the
    normalised nuclear norm of Xw' Yw (zero padding changes no singular value)."""

    def whiten(x: np.ndarray) -> np.ndarray:
        xc = centred(x)
        lam, v = np.linalg.eigh(xc.T @ xc)
        root = np.sqrt(np.maximum(lam, 0.0))
        keep = root > root.max() * max(xc.shape) * EPS32  # netrep's whitening restricted to X's range
        z = (v[:, keep] * (alpha + (1 - alpha) / root[keep])) @ v[:, keep].T
        return xc @ z

    wa, wb = whiten(a), whiten(b)
    return float(np.linalg.svd(wa.T @ wb, compute_uv=False).sum() / (np.linalg.norm(wa) * np.linalg.norm(wb)))


def inv_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v / np.sqrt(w)) @ v.T


def ref_cca_parts(a: np.ndarray, b: np.ndarray, reg: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(canonical correlations, X's canonical variates h_i (n, k), Xc) from the textbook covariance form.

    Exact (on each side's rank-r column basis, QR-free: the range of the float32-rank SVD) when both widths are < n;
    with Cxx + reg I, Cyy + reg I (covariances over n - 1) on the raw columns when either width is >= n.
    """
    xa, xb = centred(a), centred(b)
    n = xa.shape[0]
    k = min(svd_rank(xa)[1].size, svd_rank(xb)[1].size)
    if max(xa.shape[1], xb.shape[1]) >= n:
        ma, mb = xa, xb
        cxx = ma.T @ ma / (n - 1) + reg * np.eye(ma.shape[1])
        cyy = mb.T @ mb / (n - 1) + reg * np.eye(mb.shape[1])
    else:
        ma, mb = (svd_rank(x)[0] * svd_rank(x)[1] for x in (xa, xb))  # coordinates in each side's own basis
        cxx, cyy = ma.T @ ma / (n - 1), mb.T @ mb / (n - 1)
    wx, wy = inv_sqrt(cxx), inv_sqrt(cyy)
    u, rho, _ = np.linalg.svd(wx @ (ma.T @ mb / (n - 1)) @ wy)
    h = ma @ wx @ u[:, :k]
    return rho[:k], h, xa


def ref_cca(a: np.ndarray, b: np.ndarray) -> float:
    return float(ref_cca_parts(a, b)[0].mean())


def ref_pwcca(a: np.ndarray, b: np.ndarray) -> float:
    """Morcos et al.: alpha_i = sum_j |<h_i, x_j>| over X's centred columns x_j; sum alpha_i rho_i / sum alpha_i."""
    rho, h, xa = ref_cca_parts(a, b)
    alpha = np.array([sum(abs(h[:, i] @ xa[:, j]) for j in range(xa.shape[1])) for i in range(rho.size)])
    return float(alpha @ rho / alpha.sum())


def ref_rv(a: np.ndarray, b: np.ndarray) -> float:
    ka, kb = centred(a) @ centred(a).T, centred(b) @ centred(b).T
    return float(np.trace(ka @ kb) / np.sqrt(np.trace(ka @ ka) * np.trace(kb @ kb)))


def ref_jaccard(a: np.ndarray, b: np.ndarray, k: int) -> float:
    na, nb = bf_neighbours(gram64(a), k), bf_neighbours(gram64(b), k)
    return float(np.mean([len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in zip(na, nb)]))


def ref_dcor(a: np.ndarray, b: np.ndarray) -> float:
    """Szekely et al. (2007) V-statistic with explicit double-centring loops."""

    def centred_distance(x: np.ndarray) -> np.ndarray:
        d = scipy.spatial.distance.cdist(x.astype(np.float64), x.astype(np.float64))
        n = d.shape[0]
        return np.array([[d[i, j] - d[i].mean() - d[:, j].mean() + d.mean() for j in range(n)] for i in range(n)])

    da, db = centred_distance(a), centred_distance(b)
    dcov2, va, vb = (da * db).mean(), (da * da).mean(), (db * db).mean()
    return float(np.sqrt(dcov2 / np.sqrt(va * vb)))


def ridge_gcv(xc: np.ndarray, yc: np.ndarray, alpha: float) -> float:
    """GCV of ridge with an unpenalised intercept on centred data: n RSS / (n - tr H)^2, H from its explicit form."""
    n = len(xc)
    hat = np.ones((n, n)) / n + xc @ np.linalg.solve(xc.T @ xc + alpha * np.eye(xc.shape[1]), xc.T)
    resid = yc - (hat - np.ones((n, n)) / n) @ yc
    return n * float((resid**2).sum()) / (n - np.trace(hat)) ** 2


def ref_predictivity(a: np.ndarray, b: np.ndarray, folds: int = 5, seed: int = 0, alphas=ALPHAS,
                     fold: np.ndarray | None = None) -> float:  # fmt: skip
    """Primal ridge with intercept per fold; alpha by GCV from the explicit hat matrix; variance-weighted R^2.
    ``fold``: the fold of each row (default: prh's seeded assignment)."""
    xa, yb = a.astype(np.float64), b.astype(np.float64)
    fold = fold_assignment(len(xa), folds, seed) if fold is None else fold
    sse = 0.0
    for g in range(folds):
        tr, te = fold != g, fold == g
        mx, my = xa[tr].mean(0), yb[tr].mean(0)
        xc, yc = xa[tr] - mx, yb[tr] - my
        best = min(alphas, key=lambda alpha, xc=xc, yc=yc: ridge_gcv(xc, yc, alpha))
        coef = np.linalg.solve(xc.T @ xc + best * np.eye(xc.shape[1]), xc.T @ yc)
        sse += float((((xa[te] - mx) @ coef + my - yb[te]) ** 2).sum())
    return 1.0 - sse / float(((yb - yb.mean(0)) ** 2).sum())


def ref_rdm(x: np.ndarray, kind: str) -> np.ndarray:
    """scipy pdist, zero-variance rows at dissimilarity 1 (as prh defines them), rounded like prh's RDMs."""
    d = scipy.spatial.distance.pdist(x.astype(np.float64), kind)
    return np.round(np.nan_to_num(d, nan=1.0), 10)


def tau_a_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall tau-a from its definition: sum over pairs i < j of sign(x_i - x_j) sign(y_i - y_j) / (m (m - 1) / 2)."""
    m = x.size
    s = np.sign(x[:, None] - x[None, :]) * np.sign(y[:, None] - y[None, :])
    return float(s[np.triu_indices(m, 1)].sum() / (m * (m - 1) / 2))


def ref_rsa(a: np.ndarray, b: np.ndarray, rdm: str, compare: str) -> float:
    da, db = ref_rdm(a, rdm), ref_rdm(b, rdm)
    if compare == "spearman":
        return float(scipy.stats.spearmanr(da, db).statistic)
    if compare == "pearson":
        return float(scipy.stats.pearsonr(da, db).statistic)
    if compare == "cosine":
        return float(1.0 - scipy.spatial.distance.cosine(da, db))
    return tau_a_loops(da, db)


REFERENCES = {
    "procrustes": (ref_procrustes, {}),
    "shape_metric": (lambda a, b: ref_shape(a, b, 0.5), {}),
    "cca": (ref_cca, {}),
    "pwcca": (ref_pwcca, {}),
    "rv_coefficient": (ref_rv, {}),
    "jaccard_knn": (lambda a, b: ref_jaccard(a, b, 5), {"k": 5}),
    "distance_correlation": (ref_dcor, {}),
    "linear_predictivity": (ref_predictivity, {}),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(REFERENCES))
def test_measure_equals_its_definition(name: str, kind: str) -> None:
    a, b = degenerate(kind)
    ref, params = REFERENCES[name]
    assert pairwise(name, a, b, **params) == pytest.approx(ref(a, b), abs=1e-6)
    if not get_metric(name).symmetric:  # asymmetric: the reversed order is the definition with roles swapped
        assert pairwise(name, b, a, **params) == pytest.approx(ref(b, a), abs=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
def test_shape_metric_interpolates_from_cca_to_procrustes(alpha: float) -> None:
    a, b = related(50, 6, 8, 5)
    got = pairwise("shape_metric", a, b, shape_alpha=alpha)
    assert got == pytest.approx(ref_shape(a, b, alpha), abs=1e-9)
    if alpha == 1.0:
        assert got == pytest.approx(pairwise("procrustes", a, b), abs=1e-12)
    if alpha == 0.0:  # sum of canonical correlations / sqrt(r_a r_b)
        rho = ref_cca_parts(a, b)[0]
        assert got == pytest.approx(rho.sum() / np.sqrt(6 * 8), abs=1e-9)


def wide_ranks(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Layers of rank above (n - 1) / 2 but widths below n (n = 40): CCA and the shape metric at alpha 0 take the
    complements. Constant columns and duplicated rows lower the ranks (to 28 / 25 and 27)."""
    rng = np.random.default_rng(23)
    if kind == "duplicated_rows":
        rows = np.arange(40) % 28
        a, b = related(28, 33, 30, 24)
        return a[rows], b[rows]
    a, b = related(40, 30, 26, 25)
    a = a + rng.standard_normal(a.shape).astype(np.float32)
    if kind == "constant_columns":
        a[:, [1, 4]] = 2.0
        b[:, 0] = -1.0
    return a, b


@pytest.mark.parametrize("kind", ["plain", "constant_columns", "duplicated_rows"])
def test_cca_and_whitened_shape_from_complements_equal_their_definitions(kind: str) -> None:
    from prh.metrics.subspace import subspace_state, unit_nuclear

    a, b = wide_ranks(kind)
    assert pairwise("cca", a, b) == pytest.approx(ref_cca(a, b), abs=1e-9)
    assert pairwise("shape_metric", a, b, shape_alpha=0.0) == pytest.approx(ref_shape(a, b, 0.0), abs=1e-9)
    sa, sb = (subspace_state(x, complement=True) for x in (a, b))
    assert bool(sa["cs"]) and bool(sb["cs"])
    direct = np.linalg.svd(sa["u"].T @ sb["u"], compute_uv=False).sum()
    stacked = unit_nuclear({k: v[None] for k, v in sa.items()}, {k: v[None] for k, v in sb.items()})
    assert stacked[0, 0] == pytest.approx(direct, abs=1e-10)
    small = related(40, 5, 6, 26)  # rank 5 < (n - 1) / 2: no complement, the direct SVD; mixed in one call
    got = layerwise("cca", [a, small[0]], [b, small[1]])
    want = [[ref_cca(x, y) for y in (b, small[1])] for x in (a, small[0])]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_procrustes_is_the_normalised_nuclear_norm() -> None:
    a, b = related(40, 7, 5, 6)
    nuclear = np.linalg.svd(centred(a).T @ centred(b), compute_uv=False).sum()
    want = nuclear / (np.linalg.norm(centred(a)) * np.linalg.norm(centred(b)))
    assert pairwise("procrustes", a, b) == pytest.approx(want, abs=1e-12)
    assert np.arccos(pairwise("procrustes", a, b)) == pytest.approx(np.arccos(ref_procrustes(a, b)), abs=1e-6)


@pytest.mark.parametrize("rdm", ["correlation", "cosine", "euclidean"])
@pytest.mark.parametrize("compare", ["spearman", "pearson", "cosine", "kendall_tau_a"])
@pytest.mark.parametrize("kind", ["plain", "duplicated_rows"])
def test_rsa_variants_equal_scipy(rdm: str, compare: str, kind: str) -> None:
    a, b = degenerate(kind)
    a, b = a[:24], b[:24]  # m = 276 pairs keeps the tau-a loops small
    assert pairwise("rsa", a, b, rdm=rdm, compare=compare) == pytest.approx(ref_rsa(a, b, rdm, compare), abs=1e-9)


def test_rsa_tau_a_with_heavy_ties_equals_the_definition() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(-1, 2, size=(30, 3)).astype(np.float32)  # few distinct distances: tied RDM entries
    b = (a + rng.integers(0, 2, size=(30, 3))).astype(np.float32)
    got = layerwise("rsa", [a, b], [b], rdm="euclidean", compare="kendall_tau_a")
    want = [[tau_a_loops(ref_rdm(x, "euclidean"), ref_rdm(b, "euclidean"))] for x in (a, b)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_jaccard_is_a_function_of_the_mutual_knn_overlap_and_its_chance_is_exact() -> None:
    a, b = related(60, 5, 6, 8)
    k = 7
    counts = [len(set(x) & set(y)) for x, y in zip(bf_neighbours(gram64(a), k), bf_neighbours(gram64(b), k))]
    assert pairwise("mutual_knn", a, b, k=k) == pytest.approx(np.mean(counts) / k, abs=1e-12)
    assert pairwise("jaccard_knn", a, b, k=k) == pytest.approx(np.mean([c / (2 * k - c) for c in counts]), abs=1e-12)
    # chance: mean of c / (2k - c) over all pairs of k-subsets of the n - 1 others, by enumeration for small n
    from itertools import combinations
    from math import comb

    n, k = 9, 3
    base = set(range(k))
    want = sum(len(base & set(s)) / len(base | set(s)) for s in combinations(range(n - 1), k)) / comb(n - 1, k)
    assert get_metric("jaccard_knn").chance(n, {"k": k}) == pytest.approx(want, abs=1e-12)


def test_jaccard_chance_matches_its_permutation_null() -> None:
    a, b = rand(120, 6, 1), rand(120, 6, 2)
    mean, std, _, samples = permutation_null("jaccard_knn", a, b, n_perm=60, seed=3, k=10)
    assert mean == pytest.approx(get_metric("jaccard_knn").chance(120, {"k": 10}), abs=4 * std / np.sqrt(samples.size) + 1e-3)


def test_rv_coefficient_equals_linear_cka() -> None:
    a, b = related(50, 8, 11, 9)
    assert pairwise("rv_coefficient", a, b) == pytest.approx(pairwise("cka", a, b), abs=1e-12)
    assert pairwise("rv_coefficient", a, b) == pytest.approx(ref_rv(a, b), abs=1e-6)  # float32 kernels, as CKA


def test_cca_regularises_only_when_a_width_reaches_n() -> None:
    a, b = related(30, 8, 10, 10)
    exact = pairwise("cca", a, b)
    assert exact == pytest.approx(ref_cca(a, b), abs=1e-9) and pairwise("cca", a, b, reg=0.5) == exact
    wide = np.hstack([b, rand(30, 25, 11)])  # 35 >= n: canonical correlations of singular covariances are all 1
    assert pairwise("cca", a, wide, reg=0.0) == pytest.approx(1.0, abs=1e-6)
    # the ridge is absolute (covariance units): on these O(1)-variance features 1e-6 barely moves it, 0.3 does
    assert 1.0 - 1e-4 < pairwise("cca", a, wide) < 1.0
    assert pairwise("cca", a, wide, reg=0.3) < 0.95
    for reg in (1e-6, 0.3):
        assert pairwise("cca", a, wide, reg=reg) == pytest.approx(float(ref_cca_parts(a, wide, reg=reg)[0].mean()), abs=1e-9)


def test_constant_features_give_nan_with_a_warning_never_an_exception() -> None:
    a, flat = rand(20, 4, 12), np.ones((20, 5), dtype=np.float32)
    for name in ("procrustes", "shape_metric", "cca", "pwcca", "distance_correlation", "rv_coefficient"):
        with pytest.warns(RuntimeWarning, match=name.split("_")[0] if name != "rv_coefficient" else "cka"):
            assert np.isnan(pairwise(name, a, flat)), name
    with pytest.warns(RuntimeWarning, match="ridge"):
        assert np.isnan(pairwise("linear_predictivity", a, flat))  # nothing to predict: SST = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = pairwise("linear_predictivity", flat, a)  # a constant predictor predicts the training mean
    assert got == pytest.approx(ref_predictivity(flat, a), abs=1e-9) and got < 0


def test_linear_predictivity_is_oriented_a_predicts_b() -> None:
    a, b = related(60, 12, 3, 13)
    record = get_metric("linear_predictivity")
    assert not record.symmetric and "predict" in record.orientation and record.permute_side == "y"
    assert pairwise("linear_predictivity", a, b) == pytest.approx(ref_predictivity(a, b), abs=1e-9)
    assert pairwise("linear_predictivity", b, a) == pytest.approx(ref_predictivity(b, a), abs=1e-9)
    assert pairwise("linear_predictivity", a, a[:, :4]) == pytest.approx(1.0, abs=1e-5)  # a subset of its own columns


@pytest.mark.parametrize("kind", KINDS)
def test_linear_predictivity_at_one_alpha_equals_its_definition(kind: str) -> None:
    """One alpha takes the Cholesky smoother (no eigendecomposition, no GCV): the primal ridge per fold, both
    orders, all layer pairs at once."""
    a, b = degenerate(kind)
    for alpha in (1e-3, 10.0):
        got = layerwise("linear_predictivity", [a, b], [b, a], ridge_alphas=[alpha])
        want = [[ref_predictivity(x, y, alphas=(alpha,)) for y in (b, a)] for x in (a, b)]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_linear_predictivity_folds_are_seeded_and_change_with_the_seed() -> None:
    a, b = related(60, 6, 5, 14)
    first = pairwise("linear_predictivity", a, b, fold_seed=3, folds=4)
    assert first == pairwise("linear_predictivity", a, b, fold_seed=3, folds=4)
    assert first == pytest.approx(ref_predictivity(a, b, folds=4, seed=3), abs=1e-9)
    assert first != pairwise("linear_predictivity", a, b, fold_seed=4, folds=4)
    assert fold_assignment(60, 4, 3).tolist() == (np.random.default_rng(3).permutation(60) % 4).tolist()


def test_linear_predictivity_bootstrap_keeps_copies_of_an_input_in_one_fold() -> None:
    a, b = related(40, 6, 5, 15)
    got = bootstrap_scores("linear_predictivity", a, b, n_boot=2, seed=4)
    rng = np.random.default_rng(4)
    for score in got:
        idx = np.sort(rng.integers(0, 40, size=40))
        fold = fold_assignment(40, 5, 0)[idx]  # each copy in its input's fold
        for g in range(5):
            assert not set(idx[fold == g]) & set(idx[fold != g])  # no held-out input has a copy in training
        assert score == pytest.approx(ref_predictivity(a[idx], b[idx], fold=fold), abs=1e-9)


def test_distance_correlation_bootstrap_re_centres_the_resampled_distances() -> None:
    a, b = related(30, 4, 5, 16)
    got = bootstrap_scores("distance_correlation", a, b, n_boot=2, seed=1)
    rng = np.random.default_rng(1)
    for score in got:
        idx = np.sort(rng.integers(0, 30, size=30))
        assert score == pytest.approx(ref_dcor(a[idx], b[idx]), abs=1e-6)


@pytest.mark.parametrize("name", ["procrustes", "cca", "distance_correlation", "rv_coefficient"])
def test_invariant_to_rotation_and_isotropic_scaling(name: str) -> None:
    a, b = related(40, 6, 6, 17)
    q, _ = np.linalg.qr(np.random.default_rng(18).standard_normal((6, 6)))
    assert pairwise(name, a, (3.0 * b @ q).astype(np.float32)) == pytest.approx(pairwise(name, a, b), abs=1e-5)


def test_layerwise_of_mixed_ranks_equals_pairwise() -> None:
    """Per-layer ranks differ (zero-padded states): every all-pairs kernel equals its single-pair scores."""
    a = [related(36, d, 4, s)[0] for d, s in ((3, 20), (12, 21), (40, 22))]  # ranks 3, 12, 35 (40 >= n)
    b = [related(36, 4, d, s)[1] for d, s in ((5, 30), (50, 31))]
    for name in ("procrustes", "shape_metric", "cca", "pwcca", "linear_predictivity", "distance_correlation"):
        got = layerwise(name, a, b)
        np.testing.assert_allclose(got, [[pairwise(name, x, y) for y in b] for x in a], rtol=0, atol=1e-9, err_msg=name)
