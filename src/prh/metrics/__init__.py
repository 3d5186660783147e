"""Alignment metrics between two models' features on the same inputs (spec: METRICS.md).

``pairwise`` scores one layer pair; ``layerwise`` scores all layer pairs with per-layer work done once;
``prepare_layers`` / ``score_caches`` expose that per-model cache so one model can be scored against many.
"""

from prh.metrics._inputs import METRICS
from prh.metrics.calibration import (
    Calibration,
    bootstrap_ci,
    bootstrap_scores,
    calibrate,
    calibrated,
    chance_level,
    permutation_null,
)
from prh.metrics.engine import LayerCache, layerwise, pairwise, prepare_layers, score_caches

__all__ = [
    "METRICS",
    "Calibration",
    "LayerCache",
    "bootstrap_ci",
    "bootstrap_scores",
    "calibrate",
    "calibrated",
    "chance_level",
    "layerwise",
    "pairwise",
    "permutation_null",
    "prepare_layers",
    "score_caches",
]
