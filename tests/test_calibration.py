"""Calibration: chance levels, permutation null from cached kernels, bootstrap with duplicate exclusion."""

from __future__ import annotations

import numpy as np
import pytest
from test_metrics import bf_mutual, gram64

from prh.errors import PrhError
from prh.metrics import (
    METRICS,
    bootstrap_ci,
    bootstrap_scores,
    calibrate,
    calibrated,
    chance_level,
    pairwise,
    permutation_null,
)


def rand(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_chance_levels() -> None:
    assert chance_level("mutual_knn", 1024, 10) == pytest.approx(10 / 1023)
    assert chance_level("cycle_knn", 101, 5) == pytest.approx(1 - (1 - 5 / 100) ** 5)
    assert chance_level("unbiased_cka", 50) == 0.0
    assert chance_level("cka", 50) is None and chance_level("svcca", 50) is None
    with pytest.raises(PrhError, match="k:"):
        chance_level("mutual_knn", 10, 10)


def test_null_mean_of_mutual_knn_on_unrelated_data_is_chance() -> None:
    a, b = rand(200, 8, 0), rand(200, 8, 1)
    mean, std, p, samples = permutation_null("mutual_knn", a, b, n_perm=40, seed=3, k=10)
    assert samples.shape == (40,)
    assert mean == pytest.approx(10 / 199, abs=0.006)
    assert 0 < std < 0.02
    assert p > 0.01


@pytest.mark.parametrize("metric", METRICS)
def test_permutation_samples_equal_scores_of_row_shuffled_b(metric: str) -> None:
    a, b = rand(40, 6, 2), rand(40, 5, 3)
    p = {"dim": 3} if metric == "svcca" else {"k": 4} if metric != "cka" and metric != "unbiased_cka" else {}
    _, _, _, samples = permutation_null(metric, a, b, n_perm=3, seed=9, **p)
    rng = np.random.default_rng(9)
    want = [pairwise(metric, a, b[rng.permutation(40)], **p) for _ in range(3)]
    np.testing.assert_allclose(samples, want, atol=1e-6)


def test_p_value_small_for_aligned_data_and_formula() -> None:
    a = rand(80, 10, 4)
    b = a + 0.3 * rand(80, 10, 5)
    mean, std, p, samples = permutation_null("cka", a, b, n_perm=30, seed=0)
    observed = pairwise("cka", a, b)
    assert p == pytest.approx((1 + np.sum(samples >= observed)) / 31) and p == pytest.approx(1 / 31)
    assert mean == pytest.approx(samples.mean()) and std == pytest.approx(samples.std(ddof=1))


def test_ci_contains_score_for_aligned_data() -> None:
    a = rand(100, 10, 6)
    b = a + 0.5 * rand(100, 10, 7)
    for metric in ("mutual_knn", "cka", "unbiased_cka"):
        score = pairwise(metric, a, b, k=5)
        low, high = bootstrap_ci(metric, a, b, n_boot=30, seed=1, k=5)
        assert low < score < high, (metric, low, score, high)


def test_ci_is_recentred_on_the_score_when_replicates_are_biased() -> None:
    a = rand(200, 16, 21)
    b = a + 1.5 * rand(200, 16, 22)
    score = pairwise("mutual_knn", a, b, k=10)
    reps = bootstrap_scores("mutual_knn", a, b, n_boot=40, seed=4, k=10)
    raw_low, raw_high = np.quantile(reps, [0.025, 0.975])
    assert abs(reps.mean() - score) > 0.003  # ~63% distinct inputs per resample: fixed-k replicates are biased
    low, high = bootstrap_ci("mutual_knn", a, b, n_boot=40, seed=4, k=10)
    assert low < score < high
    assert high - low == pytest.approx(raw_high - raw_low, abs=1e-12)
    assert low == pytest.approx(raw_low - (reps.mean() - score), abs=1e-12)


def bf_bootstrap_mutual(a: np.ndarray, b: np.ndarray, idx: np.ndarray, k: int) -> float:
    """Mutual kNN on resampled rows where positions drawn from the same input are never neighbours (python sort)."""
    n = len(idx)

    def nbrs(kern):
        return [
            sorted((j for j in range(n) if j != i and idx[j] != idx[i]), key=lambda j: (-kern[i, j], j))[:k] for i in range(n)
        ]

    return bf_mutual(nbrs(gram64(a[idx])), nbrs(gram64(b[idx])), k)


def test_bootstrap_duplicates_are_not_neighbours() -> None:
    a, b = rand(100, 8, 8), rand(100, 8, 9)
    scores = bootstrap_scores("mutual_knn", a, b, n_boot=20, seed=2, k=5)
    rng = np.random.default_rng(2)
    idxs = [np.sort(rng.integers(0, 100, size=100)) for _ in range(20)]
    assert scores[0] == pytest.approx(bf_bootstrap_mutual(a, b, idxs[0], 5), abs=1e-12)
    naive = np.mean([pairwise("mutual_knn", a[i], b[i], k=5) for i in idxs])
    assert scores.mean() == pytest.approx(5 / 99, abs=0.02)
    assert naive > scores.mean() + 0.1  # counting duplicates as neighbours would inflate independent data


@pytest.mark.parametrize("k", [1, 5, 12])
def test_resampled_neighbours_equal_direct_masked_sort(k: int) -> None:
    from prh.metrics.kernels import linear_kernel, neighbours, resampled_neighbours

    x = rand(60, 4, 30)
    x[7] = x[3]  # a duplicated input: exact kernel ties between distinct inputs too
    x = np.round(x, 1)  # coarse values: more exact ties
    kern = linear_kernel(x)
    rng = np.random.default_rng(31)
    for _ in range(5):
        idx = np.sort(rng.integers(0, 60, size=60))
        dup = idx[:, None] == idx[None, :]
        np.fill_diagonal(dup, False)
        want = neighbours(kern[np.ix_(idx, idx)], k, dup)
        np.testing.assert_array_equal(resampled_neighbours(kern, idx, k), want)
    assert resampled_neighbours(kern, np.sort(rng.integers(0, 3, size=60)), 5) is None  # too few distinct inputs


def test_bootstrap_duplicates_do_not_inflate_kernel_metrics() -> None:
    a, b = rand(100, 8, 10), rand(100, 8, 11)
    for metric in ("unbiased_cka", "cknna"):
        scores = bootstrap_scores(metric, a, b, n_boot=10, seed=3, k=5)
        assert abs(np.nanmean(scores)) < 0.1, metric


def test_calibrated_and_calibrate() -> None:
    assert calibrated(0.6, 0.2) == pytest.approx(0.5)
    assert calibrated(0.2, 0.2, ceiling=1.0) == 0.0
    a = rand(60, 8, 12)
    b = a + 0.4 * rand(60, 8, 13)
    cal = calibrate("mutual_knn", a, b, n_perm=10, n_boot=10, seed=0, k=5)
    assert cal.score == pairwise("mutual_knn", a, b, k=5)
    assert cal.chance == pytest.approx(5 / 59)
    assert cal.calibrated == pytest.approx((cal.score - cal.null_mean) / (1 - cal.null_mean))
    assert cal.p_value == pytest.approx(1 / 11) and cal.ci_low <= cal.ci_high
    assert calibrate("mutual_knn", a, b, n_perm=10, n_boot=10, seed=0, k=5) == cal
    with pytest.raises(PrhError, match="n_perm"):
        calibrate("cka", a, b, n_perm=0, n_boot=5)
