"""`prh store verify` sees the whole store (entries, memos, zoo checkpoints, converted model caches), names each damaged
item on one line with the command that repairs it, and that command makes the workflow rebuild it; shared artefacts
(zoo checkpoints, model caches) are built once and never swapped under a reader when two runs race for them."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest
from faultkit import RECIPE, cli, flip

from prh.io import atomic_dir, manifest_problems
from prh.store import FeatureStore

def test_sound_store_verifies(audit_store: dict) -> None:
    res = cli("--store", str(audit_store["root"]), "store", "verify")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 damaged" in res.stdout and "1 entries, 1 memos" in res.stdout
    assert FeatureStore(audit_store["root"]).audit() == []


DAMAGE = {  # what is damaged -> (kind, file to flip, relative to the store)
    "entry": ("entry", lambda s: next((s["root"] / "entries").glob("*/*/features/c/0/0/0"))),
    "memo": ("memo", lambda s: s["root"] / "memo" / s["memo"][:2] / f"{s['memo']}.npy"),
    "zoo": ("zoo checkpoint", lambda s: s["root"] / s["zoo"] / "model.safetensors"),
    "cache": ("model cache", lambda s: s["root"] / s["cache"] / "model.safetensors"),
}


@pytest.mark.parametrize("what", sorted(DAMAGE))
def test_damage_is_named_once_with_its_repair(audit_store: dict, what: str) -> None:
    """One flipped byte anywhere: verify exits 1 with exactly one line naming kind, item and the repair command."""
    kind, target = DAMAGE[what]
    flip(target(audit_store))
    res = cli("--store", str(audit_store["root"]), "store", "verify")
    assert res.returncode == 1
    damaged = [line for line in res.stdout.splitlines() if "-> repair:" in line]
    ident = audit_store["key"] if what == "entry" else audit_store[what] if what != "memo" else f"memo/{audit_store['memo']}"
    assert damaged == [f"{kind} {ident}: checksum mismatch" + damaged[0].split("checksum mismatch", 1)[1]], res.stdout
    assert f"-> repair: prh store rm {ident}, then rerun the workflow" in damaged[0]


@pytest.mark.parametrize("what", sorted(DAMAGE))
def test_repair_command_removes_item_and_its_receipts(audit_store: dict, what: str) -> None:
    """The printed repair removes the damaged item (and receipts naming it, so Snakemake reruns the job): verify is clean."""
    _, target = DAMAGE[what]
    flip(target(audit_store))
    line = next(x for x in FeatureStore(audit_store["root"]).audit())
    args = line.repair.split()[1:]  # "prh store rm X"
    res = cli("--store", str(audit_store["root"]), "--results", str(audit_store["work"] / "results"), *args)
    assert res.returncode == 0, res.stderr
    assert FeatureStore(audit_store["root"]).audit() == []
    receipts = {p.name for p in (audit_store["work"] / "results").rglob("*.json")}
    removed = {"entry": {"vit.json"}, "zoo": {"audit-vit.json"}, "cache": {"tiny-lm.json"}}.get(what, set())
    expect = {"vit.json", "audit-vit.json", "tiny-lm.json"} - removed
    assert receipts == expect


def test_missing_file_and_stray_file_in_a_checkpoint(audit_store: dict) -> None:
    zoo = audit_store["root"] / audit_store["zoo"]
    (zoo / "loss.csv").unlink()
    (zoo / "stray.bin").write_bytes(b"x")
    [item] = FeatureStore(audit_store["root"]).audit()
    assert item.problem == "missing file loss.csv; unlisted file stray.bin"


def _train(root: str, out: mp.Queue) -> None:
    import torch

    from prh.zoo.vision import ensure_trained

    torch.set_num_threads(1)
    path = ensure_trained(RECIPE, Path(root) / "zoo", name="race")
    out.put((path.stat().st_ino, (path / "config.json").read_text()))


def test_two_runs_train_one_recipe_once(tmp_path: Path) -> None:
    """Two processes ensure the same zoo recipe at once: one trains, the other waits and reuses the same directory."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_train, args=(str(tmp_path), out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    (ino_a, cfg_a), (ino_b, cfg_b) = out.get(timeout=5), out.get(timeout=5)
    assert ino_a == ino_b and cfg_a == cfg_b  # the same committed directory, never swapped for a second copy
    dirs = [p for p in (tmp_path / "zoo").iterdir() if p.name != ".locks"]
    assert len(dirs) == 1 and manifest_problems(dirs[0]) == []


def test_atomic_dir_keeps_a_sound_copy_and_replaces_a_broken_one(tmp_path: Path) -> None:
    target = tmp_path / "art"
    with atomic_dir(target, manifest=True) as first:
        (first.path / "a").write_text("first")
    with atomic_dir(target, keep_existing=lambda p: not manifest_problems(p), manifest=True) as second:
        (second.path / "a").write_text("second")
    assert first.committed and not second.committed and (target / "a").read_text() == "first"
    (target / "a").write_text("broken")
    with atomic_dir(target, keep_existing=lambda p: not manifest_problems(p), manifest=True) as third:
        (third.path / "a").write_text("third")
    assert third.committed and (target / "a").read_text() == "third" and manifest_problems(target) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temp or set-aside dirs left


def test_atomic_dir_failure_leaves_old_copy(tmp_path: Path) -> None:
    from prh.errors import PrhError

    target = tmp_path / "art"
    with atomic_dir(target) as first:
        (first.path / "a").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as second:
            (second.path / "a").write_text("half")
            raise KeyboardInterrupt
    with pytest.raises(PrhError, match="cannot write .*art: .*ENOSPC"):
        with atomic_dir(target):
            raise OSError(28, "No space left on device")
    assert (target / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["art"]
