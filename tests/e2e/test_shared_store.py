"""Two workflow runs, two working directories, one feature store: concurrent writers agree and commit each key once.

Run A uses the end-to-end config; run B drops vit-random and adds mixer-sup, so the runs share most store entries
(zoo checkpoints, extractions and memoised pair scores of vit-sup, resnet-sup, minilm and lm-tiny) and not the rest.
Both are started together and build the alignment tables (every store writer: zoo training, extraction and memoised
pair scores), not the probes, LM scores, figures or report, which write nothing to the store.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MIXER = {"source": "zoo", "modality": "vision", "arch": "mixer_s16_224", "objective": "supervised", "width": 32,
         "steps": 20, "arch_kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "num_blocks": 2}}  # fmt: skip
SHARED_MODELS = {"vit-sup", "resnet-sup", "minilm", "lm-tiny"}
# Probes, LM scores, figures and the report write nothing to the store; caption density adds only more of the same.
EXPERIMENTS = ("vision-vision", "vision-language", "locality", "agreement")


def workdir(base: Path, name: str, cfg: dict) -> Path:
    """A fresh copy of the workflow in ``base/name`` with ``cfg`` as its config.yaml."""
    work = base / name
    work.mkdir()
    for item in ("Snakefile", "rules", "workflow", "schemas", "envs"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, work / item)
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return work


def table_targets(cfg: dict) -> list[str]:
    """The alignment tables of the experiments in EXPERIMENTS (each writes store entries and memoised pair scores)."""
    return [f"{cfg['results']}/alignment/{e}.csv" for e in EXPERIMENTS]


def receipts(work: Path) -> dict[tuple[str, str], dict]:
    """(dataset, model) -> extraction receipt of one run."""
    out = {}
    for path in sorted((work / "results" / "features").glob("*/*.json")):
        out[(path.parent.name, path.stem)] = json.loads(path.read_text())
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("shared")
    store = base / "store"  # absolute, outside both working directories
    cfg_a = yaml.safe_load((ROOT / "tests" / "e2e" / "config.yaml").read_text())
    cfg_a["store"] = str(store)
    cfg_b = json.loads(json.dumps(cfg_a))
    del cfg_b["models"]["vit-random"]
    cfg_b["models"]["mixer-sup"] = MIXER
    works = {"a": workdir(base, "a", cfg_a), "b": workdir(base, "b", cfg_b)}
    start = time.perf_counter()
    procs, rcs = {}, {}
    with contextlib.ExitStack() as stack:
        for name, work in works.items():
            cmd = [SNAKEMAKE, *table_targets(cfg_a), "--cores", "2", "--configfile", "config.yaml"]
            log = stack.enter_context(open(work / "snakemake.out", "w"))
            procs[name] = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
            stack.callback(lambda p=procs[name]: p.poll() is None and p.kill())
        for name, proc in procs.items():
            rcs[name] = proc.wait(timeout=1500)
    wall = time.perf_counter() - start
    print(f"\ntwo concurrent runs into one store: {wall:.1f} s wall")
    return {"store": store, "works": works, "rcs": rcs, "wall_s": wall}


def test_both_runs_succeed(runs):
    for name, work in runs["works"].items():
        assert runs["rcs"][name] == 0, f"run {name}:\n" + (work / "snakemake.out").read_text()[-4000:]


def test_every_entry_verifies(runs):
    from prh.store import FeatureStore

    store = FeatureStore(runs["store"])
    assert store.keys() and store.verify() == []
    proc = subprocess.run([sys.executable, "-m", "prh.cli", "--store", str(runs["store"]), "store", "verify"],
                          check=False, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(len(store.keys())) in proc.stdout
    assert store.gc(dry_run=True) == []  # both runs finished: no temp dir or memo temp file left behind


def test_shared_keys_committed_once_and_receipts_agree(runs):
    from prh.store import FeatureStore

    store = FeatureStore(runs["store"])
    a, b = (receipts(runs["works"][n]) for n in ("a", "b"))
    shared = set(a) & set(b)
    assert {m for _, m in shared} == SHARED_MODELS
    assert shared == {k for k in a if k[1] != "vit-random"} == {k for k in b if k[1] != "mixer-sup"}
    for ds_model in sorted(shared):
        assert a[ds_model] == b[ds_model], ds_model  # same key, request and entry (incl. its creation time)
    # One entry per distinct key the runs name: nothing committed twice under different keys, nothing orphaned.
    named = {r["key"] for r in a.values()} | {r["key"] for r in b.values()}
    assert set(store.keys()) == named
    for ds_model in sorted(shared):
        key = a[ds_model]["key"]
        info = store.info(key).as_dict()
        info.pop("age_s")
        entry = store.open(key)
        assert {k: a[ds_model]["entry"][k] for k in info} == info, ds_model  # the entry as it is now
        assert entry.request == a[ds_model]["request"]
        assert json.loads((store.path(key) / "manifest.json").read_text())["key"] == key


def test_shared_features_equal_an_independent_extraction(runs, tmp_path):
    """Re-extract two shared entries alone into a fresh store: same key, bytewise the same features."""
    from prh.store import FeatureStore

    work = runs["works"]["a"]
    fresh = tmp_path / "fresh"
    for dataset, model in (("fmnist", "vit-sup"), ("scenes", "lm-tiny")):
        receipt_a = json.loads((work / "results" / "features" / dataset / f"{model}.json").read_text())
        out = tmp_path / f"{dataset}-{model}.json"
        script = (
            "import sys, json, yaml\n"
            "from prh.config import validate_config\n"
            "from prh.plan import Plan\n"
            "from prh.pipeline import extract_features\n"
            "from prh.runtime import set_threads\n"
            "cfg = validate_config(yaml.safe_load(open(sys.argv[1])))\n"
            "plan = Plan(cfg)\n"
            "set_threads(cfg['threads'])\n"
            "model, dataset, work, store, out = sys.argv[2:7]\n"
            "zoo = [f'{work}/results/zoo/{model}.json'] if cfg['models'][model]['source'] == 'zoo' else []\n"
            "extract_features(model, cfg['models'][model], zoo, f'{work}/results/data/{dataset}.npz', store,\n"
            "                 plan.extraction_params(model), out, batch_size=plan.batch_size(model))\n"
        )  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", script, str(work / "config.yaml"), model, dataset, str(work),
                               str(fresh), str(out)], check=False, capture_output=True, text=True, cwd=work)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        receipt = json.loads(out.read_text())
        assert receipt["key"] == receipt_a["key"]
        mine = FeatureStore(fresh).open(receipt["key"])
        theirs = FeatureStore(runs["store"]).open(receipt_a["key"])
        assert mine.layer_names == theirs.layer_names and mine.side_names == theirs.side_names
        assert np.asarray(mine.dims).tobytes() == np.asarray(theirs.dims).tobytes()
        for i, (m, t) in enumerate(zip(mine.layers(), theirs.layers())):
            assert m.dtype == t.dtype and m.shape == t.shape and m.tobytes() == t.tobytes(), (dataset, model, i)
        for name in mine.side_names:
            assert mine.side(name).tobytes() == theirs.side(name).tobytes(), (dataset, model, name)


def _shared_rows(table: pd.DataFrame, cols: tuple[str, ...]) -> pd.DataFrame:
    """Rows whose models (in every column of ``cols``) are in both runs."""
    return table[np.logical_and.reduce([table[c].isin(SHARED_MODELS) for c in cols])]


def assert_tables_agree(x: pd.DataFrame, y: pd.DataFrame, keys: list[str], what: str) -> None:
    """Same rows (by ``keys``) and, in every column, equal values (floats within 1e-12)."""
    x, y = x.sort_values(keys).reset_index(drop=True), y.sort_values(keys).reset_index(drop=True)
    assert len(x) > 0 and list(x.columns) == list(y.columns), what
    pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=0, atol=1e-12, obj=what)


def test_shared_pairs_score_the_same_in_both_runs(runs):
    res = {n: runs["works"][n] / "results" for n in ("a", "b")}
    for experiment in EXPERIMENTS:
        x, y = (_shared_rows(pd.read_csv(res[n] / "alignment" / f"{experiment}.csv"), ("model_x", "model_y"))
                for n in ("a", "b"))  # fmt: skip
        assert_tables_agree(x, y, ["model_x", "model_y", "dataset", "metric", "params"], experiment)
