"""Result tables are written atomically: an interrupted fan-in job leaves the previous table byte-for-byte intact."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faultkit import fail_zarr_write

from prh.errors import PrhError
from prh.extract import Features
from prh.store import FeatureStore, make_request, write_receipt

MODELS = ("a", "b", "c")


@pytest.fixture()
def fan_in(tmp_path: Path) -> dict:
    """Three models' features on one dataset, their receipts, and a finished alignment run (the 'previous' tables)."""
    from prh.experiment import align_experiment

    root, receipts = tmp_path / "store", {}
    store = FeatureStore(root)
    rng = np.random.default_rng(0)
    for m in MODELS:
        req = make_request(m, m * 64, "d", "image", "c" * 64, {"pooling": "cls", "layers": "all"})
        key = store.key(req)
        with store.put(key, req) as w:
            w.write(Features([rng.standard_normal((30, 6)).astype(np.float32) for _ in range(2)], ["l0", "l1"]))
        path = tmp_path / "results" / "features" / "d" / f"{m}.json"
        write_receipt(path, key, req, store.info(key))
        receipts[f"d/{m}"] = str(path)
    out = tmp_path / "results" / "alignment"
    exp = {"dataset": "d", "metrics": [{"name": "mutual_knn", "k": 3}], "calibrate": False}
    args = [exp, list(MODELS), list(MODELS), receipts, str(root), 0.95, {}, str(out / "e.csv"), str(out / "e.zarr")]
    align_experiment(*args)
    args[1] = args[2] = list(MODELS[:2])  # the rerun scores a different model set, so its table would differ
    return {"args": args, "dir": out, "csv": out / "e.csv", "old": (out / "e.csv").read_bytes()}


def _listing(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*"))


def test_csv_replace_fails(fan_in: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.replace of the new CSV fails (disk full): one-line PrhError, old bytes intact, no temp file."""
    from prh.experiment import align_experiment

    before = _listing(fan_in["dir"])

    real = os.replace

    def replace(src, dst):
        if str(dst).endswith(".csv"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PrhError) as err:
        align_experiment(*fan_in["args"])
    assert "\n" not in str(err.value) and "e.csv" in str(err.value) and "ENOSPC" in str(err.value)
    assert fan_in["csv"].read_bytes() == fan_in["old"]
    after = _listing(fan_in["dir"])
    assert not [p for p in after if "/." in f"/{p}"]  # no temp file or dir left
    assert [p for p in after if not p.startswith("e.zarr")] == [p for p in before if not p.startswith("e.zarr")]


def test_job_interrupted_mid_fan_in(fan_in: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job dies (Ctrl-C) after scoring some pairs: the previous table and matrices are untouched."""
    import prh.experiment as ex

    before = {p: p.read_bytes() for p in fan_in["dir"].rglob("*") if p.is_file()}
    real, calls = ex.pair_matrix, [0]

    def pair_matrix(*a, **k):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    fan_in["args"][1] = fan_in["args"][2] = list(MODELS)
    monkeypatch.setattr(ex, "pair_matrix", pair_matrix)
    with pytest.raises(KeyboardInterrupt):
        ex.align_experiment(*fan_in["args"])
    assert {p: p.read_bytes() for p in fan_in["dir"].rglob("*") if p.is_file()} == before


def test_matrices_write_fails_leaves_no_temp(fan_in: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import prh.experiment as ex

    before = _listing(fan_in["dir"])
    fail_zarr_write(monkeypatch, 3)
    with pytest.raises((PrhError, OSError)):
        ex.align_experiment(*fan_in["args"])
    assert fan_in["csv"].read_bytes() == fan_in["old"]
    assert _listing(fan_in["dir"]) == before


def test_probe_summary_interrupted_between_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """probe_summary fails writing its second table: each table is the old one or the whole new one, no temp files."""
    from prh.pipeline import probe_summary

    acc = tmp_path / "acc-in.csv"
    pd.DataFrame({"model": ["a", "b"], "task": ["t", "t"], "group": ["g", "g"], "layer": [0, 0],
                  "accuracy": [0.9, 0.5], "n_train": [10, 10], "n_test": [5, 5]}).to_csv(acc, index=False)  # fmt: skip
    out = tmp_path / "probes"
    outputs = {name: str(out / f"{name}.csv") for name in ("accuracy", "solved", "tasks_solved")}
    out.mkdir()
    for path in outputs.values():
        Path(path).write_bytes(b"old table\n")
    real, calls = os.replace, [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] == 2:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PrhError, match="solved.csv.*EROFS"):
        probe_summary([str(acc)], 0.8, outputs)
    assert pd.read_csv(outputs["accuracy"]).shape == (2, 7)  # replaced whole
    assert Path(outputs["solved"]).read_bytes() == Path(outputs["tasks_solved"]).read_bytes() == b"old table\n"
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.csv", "solved.csv", "tasks_solved.csv"]
