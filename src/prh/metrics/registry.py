"""The metric registry: one frozen record per alignment metric, read by every other module (spec: METRICS.md).

A record holds the metric's parameters (defaults, validation, config schema), how it builds one layer's state from a
:class:`~prh.metrics.shared.KernelCache`, its single-pair and all-layer-pairs scorers, how a permutation or a
bootstrap resample of the inputs acts on a state, its chance level, maximum and symmetry. The engine, calibration,
experiments, the scorer, config validation (the schema's metric entry is generated here) and the CLI look metrics
up here; adding a metric is one record below plus its kernel module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from prh.errors import PrhError
from prh.metrics import blockwise as _blockwise
from prh.metrics import cka as _cka
from prh.metrics import distance as _distance
from prh.metrics import knn as _knn
from prh.metrics import predictivity as _predictivity
from prh.metrics import rsa as _rsa
from prh.metrics import subspace as _subspace
from prh.metrics import svcca as _svcca
from prh.metrics.shared import KernelCache, padded_stack, stacked

State = dict[str, np.ndarray]
KERNELS = ("linear", "rbf")


class ParamError(PrhError):
    """A bad metric parameter or metric entry: ``field`` names it, ``reason`` says what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        """Message 'field: reason' (one line)."""
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class Param:
    """One metric parameter: default, check ``(value, n, widths) -> value`` (ValueError(reason)), config schema."""

    name: str
    default: Any
    description: str
    schema: Mapping[str, Any]  # JSON-schema fragment of the config value (type and bounds)
    check: Callable[[Any, int | None, tuple[int, ...]], Any]
    configurable: bool = True  # offered in the config file


@dataclass(frozen=True)
class Metric:
    """Everything prh knows about one alignment metric.

    ``state(cache, i, params)``: layer i of a model -> per-layer state (dict of arrays; stacked over layers on axis 0
    they are what ``all_pairs`` reads). ``pair(sa, sb) -> float`` and ``all_pairs(SA, SB) -> (La, Lb)`` score model A
    (first) against B. ``permute_state(state, perm)``: the state of the inputs reordered as x[perm], without
    recomputing from features (leading layer axes allowed). ``resample_state(cache, i, idx, params)``: layer i's state
    on the sorted bootstrap resample ``idx``, copies of one input never counting as each other's neighbours or pairs.
    ``chance(n, params)``: expected score of unrelated inputs, None where unknown.
    ``large_n(LA, LB, params) -> (La, Lb)``: the bounded-memory scorer of all layer pairs of two
    :class:`~prh.metrics.blockwise.LargeLayers` (no n x n matrix), None where the metric needs one.
    ``stacked_state(cache, params)``: all layers' states at once, stacked on axis 0, sharing the cache's stacked
    kernels instead of copying them; None: :meth:`layer_states` stacks ``state`` of each layer.
    ``stack(states)``: how per-layer states become one stacked state (zero-padding for per-layer ranks).
    ``state_bytes(n, d)``: an estimate of the memory one (n, d) layer's dense state and its working arrays take.
    ``permute_side``: "y" where permuting x's state is expensive (the calibration then always permutes y);
    None: the side holding fewer layers. ``orientation``: for an asymmetric metric, which side does what.
    ``y_state(cache, i, params)`` / ``y_resample_state(cache, i, idx, params)``: an asymmetric metric's state of a
    model scored only as model_y, leaving out what only model_x's state is read for (PWCCA: V diag(s)); None: ``state``
    / ``resample_state``.
    """

    name: str
    description: str
    params: tuple[Param, ...]
    state: Callable[[KernelCache, int, dict[str, Any]], State]
    pair: Callable[[State, State], float]
    all_pairs: Callable[[State, State], np.ndarray]
    permute_state: Callable[[State, np.ndarray], State]
    resample_state: Callable[[KernelCache, int, np.ndarray, dict[str, Any]], State]
    chance: Callable[[int, dict[str, Any]], float | None]
    max_value: float = 1.0
    symmetric: bool = True  # pair(a, b) == pair(b, a)
    min_n: int = 2
    large_n: Callable[[_blockwise.LargeLayers, _blockwise.LargeLayers, dict[str, Any]], np.ndarray] | None = None
    stacked_state: Callable[[KernelCache, dict[str, Any]], State] | None = None
    stack: Callable[[list[State]], State] = stacked
    state_bytes: Callable[[int, int], int] = lambda n, d: 5 * n * n  # float32 Gram + bool kNN indicator
    permute_side: str | None = None
    orientation: str = ""
    y_state: Callable[[KernelCache, int, dict[str, Any]], State] | None = None
    y_resample_state: Callable[[KernelCache, int, np.ndarray, dict[str, Any]], State] | None = None

    def layer_states(self, cache: KernelCache, params: dict[str, Any], y_only: bool = False) -> State:
        """All layers' states of one model, stacked on axis 0 (what ``all_pairs`` reads); ``y_only``: of a model
        scored only as model_y (``y_state``)."""
        if self.stacked_state is not None:
            return self.stacked_state(cache, params)
        state = self.y_state if y_only and self.y_state is not None else self.state
        return self.stack([state(cache, i, params) for i in range(len(cache))])

    def resampled_states(self, cache: KernelCache, idx: np.ndarray, params: dict[str, Any],
                         y_only: bool = False) -> State:  # fmt: skip
        """All layers' states on the sorted bootstrap resample ``idx``, stacked; ``y_only`` as :meth:`layer_states`."""
        state = self.y_resample_state if y_only and self.y_resample_state is not None else self.resample_state
        return self.stack([state(cache, i, idx, params) for i in range(len(cache))])

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the parameters this metric takes."""
        return tuple(p.name for p in self.params)

    def defaults(self) -> dict[str, Any]:
        """Default values of the configurable parameters, e.g. {"k": 10}."""
        return {p.name: p.default for p in self.params if p.configurable}


# ----------------------------------------------------------------------------- parameters


def _check_k(k: Any, n: int | None, widths: tuple[int, ...]) -> int:
    """Neighbour count: an integer with 1 <= k <= n - 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"must be an integer, got {k!r}")
    if k < 1 or (n is not None and k >= n):
        raise ValueError(f"must satisfy {'1 <= k' if n is None else f'1 <= k <= n - 1 = {n - 1}'}, got {k}")
    return int(k)


def _check_kernel(kernel: Any, n: int | None, widths: tuple[int, ...]) -> str:
    """Kernel name: one of KERNELS."""
    if kernel not in KERNELS:
        raise ValueError(f"must be {' or '.join(map(repr, KERNELS))}, got {kernel!r}")
    return kernel


def _check_sigma(sigma: Any, n: int | None, widths: tuple[int, ...]) -> float:
    """RBF bandwidth: a positive finite number."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise ValueError(f"must be a positive finite number, got {sigma!r}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"must be a positive finite number, got {float(sigma)}")
    return float(sigma)


def _check_dim(dim: Any, n: int | None, widths: tuple[int, ...]) -> int:
    """Subspace dimension: a positive integer at most min(n, feature widths)."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"must be a positive integer, got {dim!r}")
    bound = min([*widths, *([n] if n is not None else [])], default=None)
    if bound is not None and dim > bound:
        raise ValueError(f"svcca dim={dim} exceeds min(n, feature widths) = {bound}")
    return int(dim)


def _check_unit(value: Any, n: int | None, widths: tuple[int, ...]) -> float:
    """A number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not 0 <= value <= 1:
        raise ValueError(f"must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_reg(value: Any, n: int | None, widths: tuple[int, ...]) -> float:
    """A finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
        np.isfinite(value) and value >= 0
    ):
        raise ValueError(f"must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_folds(value: Any, n: int | None, widths: tuple[int, ...]) -> int:
    """Cross-validation folds: an integer with 2 <= folds <= n / 2."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
        raise ValueError(f"must be an integer >= 2, got {value!r}")
    if n is not None and value > n // 2:
        raise ValueError(f"must be at most n / 2 = {n // 2} (two inputs per fold), got {value}")
    return int(value)


def _check_seed(value: Any, n: int | None, widths: tuple[int, ...]) -> int:
    """A non-negative integer seed."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"must be an integer >= 0, got {value!r}")
    return int(value)


def _check_alphas(value: Any, n: int | None, widths: tuple[int, ...]) -> tuple[float, ...]:
    """A non-empty list of positive finite ridge penalties."""
    items = list(value) if isinstance(value, (list, tuple, np.ndarray)) else None
    if not items or any(isinstance(a, bool) or not isinstance(a, (int, float, np.integer, np.floating)) or not (
        np.isfinite(a) and a > 0) for a in items):  # fmt: skip
        raise ValueError(f"must be a non-empty list of positive numbers, got {value!r}")
    return tuple(float(a) for a in items)


def _choice(options: tuple[str, ...]) -> Callable[[Any, int | None, tuple[int, ...]], str]:
    """A check accepting one of ``options``."""

    def check(value: Any, n: int | None, widths: tuple[int, ...]) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(map(repr, options))}, got {value!r}")
        return value

    check.__doc__ = f"One of {', '.join(options)}."
    return check


def _accept(value: Any, n: int | None, widths: tuple[int, ...]) -> Any:
    """Any value, unchanged."""
    return value


K = Param("k", 10, "neighbours per input (1 <= k <= n - 1)", {"type": "integer", "minimum": 1}, _check_k)
KERNEL = Param("kernel", "linear", "kernel: linear (inner product) or rbf", {"type": "string", "enum": list(KERNELS)},
               _check_kernel)  # fmt: skip
SIGMA = Param("sigma", 1.0, "RBF bandwidth", {"type": "number", "exclusiveMinimum": 0}, _check_sigma)
DIM = Param("dim", 10, "singular directions kept (<= min(n, feature widths))", {"type": "integer", "minimum": 1}, _check_dim)
SEED = Param("seed", 0, "accepted and ignored (SVCCA is exact and deterministic)", {}, _accept, configurable=False)
SHAPE_ALPHA = Param("shape_alpha", 0.5, "shape metric's whitening: 0 = CCA-like (whitened), 1 = Procrustes",
                    {"type": "number", "minimum": 0, "maximum": 1}, _check_unit)  # fmt: skip
REG = Param("reg", _subspace.CCA_REG, "CCA ridge on the covariance Xc'Xc / (n - 1), used when a width is >= n",
            {"type": "number", "minimum": 0}, _check_reg)  # fmt: skip
FOLDS = Param("folds", 5, "cross-validation folds of the ridge predictivity", {"type": "integer", "minimum": 2}, _check_folds)
FOLD_SEED = Param("fold_seed", 0, "seed of the fold assignment", {"type": "integer", "minimum": 0}, _check_seed)
RIDGE_ALPHAS = Param("ridge_alphas", _predictivity.ALPHAS, "ridge penalties, one chosen per fold by GCV",
                     {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1},
                     _check_alphas)  # fmt: skip
RDM = Param("rdm", "correlation", "RSA dissimilarity: correlation, cosine or euclidean",
            {"type": "string", "enum": list(_rsa.RDMS)}, _choice(_rsa.RDMS))  # fmt: skip
COMPARE = Param("compare", "spearman", "RSA comparison of the RDMs: spearman, pearson, cosine or kendall_tau_a",
                {"type": "string", "enum": list(_rsa.COMPARISONS)}, _choice(_rsa.COMPARISONS))  # fmt: skip


def kernel_bytes(per_entry: int) -> Callable[[int, int], int]:
    """Memory of a state holding ``per_entry`` bytes per entry of an n x n matrix (kernels, RDMs, distances)."""
    return lambda n, d: per_entry * n * n


def basis_bytes(n: int, d: int) -> int:
    """Memory of a centred-SVD state: float64 U (n, r), V diag(s) (d, r) and the r x r Gram, r = min(n, d)."""
    r = min(n, d)
    return 8 * r * (n + d + r)


def no_chance(n: int, params: dict[str, Any]) -> None:
    """No analytic chance level is known."""
    return None


def zero_chance(n: int, params: dict[str, Any]) -> float:
    """0: an unbiased estimator (HSIC_1) or a rank correlation has expectation 0 under independence."""
    return 0.0


# ----------------------------------------------------------------------------- the records


def _subspace_metric(name: str, description: str, params: tuple[Param, ...], pair: Callable,
                     all_pairs: Callable) -> Metric:  # fmt: skip
    """A symmetric measure read off two layers' centred SVDs (prh.metrics.subspace)."""
    return Metric(name, description, params, _subspace.layer_state, pair, all_pairs, _subspace.permuted,
                  _subspace.resampled_state, no_chance, min_n=3, stack=padded_stack, state_bytes=basis_bytes)  # fmt: skip


def _knn_metric(name: str, description: str, pair: Callable, all_pairs: Callable, large_n: Callable | None,
                chance: Callable = no_chance, orientation: str = "", stack: Callable = stacked) -> Metric:  # fmt: skip
    """A neighbour-list metric: parameter k, states from the shared neighbour lists (asymmetric if ``orientation``)."""
    return Metric(name, description, (K,), _knn.knn_layer_state, pair, all_pairs, _knn.knn_permuted,
                  _knn.knn_resampled_state, chance, symmetric=not orientation, large_n=large_n,
                  orientation=orientation, stack=stack)  # fmt: skip


RECORDS: tuple[Metric, ...] = (
    _knn_metric("mutual_knn", "mean fraction of shared k nearest neighbours", _knn.mutual_knn_pair,
                _knn.mutual_knn_all, _blockwise.mutual_knn_large, _knn.mutual_knn_chance, stack=_knn.knn_stack),
    _knn_metric("cycle_knn", "fraction of inputs whose B-neighbours have them as A-neighbours (A first)",
                _knn.cycle_knn_pair, _knn.cycle_knn_all, _blockwise.cycle_knn_large, _knn.cycle_knn_chance,
                orientation="each input's model_y neighbours are looked up in model_x's neighbour lists"),
    _knn_metric("lcs_knn", "mean longest common subsequence of the ordered neighbour lists / k",
                _knn.lcs_knn_pair, _knn.lcs_knn_all, _blockwise.lcs_knn_large),
    _knn_metric("edit_distance_knn", "1 - mean Levenshtein distance of the ordered neighbour lists / k",
                _knn.edit_distance_knn_pair, _knn.edit_distance_knn_all, _blockwise.edit_distance_knn_large),
    Metric("cka", "centred kernel alignment (linear or RBF kernel)", (KERNEL, SIGMA), _cka.cka_layer_state,
           _cka.cka_pair, _cka.cka_all, _cka.cka_permuted, _cka.cka_resampled_state, no_chance,
           large_n=_blockwise.cka_large, stacked_state=_cka.cka_stacked_state, state_bytes=kernel_bytes(4)),
    Metric("unbiased_cka", "CKA with the unbiased HSIC_1 estimator (Song et al. 2012)", (), _cka.unbiased_layer_state,
           _cka.unbiased_cka_pair, _cka.unbiased_cka_all, _cka.unbiased_permuted, _cka.unbiased_resampled_state,
           zero_chance, min_n=4, large_n=_blockwise.unbiased_cka_large,
           stacked_state=_cka.unbiased_stacked_state, state_bytes=kernel_bytes(4)),
    Metric("cknna", "unbiased CKA restricted to mutual k-nearest-neighbour pairs (A first)", (K,),
           _cka.cknna_layer_state, _cka.cknna_pair, _cka.cknna_all, _cka.cknna_permuted, _cka.cknna_resampled_state,
           no_chance, symmetric=False, min_n=4, large_n=_blockwise.cknna_large,
           stacked_state=_cka.cknna_stacked_state, state_bytes=kernel_bytes(9),
           orientation="HSIC_1's cross term 1'K~L~1 is ordered, model_x's kernel first"),
    Metric("svcca", "mean canonical correlation of the top-dim singular subspaces", (DIM, SEED),
           _svcca.svcca_layer_state, _svcca.svcca_pair, _svcca.svcca_all, _svcca.svcca_permuted,
           _svcca.svcca_resampled_state, no_chance, state_bytes=lambda n, d: 8 * n * (d + 10)),
    Metric("rsa", "comparison (Spearman by default) of the RDMs' upper triangles (correlation distance by default)",
           (RDM, COMPARE), _rsa.rsa_layer_state, _rsa.rsa_pair, _rsa.rsa_all, _rsa.rsa_permuted,
           _rsa.rsa_resampled_state, _rsa.rsa_chance, min_n=3, state_bytes=kernel_bytes(16)),
    _subspace_metric("procrustes", "orthogonal Procrustes similarity ||Xc'Yc||_* / (||Xc||_F ||Yc||_F)", (),
                     _subspace.procrustes_pair, _subspace.procrustes_all),
    _subspace_metric("shape_metric", "generalised shape metric (netrep), cosine of its angle; shape_alpha 0 = CCA-like, "
                     "1 = Procrustes", (SHAPE_ALPHA,), _subspace.shape_pair, _subspace.shape_all),
    _subspace_metric("cca", "mean canonical correlation (ridge reg where a width is >= n)", (REG,), _subspace.cca_pair,
                     _subspace.cca_all),
    Metric("pwcca", "projection-weighted CCA (Morcos et al. 2018), weights from A's columns (A first)", (REG,),
           _subspace.pwcca_layer_state, _subspace.pwcca_pair, _subspace.pwcca_all, _subspace.permuted,
           _subspace.pwcca_resampled_state, no_chance, symmetric=False, min_n=3, stack=padded_stack,
           orientation="canonical weights from model_x's columns", y_state=_subspace.pwcca_y_state,
           y_resample_state=_subspace.pwcca_y_resampled_state),
    Metric("rv_coefficient", "RV coefficient tr(XcXc'YcYc') / sqrt(tr((XcXc')^2) tr((YcYc')^2)), equal to linear CKA",
           (), _cka.cka_layer_state, _cka.cka_pair, _cka.cka_all, _cka.cka_permuted, _cka.cka_resampled_state,
           no_chance, stacked_state=_cka.cka_stacked_state, large_n=_blockwise.cka_large, state_bytes=kernel_bytes(4)),
    _knn_metric("jaccard_knn", "mean Jaccard index of the k-nearest-neighbour sets (ReSi)", _knn.jaccard_knn_pair,
                _knn.jaccard_knn_all, None, _knn.jaccard_knn_chance),
    Metric("distance_correlation", "distance correlation (Szekely et al. 2007, V-statistic)", (),
           _distance.dcor_layer_state, _distance.dcor_pair, _distance.dcor_all, _distance.dcor_permuted,
           _distance.dcor_resampled_state, no_chance, state_bytes=kernel_bytes(12)),
    Metric("linear_predictivity", "out-of-fold R^2 of cross-validated ridge from A to B (A predicts B)",
           (FOLDS, FOLD_SEED, RIDGE_ALPHAS), _predictivity.ridge_layer_state, _predictivity.ridge_pair,
           _predictivity.ridge_all, _predictivity.ridge_permuted, _predictivity.ridge_resampled_state, no_chance,
           symmetric=False, min_n=4, stack=padded_stack, permute_side="y", state_bytes=_predictivity.state_bytes,
           orientation="model_x's features predict model_y's"),
)  # fmt: skip
REGISTRY: dict[str, Metric] = {m.name: m for m in RECORDS}
METRICS: tuple[str, ...] = tuple(REGISTRY)
KNOWN_PARAMS: frozenset[str] = frozenset(p.name for m in RECORDS for p in m.params)


# ----------------------------------------------------------------------------- lookups


def get_metric(name: Any) -> Metric:
    """The record of metric ``name``, or a one-line PrhError naming the valid ones."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise PrhError(f"metric: unknown metric {name!r}; valid metrics are {', '.join(METRICS)}")
    return REGISTRY[name]


def resolve_params(
    metric: Metric, params: Mapping[str, Any], n: int | None = None, widths: Sequence[int] = (), field: str = "",
    strict: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Validated parameters of ``metric`` with defaults filled -> {name: value} in the record's order.

    ``n`` / ``widths``: sample count and feature widths to check against, when known. Parameters of other metrics
    are dropped (an error when ``strict``); unknown names are an error. Errors are ParamError naming
    ``field + parameter``.
    """
    for key in params:
        if key not in metric.param_names and (strict or key not in KNOWN_PARAMS):
            takes = ", ".join(metric.param_names) or "none"
            raise ParamError(f"{field}{key}", f"not a parameter of {metric.name} (its parameters: {takes})")
    if n is not None and n < metric.min_n:
        raise ParamError(f"{field}n", f"{metric.name} needs at least {metric.min_n} samples, got {n}")
    out = {}
    for p in metric.params:
        try:
            out[p.name] = p.check(params.get(p.name, p.default), n, tuple(widths))
        except ValueError as err:
            raise ParamError(f"{field}{p.name}", str(err)) from None
    return out


def entry_params(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of a config metric entry {name: ..., **params} (everything but its name)."""
    return {k: v for k, v in entry.items() if k != "name"}


def config_schema() -> dict[str, Any]:
    """JSON schema of one config metric entry {name, **params}, generated from the records."""
    props: dict[str, Any] = {"name": {"type": "string", "enum": list(METRICS), "description": _names_description()}}
    for m in RECORDS:
        for p in m.params:
            if p.configurable and p.name not in props:
                users = ", ".join(r.name for r in RECORDS if p in r.params)
                props[p.name] = {**p.schema, "description": f"{p.description}; used by {users} (default {p.default})"}
    return {"type": "object", "additionalProperties": False, "required": ["name"], "properties": props}


def _names_description() -> str:
    """One line per metric for the schema: name: description."""
    return "alignment metric (see METRICS.md): " + "; ".join(f"{m.name}: {m.description}" for m in RECORDS)
