"""prh prefetch: offline it checks the cache and names every missing entry in one line; against a (faked) hub it
downloads exactly the files the loaders read, names gated repositories, and writes a lock file that pins a run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hubkit import DATASETS, move_ref, repo_path, write_snapshot

from prh.config import deep_merge, load_config, read_yaml, validate_config
from prh.plan import Plan
from prh.prefetch import prefetch

ROOT = Path(__file__).resolve().parents[2]
HUB_CONFIG = ROOT / "tests" / "hub" / "config.yaml"
pytestmark = pytest.mark.slow


def test_offline_paper_config_names_every_entry_missing_in_one_line(tmp_path: Path) -> None:
    """`prh prefetch --configfile configs/paper.yaml` on an empty cache without the hub: one line per hub model and
    dataset, each naming its config field, repository and revision; gated ones say where to accept the licence; the
    totals estimate the weights from n_params; exit status 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "prh.cli", "prefetch", "--configfile", "configs/paper.yaml", "--lock",
                           str(tmp_path / "lock.yaml")], cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    cfg = load_config(ROOT / "configs" / "paper.yaml")
    entries = Plan(cfg).hub_refs
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("prefetch:")]
    assert len(lines) == len(entries) == len(cfg["models"]) + len(cfg["datasets"])
    for line, (entry, ref) in zip(lines, entries.items()):
        assert line.startswith(f"{entry}: {ref.repo_type} {ref.repo_id}@{ref.ref}: {ref.ref} is not in the hub cache")
    gated = [line for line in lines if "gated on the hub" in line]
    assert {line.split(":")[0] for line in gated} == {e for e, r in entries.items() if r.repo_id.startswith(
        ("meta-llama/", "google/gemma", "mistralai/"))}  # fmt: skip
    assert "0 of 123 entries in the cache" in proc.stdout and "GB of weights by n_params" in proc.stdout
    assert proc.stderr == ""


def test_cached_hub_config_passes_and_its_lock_pins_the_commits(hub, tmp_path: Path, capsys) -> None:
    """On the test hub every entry of the reduced paper config is cached (size printed); the lock file, passed after
    the config, pins each entry to its commit even after refs/main moves."""
    cache, commits = hub
    cfg = load_config(HUB_CONFIG)
    outcomes = prefetch(cfg, tmp_path / "lock.yaml", online=False)
    assert [o.status for o in outcomes] == ["cached"] * len(outcomes) and len(outcomes) == 13
    assert all(o.bytes > 0 and o.commit == commits[o.ref.repo_id] for o in outcomes)
    lock = yaml.safe_load((tmp_path / "lock.yaml").read_text())
    assert lock["models"]["huggyllama--llama-7b"] == {"revision": commits["huggyllama/llama-7b"]}
    assert lock["datasets"]["wit"] == {"revision": commits["minhuh/prh"]}
    pinned = validate_config(deep_merge(read_yaml(HUB_CONFIG), read_yaml(tmp_path / "lock.yaml")))
    moved = write_snapshot(cache, "huggyllama/llama-7b", {"config.json": b"{}"}, ref=None)
    move_ref(cache, "huggyllama/llama-7b", moved)
    try:
        assert Plan(pinned).model_spec("huggyllama--llama-7b")["commit"] == commits["huggyllama/llama-7b"]
        assert Plan(cfg).model_spec("huggyllama--llama-7b")["commit"] == moved
    finally:
        move_ref(cache, "huggyllama/llama-7b", commits["huggyllama/llama-7b"])


class FakeHub:
    """huggingface_hub's repo_info / hf_hub_download / snapshot_download over a 'remote' cache directory."""

    def __init__(self, remote: Path, local: Path, gated: tuple[str, ...] = ()) -> None:
        self.remote, self.local, self.gated, self.downloaded = remote, local, gated, {}

    def _snap(self, repo_id: str, repo_type: str, revision: str) -> Path:
        folder = repo_path(self.remote, repo_id, repo_type)
        commit = revision if len(revision) == 40 else (folder / "refs" / revision).read_text()
        return folder / "snapshots" / commit

    def repo_info(self, repo_id, repo_type=None, revision=None, files_metadata=False):
        from huggingface_hub.errors import GatedRepoError

        if repo_id in self.gated:
            err = GatedRepoError.__new__(GatedRepoError)
            Exception.__init__(err, f"Access to model {repo_id} is restricted")
            raise err
        snap = self._snap(repo_id, repo_type or "model", revision or "main")
        siblings = [SimpleNamespace(rfilename=p.relative_to(snap).as_posix(), size=p.stat().st_size)
                    for p in sorted(snap.rglob("*")) if p.is_file()]  # fmt: skip
        return SimpleNamespace(sha=snap.name, siblings=siblings)

    def hf_hub_download(self, repo_id, filename, repo_type=None, revision=None, token=None):
        return str(self._snap(repo_id, repo_type or "model", revision) / filename)

    def snapshot_download(self, repo_id, repo_type=None, revision=None, allow_patterns=None, token=None):
        snap = self._snap(repo_id, repo_type or "model", revision)
        files = {f: (snap / f).read_bytes() for f in allow_patterns}
        self.downloaded[repo_id] = sorted(files)
        commit = write_snapshot(self.local, repo_id, files, repo_type or "model", revision)
        return str(repo_path(self.local, repo_id, repo_type or "model") / "snapshots" / commit)


def test_online_prefetch_downloads_exactly_what_the_loaders_read(hub, tmp_path: Path, monkeypatch) -> None:
    """Against a hub holding extra files (a .bin beside the safetensors, a split nobody reads), prefetch downloads
    only the safetensors weights, configs and tokenizer of an LM, timm's weight file, a dataset's read splits; a
    gated repository gets its licence line; the fetched cache then passes the offline check."""
    import huggingface_hub

    remote_cache, local = hub[0], tmp_path / "local"
    remote = tmp_path / "remote"
    shutil.copytree(remote_cache, remote, symlinks=True)
    llama = repo_path(remote, "huggyllama/llama-7b") / "snapshots" / hub[1]["huggyllama/llama-7b"]
    extra = {p.relative_to(llama).as_posix(): p.read_bytes() for p in llama.rglob("*") if p.is_file()}
    extra["pytorch_model.bin"] = b"old pickle weights"
    write_snapshot(remote, "huggyllama/llama-7b", extra)
    fake = FakeHub(remote, local, gated=("mistralai/Mixtral-8x7B-v0.1",))
    monkeypatch.setenv("HF_HUB_CACHE", str(local))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: fake)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    cfg = load_config(HUB_CONFIG)
    lines: list[str] = []
    outcomes = {o.field: o for o in prefetch(cfg, tmp_path / "lock.yaml", echo=lines.append)}
    assert outcomes["models.mistralai--Mixtral-8x7B-v0.1"].status == "gated"
    assert "accept its licence at https://huggingface.co/mistralai/Mixtral-8x7B-v0.1" in "\n".join(lines)
    assert {o.status for f, o in outcomes.items() if "Mixtral" not in f} == {"fetched"}
    assert "pytorch_model.bin" not in fake.downloaded["huggyllama/llama-7b"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(fake.downloaded["huggyllama/llama-7b"])
    assert fake.downloaded["timm/convnext_tiny.fb_in1k"] == ["config.json", "model.safetensors"]
    assert fake.downloaded["clip-benchmark/wds_vtab-svhn"] == ["classnames.txt", "test/0.tar", "train/0.tar"]
    assert fake.downloaded["haideraltahan/wds_places365"] == ["classnames.txt", "validation/0.tar"]
    assert fake.downloaded["Skylion007/openwebtext"] == ["plain_text/train/0000.parquet"]
    assert set(DATASETS) == {o.ref.repo_id for o in outcomes.values() if o.ref.repo_type == "dataset"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = prefetch(cfg, None, online=False, echo=lines.append)
    assert [o.status for o in again if "Mixtral" not in o.field] == ["cached"] * 12
