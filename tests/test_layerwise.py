"""layerwise == pairwise for every layer pair and metric; reusable per-model caches; cache misuse errors."""

from __future__ import annotations

import numpy as np
import pytest

from prh.errors import PrhError
from prh.metrics import METRICS, layerwise, pairwise, prepare_layers, score_caches


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
