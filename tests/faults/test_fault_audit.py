"""`prh store verify` sees the whole store (entries, memos, zoo checkpoints, converted model caches), names each damaged
item on one line with the command that repairs it, and that command makes the workflow rebuild it; shared artefacts
(zoo checkpoints, model caches) are built once and never swapped under a reader when two runs race for them."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
import pytest
from faultkit import TINY_DATA, VIT_KW, cli

from prh.io import atomic_dir, manifest_problems
from prh.store import FeatureStore, write_receipt

RECIPE = {"arch": "vit_tiny_patch16_224", "arch_kwargs": VIT_KW, "objective": "random", "steps": 0, "batch_size": 8,
          "dataset": TINY_DATA, "eval_dataset": TINY_DATA}  # fmt: skip


class _Tokenizer:
    """Stands in for a tokenizer: ``save_pretrained`` writes one file, as a real one writes several."""

    def save_pretrained(self, path: Path) -> None:
        (Path(path) / "tokenizer_config.json").write_text('{"model_max_length": 64}')


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, reference: dict) -> dict:
    """A store with one entry (+ receipt), one memo, one zoo checkpoint and one converted model cache, all sound."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from prh.models.language import _write_cache, default_cache_dir
    from prh.zoo.vision import ensure_trained

    work = tmp_path_factory.mktemp("audit")
    root = work / "store"
    shutil.copytree(reference["root"], root)
    store = FeatureStore(root)
    key = reference["key"]
    write_receipt(work / "results" / "features" / "imgs" / "vit.json", key, store.open(key).request, store.info(key))
    store.memo_put("ab" * 32, np.arange(12.0).reshape(3, 4))
    ckpt = ensure_trained(RECIPE, root / "zoo", name="audit-vit")
    (work / "results" / "zoo").mkdir(parents=True)
    (work / "results" / "zoo" / "audit-vit.json").write_text(json.dumps({"model": "audit-vit", "checkpoint": str(ckpt)}))
    torch.manual_seed(0)
    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))  # fmt: skip
    cache = default_cache_dir("tiny-lm", "c" * 64, root)
    _write_cache(tiny, _Tokenizer(), cache, "c" * 64)
    (work / "results" / "prepared").mkdir(parents=True)  # what the prepare_model job writes for a weights cache
    (work / "results" / "prepared" / "tiny-lm.json").write_text(json.dumps({"model": "tiny-lm", "checkpoint": str(cache)}))
    return {"work": work, "root": root, "key": key, "memo": "ab" * 32, "zoo": f"zoo/{ckpt.name}",
            "cache": f"hf-cache/{cache.name}"}  # fmt: skip


@pytest.fixture()
def store(tmp_path: Path, pristine: dict) -> dict:
    """A fresh copy of the pristine store and its results for one test."""
    shutil.copytree(pristine["work"], tmp_path / "w")
    return {**pristine, "work": tmp_path / "w", "root": tmp_path / "w" / "store"}


def test_sound_store_verifies(store: dict) -> None:
    res = cli("--store", str(store["root"]), "store", "verify")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 damaged" in res.stdout and "1 entries, 1 memos" in res.stdout
    assert FeatureStore(store["root"]).audit() == []


DAMAGE = {  # what is damaged -> (kind, file to flip, relative to the store)
    "entry": ("entry", lambda s: next((s["root"] / "entries").glob("*/*/features/c/0/0/0"))),
    "memo": ("memo", lambda s: s["root"] / "memo" / s["memo"][:2] / f"{s['memo']}.npy"),
    "zoo": ("zoo checkpoint", lambda s: s["root"] / s["zoo"] / "model.safetensors"),
    "cache": ("model cache", lambda s: s["root"] / s["cache"] / "model.safetensors"),
}


@pytest.mark.parametrize("what", sorted(DAMAGE))
def test_damage_is_named_once_with_its_repair(store: dict, what: str) -> None:
    """One flipped byte anywhere: verify exits 1 with exactly one line naming kind, item and the repair command."""
    kind, target = DAMAGE[what]
    _flip(target(store))
    res = cli("--store", str(store["root"]), "store", "verify")
    assert res.returncode == 1
    damaged = [line for line in res.stdout.splitlines() if "-> repair:" in line]
    ident = store["key"] if what == "entry" else store[what] if what != "memo" else f"memo/{store['memo']}"
    assert damaged == [f"{kind} {ident}: checksum mismatch" + damaged[0].split("checksum mismatch", 1)[1]], res.stdout
    assert f"-> repair: prh store rm {ident}, then rerun the workflow" in damaged[0]


@pytest.mark.parametrize("what", sorted(DAMAGE))
def test_repair_command_removes_item_and_its_receipts(store: dict, what: str) -> None:
    """The printed repair removes the damaged item (and receipts naming it, so Snakemake reruns the job): verify is clean."""
    _, target = DAMAGE[what]
    _flip(target(store))
    line = next(x for x in FeatureStore(store["root"]).audit())
    args = line.repair.split()[1:]  # "prh store rm X"
    res = cli("--store", str(store["root"]), "--results", str(store["work"] / "results"), *args)
    assert res.returncode == 0, res.stderr
    assert FeatureStore(store["root"]).audit() == []
    receipts = {p.name for p in (store["work"] / "results").rglob("*.json")}
    removed = {"entry": {"vit.json"}, "zoo": {"audit-vit.json"}, "cache": {"tiny-lm.json"}}.get(what, set())
    expect = {"vit.json", "audit-vit.json", "tiny-lm.json"} - removed
    assert receipts == expect


def test_missing_file_and_stray_file_in_a_checkpoint(store: dict) -> None:
    zoo = store["root"] / store["zoo"]
    (zoo / "loss.csv").unlink()
    (zoo / "stray.bin").write_bytes(b"x")
    [item] = FeatureStore(store["root"]).audit()
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
