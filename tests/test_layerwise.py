"""layerwise == pairwise for every layer pair and metric; reusable per-model caches; shared kernels; misuse errors."""

from __future__ import annotations

import numpy as np
import pytest

from prh.errors import PrhError
from prh.metrics import (
    METRICS,
    KernelCache,
    layerwise,
    layerwise_many,
    pairwise,
    prepare_kernels,
    prepare_layers,
    score_caches,
)


def model_layers(n: int, dims: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Layers correlated with each other (a random walk through feature space) with differing widths."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, 16))
    out = []
    for d in dims:
        h = h + 0.7 * rng.standard_normal((n, 16))
        out.append((h @ rng.standard_normal((16, d))).astype(np.float32))
    return out


def params_for(metric: str) -> dict:
    return {"svcca": {"dim": 6}, "cka": {"kernel": "rbf", "sigma": 6.0}}.get(metric, {"k": 7})


@pytest.mark.parametrize("metric", METRICS)
def test_layerwise_equals_pairwise_for_every_pair(metric: str) -> None:
    a, b = model_layers(48, (8, 20, 13), 0), model_layers(48, (11, 7, 30, 9), 1)
    p = params_for(metric) if metric in ("svcca", "cka", "cknna") or metric.endswith("knn") else {}
    got = layerwise(metric, a, b, **p)
    want = np.array([[pairwise(metric, x, y, **p) for y in b] for x in a])
    assert got.shape == (3, 4)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_linear_cka_layerwise_equals_pairwise() -> None:
    a, b = model_layers(48, (8, 20), 2), model_layers(48, (11, 7, 30), 3)
    np.testing.assert_allclose(layerwise("cka", a, b), [[pairwise("cka", x, y) for y in b] for x in a], atol=1e-6)


def test_three_dimensional_input_and_torch_layers() -> None:
    torch = pytest.importorskip("torch")
    a = np.stack(model_layers(40, (10, 10, 10), 4))
    b = model_layers(40, (6, 9), 5)
    want = layerwise("mutual_knn", list(a), b, k=5)
    np.testing.assert_array_equal(layerwise("mutual_knn", a, b, k=5), want)
    np.testing.assert_array_equal(layerwise("mutual_knn", torch.from_numpy(a), [torch.from_numpy(x) for x in b], k=5), want)


def test_mutual_knn_counts_are_exact_integers() -> None:
    a, b = model_layers(64, (9, 12, 5), 6), model_layers(64, (7, 10), 7)
    counts = layerwise("mutual_knn", a, b, k=9) * 64 * 9
    np.testing.assert_array_equal(counts, np.round(counts))


def test_mutual_knn_layer_codes_span_several_bytes() -> None:
    """19 A layers need three code bytes; every (a, b) count equals a per-pair set intersection loop, with the
    stacked codes, without them (a permuted state) and with A and B swapped."""
    from prh.metrics.kernels import linear_kernel, neighbours
    from prh.metrics.knn import knn_permuted, knn_stack, knn_state, mutual_knn_all

    n, k = 50, 6
    a, b = model_layers(n, (5,) * 19, 8), model_layers(n, (9, 4, 12), 9)
    lists = lambda layers: [neighbours(linear_kernel(x), k) for x in layers]
    na, nb = lists(a), lists(b)
    want = np.array([[sum(len(set(x[i]) & set(y[i])) for i in range(n)) / (n * k) for y in nb] for x in na])
    sa = knn_stack([knn_state(linear_kernel(x), k) for x in a])
    sb = knn_stack([knn_state(linear_kernel(x), k) for x in b])
    assert sa["codes"].shape == (3, n * n)
    np.testing.assert_array_equal(mutual_knn_all(sa, sb), want)
    np.testing.assert_array_equal(mutual_knn_all({"nbrs": sa["nbrs"], "ind": sa["ind"]}, sb), want)
    np.testing.assert_array_equal(mutual_knn_all(sb, sa), want.T)
    perm = np.random.default_rng(0).permutation(n)
    moved = knn_permuted(sa, perm)
    assert "codes" in moved
    np.testing.assert_array_equal(mutual_knn_all(moved, knn_permuted(sb, perm)), want)


@pytest.mark.parametrize("metric", ["cknna", "lcs_knn", "edit_distance_knn"])
def test_large_k_layerwise_equals_pairwise(metric: str) -> None:
    a, b = model_layers(30, (5, 9), 8), model_layers(30, (4, 6), 9)
    got = layerwise(metric, a, b, k=29)
    np.testing.assert_allclose(got, [[pairwise(metric, x, y, k=29) for y in b] for x in a], atol=1e-6)


def test_cache_reused_against_many_models() -> None:
    a = model_layers(40, (8, 12), 10)
    cache_a = prepare_layers("unbiased_cka", a)
    assert len(cache_a) == 2 and cache_a.n == 40
    for seed in (11, 12):
        b = model_layers(40, (5, 9, 7), seed)
        got = score_caches("unbiased_cka", cache_a, prepare_layers("unbiased_cka", b))
        np.testing.assert_array_equal(got, layerwise("unbiased_cka", a, b))


def test_cache_misuse_raises() -> None:
    a, b = model_layers(40, (8,), 13), model_layers(40, (6,), 14)
    ca, cb = prepare_layers("mutual_knn", a, k=5), prepare_layers("mutual_knn", b, k=6)
    with pytest.raises(PrhError, match="params"):
        score_caches("mutual_knn", ca, cb)
    with pytest.raises(PrhError, match="cache_a"):
        score_caches("cka", ca, cb)
    with pytest.raises(PrhError, match="samples"):
        score_caches("mutual_knn", ca, prepare_layers("mutual_knn", [x[:30] for x in b], k=5))
    with pytest.raises(PrhError, match="same number of samples"):
        layerwise("cka", [a[0], a[0][:30]], b)
    with pytest.raises(PrhError, match="layers"):
        layerwise("cka", [], b)


ALL_PARAMS = {
    "mutual_knn": {"k": 5},
    "cycle_knn": {"k": 5},
    "lcs_knn": {"k": 5},
    "edit_distance_knn": {"k": 5},
    "cka": {"kernel": "rbf", "sigma": 6.0},
    "unbiased_cka": {},
    "cknna": {"k": 5},
    "svcca": {"dim": 4},
}


def test_layerwise_many_equals_plain_layerwise_bit_identical() -> None:
    a, b = model_layers(50, (8, 20, 13), 20), model_layers(50, (11, 7), 21)
    got = layerwise_many(ALL_PARAMS, a, b)
    assert list(got) == list(ALL_PARAMS)
    for metric, p in ALL_PARAMS.items():
        np.testing.assert_array_equal(got[metric], layerwise(metric, a, b, **p))
        want = np.array([[pairwise(metric, x, y, **p) for y in b] for x in a])
        np.testing.assert_allclose(got[metric], want, rtol=0, atol=1e-6)
    by_name = layerwise_many(["cka", "mutual_knn"], a, b)
    np.testing.assert_array_equal(by_name["cka"], layerwise("cka", a, b))
    np.testing.assert_array_equal(by_name["mutual_knn"], layerwise("mutual_knn", a, b))


def test_kernel_cache_shared_across_metrics_and_equal_to_plain_path() -> None:
    a, b = model_layers(44, (9, 14), 22), model_layers(44, (6, 10, 12), 23)
    ka, kb = prepare_kernels(a), prepare_kernels(b)
    assert isinstance(ka, KernelCache) and len(ka) == 2 and ka.n == 44 and ka.dims == (9, 14)
    assert prepare_kernels(ka) is ka
    gram = ka.gram(1)
    np.testing.assert_array_equal(gram, a[1] @ a[1].T)
    for metric, p in ALL_PARAMS.items():
        np.testing.assert_array_equal(layerwise(metric, ka, kb, **p), layerwise(metric, a, b, **p))
        cached = score_caches(metric, prepare_layers(metric, ka, **p), prepare_layers(metric, kb, **p))
        np.testing.assert_array_equal(cached, layerwise(metric, a, b, **p))
    assert ka.gram(1) is gram  # computed once, reused by every metric
    assert not gram.flags.writeable
    ka.clear()
    assert ka.gram(1) is not gram and np.array_equal(ka.gram(1), gram)


def test_kernel_cache_validates_and_layerwise_many_rejects_unknown_metric() -> None:
    a = model_layers(30, (5,), 24)
    with pytest.raises(PrhError, match="same number of samples"):
        prepare_kernels([a[0], a[0][:20]])
    with pytest.raises(PrhError, match="mutual_knn, cycle_knn"):
        layerwise_many(["nope"], a, a)


def hsic1(k: np.ndarray, l: np.ndarray) -> float:
    """Dense HSIC_1 as written in METRICS.md (float64, matrix product K~ L~, diagonals zeroed)."""
    n = k.shape[0]
    kt, lt = k.astype(np.float64), l.astype(np.float64)
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    cross = one @ kt @ lt @ one
    return (np.trace(kt @ lt) + kt.sum() * lt.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def test_cknna_sparse_terms_equal_dense_hsic1_with_reciprocal_neighbours() -> None:
    from prh.metrics.kernels import indicator, neighbours

    x = model_layers(36, (6,), 25)[0]
    y = model_layers(36, (5,), 26)[0]
    ka, kb = x @ x.T, y @ y.T
    ma, mb = indicator(neighbours(ka, 8), 36), indicator(neighbours(kb, 8), 36)
    m = ma & mb
    dense = hsic1(np.where(m, ka, 0), np.where(m, kb, 0)) / np.sqrt(
        hsic1(np.where(ma, ka, 0), np.where(ma, ka, 0)) * hsic1(np.where(mb, kb, 0), np.where(mb, kb, 0))
    )
    assert pairwise("cknna", x, y, k=8) == pytest.approx(dense, abs=1e-12)


@pytest.mark.parametrize("metric,params,key", [("cka", {}, "k"), ("cka", {"kernel": "rbf", "sigma": 5.0}, "k"),
                                               ("unbiased_cka", {}, "k"), ("cknna", {"k": 6}, "kern")])  # fmt: skip
def test_stacked_states_share_the_cache_kernels_and_equal_the_per_layer_states(metric: str, params: dict, key: str) -> None:
    from prh.metrics import get_metric
    from prh.metrics.registry import resolve_params
    from prh.metrics.shared import stacked

    cache = prepare_kernels(model_layers(40, (8, 12, 5), 27))
    record = get_metric(metric)
    p = resolve_params(record, params, cache.n, cache.dims)
    got = record.layer_states(cache, p)
    want = stacked([record.state(cache, i, p) for i in range(len(cache))])
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    kernels = cache.rbfs(5.0) if params.get("kernel") == "rbf" else cache.grams()
    assert got[key] is kernels  # the cache's buffer, not a copy
