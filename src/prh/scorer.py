"""Score your own model's features against stored reference models, offline, reusing the references' work.

Each score is the max over all layer pairs, calibrated like the workflow's tables (``prh.experiment``): the
permutation null of that max with the reference's rows permuted by the same (K, n) permutation array
(``permutation_array(n, permutations, seed)``), so with the config's ``permutations`` / ``alpha`` / ``seed`` the
calibrated numbers equal the tables' row (your model as model_x, the reference as model_y).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prh.align import best_pair, prepare
from prh.errors import PrhError
from prh.metrics import (
    KernelCache,
    LayerCache,
    get_metric,
    prepare_kernels,
    prepare_layers,
    score_caches,
)
from prh.metrics.layer_calibration import calibrate_models, permutation_array
from prh.plan import Paths
from prh.store import KEY_RE, FeatureStore, read_receipt

MINE = "\0features"  # the user's features among the models handed to calibrate_models (no model has this name)


@dataclass
class Reference:
    """One reference model's prepared features and per-layer metric cache."""

    name: str
    key: str
    layer_names: list[str]
    kernels: KernelCache  # its prepared layers, Grams and neighbour lists (bootstrap resamples start here)
    cache: LayerCache


@dataclass
class RefScore:
    """Alignment of the user's features to one reference model."""

    reference: str
    score: float  # max over all layer pairs
    layer: str  # the user's best layer ("concat" = all layers)
    reference_layer: str
    calibrated: float  # clamp((score - tau) / (max - tau), 0, 1), tau from the permutation null of the max
    p_value: float
    tau: float
    null_mean: float
    effect: float  # (score - null_mean) / (max - null_mean)
    ci_low: float
    ci_high: float
    chance: float | None  # of one layer pair
    matrix: np.ndarray = field(repr=False)  # (user layers + 1, reference layers + 1)


def _as_layers(features: Any) -> list[np.ndarray]:
    """(layers, n, d) array/tensor or a list of (n, d) arrays/tensors -> list of float32 numpy arrays."""
    if hasattr(features, "detach"):
        features = features.detach().float().cpu().numpy()
    if isinstance(features, np.ndarray):
        if features.ndim == 2:
            features = features[None]
        if features.ndim != 3:
            raise PrhError(f"features: expected (layers, n, d) or a list of (n, d), got shape {features.shape}")
        return [np.asarray(f, dtype=np.float32) for f in features]
    layers = [f.detach().float().cpu().numpy() if hasattr(f, "detach") else np.asarray(f, dtype=np.float32) for f in features]
    if not layers or any(f.ndim != 2 for f in layers):
        raise PrhError("features: expected (layers, n, d) or a non-empty list of (n, d) arrays")
    return layers


class Scorer:
    """Alignment of new features to stored reference models on one dataset; reference work is done once."""

    def __init__(
        self, dataset: str, against: Sequence[str], store: str = "features", results: str = "results",
        metric: str = "mutual_knn", k: int = 10, q: float = 0.95, permutations: int = 200, bootstrap: int = 200,
        alpha: float = 0.05, seed: int = 0, **params: Any,
    ) -> None:  # fmt: skip
        """References' work done once; ``permutations`` / ``bootstrap`` / ``alpha`` / ``seed`` as in the config."""
        self.dataset, self.metric, self.q = dataset, metric, q
        self.calibration = {"permutations": permutations, "bootstrap": bootstrap, "alpha": alpha, "seed": seed}
        self.record = get_metric(metric)
        self.params = {**({"k": k} if "k" in self.record.param_names else {}), **params}
        self.store = FeatureStore(store)
        self.paths = Paths(str(results))
        self.prepare_calls = 0  # reference preparations done (never grows after construction)
        self.references = [self._reference(name) for name in against]
        self.n = self.references[0].cache.n if self.references else 0

    def _receipt_key(self, name: str) -> str:
        """Store key of a reference: a 64-hex key as given, else the model's receipt on this dataset."""
        if KEY_RE.match(name):
            return name
        path = Path(self.paths.receipt(self.dataset, name))
        if not path.is_file():
            hits = self.paths.existing_feature_receipts(name)
            same = [p for p in hits if read_receipt(p)["request"]["dataset"]["id"] == self.dataset]
            if not same:
                raise PrhError(
                    f"reference model {name!r} has no features on dataset {self.dataset!r} in the store "
                    f"(compute them with `snakemake {path}`)"
                )
            path = same[0]
        return read_receipt(path)["key"]

    def _reference(self, name: str) -> Reference:
        key = self._receipt_key(name)
        if not self.store.has(key):
            raise PrhError(f"reference {name!r}: store entry {key[:12]} is missing (rerun the workflow to compute it)")
        entry = self.store.open(key)
        if entry.request["dataset"]["id"] != self.dataset:
            raise PrhError(f"reference {name!r}: store entry {key[:12]} holds features of dataset "
                           f"{entry.request['dataset']['id']!r}, not {self.dataset!r}")  # fmt: skip
        kernels = prepare_kernels(prepare(entry.layers(), q=self.q))
        cache = prepare_layers(self.metric, kernels, y_only=True, **self.params)  # references are model_y
        self.prepare_calls += 1
        return Reference(name, key, [*entry.layer_names, "concat"], kernels, cache)

    def inputs(self, modality: str = "image", transform: Callable[[np.ndarray], Any] | None = None) -> Any:
        """The dataset's images (uint8 (n, H, W, 3), or ``transform(images)``) or captions, in the stored order."""
        from prh.data import load_saved

        path = Path(self.paths.data(self.dataset))
        if not path.is_file():
            raise PrhError(f"dataset {self.dataset!r} is not materialised (run `snakemake {path}`)")
        ds = load_saved(path)
        if modality == "image":
            if ds.images is None:
                raise PrhError(f"dataset {self.dataset!r} has no images")
            return transform(ds.images) if transform else ds.images
        if modality == "text":
            if ds.texts is None:
                raise PrhError(f"dataset {self.dataset!r} has no texts")
            return list(ds.texts)
        raise PrhError(f"modality must be 'image' or 'text', got {modality!r}")

    def _check(self, layers: list[np.ndarray]) -> None:
        for i, f in enumerate(layers):
            if f.shape[0] != self.n:
                raise PrhError(f"features layer {i}: {f.shape[0]} samples, but dataset {self.dataset!r} has {self.n}")
            if not np.isfinite(f).all():
                raise PrhError(f"features layer {i}: contains NaN or Inf")

    def score(self, features: Any, name: str | None = None) -> list[RefScore]:
        """Best alignment over all layer pairs to every reference, calibrated against the null of that maximum.

        The null permutes each reference's rows. ``name``: the features' model name when they belong to a model of
        the tables; a symmetric metric's table then calibrates the pair in name order (the larger name's rows
        permuted), and so does this call, giving the table's numbers exactly.
        """
        layers = _as_layers(features)
        self._check(layers)
        kernels = prepare_kernels(prepare(layers, q=self.q))
        mine = prepare_layers(self.metric, kernels, **self.params)
        names = [f"layer{i}" for i in range(len(layers))] + ["concat"]
        perms = permutation_array(self.n, self.calibration["permutations"], self.calibration["seed"])
        models = {MINE: kernels, **{ref.name: ref.kernels for ref in self.references}}
        flip = {ref.name: self.record.symmetric and name is not None and name > ref.name
                for ref in self.references}  # fmt: skip
        pairs = [(ref.name, MINE) if flip[ref.name] else (MINE, ref.name) for ref in self.references]
        calib = calibrate_models(models, pairs, self.metric, permutations=perms, bootstrap=self.calibration["bootstrap"],
                                 alpha=self.calibration["alpha"], seed=self.calibration["seed"], **self.params)  # fmt: skip
        out = []
        for ref in self.references:
            matrix = score_caches(self.metric, mine, ref.cache, **self.params)
            c = calib[(ref.name, MINE) if flip[ref.name] else (MINE, ref.name)]
            score, (i, j) = best_pair(matrix)
            out.append(RefScore(ref.name, score, names[i], ref.layer_names[j], c.calibrated, c.p_value,
                                c.tau, c.null_mean, c.effect, c.ci_low, c.ci_high, c.chance, matrix))  # fmt: skip
        return out

    @staticmethod
    def table(scores: list[RefScore]) -> pd.DataFrame:
        """Scores as a table (one row per reference)."""
        return pd.DataFrame([{k: v for k, v in vars(s).items() if k != "matrix"} for s in scores])
