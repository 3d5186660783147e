"""Input conversion and validation shared by every metric: float32 (n, d) arrays, layer stacks, sample counts."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from prh.errors import PrhError


def as_float32(x: Any, name: str) -> np.ndarray:
    """Convert a numpy array or torch tensor (any device/dtype) to a C-contiguous float32 (n, d) array."""
    if type(x).__module__.startswith("torch"):
        x = x.detach().to(device="cpu").float().numpy()
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise PrhError(f"{name}: expected a 2-D (n, d) feature array, got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise PrhError(f"{name}: need at least 2 samples and 1 feature, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise PrhError(f"{name}: features contain NaN or infinite values")
    return arr


def as_layers(layers: Any, name: str) -> list[np.ndarray]:
    """Convert a 3-D (layers, n, d) array or a sequence of (n, d_l) arrays to a list of float32 arrays."""
    if type(layers).__module__.startswith("torch") or isinstance(layers, np.ndarray):
        if layers.ndim != 3:
            raise PrhError(f"{name}: expected a 3-D (layers, n, d) array or a list of 2-D arrays, got {layers.ndim}-D")
        layers = [layers[i] for i in range(layers.shape[0])]
    if not isinstance(layers, Sequence) or len(layers) == 0:
        raise PrhError(f"{name}: expected a non-empty sequence of 2-D (n, d) arrays")
    out = [as_float32(x, f"{name}[{i}]") for i, x in enumerate(layers)]
    n = {x.shape[0] for x in out}
    if len(n) != 1:
        raise PrhError(f"{name}: all layers must have the same number of samples, got {sorted(n)}")
    return out


def check_same_n(n_a: int, n_b: int) -> int:
    """Return the shared sample count, or raise if A and B describe different numbers of inputs."""
    if n_a != n_b:
        raise PrhError(f"b: A has {n_a} samples but B has {n_b}; rows must describe the same inputs")
    return n_a
