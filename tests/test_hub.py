"""prh.hub: where the hub cache is, which commit a revision names there, content ids of snapshot files."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "hub"))
from hubkit import move_ref, write_snapshot  # noqa: E402

from prh import hub  # noqa: E402
from prh.errors import PrhError  # noqa: E402


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_cache_dir_follows_huggingface_hub_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_CACHE, then HUGGINGFACE_HUB_CACHE, then HF_HOME/hub, then $XDG_CACHE_HOME/huggingface/hub: the same
    answer as huggingface_hub's own constants computed in a fresh interpreter."""
    import subprocess

    cases = [{"XDG_CACHE_HOME": str(tmp_path / "x")}, {"HF_HOME": str(tmp_path / "h"), "XDG_CACHE_HOME": "/nope"},
             {"HUGGINGFACE_HUB_CACHE": str(tmp_path / "old"), "HF_HOME": str(tmp_path / "h")},
             {"HF_HUB_CACHE": str(tmp_path / "c"), "HUGGINGFACE_HUB_CACHE": str(tmp_path / "old")}]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME",
                                                             "XDG_CACHE_HOME")}  # fmt: skip
    for env in cases:
        for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
            monkeypatch.delenv(var, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        theirs = subprocess.run([sys.executable, "-c", "from huggingface_hub import constants as c; print(c.HF_HUB_CACHE)"],
                                env={**base, **env}, capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        assert hub.cache_dir() == Path(theirs), env


def test_revision_resolves_through_refs_and_sha(cache: Path) -> None:
    """main, a branch with slashes (refs/convert/parquet) and a sha resolve; an absent or garbage ref does not."""
    c1 = write_snapshot(cache, "org/m", {"config.json": b"{}"})
    c2 = write_snapshot(cache, "org/d", {"a.parquet": b"x"}, "dataset", "refs/convert/parquet")
    assert hub.HubRef("org/m", "model", None, "f").cached_commit() == c1
    assert hub.HubRef("org/d", "dataset", "refs/convert/parquet", "f").cached_commit() == c2
    assert (cache / "datasets--org--d" / "refs" / "refs" / "convert" / "parquet").read_text() == c2  # hub's layout
    sha = "0" * 40
    assert hub.HubRef("org/m", "model", sha, "f").cached_commit() == sha  # a sha needs no ref
    assert hub.HubRef("org/m", "model", "v2", "f").cached_commit() is None
    assert hub.HubRef("org/x", "model", None, "f").cached_commit() is None
    (cache / "models--org--m" / "refs" / "broken").write_text("not a sha\n")
    assert hub.HubRef("org/m", "model", "broken", "f").cached_commit() is None


def test_missing_snapshot_is_one_line_naming_field_and_prefetch(cache: Path) -> None:
    ref = hub.HubRef("meta-llama/Meta-Llama-3-8B", "model", None, "models.llama3.id")
    with pytest.raises(hub.HubMissing) as e:
        ref.snapshot(ref.cached_commit())
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("models.llama3.id: model meta-llama/Meta-Llama-3-8B@main: main is not")
    assert "prh prefetch --configfile" in msg
    with pytest.raises(hub.HubMissing, match="commit 111111111111 is not in the hub cache"):
        ref.snapshot("1" * 40)
    with pytest.raises(PrhError, match="is not a 40-hex commit"):
        ref.snapshot("abc")


def test_file_ids_are_content_ids_read_from_blob_links(cache: Path) -> None:
    """An LFS file's id is its sha256 and a small file's its git blob sha1, both read from the symlink (independent
    hashes of the bytes agree); a plain-file copy of a snapshot gets the sha256 of its bytes."""
    weights, config = os.urandom(1000), b'{"a": 1}'
    commit = write_snapshot(cache, "org/m", {"model.safetensors": weights, "config.json": config})
    snap = cache / "models--org--m" / "snapshots" / commit
    assert hub.file_id(snap / "model.safetensors") == f"sha256:{hashlib.sha256(weights).hexdigest()}"
    assert hub.file_id(snap / "config.json") == f"git-sha1:{hashlib.sha1(b'blob 8' + bytes([0]) + config).hexdigest()}"
    copy = cache.parent / "copy"
    shutil.copytree(snap, copy, symlinks=False)
    assert hub.file_id(copy / "model.safetensors") == hub.file_id(snap / "model.safetensors")
    assert hub.file_id(copy / "config.json") == f"sha256:{hashlib.sha256(config).hexdigest()}"
    d1 = hub.files_digest(snap, ["model.safetensors", "config.json"])
    assert d1 == hub.files_digest(snap, ["config.json", "model.safetensors"]) and len(d1) == 16
    c2 = write_snapshot(cache, "org/m", {"model.safetensors": weights + b"!", "config.json": config})
    assert hub.files_digest(cache / "models--org--m" / "snapshots" / c2, ["model.safetensors", "config.json"]) != d1
    move_ref(cache, "org/m", commit)
    assert hub.HubRef("org/m", "model", None, "f").cached_commit() == commit


def test_go_offline_keeps_explicit_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in hub.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    hub.go_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["HF_DATASETS_OFFLINE"] == "0" and hub.is_offline()


def test_refs_of_config_entries() -> None:
    """Which config entries are hub entries: hf ids and pretrained timm ids (repository from timm's config), hf
    datasets with an id; not local directories, random-init or overlay-file timm models, zoo or packaged models."""
    assert hub.model_ref("l", {"source": "hf", "id": "org/lm", "revision": "v1"}) == hub.HubRef("org/lm", "model", "v1", "models.l.id")
    assert hub.model_ref("l", {"source": "hf", "id": str(Path.cwd())}) is None
    ref = hub.model_ref("v", {"source": "timm", "id": "vit_base_patch16_clip_224.laion2b"})
    assert ref == hub.HubRef("timm/vit_base_patch16_clip_224.laion2b", "model", None, "models.v.id")
    assert hub.model_ref("v", {"source": "timm", "id": "resnet18.a1_in1k", "pretrained": False}) is None
    assert hub.model_ref("v", {"source": "timm", "id": "resnet18", "pretrained_cfg_overlay": {"file": "w"}}) is None
    assert hub.model_ref("z", {"source": "zoo", "modality": "vision"}) is None
    assert hub.dataset_ref("w", {"source": "hf", "id": "org/d", "revision": "b"}) == hub.HubRef("org/d", "dataset", "b", "datasets.w.id")
    assert hub.dataset_ref("w", {"source": "hf", "path": "/x"}) is None
    assert hub.dataset_ref("w", {"source": "scenes"}) is None
