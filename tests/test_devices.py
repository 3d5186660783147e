"""GPU slot locks and device resolution."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import pytest

from prh.devices import acquire_gpu, resolve_device, visible_id
from prh.errors import PrhError


def test_resolve_device():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(PrhError, match="'gpu7' is not a torch device"):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(PrhError, match="'cuda:1' requested but CUDA is not available"):
            resolve_device("cuda:1")


def test_acquire_sets_and_restores_visible_devices(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("PRH_CUDA_VISIBLE_BASE", raising=False)
    with acquire_gpu(2, tmp_path) as a:
        assert a == 0 and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        with acquire_gpu(2, tmp_path) as b:  # a second holder in the same process gets the other slot
            assert b == 1 and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
        with pytest.raises(PrhError, match="no free GPU slot among 1"):
            with acquire_gpu(1, tmp_path, poll_s=0.01, timeout_s=0.05):
                pass
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    with acquire_gpu(2, tmp_path) as a, acquire_gpu(2, tmp_path) as b:
        assert (a, b) == (0, 1) and os.environ["CUDA_VISIBLE_DEVICES"] == "6"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,6" and "PRH_CUDA_VISIBLE_BASE" not in os.environ
    with acquire_gpu(0, tmp_path) as none:
        assert none is None and os.environ["CUDA_VISIBLE_DEVICES"] == "4,6"
    assert visible_id(1, "4, 6") == "6"
    with pytest.raises(PrhError, match="lists only 2"):
        visible_id(2, "4,6")


def _worker(lock_dir: str, log) -> None:
    """Hold a slot for a moment and log (slot, visible id, start, end)."""
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    os.environ.pop("PRH_CUDA_VISIBLE_BASE", None)
    with acquire_gpu(2, lock_dir, poll_s=0.01) as slot:
        start = time.monotonic()
        visible = os.environ["CUDA_VISIBLE_DEVICES"]
        time.sleep(0.15)
        log.put((slot, visible, start, time.monotonic()))


def test_workers_never_share_a_slot(tmp_path):
    ctx = mp.get_context("fork")
    log = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), log)) for _ in range(6)]
    for p in procs:
        p.start()
    rows = [log.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    assert [p.exitcode for p in procs] == [0] * 6
    assert {r[0] for r in rows} == {0, 1} and all(str(slot) == vis for slot, vis, _, _ in rows)
    for slot in (0, 1):
        spans = sorted((s, e) for sl, _, s, e in rows if sl == slot)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:])), spans
    # 6 jobs x 0.15 s on 2 slots cannot finish faster than 3 rounds
    assert max(e for *_, e in rows) - min(s for *_, s, _ in rows) >= 0.15 * 3 - 0.02
