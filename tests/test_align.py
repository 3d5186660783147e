"""prepare() vs an independent exact-quantile computation; the best layer pair of the pipeline's scoring path
(prepare -> prepare_layers -> score_caches -> best_pair): orientation, ties, NaN."""

from __future__ import annotations

import numpy as np
import pytest

from prh.align import best_pair, prepare
from prh.errors import PrhError
from prh.metrics import get_metric, layerwise, prepare_layers, score_caches


def heavy_tailed_layers(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_t(2, size=(30, d)).astype(np.float32) for d in (7, 12, 5)]


def reference_prepare(layers: list[np.ndarray], q: float) -> list[np.ndarray]:
    """Independent computation: full sort of all |values|, index floor(q N) clipped, clamp, per-row l2 norm."""
    values = np.sort(np.concatenate([np.abs(x).ravel() for x in layers]).astype(np.float64))
    tau = values[min(int(np.floor(q * values.size)), values.size - 1)]
    clipped = [np.clip(x.astype(np.float64), -tau, tau) for x in layers]
    out = []
    for x in clipped + [np.hstack(clipped)]:
        rows = []
        for r in x:
            norm = np.sqrt(np.sum(r**2))
            rows.append(r / norm if norm > 0 else r)
        out.append(np.array(rows))
    return out


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.999, 1.0])
def test_prepare_matches_exact_quantile(q: float) -> None:
    layers = heavy_tailed_layers(0)
    got, want = prepare(layers, q=q), reference_prepare(layers, q)
    assert len(got) == 4
    for g, w in zip(got, want):
        assert g.dtype == np.float32 and g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=2e-7)


def test_prepare_clips_with_one_threshold_per_model() -> None:
    layers = heavy_tailed_layers(1)
    layers[0] = layers[0] * 100  # one loud layer dominates the joint quantile
    tau = np.sort(np.abs(np.concatenate([x.ravel() for x in layers])))[int(0.95 * sum(x.size for x in layers))]
    out = prepare(layers, q=0.95)
    quiet = layers[2] / np.linalg.norm(layers[2], axis=1, keepdims=True)
    assert np.abs(layers[2]).max() < tau
    np.testing.assert_allclose(out[2], quiet, atol=2e-7)


def test_prepare_q1_no_clipping_zero_rows_and_3d() -> None:
    layers = heavy_tailed_layers(2)
    layers[1][3] = 0
    out = prepare(layers, q=1.0)
    np.testing.assert_allclose(out[0], layers[0] / np.linalg.norm(layers[0], axis=1, keepdims=True), atol=2e-7)
    assert not out[1][3].any()
    cube = np.stack([np.random.default_rng(3).standard_normal((20, 6)) for _ in range(2)])
    assert [x.shape for x in prepare(cube)] == [(20, 6), (20, 6), (20, 12)]
    with pytest.raises(PrhError, match="q:"):
        prepare(layers, q=0.0)


def paired_models(seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """x layer 1 and y layer 2 share structure (y = rotated x); everything else is unrelated noise."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((60, 10))
    x = [rng.standard_normal((60, 8)), shared, rng.standard_normal((60, 5))]
    rot, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    y = [rng.standard_normal((60, 6)), rng.standard_normal((60, 7)), shared @ rot, rng.standard_normal((60, 9))]
    return [v.astype(np.float32) for v in x], [v.astype(np.float32) for v in y]


def layer_pair_scores(x: list[np.ndarray], y: list[np.ndarray], metric: str, k: int = 5) -> np.ndarray:
    """Every layer-pair score, model x first, computed as the experiment and the scorer do."""
    params = {"k": k} if "k" in get_metric(metric).param_names else {}
    cx, cy = (prepare_layers(metric, prepare(f, q=1.0), **params) for f in (x, y))
    return score_caches(metric, cx, cy, **params)


@pytest.mark.parametrize("metric", ["mutual_knn", "cka", "cycle_knn"])
def test_best_pair_finds_the_shared_layers_with_x_first(metric: str) -> None:
    x, y = paired_models()
    matrix = layer_pair_scores(x, y, metric)
    assert matrix.shape == (4, 5)  # 3 + concat rows, 4 + concat columns
    score, best = best_pair(matrix)
    assert best == (1, 2) and score == matrix[1, 2] == matrix.max()
    params = {"k": 5} if "k" in get_metric(metric).param_names else {}
    np.testing.assert_allclose(matrix, layerwise(metric, prepare(x, 1.0), prepare(y, 1.0), **params), atol=1e-12)
    swapped = layer_pair_scores(y, x, metric)
    assert best_pair(swapped)[1] == (2, 1)
    if metric != "cycle_knn":
        np.testing.assert_allclose(swapped, matrix.T, atol=1e-12)


def test_best_pair_ties_pick_first_in_row_major_order() -> None:
    rng = np.random.default_rng(4)
    base = rng.standard_normal((40, 6)).astype(np.float32)
    matrix = layer_pair_scores([rng.standard_normal((40, 3)).astype(np.float32), base], [base], "mutual_knn", k=4)
    assert matrix[1, 0] == 1.0 and matrix[1, 1] == 1.0  # x layer 1 vs y layer 0 and vs y concat: a tie
    assert best_pair(matrix)[1] == (1, 0)
    same = layer_pair_scores([base, base], [base * 2], "mutual_knn", k=4)
    assert best_pair(same) == (1.0, (0, 0)) and (same == 1.0).all()


def test_best_pair_ignores_nan() -> None:
    m = np.array([[np.nan, 0.2], [0.7, np.nan]])
    assert best_pair(m) == (0.7, (1, 0))
    score, where = best_pair(np.full((2, 3), np.nan))
    assert np.isnan(score) and where == (0, 0)


def test_unknown_metric_is_named() -> None:
    x, _ = paired_models()
    with pytest.raises(PrhError, match="metric"):
        prepare_layers("mutual", prepare(x))
