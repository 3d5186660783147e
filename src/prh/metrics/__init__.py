"""Alignment metrics between two models' features on the same inputs (spec: METRICS.md).

``pairwise`` scores one layer pair; ``layerwise`` scores all layer pairs with per-layer work done once;
``prepare_layers`` / ``score_caches`` expose that per-model cache so one model can be scored against many;
``prepare_kernels`` / ``layerwise_many`` share each layer's Gram matrix and neighbour lists across metrics.
``large_n_pair`` / ``large_n_layerwise`` (over :class:`LargeLayers`) score in bounded memory at large n: neighbour
lists from row blocks of the Gram, CKA from feature sums, on CPU or CUDA.
``calibrate_layers`` calibrates a model-level score (max or mean over all layer pairs) against the permutation null
of that aggregate; ``calibrate_models`` does it for many model pairs sharing per-model work.
Every metric is one record of ``prh.metrics.registry`` (``get_metric(name)``); ``METRICS`` lists their names.
"""

from prh.metrics.blockwise import LargeLayers
from prh.metrics.calibration import (
    Calibration,
    bootstrap_ci,
    bootstrap_scores,
    calibrate,
    calibrated,
    chance_level,
    permutation_null,
)
from prh.metrics.engine import (
    LayerCache,
    large_n_layerwise,
    large_n_pair,
    layerwise,
    layerwise_many,
    pairwise,
    prepare_layers,
    score_caches,
)
from prh.metrics.layer_calibration import (
    LayerCalibration,
    calibrate_layers,
    calibrate_models,
    permutation_array,
)
from prh.metrics.registry import METRICS, Metric, get_metric
from prh.metrics.shared import KernelCache, prepare_kernels

__all__ = [
    "METRICS",
    "Calibration",
    "KernelCache",
    "LargeLayers",
    "LayerCache",
    "LayerCalibration",
    "Metric",
    "bootstrap_ci",
    "bootstrap_scores",
    "calibrate",
    "calibrate_layers",
    "calibrate_models",
    "calibrated",
    "chance_level",
    "get_metric",
    "large_n_layerwise",
    "large_n_pair",
    "layerwise",
    "layerwise_many",
    "pairwise",
    "permutation_array",
    "permutation_null",
    "prepare_kernels",
    "prepare_layers",
    "score_caches",
]
