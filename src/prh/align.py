"""Model-level alignment: preprocess each model's layers (outlier clipping, l2 norm, concat layer); the best layer pair."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from prh.errors import PrhError
from prh.metrics._inputs import as_layers
from prh.metrics.engine import best_pair  # noqa: F401 - the one best-layer-pair rule, re-exported here


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


