"""Model-level alignment: preprocess each model's layers (outlier clipping, l2 norm, concat layer), score all pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from prh.errors import PrhError
from prh.metrics import layerwise
from prh.metrics._inputs import as_layers
from prh.metrics.registry import get_metric

CONCAT = "concat"


@dataclass(frozen=True)
class AlignmentResult:
    """All layer-pair scores of model x (rows) against model y (columns) and the best pair."""

    matrix: np.ndarray
    score: float
    best: tuple[int, int]
    layer_x: str
    layer_y: str
    metric: str
    params: dict[str, Any]
    names_x: tuple[str, ...] = ()
    names_y: tuple[str, ...] = ()


def clip_threshold(layers: Sequence[np.ndarray], q: float) -> float:
    """Element at index min(floor(q N), N - 1) of the sorted |values| of all layers jointly (N elements)."""
    flat = np.concatenate([np.abs(x).ravel() for x in layers])
    idx = min(int(np.floor(q * flat.size)), flat.size - 1)
    return float(np.partition(flat, idx)[idx])


def l2_rows(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, d) float32 rows divided by their l2 norm (float64 accumulation); zero rows stay zero."""
    norm = np.sqrt(np.square(x, dtype=np.float64).sum(axis=1, keepdims=True))
    return np.divide(x, norm, out=np.zeros(x.shape, dtype=np.float64), where=norm > 0).astype(np.float32)


def prepare(features: Any, q: float = 0.95) -> list[np.ndarray]:
    """L layers (n, d_l) (or (L, n, d)) -> L + 1 float32 arrays: clipped at one per-model |value| quantile,
    rows l2-normalised, plus last the concatenation of all clipped layers normalised as one vector."""
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q <= 1:
        raise PrhError(f"q: outlier quantile must be in (0, 1], got {q!r}")
    layers = as_layers(features, "features")
    tau = np.float32(clip_threshold(layers, q))
    clipped = [np.clip(x, -tau, tau) for x in layers]
    return [l2_rows(x) for x in clipped] + [l2_rows(np.concatenate(clipped, axis=1))]


def _names(names: Sequence[str] | None, n_layers: int, which: str) -> tuple[str, ...]:
    """Layer names for the L prepared layers plus "concat"; defaults to "0" .. "L-1"."""
    if names is None:
        return tuple(str(i) for i in range(n_layers)) + (CONCAT,)
    if len(names) != n_layers:
        raise PrhError(f"layer_names_{which}: got {len(names)} names for {n_layers} layers")
    return tuple(str(s) for s in names) + (CONCAT,)


def best_pair(matrix: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Maximum of a score matrix ignoring NaN, and its first (row-major) position; NaN, (0, 0) if all NaN."""
    filled = np.where(np.isnan(matrix), -np.inf, matrix)
    flat = int(np.argmax(filled))
    i, j = np.unravel_index(flat, matrix.shape)
    return float(matrix[i, j]), (int(i), int(j))


def align(
    feats_x: Any,
    feats_y: Any,
    metric: str,
    *,
    layer_names_x: Sequence[str] | None = None,
    layer_names_y: Sequence[str] | None = None,
    q: float = 0.95,
    **params: Any,
) -> AlignmentResult:
    """Align model x (first, rows) with model y: prepare both, score all (Lx+1) x (Ly+1) layer pairs, take the max."""
    get_metric(metric)
    px, py = prepare(feats_x, q), prepare(feats_y, q)
    names_x = _names(layer_names_x, len(px) - 1, "x")
    names_y = _names(layer_names_y, len(py) - 1, "y")
    matrix = layerwise(metric, px, py, **params)
    score, (i, j) = best_pair(matrix)
    return AlignmentResult(matrix, score, (i, j), names_x[i], names_y[j], metric, dict(params), names_x, names_y)
