"""Concurrent writers: two real extraction processes commit the same key (or different keys) at the same instant."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faultkit import child_extract, context, expected_key, fingerprint, make_images

from prh.store import FeatureStore


@pytest.fixture(scope="module")
def ctx():
    return context()


def _race(ctx, root: Path, ckpt: Path, datasets: list, gate_phase: str, tmp_path: Path) -> list[list[str]]:
    """Start one child per dataset, hold each at ``gate_phase`` until all arrived, release them together."""
    gate = tmp_path / f"gate-{gate_phase}"
    procs, pipes, seen = [], [], []
    for ds in datasets:
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=child_extract, args=(str(root), str(ckpt), ds, None, send, (gate_phase, str(gate))), daemon=True)
        p.start()
        send.close()
        procs.append(p)
        pipes.append(recv)
        seen.append([])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(gate_phase in s for s in seen):
        for recv, s in zip(pipes, seen):
            while recv.poll(0.01):
                s.append(recv.recv())
    assert all(gate_phase in s for s in seen), seen
    gate.touch()  # release every writer at once
    for p, recv, s in zip(procs, pipes, seen):
        p.join(60)
        while recv.poll():
            try:
                s.append(recv.recv())
            except EOFError:
                break
        assert p.exitcode == 0, (p.exitcode, s)
    return seen


@pytest.mark.parametrize("gate_phase", ["write-start", "rename-before"])
def test_two_writers_same_key(ctx, gate_phase: str, store_copy: Path, ckpt: Path, images, reference: dict,
                              seeded_store: dict, tmp_path: Path) -> None:  # fmt: skip
    """Both succeed (one commits, the other finds it committed and defers); the entry is whole and valid."""
    seen = _race(ctx, store_copy, ckpt, [images, images], gate_phase, tmp_path)
    store = FeatureStore(store_copy)
    key = expected_key(ckpt, images)
    assert store.verify() == [] and store.is_valid(key)
    assert fingerprint(store.path(key)) == reference["fingerprint"]
    assert sorted(store.keys()) == sorted([key, seeded_store["key"]])
    assert all(s[-1] == "done" for s in seen)
    assert sum("rename-after" in s for s in seen) >= 1  # at least one committed; a loser's rename fails and defers
    assert not list(store.tmp_dir.iterdir())


def test_two_writers_different_keys(ctx, store_copy: Path, ckpt: Path, images, seeded_store: dict, tmp_path: Path) -> None:
    """Two processes commit different keys into the same store at the same instant: both whole and valid."""
    other = make_images("other", n=16, seed=7)
    _race(ctx, store_copy, ckpt, [images, other], "rename-before", tmp_path)
    store = FeatureStore(store_copy)
    keys = {expected_key(ckpt, images), expected_key(ckpt, other)}
    assert store.verify() == [] and all(store.is_valid(k) for k in keys)
    assert set(store.keys()) == keys | {seeded_store["key"]}
    for k in keys:
        store.open(k).layers()
    assert not list(store.tmp_dir.iterdir())
