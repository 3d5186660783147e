"""Fan-in alignment: every model pair of an experiment over all layer pairs, per-pair scores memoised in the store."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from prh.align import prepare
from prh.io import atomic_dir, write_csv_atomic
from prh.metrics import calibrate, calibrated, chance_level, get_metric, prepare_layers, score_caches
from prh.metrics.registry import entry_params
from prh.store import FeatureStore, read_receipt

ALIGN_VERSION = "prh-align-1"
CI_METHOD = "percentile-recentred"  # in calibration memo keys: a changed interval recomputes only calibrations
COLUMNS = [
    "model_x", "model_y", "dataset", "metric", "params", "n", "score", "layer_x", "layer_y",
    "chance", "null_mean", "null_std", "p_value", "ci_low", "ci_high", "calibrated",
]  # fmt: skip


@dataclass
class PreparedModel:
    """One model's stored features on one dataset, preprocessed once per job."""

    name: str
    key: str
    layers: list[np.ndarray]  # L + 1 prepared (n, d_l) arrays, concatenation last
    layer_names: list[str]


def metric_id(metric: dict) -> str:
    """A readable name of a metric entry, e.g. ``mutual_knn_k10`` or ``cka_kernelrbf_sigma1.0``."""
    return "_".join([metric["name"], *(f"{k}{v}" for k, v in sorted(entry_params(metric).items()))])


def memo_key(kind: str, key_x: str, key_y: str, metric: dict, q: float, extra: dict | None = None) -> str:
    """Content key of a memoised pair result: both store keys, the metric, its params, q and the code version."""
    payload = {"kind": kind, "x": key_x, "y": key_y, "metric": metric, "q": q, "extra": extra or {}, "v": ALIGN_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_prepared(store: FeatureStore, name: str, key: str, q: float) -> PreparedModel:
    """Read a model's layers from the store and apply the paper's preprocessing."""
    entry = store.open(key)
    return PreparedModel(name, key, prepare(entry.layers(), q=q), [*entry.layer_names, "concat"])


def model_pairs(xs: list[str], ys: list[str], metric: str) -> list[tuple[str, str]]:
    """Ordered (x, y) pairs to score; symmetric metrics on one model set score each unordered pair once."""
    pairs = [(x, y) for x in xs for y in ys if x != y]
    if not get_metric(metric).symmetric or set(xs) != set(ys):
        return pairs
    order = {m: i for i, m in enumerate(xs)}
    return [(x, y) for x, y in pairs if order[x] < order[y]]


def pair_matrix(store: FeatureStore, px: PreparedModel, py: PreparedModel, metric: dict, q: float, caches: dict) -> np.ndarray:
    """All layer-pair scores of one model pair, from the memo or computed from per-model caches."""
    key = memo_key("matrix", px.key, py.key, metric, q)
    cached = store.memo_get(key)
    if cached is not None:
        return cached
    name, params = metric["name"], entry_params(metric)
    for p in (px, py):
        if p.name not in caches:
            caches[p.name] = prepare_layers(name, p.layers, **params)
    matrix = score_caches(name, caches[px.name], caches[py.name], **params)
    store.memo_put(key, matrix)
    return matrix


def pair_calibration(
    store: FeatureStore, px: PreparedModel, py: PreparedModel, best: tuple[int, int], metric: dict, q: float, cal: dict
) -> np.ndarray:
    """[null_mean, null_std, p_value, ci_low, ci_high] at the best layer pair, memoised."""
    key = memo_key("calibration", px.key, py.key, metric, q, {**cal, "best": list(best), "ci": CI_METHOD})
    cached = store.memo_get(key)
    if cached is not None:
        return cached
    c = calibrate(metric["name"], px.layers[best[0]], py.layers[best[1]], n_perm=cal["permutations"],
                  n_boot=cal["bootstrap"], seed=cal["seed"], **entry_params(metric))  # fmt: skip
    out = np.array([c.null_mean, c.null_std, c.p_value, c.ci_low, c.ci_high], dtype=np.float64)
    store.memo_put(key, out)
    return out


def result_row(
    px: PreparedModel, py: PreparedModel, dataset: str, metric: dict, matrix: np.ndarray, calib: np.ndarray | None
) -> dict:
    """One tidy alignment row: best score over layer pairs, its layers, chance and calibration."""
    i, j = np.unravel_index(int(np.nanargmax(matrix)), matrix.shape)
    score = float(matrix[i, j])
    n = px.layers[0].shape[0]
    chance = chance_level(metric["name"], n, **entry_params(metric))
    row = {"model_x": px.name, "model_y": py.name, "dataset": dataset, "metric": metric["name"],
           "params": json.dumps(entry_params(metric), sort_keys=True), "n": n, "score": score,
           "layer_x": px.layer_names[i], "layer_y": py.layer_names[j], "chance": chance}  # fmt: skip
    if calib is not None:
        null_mean, null_std, p_value, lo, hi = (float(v) for v in calib)
        row.update(null_mean=null_mean, null_std=null_std, p_value=p_value, ci_low=lo, ci_high=hi,
                   calibrated=calibrated(score, null_mean, get_metric(metric["name"]).max_value))  # fmt: skip
    return row


def mirrored(row: dict) -> dict:
    """The same result seen from the other model (symmetric metrics)."""
    out = dict(row, model_x=row["model_y"], model_y=row["model_x"], layer_x=row["layer_y"], layer_y=row["layer_x"])
    return out


def write_matrices(path: str, matrices: dict[str, tuple[np.ndarray, list[str], list[str]]]) -> None:
    """Write every layer-pair matrix into a zarr group, atomically: temp dir, then swap it in for the old one."""
    import zarr

    with atomic_dir(path) as commit:
        group = zarr.open_group(str(commit.path), mode="w")
        for name, (matrix, names_x, names_y) in matrices.items():
            arr = group.create_array(name, shape=matrix.shape, dtype="float64", attributes={"layers_x": names_x, "layers_y": names_y})
            arr[:] = matrix


def align_experiment(
    experiment: dict, xs: list[str], ys: list[str], receipts: dict[str, str], store_root: str, q: float,
    calibration: dict, out_csv: str, out_matrices: str,
) -> pd.DataFrame:  # fmt: skip
    """Score every model pair of an experiment on each of its datasets; write the tidy table and the matrices."""
    store = FeatureStore(store_root)
    keys = {tuple(k.split("/", 1)): read_receipt(path)["key"] for k, path in receipts.items()}
    datasets = [experiment["dataset"]] if isinstance(experiment["dataset"], str) else experiment["dataset"]
    rows, matrices = [], {}
    for dataset in datasets:
        prepared = {m: load_prepared(store, m, keys[(dataset, m)], q) for m in dict.fromkeys(xs + ys)}
        for metric in experiment["metrics"]:
            caches: dict = {}
            pairs = model_pairs(xs, ys, metric["name"])
            label = f"{dataset} {metric['name']} {entry_params(metric)}"
            for x, y in tqdm(pairs, desc=label, mininterval=2):
                px, py = prepared[x], prepared[y]
                matrix = pair_matrix(store, px, py, metric, q, caches)
                best = tuple(int(v) for v in np.unravel_index(int(np.nanargmax(matrix)), matrix.shape))
                calib = pair_calibration(store, px, py, best, metric, q, calibration) if experiment.get("calibrate", True) else None
                row = result_row(px, py, dataset, metric, matrix, calib)
                rows.append(row)
                ident = f"{dataset}/{metric_id(metric)}/{x}__{y}"
                matrices[ident] = (matrix, px.layer_names, py.layer_names)
                if get_metric(metric["name"]).symmetric and set(xs) == set(ys):
                    rows.append(mirrored(row))
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    write_matrices(out_matrices, matrices)
    write_csv_atomic(out_csv, table)
    return table
