"""Receipts of work done once on a file's bytes (prh.io.stamp_memo): weights digests and a saved dataset's verified
digests are computed by the first process and trusted by later ones while the file's stamp holds; any rewrite,
touch or replacement of the file makes the next reader compute again."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prh import io
from prh.data import load_saved, make_dataset, save_dataset
from prh.errors import PrhError


@pytest.fixture
def memos(tmp_path, monkeypatch) -> Path:
    """A private memo folder, and files count as settled at once (no 2 s wait)."""
    monkeypatch.setenv("PRH_DIGEST_CACHE", str(tmp_path / "memos"))
    monkeypatch.setattr(io, "STAMP_SETTLE_S", 0.0)
    return tmp_path / "memos"


def _counting(path: Path, calls: list[str]):
    def compute() -> str:
        calls.append(str(path))
        return hashlib.sha256(path.read_bytes()).hexdigest()

    return compute


def test_computed_once_then_trusted_until_the_file_changes(tmp_path, memos):
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(4096))
    calls: list[str] = []
    first = io.stamp_memo(f, "sha256", _counting(f, calls))
    assert first == hashlib.sha256(f.read_bytes()).hexdigest() and len(calls) == 1
    assert io.stamp_memo(f, "sha256", _counting(f, calls)) == first and len(calls) == 1
    assert len(list(memos.glob("*.json"))) == 1
    data = bytearray(f.read_bytes())  # same size, one byte changed, written in place
    data[100] ^= 0xFF
    with open(f, "r+b") as handle:
        handle.write(data)
    second = io.stamp_memo(f, "sha256", _counting(f, calls))
    assert second == hashlib.sha256(bytes(data)).hexdigest() != first and len(calls) == 2
    os.utime(f)  # a touch alone also invalidates
    io.stamp_memo(f, "sha256", _counting(f, calls))
    assert len(calls) == 3
    other = tmp_path / "other.bin"  # replaced by another file with the same bytes: another inode, computed again
    other.write_bytes(bytes(data))
    os.replace(other, f)
    assert io.stamp_memo(f, "sha256", _counting(f, calls)) == second and len(calls) == 4
    assert io.stamp_memo(f, "another-tag", _counting(f, calls)) == second and len(calls) == 5  # tags are separate


def test_fresh_files_are_not_memoised(tmp_path, memos, monkeypatch):
    monkeypatch.setattr(io, "STAMP_SETTLE_S", 3600.0)
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 100)
    calls: list[str] = []
    io.stamp_memo(f, "sha256", _counting(f, calls))
    io.stamp_memo(f, "sha256", _counting(f, calls))
    assert len(calls) == 2 and not memos.exists()


def test_an_unwritable_memo_folder_only_costs_the_recomputation(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("PRH_DIGEST_CACHE", str(blocker / "memos"))
    monkeypatch.setattr(io, "STAMP_SETTLE_S", 0.0)
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert io.stamp_memo(f, "sha256", lambda: "v") == "v"


def test_a_forged_memo_for_another_path_is_not_trusted(tmp_path, memos):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    io.stamp_memo(a, "sha256", lambda: "value-of-a")
    (entry,) = memos.glob("*.json")
    target = memos / f"{hashlib.sha256(f'{os.path.realpath(b)}|sha256'.encode()).hexdigest()[:32]}.json"
    entry.rename(target)  # a's memo placed where b's would be
    assert io.stamp_memo(b, "sha256", lambda: "value-of-b") == "value-of-b"


def test_weights_digest_is_read_from_the_memo_by_another_process(tmp_path, memos):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(1 << 20))
    code = ("import sys, prh.io as io, prh.models as m\n"
            "io.STAMP_SETTLE_S = 0.0\n"  # the file was written a moment ago
            "if sys.argv[2] == 'memo-only':\n"
            "    io.file_sha256 = lambda p: (_ for _ in ()).throw(AssertionError('re-hashed'))\n"
            "print(m.file_sha256(sys.argv[1]))\n")  # fmt: skip
    env = {**os.environ, "PRH_DIGEST_CACHE": str(memos)}
    run = lambda mode: subprocess.run([sys.executable, "-c", code, str(weights), mode], env=env, check=True,
                                      capture_output=True, text=True).stdout.strip()  # fmt: skip
    os.utime(weights, ns=(1, 1))  # mtime long past: settled
    first = run("hash")
    assert first == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert run("memo-only") == first  # a second process trusts the receipt instead of hashing 1 MB again
    with open(weights, "r+b") as handle:
        handle.write(b"\0" * 16)
    os.utime(weights, ns=(1, 1))  # even with its mtime set back, the rewrite changed ctime
    with pytest.raises(subprocess.CalledProcessError, match="memo-only|re-hashed|returned non-zero"):
        run("memo-only")
    assert run("hash") == hashlib.sha256(weights.read_bytes()).hexdigest() != first


def _dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    ds = make_dataset("toy", images=rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8), texts=[f"t{i}" for i in range(20)],
                      labels={"class": rng.integers(0, 3, 20)}, is_train=rng.random(20) < 0.7)  # fmt: skip
    path = tmp_path / "toy.npz"
    save_dataset(ds, path)
    return path


def test_a_saved_dataset_is_verified_once(tmp_path, memos, monkeypatch):
    from prh import data

    path = _dataset(tmp_path)
    first = load_saved(path)
    for name in ("image_digest", "text_digest", "labels_digest"):
        monkeypatch.setattr(data, name, lambda *a, _n=name: pytest.fail(f"{_n} recomputed"))
    again = load_saved(path)
    assert (again.image_digest, again.text_digest, again.meta["labels_digest"]) == (
        first.image_digest, first.text_digest, first.meta["labels_digest"])  # fmt: skip
    np.testing.assert_array_equal(again.images, first.images)


def test_a_hand_edited_dataset_is_still_refused(tmp_path, memos):
    path = _dataset(tmp_path)
    load_saved(path)  # memo written for this file state
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["images"] = arrays["images"].copy()
    arrays["images"][0, 0, 0, 0] ^= 1  # content changed, stored digest kept
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(PrhError, match="image_digest does not match"):
        load_saved(path)
