"""Atomic writes: whole-or-nothing replacement and the usual umask-derived permissions (mkstemp alone gives 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from prh.data import load_saved, make_dataset, save_dataset
from prh.errors import PrhError
from prh.io import atomic_path, write_bytes_atomic, write_json_atomic


@pytest.fixture
def umask():
    """Set a umask for the test and restore the old one afterwards."""
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    write_bytes_atomic(tmp_path / "a.bin", b"abc")
    write_json_atomic(tmp_path / "sub" / "b.json", {"x": 1})
    assert mode(tmp_path / "a.bin") == expected
    assert mode(tmp_path / "sub" / "b.json") == expected


def test_saved_dataset_is_group_readable_and_round_trips(tmp_path, umask):
    umask(0o022)
    rng = np.random.default_rng(0)
    ds = make_dataset("tiny", images=rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8), texts=[f"t {i}" for i in range(5)])
    save_dataset(ds, tmp_path / "tiny.npz")
    assert mode(tmp_path / "tiny.npz") == 0o644
    back = load_saved(tmp_path / "tiny.npz")
    np.testing.assert_array_equal(back.images, ds.images)
    assert back.texts == ds.texts


def test_failure_inside_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_unwritable_folder_is_one_line_error_naming_the_file(tmp_path):
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        target = blocker / "out.json"  # a file where a folder should be: fails even for root
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "out.json"
    with pytest.raises(PrhError) as e:
        write_json_atomic(target, {"a": 1})
    assert "\n" not in str(e.value) and str(target) in str(e.value)
