"""RSA against scipy (pdist 'correlation' RDMs compared by spearmanr) on random, structured and tied data; all layer
pairs from per-layer ranks; constant rows and RDMs; bootstrap leaves out pairs of copies."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats

from prh.metrics import bootstrap_scores, calibrate, get_metric, layerwise, pairwise, permutation_null


def scipy_rsa(a: np.ndarray, b: np.ndarray, decimals: int | None = None) -> float:
    """Spearman rho of the condensed correlation-distance RDMs (float64), optionally rounded before ranking."""
    da = scipy.spatial.distance.pdist(a.astype(np.float64), metric="correlation")
    db = scipy.spatial.distance.pdist(b.astype(np.float64), metric="correlation")
    if decimals is not None:
        da, db = np.round(da, decimals), np.round(db, decimals)
    return float(scipy.stats.spearmanr(da, db).statistic)


def rand(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random, noisy-copy, clustered and low-rank pairs (n = 40)."""
    a = rand(40, 12, 1)
    centres = rand(4, 6, 7) * 4
    clustered = (centres[np.arange(40) % 4] + 0.3 * rand(40, 6, 8)).astype(np.float32)
    low_rank = (rand(40, 2, 9) @ rand(2, 10, 10)).astype(np.float32)
    return {
        "random": (a, rand(40, 9, 2)),
        "noisy": (a, (a + 0.5 * rand(40, 12, 3)).astype(np.float32)),
        "clustered": (clustered, (clustered @ rand(6, 5, 9) + 0.5 * rand(40, 5, 10)).astype(np.float32)),
        "low_rank": (low_rank, (low_rank + 0.2 * rand(40, 10, 11)).astype(np.float32)),
    }


@pytest.mark.parametrize("kind", ["random", "noisy", "clustered", "low_rank"])
def test_rsa_matches_scipy(kind: str) -> None:
    a, b = pairs()[kind]
    assert pairwise("rsa", a, b) == pytest.approx(scipy_rsa(a, b), abs=1e-9)


def test_rsa_with_duplicated_inputs_ties_averaged_matches_scipy() -> None:
    """Copies of an input tie: their distances to any third input are equal, to each other 0 (to float noise,
    which scipy keeps: ~1e-16 apart, so it is compared at the 10 decimals within which prh counts values as tied)."""
    rows = np.arange(45) % 30  # inputs 0-14 appear twice
    a, b = rand(30, 8, 4)[rows], rand(30, 5, 5)[rows]
    b = b + 0.5 * a[:, :5]
    assert pairwise("rsa", a, b) == pytest.approx(scipy_rsa(a, b, decimals=10), abs=1e-9)
    assert abs(pairwise("rsa", a, b) - scipy_rsa(a, b)) < 1e-5  # float-noise tie breaking moves scipy by ~1e-6


def test_rsa_on_discrete_features_ties_equal_values() -> None:
    """Few distinct correlations: mathematically equal dissimilarities tie (equal to 10 decimals)."""
    rng = np.random.default_rng(6)
    a = rng.integers(-1, 2, size=(40, 4)).astype(np.float32)
    b = (a + rng.integers(0, 2, size=(40, 4))).astype(np.float32)
    for x in (a, b):
        x[x.std(axis=1) == 0, 0] += 1  # no constant rows (scipy's correlation is undefined there)
    da = np.round(scipy.spatial.distance.pdist(a.astype(np.float64), "correlation"), 10)
    assert np.unique(da).size < da.size / 20  # heavily tied
    assert pairwise("rsa", a, b) == pytest.approx(scipy_rsa(a, b, decimals=10), abs=1e-9)


def test_layerwise_equals_pairwise_ranks_each_layer_once(monkeypatch: pytest.MonkeyPatch) -> None:
    a = [rand(36, d, s) for d, s in ((8, 20), (15, 21), (5, 22))]
    b = [(a[0] @ rand(8, d, s) + rand(36, d, s + 1)).astype(np.float32) for d, s in ((6, 30), (9, 32), (11, 34), (4, 36))]
    from prh.metrics import rsa

    calls = []
    real = rsa.average_ranks
    monkeypatch.setattr(rsa, "average_ranks", lambda x: calls.append(x.size) or real(x))
    got = layerwise("rsa", a, b)
    assert len(calls) == 7  # one ranking per layer, none per pair
    monkeypatch.undo()
    want = np.array([[pairwise("rsa", x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, [[scipy_rsa(x, y) for y in b] for x in a], rtol=0, atol=1e-9)
    np.testing.assert_allclose(layerwise("rsa", b, a), got.T, rtol=0, atol=1e-12)  # symmetric


@pytest.mark.parametrize("levels", [3, 40, 10**9])
def test_average_ranks_equal_scipy_rankdata(levels: int) -> None:
    """Heavy ties (3 distinct values), some ties, none; constant and single values."""
    from prh.metrics.rsa import average_ranks

    values = np.random.default_rng(levels % 97).integers(0, levels, size=1001).astype(np.float64)
    np.testing.assert_array_equal(average_ranks(values), scipy.stats.rankdata(values))
    for edge in (np.full(7, 2.5), np.array([4.0])):
        np.testing.assert_array_equal(average_ranks(edge), scipy.stats.rankdata(edge))


def test_constant_rows_are_uncorrelated_and_constant_rdm_is_nan() -> None:
    a, b = pairs()["noisy"]
    a = a.copy()
    a[3] = 0.0  # a zero row: correlation 0 with every other row, dissimilarity 1
    da = scipy.spatial.distance.pdist(a.astype(np.float64), "correlation")
    db = scipy.spatial.distance.pdist(b.astype(np.float64), "correlation")
    da[np.isnan(da)] = 1.0
    assert pairwise("rsa", a, b) == pytest.approx(float(scipy.stats.spearmanr(da, db).statistic), abs=1e-9)
    with pytest.warns(RuntimeWarning, match="rsa"):
        assert np.isnan(pairwise("rsa", rand(20, 1, 0), rand(20, 4, 1)))  # one feature: every row constant


def test_record_maximum_chance_and_permutation_null() -> None:
    record = get_metric("rsa")
    assert record.symmetric and record.max_value == 1.0 and record.chance(100, {}) == 0.0
    assert record.defaults() == {"rdm": "correlation", "compare": "spearman"}
    a, b = pairs()["noisy"]
    assert pairwise("rsa", a, a) == pytest.approx(1.0, abs=1e-12)
    assert pairwise("rsa", a, 3.0 * a + 1.0) == pytest.approx(1.0, abs=1e-12)  # RDM invariant to affine row maps
    x, y = rand(60, 6, 40), rand(60, 6, 41)
    mean, std, _, samples = permutation_null("rsa", x, y, n_perm=40, seed=2)
    assert abs(mean) < 4 * std / np.sqrt(samples.size) + 0.01
    rng = np.random.default_rng(2)
    want = [pairwise("rsa", x, y[rng.permutation(60)]) for _ in range(40)]
    np.testing.assert_allclose(samples, want, rtol=0, atol=1e-9)
    cal = calibrate("rsa", a, b, n_perm=10, n_boot=10, seed=0)
    assert cal.chance == 0.0 and cal.p_value == pytest.approx(1 / 11) and cal.ci_low <= cal.score <= cal.ci_high


def test_bootstrap_leaves_out_pairs_of_copies() -> None:
    a, b = pairs()["noisy"]
    scores = bootstrap_scores("rsa", a, b, n_boot=3, seed=5)
    rng = np.random.default_rng(5)
    for score in scores:
        idx = np.sort(rng.integers(0, 40, size=40))
        i, j = np.triu_indices(40, 1)
        keep = idx[i] != idx[j]
        da = scipy.spatial.distance.pdist(a[idx].astype(np.float64), "correlation")[keep]
        db = scipy.spatial.distance.pdist(b[idx].astype(np.float64), "correlation")[keep]
        assert score == pytest.approx(float(scipy.stats.spearmanr(np.round(da, 10), np.round(db, 10)).statistic), abs=1e-9)
