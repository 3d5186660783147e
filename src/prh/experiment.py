"""Fan-in alignment: every model pair of an experiment over all layer pairs, per-pair scores memoised in the store."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from prh.align import best_pair, prepare
from prh.io import atomic_dir, content_key, write_csv_atomic
from prh.metrics import (
    KernelCache,
    chance_level,
    get_metric,
    prepare_kernels,
    prepare_layers,
    score_caches,
)
from prh.metrics.layer_calibration import (
    CI_METHOD,
    SUMMARY_FIELDS,
    calibrate_models,
    permutation_array,
)
from prh.metrics.registry import entry_params
from prh.store import FeatureStore, read_receipt

ALIGN_VERSION = "prh-align-1"
# In calibration memo keys: the null of the max over all layer pairs (issue 17), so single-pair calibrations made
# before it are never reused; a changed interval method recomputes only calibrations.
CALIBRATION_VERSION = "max-over-layer-pairs-1"
COLUMNS = [
    "model_x", "model_y", "dataset", "metric", "params", "n", "score", "layer_x", "layer_y",
    "chance", "null_mean", "null_std", "tau", "p_value", "calibrated", "effect", "ci_low", "ci_high",
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
    return content_key(payload)


def load_prepared(store: FeatureStore, name: str, key: str, q: float) -> PreparedModel:
    """Read a model's layers from the store and apply the paper's preprocessing."""
    entry = store.open(key)
    return PreparedModel(name, key, prepare(entry.layers(), q=q), [*entry.layer_names, "concat"])


def model_pairs(xs: list[str], ys: list[str], metric: str) -> list[tuple[str, str]]:
    """Ordered (x, y) pairs to score; symmetric metrics on one model set score each unordered pair once, as
    (smaller name, larger name): the canonical order that :meth:`prh.Scorer.score` follows given a model's name."""
    pairs = [(x, y) for x in xs for y in ys if x != y]
    if not get_metric(metric).symmetric or set(xs) != set(ys):
        return pairs
    return [(x, y) for x, y in pairs if x < y]


def pair_matrix(
    store: FeatureStore, px: PreparedModel, py: PreparedModel, metric: dict, q: float, caches: dict,
    kernels: dict[str, KernelCache] | None = None,
) -> np.ndarray:  # fmt: skip
    """All layer-pair scores of one model pair, from the memo or computed from per-model caches.

    ``kernels``: per-model KernelCaches whose Grams and neighbour lists are shared across metrics.
    """
    key = memo_key("matrix", px.key, py.key, metric, q)
    cached = store.memo_get(key, shape=(len(px.layers), len(py.layers)))
    if cached is not None:
        return cached
    name, params = metric["name"], entry_params(metric)
    for p in (px, py):
        if p.name not in caches:
            caches[p.name] = prepare_layers(name, (kernels or {}).get(p.name, p.layers), **params)
    matrix = score_caches(name, caches[px.name], caches[py.name], **params)
    store.memo_put(key, matrix)
    return matrix


def calibration_settings(calibration: dict) -> dict:
    """The settings that determine a calibration (memo-key part): counts, alpha, aggregate, seed and method version."""
    return {"permutations": int(calibration["permutations"]), "bootstrap": int(calibration["bootstrap"]),
            "alpha": float(calibration.get("alpha", 0.05)), "aggregate": "max", "seed": int(calibration["seed"]),
            "method": CALIBRATION_VERSION, "ci": CI_METHOD}  # fmt: skip


def pair_calibrations(
    store: FeatureStore, prepared: dict[str, PreparedModel], kernels: dict[str, KernelCache],
    pairs: list[tuple[str, str]], metric: dict, q: float, calibration: dict, perms: np.ndarray,
) -> dict[tuple[str, str], np.ndarray]:  # fmt: skip
    """Calibration summaries (``LayerCalibration.summary()``) of ordered model pairs, memoised per pair.

    Pairs missing from the memo are calibrated together (:func:`calibrate_models`): each model's states once, each
    permuted / resampled model once per draw. ``perms``: the dataset's (K, n) permutation array, shared by its metrics.
    """
    settings = calibration_settings(calibration)
    keys = {(x, y): memo_key("calibration", prepared[x].key, prepared[y].key, metric, q, settings) for x, y in pairs}
    out = {pair: store.memo_get(key) for pair, key in keys.items()}
    todo = [pair for pair, value in out.items() if value is None]
    if todo:
        models = {m: kernels[m] for pair in todo for m in pair}
        done = calibrate_models(models, todo, metric["name"], permutations=perms, bootstrap=settings["bootstrap"],
                                alpha=settings["alpha"], aggregate=settings["aggregate"], seed=settings["seed"],
                                progress=f"calibrate {metric_id(metric)}", **entry_params(metric))  # fmt: skip
        for pair, c in done.items():
            out[pair] = c.summary()
            store.memo_put(keys[pair], out[pair])
    return out


def result_row(
    px: PreparedModel, py: PreparedModel, dataset: str, metric: dict, matrix: np.ndarray, calib: np.ndarray | None
) -> dict:
    """One tidy alignment row: best score over layer pairs, its layers, chance and calibration of the maximum."""
    score, (i, j) = best_pair(matrix)
    n = px.layers[0].shape[0]
    chance = chance_level(metric["name"], n, **entry_params(metric))
    row = {"model_x": px.name, "model_y": py.name, "dataset": dataset, "metric": metric["name"],
           "params": json.dumps(entry_params(metric), sort_keys=True), "n": n, "score": score,
           "layer_x": px.layer_names[i], "layer_y": py.layer_names[j], "chance": chance}  # fmt: skip
    if calib is not None:
        row.update({f: float(v) for f, v in zip(SUMMARY_FIELDS, calib) if f != "score"})
    return row


def mirrored(row: dict) -> dict:
    """The same score and calibration seen from the other model (symmetric metrics)."""
    return dict(row, model_x=row["model_y"], model_y=row["model_x"], layer_x=row["layer_y"], layer_y=row["layer_x"])


def write_matrices(path: str, matrices: dict[str, tuple[np.ndarray, list[str], list[str]]]) -> None:
    """Write every layer-pair matrix into a zarr group, atomically: temp dir, then swap it in for the old one."""
    import zarr

    with atomic_dir(path) as commit:
        group = zarr.open_group(str(commit.path), mode="w")
        for name, (matrix, names_x, names_y) in matrices.items():
            arr = group.create_array(name, shape=matrix.shape, dtype="float64", attributes={"layers_x": names_x, "layers_y": names_y})
            arr[:] = matrix


def metric_rows(
    store: FeatureStore, prepared: dict[str, PreparedModel], kernels: dict[str, KernelCache], xs: list[str],
    ys: list[str], dataset: str, metric: dict, q: float, calibration: dict, perms: np.ndarray | None, experiment: dict,
    matrices: dict,
) -> list[dict]:  # fmt: skip
    """Rows of one metric on one dataset: every model pair's best layer pair and, if asked, its calibration.

    A symmetric metric on one model set scores and calibrates each unordered pair once and mirrors the row: the
    null of (y, x) permutes x's rows, score(y, x[pi]) = score(x, y[pi^-1]) and pi^-1 is as uniform as pi, so both
    orders share one null in law and one set of draws serves both.
    """
    caches: dict = {}
    pairs = model_pairs(xs, ys, metric["name"])
    mirror = get_metric(metric["name"]).symmetric and set(xs) == set(ys)
    label = f"{dataset} {metric['name']} {entry_params(metric)}"
    scored = {}
    for x, y in tqdm(pairs, desc=label, mininterval=2):
        scored[(x, y)] = pair_matrix(store, prepared[x], prepared[y], metric, q, caches, kernels)
        matrices[f"{dataset}/{metric_id(metric)}/{x}__{y}"] = (scored[(x, y)], prepared[x].layer_names, prepared[y].layer_names)
    calibs: dict = {}
    if perms is not None:
        calibs = pair_calibrations(store, prepared, kernels, pairs, metric, q, calibration, perms)
    rows = []
    for x, y in pairs:
        row = result_row(prepared[x], prepared[y], dataset, metric, scored[(x, y)], calibs.get((x, y)))
        rows += [row, mirrored(row)] if mirror else [row]
    return rows


def align_experiment(
    experiment: dict, xs: list[str], ys: list[str], receipts: dict[str, str], store_root: str, q: float,
    calibration: dict, out_csv: str, out_matrices: str,
) -> pd.DataFrame:  # fmt: skip
    """Score every model pair of an experiment on each of its datasets; write the tidy table and the matrices."""
    store = FeatureStore(store_root)
    calibration = {**calibration, **{k: experiment[k] for k in ("permutations", "bootstrap") if k in experiment}}
    keys = {tuple(k.split("/", 1)): read_receipt(path)["key"] for k, path in receipts.items()}
    datasets = [experiment["dataset"]] if isinstance(experiment["dataset"], str) else experiment["dataset"]
    rows, matrices = [], {}
    for dataset in datasets:
        prepared = {m: load_prepared(store, m, keys[(dataset, m)], q) for m in dict.fromkeys(xs + ys)}
        kernels = {m: prepare_kernels(p.layers) for m, p in prepared.items()}  # Grams / neighbours shared by metrics
        n = next(iter(prepared.values())).layers[0].shape[0]
        calibrating = experiment.get("calibrate", True)
        # one permutation array per dataset, from the config seed, shared by all its metrics
        perms = permutation_array(n, int(calibration["permutations"]), int(calibration["seed"])) if calibrating else None
        for metric in experiment["metrics"]:
            rows += metric_rows(store, prepared, kernels, xs, ys, dataset, metric, q, calibration, perms, experiment,
                                matrices)  # fmt: skip
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    write_matrices(out_matrices, matrices)
    write_csv_atomic(out_csv, table)
    return table
