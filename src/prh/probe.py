"""Linear probes: how many downstream tasks a representation solves (the competence axis of Fig. 2).

A probe is a multinomial logistic regression on standardised features. The inverse regularisation ``C`` is
chosen on a deterministic validation split of the training set, then the probe is refit on all of it and
scored once on the test set. A model *solves* a task when its accuracy is at least ``threshold`` (0.8 in the
paper) times the best accuracy any model reaches on that task; competence = the fraction of tasks solved.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from prh.errors import PrhError

_TOL = 1e-9  # accuracies are ratios of counts; float rounding must not flip "solved" at the exact bar
GROUPS = ("natural", "specialized", "structured")
ACCURACY_COLUMNS = ["model", "task", "group", "layer", "accuracy", "n_train", "n_test"]

# Offline stand-ins for VTAB's three groups, over the datasets the default config generates.
DEFAULT_TASKS: dict[str, dict[str, str]] = {
    "fmnist_class": {"dataset": "fashion-mnist", "label": "class", "group": "natural"},
    "fmnist_coarse": {"dataset": "fashion-mnist", "label": "coarse", "group": "natural"},
    "digits_class": {"dataset": "digits", "label": "class", "group": "natural"},
    "scenes_category": {"dataset": "scenes", "label": "category", "group": "natural"},
    "digits_parity": {"dataset": "digits", "label": "parity", "group": "specialized"},
    "digits_loop": {"dataset": "digits", "label": "loop", "group": "specialized"},
    "scenes_count": {"dataset": "scenes", "label": "count", "group": "structured"},
    "scenes_location": {"dataset": "scenes", "label": "location", "group": "structured"},
    "scenes_rotation": {"dataset": "scenes", "label": "rotation", "group": "structured"},
    "scenes_relative": {"dataset": "scenes", "label": "relative", "group": "structured"},
}

_VTAB_GROUPS: dict[str, tuple[str, ...]] = {
    "natural": ("caltech101", "cifar100", "dtd", "oxford_flowers102", "oxford_iiit_pet", "sun397", "svhn"),
    "specialized": ("patch_camelyon", "eurosat", "resisc45", "diabetic_retinopathy"),
    "structured": (
        "clevr_count", "clevr_distance", "dmlab", "dsprites_location",
        "dsprites_orientation", "kitti_distance", "smallnorb_azimuth", "smallnorb_elevation",
    ),
}
# The 19 VTAB-1k tasks of the paper config. ``dataset`` is a placeholder hub id: set it to the VTAB-1k
# mirror you use (loading is prh.data's job); ``label`` is the label column of that dataset.
VTAB_TASKS: dict[str, dict[str, str]] = {
    name: {"dataset": f"vtab-1k/{name}", "label": "label", "group": group}
    for group, names in _VTAB_GROUPS.items()
    for name in names
}


@dataclass(frozen=True)
class ProbeResult:
    """Test accuracy of one probe, the C it used, and the split sizes."""

    accuracy: float  # fraction of test samples classified correctly
    C: float  # inverse L2 regularisation picked on the validation split
    n_train: int  # training samples used (after the max_train cap)
    n_test: int
    val_accuracy: float = float("nan")  # validation accuracy of the chosen C (used to pick a layer)


def _check_xy(X: np.ndarray, y: np.ndarray, what: str) -> None:
    """Raise PrhError unless X is (n, d) and y is (n,) with n >= 1."""
    if X.ndim != 2:
        raise PrhError(f"probe {what} features must be 2-D (n, d), got shape {X.shape}")
    if y.ndim != 1 or len(y) != len(X):
        raise PrhError(f"probe {what} labels must be 1-D with {len(X)} entries, got shape {y.shape}")
    if len(y) == 0:
        raise PrhError(f"probe {what} split is empty")


def _fit(X: np.ndarray, y: np.ndarray, C: float, seed: int) -> tuple[StandardScaler, LogisticRegression]:
    """Standardise on X and fit a multinomial logistic regression."""
    scaler = StandardScaler().fit(X)
    clf = LogisticRegression(C=C, max_iter=1000, tol=1e-4, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(scaler.transform(X), y)
    return scaler, clf


def _score(model: tuple[StandardScaler, LogisticRegression], X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a fitted (scaler, classifier) pair."""
    scaler, clf = model
    return float(np.mean(clf.predict(scaler.transform(X)) == y))


def _cap(X: np.ndarray, y: np.ndarray, max_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic subsample of at most max_train rows (original order kept)."""
    if len(y) <= max_train:
        return X, y
    idx = np.sort(np.random.default_rng(seed).choice(len(y), size=max_train, replace=False))
    return X[idx], y[idx]


def _val_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (stratified when possible) train/validation index split."""
    idx = np.arange(len(y))
    _, counts = np.unique(y, return_counts=True)
    stratify = y if counts.min() >= 2 else None
    n_val = max(1, int(round(val_fraction * len(y))))
    if stratify is not None and n_val < len(counts):
        stratify = None
    fit_idx, val_idx = train_test_split(idx, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(fit_idx), np.sort(val_idx)


def select_C(
    X: np.ndarray, y: np.ndarray, C_grid: tuple[float, ...], val_fraction: float, seed: int
) -> tuple[float, float]:
    """(best C, its validation accuracy) on a deterministic split; ties go to the smaller C."""
    fit_idx, val_idx = _val_split(y, val_fraction, seed)
    if len(np.unique(y[fit_idx])) < 2:
        return float(min(C_grid)), float("nan")
    scores = [(_score(_fit(X[fit_idx], y[fit_idx], c, seed), X[val_idx], y[val_idx]), -c) for c in C_grid]
    best_acc, neg_c = max(scores)
    return -neg_c, best_acc


def fit_probe(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    C_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
    val_fraction: float = 0.2,
    max_train: int = 10000,
    seed: int = 0,
) -> ProbeResult:
    """Test accuracy of a standardised multinomial logistic probe, C picked on a validation split of train."""
    X_train, X_test = np.asarray(X_train, dtype=np.float64), np.asarray(X_test, dtype=np.float64)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    _check_xy(X_train, y_train, "train")
    _check_xy(X_test, y_test, "test")
    if X_test.shape[1] != X_train.shape[1]:
        raise PrhError(f"probe test features have {X_test.shape[1]} dims, train has {X_train.shape[1]}")
    if not C_grid or min(C_grid) <= 0:
        raise PrhError(f"probes.C_grid must be a non-empty list of positive numbers, got {list(C_grid)}")
    if not 0 < val_fraction < 1:
        raise PrhError(f"probes.val_fraction must be in (0, 1), got {val_fraction}")
    X_train, y_train = _cap(X_train, y_train, max_train, seed)
    if len(np.unique(y_train)) < 2:
        raise PrhError(f"probe training labels have a single class ({np.unique(y_train)}); nothing to learn")
    C, val_acc = select_C(X_train, y_train, tuple(sorted(C_grid)), val_fraction, seed)
    acc = _score(_fit(X_train, y_train, C, seed), X_test, y_test)
    return ProbeResult(accuracy=acc, C=C, n_train=len(y_train), n_test=len(y_test), val_accuracy=val_acc)


def _layer_indices(n_layers: int, layer: Literal["last", "best"] | int) -> list[int]:
    """Layer indices to probe for a layer choice."""
    if layer == "last":
        return [n_layers - 1]
    if layer == "best":
        return list(range(n_layers))
    if isinstance(layer, (int, np.integer)) and -n_layers <= int(layer) < n_layers:
        return [int(layer) % n_layers]
    raise PrhError(f"probes.layer must be 'last', 'best' or an index in [-{n_layers}, {n_layers}), got {layer!r}")


def _tasks_for(tasks: dict[str, dict], labels: dict[str, np.ndarray], dataset: str | None) -> dict[str, dict]:
    """Tasks of `dataset` (all when None), validated against the available labels."""
    chosen = {t: s for t, s in tasks.items() if dataset is None or s.get("dataset") == dataset}
    for name, spec in chosen.items():
        if spec.get("group") not in GROUPS:
            raise PrhError(f"probes.tasks.{name}.group must be one of {GROUPS}, got {spec.get('group')!r}")
        if spec.get("label") not in labels:
            raise PrhError(
                f"probes.tasks.{name}.label {spec.get('label')!r} is not a label of dataset "
                f"{spec.get('dataset')!r} (has {sorted(labels)})"
            )
    return chosen


def probe_model(
    layers: list[np.ndarray],
    labels: dict[str, np.ndarray],
    is_train: np.ndarray,
    tasks: dict[str, dict],
    layer: Literal["last", "best"] | int = "last",
    *,
    model: str | None = None,
    dataset: str | None = None,
    C_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
    val_fraction: float = 0.2,
    max_train: int = 10000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per task: probe accuracy of `layers` (each (n, d)); "best" = layer with best validation accuracy."""
    if not layers:
        raise PrhError("probe_model got no feature layers")
    is_train = np.asarray(is_train, dtype=bool)
    if is_train.shape != (len(layers[0]),):
        raise PrhError(f"probe split is_train has shape {is_train.shape}, features have {len(layers[0])} rows")
    if is_train.all() or not is_train.any():
        raise PrhError("probe split is_train must mark some samples train and some test")
    rows = []
    for name, spec in _tasks_for(tasks, labels, dataset).items():
        y = np.asarray(labels[spec["label"]])
        results = {
            i: fit_probe(
                layers[i][is_train], y[is_train], layers[i][~is_train], y[~is_train],
                C_grid=C_grid, val_fraction=val_fraction, max_train=max_train, seed=seed,
            )
            for i in _layer_indices(len(layers), layer)
        }
        best = max(results, key=lambda i: (np.nan_to_num(results[i].val_accuracy, nan=-1.0), -i))
        r = results[best]
        rows.append(
            {"model": model, "task": name, "group": spec["group"], "layer": best, "accuracy": r.accuracy,
             "n_train": r.n_train, "n_test": r.n_test, "C": r.C, "val_accuracy": r.val_accuracy}
        )
    df = pd.DataFrame(rows, columns=ACCURACY_COLUMNS + ["C", "val_accuracy"])
    return df if model is not None else df.drop(columns="model")


def solved_matrix(acc: pd.DataFrame, threshold: float = 0.8) -> pd.DataFrame:
    """Per (model, task): accuracy, best accuracy of any model on the task, solved = acc >= threshold * best."""
    missing = {"model", "task", "accuracy"} - set(acc.columns)
    if missing:
        raise PrhError(f"probe accuracy table lacks column(s) {sorted(missing)}")
    if not 0 < threshold <= 1:
        raise PrhError(f"probes.solved_threshold must be in (0, 1], got {threshold}")
    dup = acc.duplicated(["model", "task"])
    if dup.any():
        r = acc[dup].iloc[0]
        raise PrhError(f"probe accuracy table has duplicate rows for model {r['model']!r}, task {r['task']!r}")
    out = acc[["model", "task", "accuracy"]].copy()
    out["best"] = out.groupby("task")["accuracy"].transform("max")
    out["solved"] = out["accuracy"] >= threshold * out["best"] - _TOL  # 0.72 vs 0.8 * 0.9 = 0.7200000000000001
    return out.reset_index(drop=True)


def tasks_solved(solved: pd.DataFrame) -> pd.DataFrame:
    """Per model: n_solved, n_tasks and frac_solved (the competence score of Fig. 2)."""
    missing = {"model", "task", "solved"} - set(solved.columns)
    if missing:
        raise PrhError(f"solved table lacks column(s) {sorted(missing)}")
    g = solved.groupby("model", sort=True)
    out = pd.DataFrame({"n_solved": g["solved"].sum().astype(int), "n_tasks": g["task"].nunique()})
    out["frac_solved"] = out["n_solved"] / out["n_tasks"]
    return out.reset_index()
