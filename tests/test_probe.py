"""Linear probes, the solved rule and the task tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prh.errors import PrhError
from prh.probe import (
    DEFAULT_TASKS,
    GROUPS,
    VTAB_TASKS,
    fit_probe,
    probe_model,
    solved_matrix,
    tasks_solved,
)


def _blobs(n: int, k: int, d: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated Gaussian classes in d dims."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centres = rng.normal(size=(k, d)) * sep
    return centres[y] + rng.normal(size=(n, d)), y


def test_separable_features_are_probed_perfectly() -> None:
    X, y = _blobs(400, 4, 16, sep=10.0, seed=0)
    r = fit_probe(X[:300], y[:300], X[300:], y[300:])
    assert r.accuracy >= 0.99
    assert (r.n_train, r.n_test) == (300, 100)
    assert r.C in (0.01, 0.1, 1.0, 10.0)


def test_shuffled_labels_give_chance_accuracy() -> None:
    k, n_test = 5, 2000
    X, y = _blobs(3000, k, 8, sep=3.0, seed=1)
    y_shuf = np.random.default_rng(2).permutation(y)
    r = fit_probe(X[:1000], y_shuf[:1000], X[1000:], y_shuf[1000:])
    se = np.sqrt((1 / k) * (1 - 1 / k) / n_test)
    assert abs(r.accuracy - 1 / k) < 4 * se


def test_probe_is_deterministic_and_caps_training_set() -> None:
    X, y = _blobs(600, 3, 10, sep=1.0, seed=3)
    a = fit_probe(X[:500], y[:500], X[500:], y[500:], max_train=200, seed=7)
    b = fit_probe(X[:500], y[:500], X[500:], y[500:], max_train=200, seed=7)
    assert a == b
    assert a.n_train == 200


def test_probe_rejects_bad_inputs() -> None:
    X, y = _blobs(50, 2, 4, sep=1.0, seed=0)
    with pytest.raises(PrhError, match="single class"):
        fit_probe(X, np.zeros(50, int), X, y)
    with pytest.raises(PrhError, match="labels must be 1-D"):
        fit_probe(X, y[:10], X, y)
    with pytest.raises(PrhError, match="C_grid"):
        fit_probe(X, y, X, y, C_grid=(0.0,))


def test_best_layer_picks_the_informative_layer() -> None:
    X, y = _blobs(400, 3, 8, sep=6.0, seed=4)
    noise = np.random.default_rng(5).normal(size=X.shape)
    layers = [noise, X, noise[:, ::-1].copy()]
    is_train = np.arange(400) < 300
    tasks = {"t": {"dataset": "d", "label": "class", "group": "natural"}}
    df = probe_model(layers, {"class": y}, is_train, tasks, layer="best", model="m")
    assert list(df.columns[:7]) == ["model", "task", "group", "layer", "accuracy", "n_train", "n_test"]
    assert df.loc[0, "layer"] == 1 and df.loc[0, "accuracy"] > 0.95
    last = probe_model(layers, {"class": y}, is_train, tasks, layer="last")
    assert "model" not in last.columns and last.loc[0, "layer"] == 2 and last.loc[0, "accuracy"] < 0.6


def test_probe_model_filters_tasks_by_dataset_and_checks_labels() -> None:
    X, y = _blobs(100, 2, 4, sep=5.0, seed=0)
    is_train = np.arange(100) < 70
    tasks = {
        "a": {"dataset": "d1", "label": "class", "group": "natural"},
        "b": {"dataset": "d2", "label": "missing", "group": "structured"},
    }
    df = probe_model([X], {"class": y}, is_train, tasks, dataset="d1")
    assert df["task"].tolist() == ["a"]
    with pytest.raises(PrhError, match="probes.tasks.b.label"):
        probe_model([X], {"class": y}, is_train, tasks)
    with pytest.raises(PrhError, match="probes.layer"):
        probe_model([X], {"class": y}, is_train, tasks, layer=5, dataset="d1")


def test_solved_rule_matches_hand_example() -> None:
    acc = pd.DataFrame(
        {
            "model": ["m1", "m2", "m3", "m1", "m2", "m3"],
            "task": ["t1", "t1", "t1", "t2", "t2", "t2"],
            "accuracy": [0.90, 0.72, 0.71, 0.50, 0.40, 0.39],
        }
    )
    s = solved_matrix(acc, threshold=0.8).set_index(["model", "task"])
    # t1: best 0.90, bar 0.72 -> m1, m2 solve, m3 not; t2: best 0.50, bar 0.40 -> m1, m2 solve.
    assert s["solved"].to_dict() == {
        ("m1", "t1"): True, ("m2", "t1"): True, ("m3", "t1"): False,
        ("m1", "t2"): True, ("m2", "t2"): True, ("m3", "t2"): False,
    }
    assert s.loc[("m3", "t2"), "best"] == 0.50
    ts = tasks_solved(s.reset_index()).set_index("model")
    assert ts.loc["m1", "n_solved"] == 2 and ts.loc["m3", "n_solved"] == 0
    assert ts.loc["m2", "frac_solved"] == 1.0 and (ts["n_tasks"] == 2).all()


def test_solved_matrix_rejects_duplicates() -> None:
    acc = pd.DataFrame({"model": ["m", "m"], "task": ["t", "t"], "accuracy": [0.5, 0.6]})
    with pytest.raises(PrhError, match="duplicate"):
        solved_matrix(acc)


def test_task_tables_cover_all_groups() -> None:
    assert len(VTAB_TASKS) == 19
    assert [sum(s["group"] == g for s in VTAB_TASKS.values()) for g in GROUPS] == [7, 4, 8]
    assert len(DEFAULT_TASKS) >= 8 and {s["group"] for s in DEFAULT_TASKS.values()} == set(GROUPS)


def test_probe_job_runs_the_tasks_of_a_dataset_whose_features_a_twin_holds(tmp_path) -> None:
    """emoji-names' tasks read emoji-keywords' features (same images): the tasks follow the labels' dataset."""
    from prh.data import make_dataset, save_dataset
    from prh.pipeline import probe_model as probe_job
    from prh.extract import Features
    from prh.store import FeatureStore, make_request, write_receipt

    rng = np.random.default_rng(0)
    n = 60
    y = rng.integers(0, 3, n)
    x = (np.eye(3)[y] * 3 + rng.standard_normal((n, 3))).astype(np.float32)
    images = np.zeros((n, 2, 2, 3), np.uint8)
    store = FeatureStore(tmp_path / "store")
    req = make_request("m", "a" * 64, "twin", "image", "c" * 64, {"pooling": "cls", "layers": "all"})
    key = store.key(req)
    with store.put(key, req) as w:
        w.write(Features([x], ["l0"]))
    write_receipt(tmp_path / "twin.json", key, req, store.info(key))
    labels = make_dataset("named", images=images, labels={"group": y}, is_train=np.arange(n) % 3 != 0)
    save_dataset(labels, tmp_path / "named.npz")
    tasks = {"named-group": {"dataset": "named", "label": "group", "group": "natural"},
             "other-task": {"dataset": "other", "label": "group", "group": "natural"}}  # fmt: skip
    out = tmp_path / "acc.csv"
    probe_job("m", [str(tmp_path / "twin.json")], [str(tmp_path / "named.npz")], tasks, "last", 10_000,
              str(tmp_path / "store"), str(out))  # fmt: skip
    df = pd.read_csv(out)
    assert df["task"].tolist() == ["named-group"] and df["accuracy"].iloc[0] > 0.9
