"""Fixtures of the fault-injection suite: one tiny zoo ViT checkpoint, a tiny dataset, a reference entry."""

from __future__ import annotations

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
