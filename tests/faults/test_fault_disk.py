"""Disk full / read-only store, simulated by making the file-system calls fail (tests run as root, so chmod would not
block anything): a clear one-line PrhError, nothing partial visible, temp files cleaned, old files unchanged."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from faultkit import BATCH, PARAMS, expected_key, fail_zarr_write, fingerprint, run_extract, zoo_spec

from prh.errors import PrhError
from prh.store import FeatureStore, write_receipt


def _enospc_in_zarr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The third chunk/metadata file zarr writes fails with ENOSPC (mid-entry)."""
    fail_zarr_write(monkeypatch, 3)


def _enospc_at_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync of the manifest fails with ENOSPC."""
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))


def _erofs_at_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit rename fails with EROFS."""
    real = os.rename

    def rename(src, dst, *a, **k):
        if "/entries/" in str(dst):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", rename)


def _erofs_at_tempdir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Creating the entry's temp dir fails with EROFS (the whole store is read-only)."""
    real = pathlib.Path.mkdir

    def mkdir(self, *a, **k):
        if "/.tmp/" in str(self) or str(self).endswith("/.tmp"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)


FAULTS = {
    "enospc-mid-zarr-write": (_enospc_in_zarr, "ENOSPC"),
    "enospc-writing-manifest": (_enospc_at_manifest, "ENOSPC"),
    "erofs-at-commit-rename": (_erofs_at_commit, "EROFS"),
    "erofs-creating-temp-dir": (_erofs_at_tempdir, "EROFS"),
}
ERRORS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    print("\ndisk faults -> errors:\n" + "\n".join(ERRORS))


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_store_write_fault(fault: str, monkeypatch: pytest.MonkeyPatch, store_copy: Path, ckpt: Path, images,
                           reference: dict, seeded_store: dict) -> None:  # fmt: skip
    inject, code = FAULTS[fault]
    store = FeatureStore(store_copy)
    key = expected_key(ckpt, images)
    with monkeypatch.context() as m:
        inject(m)
        with pytest.raises(PrhError) as err:
            run_extract(store_copy, ckpt, images)
    msg = str(err.value)
    ERRORS.append(f"{fault}: {msg}")
    assert "\n" not in msg and key in msg and code in msg and "free disk space or make it writable" in msg
    assert not store.has(key) and store.verify() == []
    assert not store.tmp_dir.exists() or not list(store.tmp_dir.iterdir())  # temp dir cleaned
    assert fingerprint(store.path(seeded_store["key"])) == seeded_store["fingerprint"]
    got, created = run_extract(store_copy, ckpt, images)  # once the disk is fine again, the rerun is whole
    assert created and fingerprint(store.path(got)) == reference["fingerprint"]


def test_memo_and_receipt_write_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FeatureStore(tmp_path / "store")
    receipt = tmp_path / "r.json"
    write_receipt(receipt, "k" * 64, {"a": 1}, {"model": "m"})
    before = receipt.read_bytes()
    with monkeypatch.context() as m:
        _enospc_at_manifest(m)
        with pytest.raises(PrhError) as memo_err:
            store.memo_put("cd" * 32, np.ones(4))
        with pytest.raises(PrhError) as receipt_err:
            write_receipt(receipt, "k" * 64, {"a": 2}, {"model": "m"})
    for e in (memo_err, receipt_err):
        ERRORS.append(f"{'memo' if e is memo_err else 'receipt'}: {e.value}")
        assert "\n" not in str(e.value) and "ENOSPC" in str(e.value)
    assert store.memo_get("cd" * 32) is None
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]  # no temp memo file left
    assert receipt.read_bytes() == before and [p.name for p in tmp_path.glob("*.json*")] == ["r.json"]


def test_workflow_job_on_read_only_store_prints_one_line(tmp_path: Path, ckpt: Path, images) -> None:
    """The Snakemake extraction job (pipeline.extract_features under `logged`, as the workflow script runs it):
    exit 1, one line on the console, no traceback."""
    from prh.data import save_dataset

    npz = tmp_path / "imgs.npz"
    save_dataset(images, npz)
    zoo = tmp_path / "zoo.json"
    zoo.write_text(json.dumps({"model": "vit", "checkpoint": str(ckpt)}))
    script = textwrap.dedent(f"""
        import errno, os, torch
        torch.set_num_threads(1)
        real = os.rename
        def rename(src, dst, *a, **k):
            if "/entries/" in str(dst):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
            return real(src, dst, *a, **k)
        os.rename = rename
        from prh.pipeline import extract_features, logged
        with logged({str(tmp_path / "job.log")!r}):
            extract_features("vit", {{"source": "zoo", "modality": "vision"}}, [{str(zoo)!r}], {str(npz)!r},
                             {str(tmp_path / "store")!r}, {PARAMS!r}, {str(tmp_path / "out.json")!r}, batch_size={BATCH})
    """)
    res = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    lines = res.stderr.strip().splitlines()
    ERRORS.append(f"workflow job: {lines[-1] if lines else ''}")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: store entry") and "model 'vit'" in lines[0] and "EROFS" in lines[0], res.stderr
    assert lines[0] in (tmp_path / "job.log").read_text()  # the job log has it too, after the progress output
    assert not (tmp_path / "out.json").exists()
    assert FeatureStore(tmp_path / "store").keys() == [] and not list((tmp_path / "store" / ".tmp").iterdir())
    assert zoo_spec(ckpt)["checkpoint"] == str(ckpt)
