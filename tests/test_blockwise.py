"""Bounded-memory large-n metrics (prh.metrics.blockwise) against the dense engine, brute force and each other."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prh.errors import PrhError
from prh.metrics import (
    LargeLayers,
    large_n_layerwise,
    large_n_pair,
    layerwise,
    pairwise,
)
from prh.metrics.blockwise import neighbour_lists, top_k_block
from prh.metrics.kernels import linear_kernel, neighbours
from prh.metrics.registry import RECORDS

LARGE = [m.name for m in RECORDS if m.large_n is not None]
KNN = ["mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def dyadic(n: int, d: int, seed: int, dup: int = 0) -> np.ndarray:
    """(n, d) float32 quarters in [-1, 1] (every Gram entry exact in float32, so any summation order agrees), with
    the first ``dup`` rows copied to random later positions: exact ties between whole rows and columns."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(-4, 5, size=(n, d)) / 4).astype(np.float32)
    for src, dst in enumerate(rng.choice(np.arange(dup, n), size=dup, replace=False)):
        x[dst] = x[src]
    return x


def brute_neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """Spec: the k largest x_i . x_j, j != i, by decreasing value, ties to the smaller j (python sort, float64)."""
    g = x.astype(np.float64) @ x.T.astype(np.float64)
    n = len(x)
    return np.array([sorted((j for j in range(n) if j != i), key=lambda j: (-g[i, j], j))[:k] for i in range(n)])


@pytest.mark.parametrize("rows", [1, 7, 64, None])
@pytest.mark.parametrize("k", [1, 5, 20, 59])
def test_neighbour_lists_equal_dense_and_brute_force_with_ties(rows: int | None, k: int) -> None:
    x = dyadic(60, 4, seed=k, dup=8)
    nbrs, vals = neighbour_lists(torch.from_numpy(x), k, rows)
    np.testing.assert_array_equal(nbrs, neighbours(linear_kernel(x), k))
    np.testing.assert_array_equal(nbrs, brute_neighbours(x, k))
    np.testing.assert_array_equal(vals, linear_kernel(x)[np.arange(60)[:, None], nbrs])


def test_top_k_block_resolves_ties_outside_the_candidates_by_smaller_index() -> None:
    g = torch.tensor([[1.0] * 12, [0.0, 2.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0]])
    got = top_k_block(g, 4).numpy()
    np.testing.assert_array_equal(got, [[0, 1, 2, 3], [8, 1, 5, 2]])


@pytest.mark.parametrize("metric", LARGE)
def test_large_n_equals_dense_engine_with_duplicated_rows(metric: str) -> None:
    a = [dyadic(80, 6, seed=1, dup=10), dyadic(80, 3, seed=2, dup=10)]
    b = [dyadic(80, 5, seed=3, dup=6), a[0][:, :4].copy()]
    params = {"k": 7} if metric in KNN + ["cknna"] else {}
    dense = layerwise(metric, a, b, **params)
    large = large_n_layerwise(metric, a, b, block_rows=9, **params)
    if metric in KNN:
        np.testing.assert_array_equal(large, dense)  # exact counts from identical neighbour lists
    elif metric == "cknna":
        np.testing.assert_allclose(large, dense, rtol=1e-9, atol=1e-12)  # the same sparse sums in another order
    else:
        np.testing.assert_allclose(large, dense, rtol=1e-7)  # dense: float32 centred kernels; sums: float64


@pytest.mark.parametrize("metric", LARGE)
def test_large_n_matches_dense_on_float_features(metric: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, 24)).astype(np.float32)
    y = (x[:, :12] @ rng.standard_normal((12, 16)) + 0.5 * rng.standard_normal((400, 16))).astype(np.float32)
    params = {"k": 10} if metric in KNN + ["cknna"] else {}
    # Float Grams from two summation orders may swap near-tied neighbours; on these features they do not.
    assert large_n_pair(metric, x, y, **params) == pytest.approx(pairwise(metric, x, y, **params), rel=1e-6, abs=1e-9)


def test_sample_chunk_iterables_equal_arrays_and_neighbours_are_shared() -> None:
    x, y = dyadic(90, 5, seed=7, dup=5), dyadic(90, 4, seed=8)
    chunks = (x[i : i + 16] for i in range(0, 90, 16))
    streamed = LargeLayers([chunks], rows=11)
    assert large_n_pair("mutual_knn", x, y, k=4) == large_n_layerwise("mutual_knn", streamed, [y], k=4)[0, 0]
    assert large_n_pair("cka", x, y) == pytest.approx(large_n_layerwise("cka", streamed, [y])[0, 0], rel=1e-12)
    first = streamed.neighbours(0, 4)
    large_n_layerwise("cknna", streamed, [y], k=4)
    assert streamed.neighbours(0, 4) is first


def test_read_only_chunks_are_accepted() -> None:
    x = dyadic(40, 4, seed=9)
    x.flags.writeable = False
    assert large_n_pair("unbiased_cka", [x[:25], x[25:]], x) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("metric", "params", "field"),
    [("cka", {"kernel": "rbf"}, "kernel"), ("svcca", {}, "metric"), ("rsa", {}, "metric"), ("mutual_knn", {"k": 40}, "k")],
)
def test_bad_input_is_one_line_naming_the_field(metric: str, params: dict, field: str) -> None:
    x = dyadic(40, 4, seed=3)
    with pytest.raises(PrhError, match=rf"^{field}") as err:
        large_n_pair(metric, x, x, **params)
    assert "\n" not in str(err.value)


def test_sample_count_mismatch_and_non_finite_features_are_errors() -> None:
    x = dyadic(40, 4, seed=3)
    with pytest.raises(PrhError, match="^b: A has 40 samples but B has 39"):
        large_n_pair("cka", x, x[:39])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(PrhError, match=r"^layers\[0\]: features contain NaN"):
        large_n_pair("mutual_knn", bad, x, k=3)


@CUDA
@pytest.mark.parametrize("metric", LARGE)
def test_cuda_equals_cpu(metric: str) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.tanh(x @ rng.standard_normal((64, 32))).astype(np.float32)
    params = {"k": 10} if metric in KNN + ["cknna"] else {}
    cpu = large_n_pair(metric, x, y, **params)
    assert large_n_pair(metric, x, y, device="cuda", **params) == pytest.approx(cpu, abs=1e-5)
