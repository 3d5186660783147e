"""prh: measure whether neural networks converge to a shared representation of the world."""

import os
from typing import Any

# Idle OpenMP threads yield instead of spinning: several prh jobs share the cores of one machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["Scorer", "__version__", "calibrate_layers"]


def __getattr__(name: str) -> Any:
    """Import heavy public objects on first use (``prh.Scorer``, ``prh.calibrate_layers``)."""
    if name == "Scorer":
        from prh.scorer import Scorer

        return Scorer
    if name == "calibrate_layers":
        from prh.metrics.layer_calibration import calibrate_layers

        return calibrate_layers
    raise AttributeError(f"module 'prh' has no attribute {name!r}")
