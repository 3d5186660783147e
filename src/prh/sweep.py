"""Sample-size sweep: alignment of every model pair on nested random subsets of growing n (the large-n engine).

Koepke et al. (2026, "Back into Plato's Cave") report that alignment measured on 1,024 samples changes as the
sample set grows; a sweep measures it as a function of n. Subset m is the first m inputs of one seeded permutation
(so the subsets are nested), kept in input order; each subset is preprocessed on its own (clipping quantile and
l2 norms) and scored over all layer pairs in bounded memory (:func:`prh.metrics.large_n_layerwise`). Sizes up to
``calibrate_max_n`` are also calibrated (permutation null and bootstrap of the max over layer pairs, dense states).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from prh.align import prepare
from prh.devices import resolve_device
from prh.errors import PrhError
from prh.experiment import (
    COLUMNS,
    PreparedModel,
    memo_key,
    metric_id,
    model_pairs,
    pair_calibrations,
    result_row,
    write_matrices,
)
from prh.io import write_csv_atomic
from prh.metrics import LargeLayers, large_n_layerwise, prepare_kernels
from prh.metrics.layer_calibration import permutation_array
from prh.metrics.registry import entry_params
from prh.store import FeatureStore, read_receipt


def nested_subsets(n: int, sizes: list[int], seed: int) -> dict[int, np.ndarray]:
    """size m -> sorted indices of the first m inputs of ``default_rng(seed).permutation(n)`` (nested in m)."""
    perm = np.random.default_rng(seed).permutation(n)
    return {m: np.sort(perm[:m]) for m in sorted(sizes)}


def subset_model(name: str, key: str, layers: list[np.ndarray], names: list[str], idx: np.ndarray, q: float,
                 seed: int) -> PreparedModel:  # fmt: skip
    """A model's stored layers on one subset, preprocessed; its key names the subset (memo keys differ per subset)."""
    return PreparedModel(name, f"{key}:n{idx.size}:seed{seed}", prepare([x[idx] for x in layers], q=q), names)


def sweep_rows(
    store: FeatureStore, models: dict[str, PreparedModel], xs: list[str], ys: list[str], dataset: str,
    experiment: dict, q: float, calibration: dict, device: str, matrices: dict,
) -> list[dict]:  # fmt: skip
    """Rows of every metric and model pair at one subset size (calibrated when n <= calibrate_max_n)."""
    n = next(iter(models.values())).layers[0].shape[0]
    large = {m: LargeLayers(p.layers, device, progress=f"{dataset} n={n} {m}") for m, p in models.items()}
    calibrating = experiment.get("calibrate", True) and n <= experiment.get("calibrate_max_n", 4096)
    perms = permutation_array(n, int(calibration["permutations"]), int(calibration["seed"])) if calibrating else None
    kernels = {m: prepare_kernels(p.layers) for m, p in models.items()} if calibrating else {}
    rows = []
    for metric in experiment["metrics"]:
        pairs = model_pairs(xs, ys, metric["name"])
        scored = {}
        for x, y in pairs:
            key = memo_key("matrix", models[x].key, models[y].key, metric, q, {"engine": "large_n"})
            matrix = store.memo_get(key)
            if matrix is None:
                matrix = large_n_layerwise(metric["name"], large[x], large[y], **entry_params(metric))
                store.memo_put(key, matrix)
            scored[(x, y)] = matrix
            matrices[f"{dataset}/n{n}/{metric_id(metric)}/{x}__{y}"] = (matrix, models[x].layer_names, models[y].layer_names)
        calibs = pair_calibrations(store, models, kernels, pairs, metric, q, calibration, perms) if calibrating else {}
        rows += [result_row(models[x], models[y], dataset, metric, scored[(x, y)], calibs.get((x, y))) for x, y in pairs]
    return rows


def sweep_experiment(
    experiment: dict, xs: list[str], ys: list[str], receipts: dict[str, str], store_root: str, q: float,
    calibration: dict, out_csv: str, out_matrices: str, device: str = "cpu",
) -> pd.DataFrame:  # fmt: skip
    """Score every model pair at every size of the sweep on each dataset; write the tidy table (column n) and matrices."""
    store = FeatureStore(store_root)
    device = resolve_device(device)
    keys = {tuple(k.split("/", 1)): read_receipt(path)["key"] for k, path in receipts.items()}
    datasets = [experiment["dataset"]] if isinstance(experiment["dataset"], str) else experiment["dataset"]
    rows, matrices = [], {}
    for dataset in datasets:
        entries = {m: store.open(keys[(dataset, m)]) for m in dict.fromkeys(xs + ys)}
        stored = {m: e.layers() for m, e in entries.items()}
        n = next(iter(entries.values())).n
        if max(experiment["sizes"]) > n:
            raise PrhError(f"sizes: size {max(experiment['sizes'])} exceeds dataset {dataset!r} (n = {n})")
        subsets = nested_subsets(n, experiment["sizes"], int(calibration["seed"]))
        for idx in tqdm(subsets.values(), desc=f"{dataset} sizes", mininterval=2):
            models = {m: subset_model(m, entries[m].key, stored[m], [*entries[m].layer_names, "concat"], idx, q,
                                      int(calibration["seed"])) for m in entries}  # fmt: skip
            rows += sweep_rows(store, models, xs, ys, dataset, experiment, q, calibration, device, matrices)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    write_matrices(out_matrices, matrices)
    write_csv_atomic(out_csv, table)
    return table
