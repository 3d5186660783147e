"""Alignment metrics between two models' features on the same inputs (spec: METRICS.md).

``pairwise`` scores one layer pair; ``layerwise`` scores all layer pairs with per-layer work done once;
``prepare_layers`` / ``score_caches`` expose that per-model cache so one model can be scored against many;
``prepare_kernels`` / ``layerwise_many`` share each layer's Gram matrix and neighbour lists across metrics.
Every metric is one record of ``prh.metrics.registry`` (``get_metric(name)``); ``METRICS`` lists their names.
"""

from prh.metrics.calibration import (
    Calibration,
    bootstrap_ci,
    bootstrap_scores,
    calibrate,
    calibrated,
    chance_level,
    permutation_null,
)
from prh.metrics.engine import LayerCache, layerwise, layerwise_many, pairwise, prepare_layers, score_caches
from prh.metrics.registry import METRICS, Metric, get_metric
from prh.metrics.shared import KernelCache, prepare_kernels

__all__ = [
    "METRICS",
    "Calibration",
    "KernelCache",
    "LayerCache",
    "Metric",
    "bootstrap_ci",
    "bootstrap_scores",
    "calibrate",
    "calibrated",
    "chance_level",
    "get_metric",
    "layerwise",
    "layerwise_many",
    "pairwise",
    "permutation_null",
    "prepare_kernels",
    "prepare_layers",
    "score_caches",
]
