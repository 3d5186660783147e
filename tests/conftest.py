"""Suite-wide fixtures: one local end-to-end run of the reduced config, shared by the e2e and SLURM tests, and a
small store of synthetic two-layer features for the experiment and sweep tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW = ("Snakefile", "rules", "workflow", "schemas", "envs")


def _copy_workflow(work: Path, extra: tuple[str, ...] = ()) -> Path:
    """A fresh copy of the workflow (and ``extra`` repository paths) in ``work``, with the e2e config as config.yaml."""
    work.mkdir(parents=True, exist_ok=True)
    for name in (*WORKFLOW, *extra):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
    shutil.copy(ROOT / "tests" / "e2e" / "config.yaml", work / "config.yaml")
    return work


@pytest.fixture(scope="session", autouse=True)
def _stamp_memos(tmp_path_factory):
    """Stamp memos (``prh.io.stamp_memo``) of the suite and the workflows it runs go to a temp folder, not ~/.cache."""
    patch = pytest.MonkeyPatch()
    patch.setenv("PRH_DIGEST_CACHE", str(tmp_path_factory.mktemp("stamps")))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def copy_workflow():
    """``copy_workflow(work, extra=())``: the workflow and the e2e config copied into ``work``."""
    return _copy_workflow


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory) -> Path:
    """The reduced config run locally to completion (2 cores); tests only read it or copy it."""
    work = _copy_workflow(tmp_path_factory.mktemp("workflow"))
    cmd = [SNAKEMAKE, "--cores", "2", "--configfile", "config.yaml", "--rerun-incomplete"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return work


def store_latent_features(tmp: Path, models: tuple[str, ...], n: int, seed: int, extraction: dict) -> dict:
    """Each model's two 6-wide layers of one shared 4-d latent plus noise, stored on dataset "d" with receipts under
    tmp/results -> {"receipts": {"d/<model>": path}, "feats": {model: [layer, layer]}}."""
    from prh.extract import Features
    from prh.store import FeatureStore, make_request, write_receipt

    store, receipts, feats = FeatureStore(tmp / "store"), {}, {}
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n, 4))
    for m in models:
        feats[m] = [(latent @ rng.standard_normal((4, 6)) + rng.standard_normal((n, 6))).astype(np.float32) for _ in range(2)]
        req = make_request(m, m * 64, "d", "image", "c" * 64, extraction)
        key = store.key(req)
        with store.put(key, req) as w:
            w.write(Features(feats[m], ["l0", "l1"]))
        path = tmp / "results" / "features" / "d" / f"{m}.json"
        write_receipt(path, key, req, store.info(key))
        receipts[f"d/{m}"] = str(path)
    return {"receipts": receipts, "feats": feats}


@pytest.fixture(scope="session")
def latent_store():
    """:func:`store_latent_features`, for module-scoped fixtures."""
    return store_latent_features
