"""Fixtures of the fault-injection suite: one tiny zoo ViT checkpoint, a tiny dataset, a reference entry."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> None:
    """Two shared cores: keep torch to one intra-op thread."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny ViT zoo checkpoint (objective random, 0 steps)."""
    from faultkit import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("zoo") / "vit")


@pytest.fixture(scope="session")
def images():
    """24 fixed random 32x32 RGB images."""
    from faultkit import make_images

    return make_images()


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, ckpt: Path, images) -> dict:
    """An uninterrupted extraction: its store, key and manifest fingerprint."""
    from faultkit import expected_key, fingerprint, run_extract

    from prh.store import FeatureStore

    root = tmp_path_factory.mktemp("reference-store")
    key, created = run_extract(root, ckpt, images)
    assert created and key == expected_key(ckpt, images)
    return {"root": root, "key": key, "fingerprint": fingerprint(FeatureStore(root).path(key))}


@pytest.fixture(scope="session")
def seeded_store(tmp_path_factory: pytest.TempPathFactory, ckpt: Path) -> dict:
    """A store holding one committed bystander entry (same model, another dataset): it must survive every fault."""
    from faultkit import fingerprint, make_images, run_extract

    from prh.store import FeatureStore

    root = tmp_path_factory.mktemp("seed-store")
    key, _ = run_extract(root, ckpt, make_images("bystander", n=10, seed=1))
    return {"root": root, "key": key, "fingerprint": fingerprint(FeatureStore(root).path(key))}


@pytest.fixture()
def store_copy(tmp_path: Path, seeded_store: dict) -> Path:
    """A fresh copy of the seeded store for one test."""
    root = tmp_path / "store"
    shutil.copytree(seeded_store["root"], root)
    return root


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory, reference: dict) -> dict:
    """A store with one entry (+ receipt), one memo, one zoo checkpoint and one converted model cache, all sound, and
    the results folder whose receipts name them."""
    import numpy as np
    from faultkit import RECIPE, Tokenizer, tiny_llama

    from prh.models.language import _write_cache, default_cache_dir
    from prh.store import FeatureStore, write_receipt
    from prh.zoo.vision import ensure_trained

    work = tmp_path_factory.mktemp("audit")
    root = work / "store"
    shutil.copytree(reference["root"], root)
    store = FeatureStore(root)
    key = reference["key"]
    write_receipt(work / "results" / "features" / "imgs" / "vit.json", key, store.open(key).request, store.info(key))
    store.memo_put("ab" * 32, np.arange(12.0).reshape(3, 4))
    ckpt = ensure_trained(RECIPE, root / "zoo", name="audit-vit")
    (work / "results" / "zoo").mkdir(parents=True)
    (work / "results" / "zoo" / "audit-vit.json").write_text(json.dumps({"model": "audit-vit", "checkpoint": str(ckpt)}))
    cache = default_cache_dir("tiny-lm", "c" * 64, root)
    _write_cache(tiny_llama(), Tokenizer(), cache, "c" * 64)
    (work / "results" / "prepared").mkdir(parents=True)  # what the prepare_model job writes for a weights cache
    (work / "results" / "prepared" / "tiny-lm.json").write_text(json.dumps({"model": "tiny-lm", "checkpoint": str(cache)}))
    return {"work": work, "root": root, "key": key, "memo": "ab" * 32, "zoo": f"zoo/{ckpt.name}",
            "cache": f"hf-cache/{cache.name}"}  # fmt: skip


@pytest.fixture()
def audit_store(tmp_path: Path, pristine: dict) -> dict:
    """A fresh copy of the pristine store and its results for one test."""
    shutil.copytree(pristine["work"], tmp_path / "w")
    return {**pristine, "work": tmp_path / "w", "root": tmp_path / "w" / "store"}
