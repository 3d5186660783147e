"""Input conversion and validation shared by every metric: float32 arrays, metric names, parameters."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from prh.errors import PrhError

METRICS: tuple[str, ...] = (
    "mutual_knn",
    "cycle_knn",
    "lcs_knn",
    "edit_distance_knn",
    "cka",
    "unbiased_cka",
    "cknna",
    "svcca",
)
KNN_METRICS: frozenset[str] = frozenset({"mutual_knn", "cycle_knn", "lcs_knn", "edit_distance_knn"})
KNOWN_PARAMS: frozenset[str] = frozenset({"k", "kernel", "sigma", "dim", "seed"})


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is one of :data:`METRICS`, else raise naming the valid ones."""
    if metric not in METRICS:
        raise PrhError(f"metric: unknown metric {metric!r}; valid metrics are {', '.join(METRICS)}")
    return metric


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


def metric_params(metric: str, params: dict[str, Any], n: int | None = None) -> dict[str, Any]:
    """Validate and complete the parameters of ``metric`` (defaults filled, irrelevant known ones dropped)."""
    unknown = set(params) - KNOWN_PARAMS
    if unknown:
        raise PrhError(f"params: unknown parameter(s) {sorted(unknown)} for {metric}; known: {sorted(KNOWN_PARAMS)}")
    out: dict[str, Any] = {}
    if metric in KNN_METRICS or metric == "cknna":
        out["k"] = _check_k(params.get("k", 10), n)
    if metric == "cka":
        kernel = params.get("kernel", "linear")
        if kernel not in ("linear", "rbf"):
            raise PrhError(f"kernel: must be 'linear' or 'rbf', got {kernel!r}")
        sigma = float(params.get("sigma", 1.0))
        if not (np.isfinite(sigma) and sigma > 0):
            raise PrhError(f"sigma: must be a positive finite number, got {sigma}")
        out["kernel"], out["sigma"] = kernel, sigma
    if metric == "svcca":
        dim = params.get("dim", 10)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise PrhError(f"dim: must be a positive integer, got {dim!r}")
        out["dim"], out["seed"] = int(dim), params.get("seed", 0)
    if metric in ("unbiased_cka", "cknna") and n is not None and n < 4:
        raise PrhError(f"n: {metric} needs at least 4 samples, got {n}")
    return out


def _check_k(k: Any, n: int | None) -> int:
    """Return ``k`` as an int after checking 1 <= k <= n - 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise PrhError(f"k: must be an integer, got {k!r}")
    if k < 1 or (n is not None and k >= n):
        raise PrhError(f"k: must satisfy 1 <= k <= n - 1 = {None if n is None else n - 1}, got {k}")
    return int(k)


def check_svcca_dim(dim: int, n: int, d_a: int, d_b: int) -> None:
    """Raise if the SVCCA subspace dimension exceeds min(n, d_a, d_b)."""
    if dim > min(n, d_a, d_b):
        raise PrhError(f"dim: svcca dim={dim} exceeds min(n, d_a, d_b) = {min(n, d_a, d_b)}")


def checked_pair(metric: str, a: Any, b: Any, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Validate one layer pair -> float32 (n, d_a), (n, d_b) arrays and the completed metric parameters."""
    check_metric(metric)
    xa, xb = as_float32(a, "a"), as_float32(b, "b")
    n = check_same_n(xa.shape[0], xb.shape[0])
    p = metric_params(metric, params, n)
    if metric == "svcca":
        check_svcca_dim(p["dim"], n, xa.shape[1], xb.shape[1])
    return xa, xb, p
