"""SIGKILL a real extraction child at every phase (model load, mid-batch, zarr write, manifest, commit rename) and at
random moments: the store never shows a half-written entry, committed entries survive, and a rerun equals an
uninterrupted run."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from faultkit import cli, context, expected_key, fingerprint, run_extract, run_trial

from prh.store import FeatureStore

PHASES = ["digest", "load-start", "load-mid", "batch-0", "batch-1", "batch-2", "write-start", "write-mid",
          "manifest-written", "rename-before", "rename-after"]  # fmt: skip
N_RANDOM = 4
SEED = 20240610
SUMMARY: dict = {"trials": 0, "killed": 0, "entries_lost": 0, "visible_after_kill": 0, "stale_tmp_removed": 0}


@pytest.fixture(scope="module")
def ctx():
    return context()


@pytest.fixture(scope="module")
def full_run_s(ctx, tmp_path_factory: pytest.TempPathFactory, ckpt: Path, images, reference: dict) -> float:
    """Duration of one uninterrupted child run (the window the random kills fall into); its entry equals the reference."""
    root = tmp_path_factory.mktemp("full-child")
    trial = run_trial(ctx, root, ckpt, images, label="complete")
    assert trial.exitcode == 0 and trial.phases_seen[-1] == "done", trial
    assert fingerprint(FeatureStore(root).path(reference["key"])) == reference["fingerprint"]
    print(f"\nfull child run: {trial.seconds:.2f} s, phases {trial.phases_seen}")
    return trial.seconds


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    print(f"\nkill trials summary: {SUMMARY}")


def _check_after_kill(root: Path, ckpt: Path, images, reference: dict, seeded_store: dict, committed: bool | None) -> None:
    """Every invariant a killed writer must leave intact; then rerun and compare with the uninterrupted run."""
    store = FeatureStore(root)
    key = expected_key(ckpt, images)
    assert key == reference["key"]
    assert store.verify() == []
    res = cli("--store", str(root), "store", "verify")
    assert res.returncode == 0, res.stdout + res.stderr
    visible = store.has(key)
    if committed is not None:
        assert visible == committed
    if visible:  # the rename completed: the entry must be whole and equal to an uninterrupted run's
        SUMMARY["visible_after_kill"] += 1
        assert store.is_valid(key)
        assert fingerprint(store.path(key)) == reference["fingerprint"]
        store.open(key).layers()
    bystander_ok = store.is_valid(seeded_store["key"]) and fingerprint(store.path(seeded_store["key"])) == seeded_store["fingerprint"]
    SUMMARY["entries_lost"] += 0 if bystander_ok else 1
    assert bystander_ok
    rerun_key, created = run_extract(root, ckpt, images)  # stale temp dirs of the killed child are still there
    assert rerun_key == key and created == (not visible)
    assert fingerprint(store.path(key)) == reference["fingerprint"]
    stale = store.gc()
    SUMMARY["stale_tmp_removed"] += len(stale)
    assert all(p.startswith(".tmp/") for p in stale)
    assert not list(store.tmp_dir.iterdir())
    assert store.verify() == [] and sorted(store.keys()) == sorted([key, seeded_store["key"]])


@pytest.mark.parametrize("phase", PHASES)
def test_kill_at_phase(ctx, phase: str, store_copy: Path, ckpt: Path, images, reference: dict, seeded_store: dict) -> None:
    """The child pauses at ``phase`` (hook inside the child only) and is SIGKILLed there."""
    trial = run_trial(ctx, store_copy, ckpt, images, pause_at=phase, label=phase)
    SUMMARY["trials"] += 1
    SUMMARY["killed"] += trial.killed
    assert trial.killed and trial.exitcode == -9 and trial.phases_seen[-1] == phase, trial
    _check_after_kill(store_copy, ckpt, images, reference, seeded_store, committed=phase == "rename-after")


@pytest.mark.parametrize("i", range(N_RANDOM))
def test_kill_at_random_moment(ctx, i: int, full_run_s: float, store_copy: Path, ckpt: Path, images, reference: dict,
                               seeded_store: dict) -> None:  # fmt: skip
    """SIGKILL after a random delay within an uninterrupted run's duration (no pauses)."""
    delay = random.Random(SEED + i).uniform(0.05, full_run_s)
    trial = run_trial(ctx, store_copy, ckpt, images, kill_after=delay, label=f"random-{delay:.2f}s")
    SUMMARY["trials"] += 1
    SUMMARY["killed"] += trial.killed
    print(f"\nrandom kill {i}: after {delay:.2f} s, last phase {trial.phases_seen[-1:]} killed={trial.killed}")
    assert trial.killed or (trial.exitcode == 0 and trial.phases_seen[-1:] == ["done"]), trial  # killed, or finished
    _check_after_kill(store_copy, ckpt, images, reference, seeded_store, committed=None)
