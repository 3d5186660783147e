"""Corrupt committed entries and memo files: verify names them, open refuses them, the extraction job recomputes them,
and a corrupt memo reads as a miss that the alignment job recomputes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from faultkit import PARAMS, cli, fingerprint, run_extract

from prh.errors import PrhError
from prh.store import FeatureStore, make_request, write_receipt


def _chunk(entry: Path) -> Path:
    """The first feature chunk file of an entry."""
    files = json.loads((entry / "manifest.json").read_text())["files"]
    return entry / min(f for f in files if f.startswith("features/c/"))


def flip_byte(entry: Path) -> None:
    p = _chunk(entry)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def truncate_chunk(entry: Path) -> None:
    p = _chunk(entry)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def delete_chunk(entry: Path) -> None:
    _chunk(entry).unlink()


def delete_manifest(entry: Path) -> None:
    (entry / "manifest.json").unlink()


def garble_manifest(entry: Path) -> None:
    (entry / "manifest.json").write_text('{"key": "trunc')


def edit_attrs(entry: Path) -> None:
    meta = json.loads((entry / "zarr.json").read_text())
    meta["attributes"]["layer_names"] = list(reversed(meta["attributes"]["layer_names"]))
    (entry / "zarr.json").write_text(json.dumps(meta))


def break_attrs_json(entry: Path) -> None:
    (entry / "zarr.json").write_text("{not json")


def extra_file(entry: Path) -> None:
    (entry / "features" / "c" / "stray").write_bytes(b"x")


CORRUPTIONS = {
    "flip-byte-in-chunk": (flip_byte, "checksum mismatch in features/c/"),
    "truncate-chunk": (truncate_chunk, "checksum mismatch in features/c/"),
    "delete-chunk": (delete_chunk, "missing file features/c/"),
    "delete-manifest": (delete_manifest, "missing manifest.json"),
    "garble-manifest": (garble_manifest, "unreadable manifest.json"),
    "edit-attrs": (edit_attrs, "checksum mismatch in zarr.json"),
    "break-attrs-json": (break_attrs_json, "checksum mismatch in zarr.json"),
    "unlisted-file": (extra_file, "unlisted file features/c/stray"),
}


@pytest.fixture()
def corrupt_store(tmp_path: Path, reference: dict, seeded_store: dict) -> tuple[Path, str]:
    """A store holding the bystander entry and a copy of the reference entry, to be corrupted by the test."""
    root = tmp_path / "store"
    shutil.copytree(seeded_store["root"], root)
    key = reference["key"]
    dest = FeatureStore(root).path(key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FeatureStore(reference["root"]).path(key), dest)
    assert FeatureStore(root).verify() == []
    return root, key


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_entry_is_named_refused_and_recomputed(
    corruption: str, corrupt_store, ckpt: Path, images, reference: dict, seeded_store: dict, capfd
) -> None:  # fmt: skip
    root, key = corrupt_store
    store = FeatureStore(root)
    damage, problem = CORRUPTIONS[corruption]
    damage(store.path(key))
    # verify names exactly the damaged entry and the problem
    problems = store.verify()
    assert len(problems) == 1 and problems[0].startswith(f"{key}: ") and problem in problems[0], problems
    res = cli("--store", str(root), "store", "verify")
    assert res.returncode == 1 and key in res.stdout and "Traceback" not in res.stderr
    # open refuses it with one line naming the key and the repair
    with pytest.raises(PrhError) as err:
        store.open(key)
    msg = str(err.value)
    assert "\n" not in msg and key in msg and "corrupt" in msg and f"prh store rm {key}" in msg
    assert not store.is_valid(key) and store.is_valid(seeded_store["key"])
    # the extraction entry point detects it, logs one line, removes it and recomputes a whole entry
    capfd.readouterr()
    got, created = run_extract(root, ckpt, images)
    log = capfd.readouterr().err.strip().splitlines()
    assert got == key and created
    assert len(log) == 1 and key in log[0] and "recomputing" in log[0], log
    assert store.verify() == [] and fingerprint(store.path(key)) == reference["fingerprint"]
    assert fingerprint(store.path(seeded_store["key"])) == seeded_store["fingerprint"]
    assert not list(store.tmp_dir.iterdir())


def test_workflow_job_recomputes_corrupt_entry(corrupt_store, ckpt: Path, images, reference: dict, tmp_path: Path, capfd) -> None:
    """prh.pipeline.extract_features (the Snakemake job) never reads a corrupt entry: it recomputes it, then writes its receipt."""
    from prh.data import save_dataset
    from prh.pipeline import extract_features
    from prh.store import read_receipt

    root, key = corrupt_store
    flip_byte(FeatureStore(root).path(key))
    npz = tmp_path / "imgs.npz"
    save_dataset(images, npz)
    zoo_receipt = tmp_path / "zoo.json"
    zoo_receipt.write_text(json.dumps({"model": "vit", "checkpoint": str(ckpt)}))
    out = tmp_path / "receipt.json"
    spec = {"source": "zoo", "modality": "vision"}
    capfd.readouterr()
    extract_features("vit", spec, [str(zoo_receipt)], str(npz), str(root), PARAMS, str(out), batch_size=8)
    assert "recomputing" in capfd.readouterr().err
    assert read_receipt(out)["key"] == key
    assert FeatureStore(root).verify() == [] and fingerprint(FeatureStore(root).path(key)) == reference["fingerprint"]


# ------------------------------------------------------------------ memo


def _memo_damage() -> dict:
    def flip(p: Path) -> None:
        b = bytearray(p.read_bytes())
        b[len(b) // 3] ^= 0x01
        p.write_bytes(bytes(b))

    def no_trailer(p: Path) -> None:
        data = p.read_bytes()
        p.write_bytes(data[: data.rfind(b"\nPRH-SHA256:")])

    def as_dir(p: Path) -> None:
        p.unlink()
        p.mkdir()

    return {
        "flip-byte": flip,
        "truncate": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "empty": lambda p: p.write_bytes(b""),
        "garbage": lambda p: p.write_bytes(b"\x00garbage\nPRH-SHA256:deadbeef\n"),
        "trailer-stripped": no_trailer,
        "bad-digest": lambda p: p.write_bytes(p.read_bytes().replace(b"PRH-SHA256:", b"PRH-SHA256:0")),
        "directory": as_dir,
    }


MEMO_DAMAGE = _memo_damage()


@pytest.mark.parametrize("damage", sorted(MEMO_DAMAGE))
def test_corrupt_memo_is_a_miss(damage: str, tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    key = "ab" * 32
    store.memo_put(key, np.arange(12.0).reshape(3, 4))
    MEMO_DAMAGE[damage](store._memo_path(key))
    assert store.memo_get(key) is None
    if damage != "directory":
        store.memo_put(key, np.ones(3))  # a recompute overwrites the damaged file
        assert np.array_equal(store.memo_get(key), np.ones(3))


def _two_model_store(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A store with two models' (random) features on one dataset, and their receipts."""
    from prh.extract import Features

    root, receipts = tmp_path / "store", {}
    store = FeatureStore(root)
    rng = np.random.default_rng(0)
    for m in ("a", "b"):
        req = make_request(m, m * 64, "d", "image", "c" * 64, {"pooling": "cls", "layers": "all"})
        key = store.key(req)
        feats = Features([rng.standard_normal((30, 8)).astype(np.float32) for _ in range(3)], ["l0", "l1", "l2"])
        with store.put(key, req) as w:
            w.write(feats)
        path = tmp_path / "results" / "features" / "d" / f"{m}.json"
        write_receipt(path, key, req, store.info(key))
        receipts[f"d/{m}"] = str(path)
    return root, receipts


def test_alignment_job_recomputes_corrupt_memo(tmp_path: Path) -> None:
    from prh.experiment import align_experiment

    root, receipts = _two_model_store(tmp_path)
    exp = {"dataset": "d", "metrics": [{"name": "mutual_knn", "k": 3}], "calibrate": False}
    args = (exp, ["a", "b"], ["a", "b"], receipts, str(root), 0.95, {}, str(tmp_path / "t.csv"), str(tmp_path / "m.zarr"))
    first = align_experiment(*args)
    memos = sorted((root / "memo").rglob("*.npy"))
    assert len(memos) == 1
    memos[0].write_bytes(memos[0].read_bytes()[:40])  # truncated memo
    second = align_experiment(*args)
    assert first.equals(second)
    assert FeatureStore(root).memo_get(memos[0].stem) is not None  # rewritten whole


def test_corrupt_zoo_checkpoint_is_refused_before_any_feature(ckpt: Path, tmp_path: Path) -> None:
    """A zoo checkpoint's weights with one byte flipped (same size): its digest no longer matches the manifest the
    zoo wrote, so the model is refused in one line instead of yielding features under a new key."""
    import shutil

    import prh.models as pm
    from faultkit import flip

    bad = tmp_path / "ckpt"
    shutil.copytree(ckpt, bad)
    spec = {"source": "zoo", "modality": "vision", "checkpoint": str(bad)}
    good = pm.weights_digest("v", spec)
    flip(bad / "model.safetensors")
    with pytest.raises(PrhError, match=r"model\.safetensors: sha256 \w{12} differs from its manifest's \w{12}: the file is corrupt"):
        pm.weights_digest("v", spec)
    with pytest.raises(PrhError, match="differs from its manifest"):
        pm.load_model("v", spec)
    flip(bad / "model.safetensors")  # flipped back: the same bytes, the same digest
    assert pm.weights_digest("v", spec) == good
