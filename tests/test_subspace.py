"""The subspace measures' singular values by the eigen route (eigenvalues of the cross-product's Gram) and its precision
guard: the bound holds, the scores equal their definitions (numpy SVDs) and the gesdd route on random, low-rank and
degenerate inputs, and the guard falls back to gesdd exactly where its bound exceeds EIG_TOL."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_measures import centred, ref_cca_parts, ref_pwcca, ref_shape, related, svd_rank

from prh.metrics import layerwise, pairwise
from prh.metrics import subspace as sub


@pytest.fixture
def gesdd_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shapes of the matrices the gesdd route decomposes (a spy on prh.metrics.subspace.svd)."""
    calls: list[tuple[int, ...]] = []
    real = sub.svd

    def spy(m: np.ndarray, vectors: bool = False) -> Any:
        calls.append(m.shape)
        return real(m, vectors)

    monkeypatch.setattr(sub, "svd", spy)
    return calls


def by_gesdd(monkeypatch: pytest.MonkeyPatch, name: str, a: np.ndarray, b: np.ndarray, **params: Any) -> float:
    """The score with every pair forced onto the gesdd route (a negative tolerance fails every guard)."""
    with monkeypatch.context() as patch:
        patch.setattr(sub, "EIG_TOL", -1.0)
        return pairwise(name, a, b, **params)


def ref_procrustes_svd(a: np.ndarray, b: np.ndarray) -> float:
    """||Xc^T Yc||_* / (||Xc||_F ||Yc||_F) (numpy SVD), each side cut to its float32 rank as prh defines it."""
    xa, xb = ((u * s) @ v.T for u, s, v in (svd_rank(centred(x)) for x in (a, b)))
    return float(np.linalg.svd(xa.T @ xb, compute_uv=False).sum() / (np.linalg.norm(xa) * np.linalg.norm(xb)))


def low_rank(n: int, d: int, rank: int, seed: int) -> np.ndarray:
    """(n, d) float32 features of rank ``rank`` with a decaying spectrum (3 decades)."""
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal((n, rank)) * np.logspace(0, -3, rank)) @ rng.standard_normal((rank, d))).astype(np.float32)


def partly_orthogonal(n: int = 300, r: int = 100, shared: int = 40, seed: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Two rank-r layers whose spans share ``shared`` directions and are orthogonal otherwise (U_a^T U_b has r - shared
    zero singular values), one shared direction 30x the others: the eigen route's bound is far above EIG_TOL."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(centred(rng.standard_normal((n, 2 * r - shared))))
    scale = np.ones(r)
    scale[0] = 30.0
    a = (q[:, :r] * scale) @ rng.standard_normal((r, r))
    b = (q[:, np.r_[0, r - shared + 1 : 2 * r - shared]] * scale) @ rng.standard_normal((r, r))
    return a.astype(np.float32), b.astype(np.float32)


@pytest.mark.parametrize("kind", ["random", "graded", "rank_deficient", "clustered"])
def test_eigen_singular_values_lie_within_their_bound(kind: str) -> None:
    rng = np.random.default_rng(1)
    m = rng.standard_normal((60, 45))
    if kind == "graded":
        m = np.logspace(0, -6, 60)[:, None] * m * np.logspace(0, -4, 45)
    if kind == "rank_deficient":
        m = m[:, :20] @ rng.standard_normal((20, 45))
    if kind == "clustered":  # 30 singular values of exactly 1: the left vectors are any basis of their space
        u, _ = np.linalg.qr(rng.standard_normal((60, 45)))
        v, _ = np.linalg.qr(rng.standard_normal((45, 45)))
        m = (u * np.r_[np.ones(30), np.linspace(0.9, 0.1, 15)]) @ v.T
    exact = np.linalg.svd(m, compute_uv=False)
    for left in (False, True):
        for x in (m, m.T):
            sigma, bound, w = sub.eigen_singular(x, left=left)
            assert sigma.shape == bound.shape == (45,)
            assert np.all(np.abs(sigma - exact) <= bound), (kind, left)
            if left:  # orthonormal, and x^T w_i = sigma_i v_i: ||x^T w_i|| = exact sigma_i
                np.testing.assert_allclose(w.T @ w, np.eye(45), atol=1e-12)
                assert np.all(np.abs(np.linalg.norm(x.T @ w, axis=0) - exact) <= bound + 1e-12 * exact[0]), kind
    assert sub.eigen_singular(np.zeros((0, 5)))[0].size == 0
    assert np.isnan(sub.eigen_singular(np.zeros((4, 3)))[1]).all()  # no scale to bound against: the guard fails
    assert sub.guarded_sum(np.zeros((4, 3)), 1.0) == 0.0


@pytest.mark.parametrize("data", ["random", "low_rank"])
def test_scores_by_the_eigen_route_equal_their_definitions(data: str, gesdd_calls: list) -> None:
    """n = 300 and 120- / 90-wide layers (low rank: 40 / 25 directions over 3 decades): numpy SVDs to 1e-10, and no
    pair takes gesdd."""
    if data == "random":
        a, b = related(300, 120, 90, 41, noise=1.0)
    else:
        a, b = low_rank(300, 120, 40, 42), low_rank(300, 90, 25, 43)
        b = (b + 0.1 * low_rank(300, 90, 25, 44) * a[:, :90]).astype(np.float32)
    assert pairwise("procrustes", a, b) == pytest.approx(ref_procrustes_svd(a, b), abs=1e-10)
    for alpha in (0.25, 0.5):
        assert pairwise("shape_metric", a, b, shape_alpha=alpha) == pytest.approx(ref_shape(a, b, alpha), abs=1e-10)
    assert pairwise("cca", a, b) == pytest.approx(float(ref_cca_parts(a, b)[0].mean()), abs=1e-10)
    assert pairwise("pwcca", a, b) == pytest.approx(ref_pwcca(a, b), abs=1e-8)
    assert gesdd_calls == []


def nearly_identical() -> tuple[np.ndarray, np.ndarray]:
    a, _ = related(60, 12, 9, 45)
    return a, (a + 1e-4 * np.random.default_rng(46).standard_normal(a.shape)).astype(np.float32)


def degenerate_pair(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """n < d (the ridge), duplicated rows, rank-deficient layers, a constant column, nearly identical layers."""
    if kind == "n_below_d":
        return related(30, 45, 38, 47)
    if kind == "duplicated_rows":
        a, b = related(40, 12, 9, 48)
        rows = np.arange(60) % 40
        return a[rows], b[rows]
    if kind == "rank_deficient":
        return low_rank(60, 20, 6, 49), low_rank(60, 15, 4, 50) + related(60, 5, 15, 51)[1] * 0.01
    if kind == "constant_column":
        a, b = related(60, 12, 9, 52)
        a[:, 3] = 2.0
        return a, b
    return nearly_identical()


@pytest.mark.parametrize("kind", ["n_below_d", "duplicated_rows", "rank_deficient", "constant_column", "nearly_identical"])
def test_degenerate_inputs_score_as_by_gesdd(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = degenerate_pair(kind)
    for name, params in (("procrustes", {}), ("shape_metric", {"shape_alpha": 0.5}), ("cca", {})):
        got = pairwise(name, a, b, **params)
        assert got == pytest.approx(by_gesdd(monkeypatch, name, a, b, **params), abs=1e-10), name
    assert pairwise("procrustes", a, b) == pytest.approx(ref_procrustes_svd(a, b), abs=1e-10)


@pytest.mark.parametrize("kind", ["distinct", "n_below_d", "duplicated_rows"])
def test_pwcca_by_the_eigen_route_equals_gesdd_where_correlations_are_distinct(kind: str,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """PWCCA's weights need the canonical vectors, well defined only where the correlations are distinct."""
    a, b = related(200, 30, 40, 53) if kind == "distinct" else degenerate_pair(kind)
    for x, y in ((a, b), (b, a)):
        got = pairwise("pwcca", x, y)
        assert got == pytest.approx(by_gesdd(monkeypatch, "pwcca", x, y), abs=1e-8)
        assert got == pytest.approx(ref_pwcca(x, y), abs=1e-8)


def test_guard_falls_back_on_a_rank_deficient_cross_product(gesdd_calls: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """60 zero singular values under a dominant one: the bound (~1e-5) exceeds EIG_TOL, the pair takes gesdd (once)
    and equals the definition; well-conditioned layers never fall back, in one all-pairs call with the degenerate
    pair."""
    a, b = partly_orthogonal()
    sa, sb = sub.subspace_state(a), sub.subspace_state(b)
    m = (sa["s"][:, None] * (sa["u"].T @ sb["u"])) * sb["s"]
    sigma, bound, _ = sub.eigen_singular(m)
    assert bound.sum() > 10 * sub.EIG_TOL * np.linalg.norm(sa["s"]) * np.linalg.norm(sb["s"])
    assert np.sum(sigma < 1e-6 * sigma[0]) == 60
    assert pairwise("procrustes", a, b) == pytest.approx(ref_procrustes_svd(a, b), abs=1e-10)
    assert gesdd_calls == [(100, 100)]
    gesdd_calls.clear()
    c, d = related(300, 80, 70, 54, noise=1.0)
    got = layerwise("procrustes", [a, c], [b, d])
    assert gesdd_calls == [(100, 100)]  # only the (a, b) pair
    want = [[ref_procrustes_svd(x, y) for y in (b, d)] for x in (a, c)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    with monkeypatch.context() as patch:  # tolerance 0: every pair with a nonzero bound falls back
        patch.setattr(sub, "EIG_TOL", 0.0)
        gesdd_calls.clear()
        np.testing.assert_allclose(layerwise("procrustes", [a, c], [b, d]), want, rtol=0, atol=1e-10)
        assert len(gesdd_calls) == 4


def test_unit_weight_zero_correlations_stay_within_the_bound(gesdd_calls: list, monkeypatch: pytest.MonkeyPatch) -> None:
    """CCA of partly orthogonal spans: 60 correlations of exactly 0 come out as ~sqrt(eps) each (the eigen route's
    known weakness); the bound covers them and stays under EIG_TOL, so no fallback; gesdd gets the definition."""
    a, b = partly_orthogonal()
    sa, sb = sub.subspace_state(a), sub.subspace_state(b)
    bound = sub.eigen_singular(sa["u"].T @ sb["u"])[1]
    want = float(ref_cca_parts(a, b)[0].mean())
    got = pairwise("cca", a, b)
    assert gesdd_calls == [] and bound.sum() / 100 < sub.EIG_TOL
    assert abs(got - want) <= bound.sum() / 100 + 1e-12
    assert by_gesdd(monkeypatch, "cca", a, b) == pytest.approx(want, abs=1e-10)


@pytest.mark.parametrize("rough", [True, False])
@pytest.mark.parametrize("n, d", [(60, 45), (61, 59), (40, 21), (40, 80), (300, 240)])
def test_complement_basis_spans_the_rest_of_the_centred_space(n: int, d: int, rough: bool) -> None:
    """The complement from a projected Gaussian block (first pass in float32 or float64): orthonormal, and
    [1/sqrt(n), U, W] completes R^n (projector identity, against numpy's complete QR); (n, 0) where the basis fills
    the centred space."""
    x = low_rank(n, d, min(n - 1, d), 7) + np.random.default_rng(8).standard_normal((n, d)).astype(np.float32)
    u = sub.subspace_state(x)["u"]
    w = sub.complement_basis(u, rough)
    assert w.shape == (n, n - 1 - u.shape[1])
    np.testing.assert_allclose(w.T @ w, np.eye(w.shape[1]), rtol=0, atol=1e-13)
    q, _ = np.linalg.qr(np.hstack([np.full((n, 1), 1 / np.sqrt(n)), u]), mode="complete")
    rest = q[:, u.shape[1] + 1 :]
    np.testing.assert_allclose(w @ w.T, rest @ rest.T, rtol=0, atol=1e-13)


def test_cca_wide_layers_take_no_complement_and_pwcca_model_y_no_projections() -> None:
    """CCA's layers at least n wide (ridge pairs only) build no complement; PWCCA's model_y state holds no V diag(s)
    (nor is Xc^T U formed for its wide layers), and the scores equal the definition and the full-state scores."""
    from prh.metrics import KernelCache, get_metric, prepare_layers

    n = 40
    a, b = related(n, 12, 9, 31)  # spans meeting only in 0: distinct correlations (PWCCA's weights well defined)
    wide_a, wide_b = related(n, 50, 64, 32)
    cca = prepare_layers("cca", [related(n, 30, 4, 30)[0], wide_a]).arrays
    assert cca["cs"].tolist() == [True, False] and cca["w"].shape == (2, n, n - 1 - 30)
    ka, kb = KernelCache([a, wide_a]), KernelCache([b, wide_b])
    got = layerwise("pwcca", ka, kb)
    assert "vs" not in prepare_layers("pwcca", kb, y_only=True).arrays and ("svd-vs", 1) not in kb._memo
    full_b = get_metric("pwcca").layer_states(kb, {"reg": sub.CCA_REG})
    x_full = prepare_layers("pwcca", ka).arrays
    np.testing.assert_array_equal(got, sub.pwcca_all(x_full, full_b))
    want = [[ref_pwcca(x, y) for y in (b, wide_b)] for x in (a, wide_a)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8)
    u, _, vs = sub.centred_svd(wide_a)  # Xc^T U formed on demand for a wide model_x equals V diag(s)
    np.testing.assert_allclose(x_full["vs"][1][:50, : u.shape[1]], vs, rtol=0, atol=1e-12)


def test_a_model_y_only_cache_cannot_score_as_model_x() -> None:
    from prh.errors import PrhError
    from prh.metrics import prepare_layers, score_caches

    a, b = related(40, 30, 26, 33)
    light = prepare_layers("pwcca", [b], y_only=True)
    with pytest.raises(PrhError, match="y_only"):
        score_caches("pwcca", light, prepare_layers("pwcca", [a]))


def test_pwcca_calibration_with_model_y_states_equals_full_states(monkeypatch: pytest.MonkeyPatch) -> None:
    """calibrate_layers gives its model_y the lighter state (permutations and bootstrap included): the same matrix,
    null and interval as with the full state on both sides."""
    import dataclasses

    from prh.metrics import calibrate_layers, layer_calibration, registry

    a, b = related(40, 12, 9, 34)
    xs, ys = [a, a[:, :7]], [b, b[:, :5]]
    record = registry.get_metric("pwcca")
    calls: list[int] = []
    spy = lambda *args: calls.append(1) or sub.pwcca_y_resampled_state(*args)  # noqa: E731
    light_record = dataclasses.replace(record, y_resample_state=spy)
    monkeypatch.setattr(layer_calibration, "get_metric", lambda name: light_record)
    light = calibrate_layers(xs, ys, "pwcca", permutations=5, bootstrap=4, seed=3)
    assert len(calls) == 4 * len(ys)  # each bootstrap draw resamples model_y's layers with the lighter state
    full = dataclasses.replace(record, y_state=None, y_resample_state=None)
    monkeypatch.setattr(layer_calibration, "get_metric", lambda name: full)
    heavy = calibrate_layers(xs, ys, "pwcca", permutations=5, bootstrap=4, seed=3)
    for f in dataclasses.fields(light):
        np.testing.assert_array_equal(getattr(light, f.name), getattr(heavy, f.name), err_msg=f.name)


@pytest.mark.parametrize("db", [70, 90])
def test_complement_pairs_by_the_eigen_route_equal_the_definition(db: int, gesdd_calls: list,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Both ranks above (n - 1) / 2 (n = 120; 80- and 70- / 90-wide layers, so every pair takes the complements): CCA
    and the shape metric at alpha 0 from the complements' Gram eigenvalues equal the textbook canonical correlations
    to 1e-10 and the gesdd route on the complements to 1e-12, with no fallback."""
    a, b = related(120, 80, db, 53, noise=1.0)
    sa, sb = sub.subspace_state(a, complement=True), sub.subspace_state(b, complement=True)
    assert bool(sa["cs"]) and bool(sb["cs"])
    rho = ref_cca_parts(a, b)[0]
    assert pairwise("cca", a, b) == pytest.approx(float(rho.mean()), abs=1e-10)
    shape_score = pairwise("shape_metric", a, b, shape_alpha=0.0)
    assert shape_score == pytest.approx(float(rho.sum() / np.sqrt(80 * db)), abs=1e-10)
    assert gesdd_calls == []
    for name, params in (("cca", {}), ("shape_metric", {"shape_alpha": 0.0})):
        got = pairwise(name, a, b, **params)
        assert got == pytest.approx(by_gesdd(monkeypatch, name, a, b, **params), abs=1e-12), name
    assert gesdd_calls and all(shape == (119 - 80, 119 - db) for shape in gesdd_calls)
