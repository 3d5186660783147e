"""Calibration: chance levels, permutation null from cached kernels, bootstrap with duplicate exclusion; the null of
the max over layer pairs (issue 17): equal to calibrated-similarity, type-I error at alpha, shared work across pairs."""

from __future__ import annotations

import numpy as np
import pytest
from test_metrics import bf_mutual, gram64

from prh.align import prepare
from prh.errors import PrhError
from prh.metrics import (
    METRICS,
    bootstrap_ci,
    bootstrap_scores,
    calibrate,
    calibrate_layers,
    calibrate_models,
    calibrated,
    chance_level,
    layerwise,
    pairwise,
    permutation_array,
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
        for m in (k, k + 3, 2 * k + 10, 59):  # short lists send rows to the direct ranking; 59 = every other input
            ranked = neighbours(kern, m)
            np.testing.assert_array_equal(resampled_neighbours(kern, idx, k, ranked), want)
    assert resampled_neighbours(kern, np.sort(rng.integers(0, 3, size=60)), 5) is None  # too few distinct inputs


def test_ranked_bootstrap_neighbours_on_real_features() -> None:
    """The ranked route (full-kernel top-m lists, read per resample) equals the direct masked sort on real digits."""
    from sklearn.datasets import load_digits

    from prh.metrics.kernels import linear_kernel, neighbours, ranking_depth, resampled_neighbours

    x = load_digits().data[:600].astype(np.float32)  # integer pixels: many exact kernel ties
    kern = linear_kernel(x - x.mean(axis=0))
    k = 10
    m = ranking_depth(k, 600)
    assert m is not None and m < 600 // 4
    ranked = neighbours(kern, m)
    rng = np.random.default_rng(5)
    for _ in range(4):
        idx = np.sort(rng.integers(0, 600, size=600))
        dup = idx[:, None] == idx[None, :]
        np.fill_diagonal(dup, False)
        np.testing.assert_array_equal(resampled_neighbours(kern, idx, k, ranked), neighbours(kern[np.ix_(idx, idx)], k, dup))
    assert ranking_depth(200, 1000) is None  # lists as long as n / 4: the direct route


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


# ----------------------------------------------------------------------------- the null of the max over layer pairs

PACKAGE_CASES = [("mutual_knn", {"k": 5}), ("cka", {}), ("unbiased_cka", {}), ("cknna", {"k": 8}), ("cycle_knn", {"k": 5}),
                 ("rsa", {})]  # fmt: skip


def stacks(n: int, dims_x: tuple[int, ...], dims_y: tuple[int, ...], seed: int, noise: float) -> tuple[list, list]:
    """Two prepared layer stacks: noisy random views of one latent (noise = inf: independent stacks)."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, 6))
    view = lambda d: (0.0 if np.isinf(noise) else h @ rng.standard_normal((6, d))) + min(noise, 1e3) * rng.standard_normal((n, d))
    return prepare([view(d).astype(np.float32) for d in dims_x]), prepare([view(d).astype(np.float32) for d in dims_y])


@pytest.mark.parametrize("aggregate", ["max", "mean"])
@pytest.mark.parametrize("metric,params", PACKAGE_CASES, ids=[m for m, _ in PACKAGE_CASES])
def test_calibrate_layers_equals_the_reference_package(metric: str, params: dict, aggregate: str) -> None:
    torch = pytest.importorskip("torch")
    package = pytest.importorskip("calibrated_similarity")
    # x has fewer layers than y in one case and more in the other: prh permutes x by pi^-1 in the first
    for dims_x, dims_y, seed in (((7, 9), (8, 6, 5), 40), ((7, 9, 5, 6), (8, 6), 41)):
        xs, ys = stacks(60, dims_x, dims_y, seed, noise=2.5)
        perms = permutation_array(60, 39, seed)
        ours = calibrate_layers(xs, ys, metric, permutations=perms, bootstrap=0, aggregate=aggregate, **params)
        draws = iter(perms)
        cal, p, tau = package.calibrate_layers(
            [torch.from_numpy(x) for x in xs], [torch.from_numpy(y) for y in ys],
            lambda a, b: pairwise(metric, a, b, **params), agg=aggregate, K=39,
            perm_fn=lambda n, device, draws=draws: torch.from_numpy(next(draws)),
        )  # fmt: skip
        assert np.float32(ours.p_value) == p.item()  # exact: the same count of null >= observed
        assert ours.tau == pytest.approx(tau.item(), rel=1e-6, abs=1e-7)
        assert ours.calibrated == pytest.approx(cal.item(), rel=1e-5, abs=1e-6)
        assert ours.score == pytest.approx(layerwise(metric, xs, ys, **params).max() if aggregate == "max" else
                                           layerwise(metric, xs, ys, **params).mean(), abs=1e-12)  # fmt: skip


def test_independent_stacks_keep_the_type_one_error_at_alpha() -> None:
    # 40 seeds of two independent 6-layer stacks (7 with concat), n = 200, K = 99. With the add-one p-value,
    # P(p < 0.05) = 4/100 under the null; allow 0.05 * 40 = 2 plus 3 binomial sds (sqrt(40 * 0.05 * 0.95) = 1.38): <= 6.
    ps, cals, single = [], [], []
    for seed in range(40):
        xs, ys = stacks(200, (24,) * 6, (24,) * 6, seed, noise=np.inf)
        c = calibrate_layers(xs, ys, "mutual_knn", permutations=99, bootstrap=0, seed=seed, k=10)
        ps.append(c.p_value)
        cals.append(c.calibrated)
        # the null taken at the single best pair (before issue 17)
        single.append(calibrate("mutual_knn", xs[c.best[0]], ys[c.best[1]], n_perm=99, n_boot=1, seed=seed, k=10).p_value)
    print(f"p < 0.05: {np.count_nonzero(np.array(ps) < 0.05)}/40 (null of the max), "
          f"{np.count_nonzero(np.array(single) < 0.05)}/40 (null at the best pair)")
    assert np.count_nonzero(np.array(ps) < 0.05) <= 6
    assert np.count_nonzero(np.array(single) < 0.05) >= 20
    assert np.median(cals) == 0.0 and np.mean(np.array(cals) > 0) <= 0.15


def test_correlated_stacks_get_the_smallest_p_value() -> None:
    xs, ys = stacks(200, (16, 24, 12), (20, 10), 3, noise=1.0)
    c = calibrate_layers(xs, ys, "mutual_knn", permutations=99, bootstrap=20, k=10)
    assert c.p_value == pytest.approx(1 / 100) and c.calibrated > 0.05 and c.score > c.tau > c.null_mean
    assert c.ci_low < c.score < c.ci_high and c.bootstrap == 20 and c.permutations == 99
    assert c.effect == pytest.approx((c.score - c.null_mean) / (1 - c.null_mean))
    assert c.calibrated == pytest.approx((c.score - c.tau) / (1 - c.tau))
    assert c.chance == pytest.approx(10 / 199) and c.alpha == 0.05 and c.aggregate == "max"
    assert c.matrix.shape == (4, 3) and c.matrix[c.best] == c.score and c.null.shape == (99,)


def test_joint_row_permutation_leaves_every_number_unchanged() -> None:
    xs, ys = stacks(120, (16, 12), (10, 14, 8), 5, noise=2.0)
    perms = permutation_array(120, 49, 6)
    s = np.random.default_rng(7).permutation(120)
    inv = np.argsort(s)
    moved = inv[perms[:, s]]  # the same draws seen from the reordered inputs: s^-1 o pi o s
    for metric, params in (("mutual_knn", {"k": 6}), ("cka", {})):
        a = calibrate_layers(xs, ys, metric, permutations=perms, bootstrap=0, **params)
        b = calibrate_layers([x[s] for x in xs], [y[s] for y in ys], metric, permutations=moved, bootstrap=0, **params)
        # equal up to float32 Gram rounding (BLAS sums the reordered rows in another order)
        np.testing.assert_allclose(b.matrix, a.matrix, rtol=0, atol=1e-8)
        np.testing.assert_allclose(b.null, a.null, rtol=0, atol=1e-8)
        assert (b.p_value, b.best) == (a.p_value, a.best) and b.tau == pytest.approx(a.tau, abs=1e-8)


def test_calibrate_models_shares_work_and_equals_one_pair_calls() -> None:
    xs, ys = stacks(80, (10, 12), (9, 7, 11), 8, noise=2.0)
    zs, _ = stacks(80, (6,), (6,), 9, noise=2.0)
    models = {"x": xs, "y": ys, "z": zs}
    pairs = [("x", "y"), ("y", "x"), ("z", "y"), ("x", "z")]
    many = calibrate_models(models, pairs, "mutual_knn", permutations=29, bootstrap=7, seed=3, k=5)
    for x, y in pairs:
        one = calibrate_layers(models[x], models[y], "mutual_knn", permutations=29, bootstrap=7, seed=3, k=5)
        assert np.array_equal(many[(x, y)].summary(), one.summary(), equal_nan=True), (x, y)
        assert np.array_equal(many[(x, y)].null, one.null)
    assert many[("x", "y")].score == many[("y", "x")].score  # symmetric metric, each row calibrated on its own y
    assert many[("x", "y")].ci_high - many[("x", "y")].ci_low == pytest.approx(many[("y", "x")].ci_high - many[("y", "x")].ci_low)


def test_calibrate_layers_arguments() -> None:
    xs, ys = stacks(30, (5,), (6,), 1, noise=1.0)
    assert np.array_equal(calibrate_layers(xs, ys, "cka", permutations=9, bootstrap=0, seed=4).null,
                          calibrate_layers(xs, ys, "cka", permutations=permutation_array(30, 9, 4), bootstrap=0).null)  # fmt: skip
    c = calibrate_layers(xs, ys, "cka", permutations=5, bootstrap=0)
    assert np.isnan(c.ci_low) and np.isnan(c.ci_high) and c.bootstrap == 0
    bad = permutation_array(30, 3, 0)
    bad[1, :2] = 0
    for kwargs, field in [({"permutations": 0}, "permutations"), ({"permutations": bad}, "permutations"),
                          ({"permutations": np.zeros((3, 29), int)}, "permutations"), ({"bootstrap": -1}, "bootstrap"),
                          ({"alpha": 1.5}, "alpha"), ({"aggregate": "median"}, "aggregate")]:  # fmt: skip
        with pytest.raises(PrhError, match=f"^{field}: ") as err:
            calibrate_layers(xs, ys, "cka", **{"bootstrap": 0, **kwargs})
        assert "\n" not in str(err.value)
    with pytest.raises(PrhError, match="^models: "):
        calibrate_layers(xs, [ys[0][:20]], "cka")
