"""The content-addressed feature store: keys, atomic commits, integrity, gc, memo, receipts."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from dataclasses import dataclass, field

from prh.errors import PrhError
from prh.io import host_name
from prh.store import EXTRACTOR_VERSION, FeatureStore, make_request, read_receipt, request_key, write_receipt



@dataclass
class Features:
    """Stand-in for prh.extract.Features (keeps spawned writers free of torch imports)."""

    layers: list[np.ndarray]
    layer_names: list[str]
    side: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)


BASE_PARAMS = {"pooling": "mean", "layers": "all", "dtype": "float32", "max_tokens": 64, "prompt_template": None}


def _request(**over) -> dict:
    """A language-model request with fields overridable by keyword."""
    args = dict(model_name="m", weights_digest="w" * 64, dataset_name="d", modality="text", dataset_digest="c" * 64)
    params = {**BASE_PARAMS, **over.pop("params", {})}
    args.update(over)
    return make_request(params=params, **args)


def _features(seed: int = 0, n: int = 6, dims: tuple[int, ...] = (3, 5, 4)) -> Features:
    """Random features with unequal layer widths and a side array."""
    rng = np.random.default_rng(seed)
    layers = [rng.standard_normal((n, d)).astype(np.float32) for d in dims]
    return Features(layers, [f"blocks.{i}" for i in range(len(dims))], {"bpb": rng.random(n)}, {"pooling": "mean", "n_params": 7})


def _commit(store: FeatureStore, feats: Features, **over) -> str:
    """Commit ``feats`` under a request and return its key."""
    req = _request(**over)
    key = store.key(req)
    with store.put(key, req) as w:
        w.write(feats)
    return key


# ---------------------------------------------------------------- keys


def test_key_is_stable_and_order_independent():
    a = _request()
    b = json.loads(json.dumps(a))
    b = {k: b[k] for k in reversed(list(b))}
    b["extraction"] = {k: b["extraction"][k] for k in sorted(b["extraction"], reverse=True)}
    assert request_key(a) == request_key(b) == request_key(_request())
    assert len(request_key(a)) == 64 and int(request_key(a), 16) >= 0
    assert request_key({"x": 0.1}) == request_key({"x": 1 / 10})


@pytest.mark.parametrize(
    "change",
    [
        {"weights_digest": "v" * 64},
        {"dataset_digest": "e" * 64},
        {"model_name": "m2"},
        {"params": {"pooling": "last"}},
        {"params": {"layers": [0, 2]}},
        {"params": {"dtype": "bfloat16"}},
        {"params": {"max_tokens": 65}},
        {"params": {"prompt_template": "An image with the caption '{text}'. This is an image of a"}},
    ],
)
def test_every_field_changes_the_key(change):
    assert request_key(_request(**change)) != request_key(_request())


def test_extractor_version_changes_the_key():
    r = _request()
    assert r["extractor_version"] == EXTRACTOR_VERSION
    assert request_key({**r, "extractor_version": EXTRACTOR_VERSION + "x"}) != request_key(r)


def test_batch_size_and_device_do_not_change_the_key():
    assert request_key(_request(params={"batch_size": 7, "device": "cuda:1", "progress": False})) == request_key(_request())


def test_key_rejects_unhashable_values():
    with pytest.raises(PrhError, match="extraction.max_tokens"):
        _request(params={"max_tokens": float("nan")})
    with pytest.raises(PrhError, match="type"):
        request_key({"x": object()})


# ---------------------------------------------------------------- round trip


def test_put_open_round_trip(tmp_path):
    store = FeatureStore(tmp_path)
    feats = _features()
    key = _commit(store, feats)
    assert store.has(key) and store.is_valid(key) and store.keys() == [key]
    e = store.open(key)
    assert e.n_layers == 3 and e.n == 6 and e.shape == (3, 6, 5) and e.dims.tolist() == [3, 5, 4]
    for got, want in zip(e.layers(), feats.layers):
        assert got.dtype == np.float32 and np.array_equal(got, want)
    assert np.array_equal(e.layer(-1), feats.layers[-1])
    assert e.layer_names == feats.layer_names and e.request == _request()
    assert np.array_equal(e.side("bpb"), feats.side["bpb"]) and e.side_names == ["bpb"]
    assert e.attrs["n_params"] == 7 and "torch" in e.attrs["versions"] and e.attrs["key"] == key
    raw = np.asarray(e._features[0])  # padding is zeros
    assert np.all(raw[:, 3:] == 0)
    with pytest.raises(PrhError, match="no side array"):
        e.side("nope")
    with pytest.raises(PrhError, match="out of range"):
        e.layer(3)


def test_entry_is_one_chunk_per_layer_and_compressed(tmp_path):
    store = FeatureStore(tmp_path)
    feats = Features([np.zeros((64, 32), np.float32)] * 4, [f"l{i}" for i in range(4)])
    key = _commit(store, feats)
    chunks = sorted(p.relative_to(store.path(key)).as_posix() for p in (store.path(key) / "features").rglob("c/*/*/*"))
    assert chunks == [f"features/c/{i}/0/0" for i in range(4)]
    meta = json.loads((store.path(key) / "features" / "zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 64, 32]
    assert any(c["name"] == "blosc" and c["configuration"]["cname"] == "zstd" for c in meta["codecs"])
    assert all((store.path(key) / c).stat().st_size < 64 * 32 * 4 / 10 for c in chunks)


def test_large_entries_are_chunked_along_samples_and_stream_into_the_large_n_path(tmp_path, monkeypatch):
    import prh.store
    from prh.metrics import large_n_pair

    monkeypatch.setattr(prh.store, "SAMPLE_CHUNK", 16)
    store = FeatureStore(tmp_path)
    feats = _features(n=50, dims=(3, 5))
    key = _commit(store, feats)
    meta = json.loads((store.path(key) / "features" / "zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [1, 16, 5]
    entry = store.open(key)
    chunks = list(entry.layer_chunks(-2))
    assert [c.shape for c in chunks] == [(16, 3), (16, 3), (16, 3), (2, 3)]
    np.testing.assert_array_equal(np.concatenate(chunks), feats.layers[0])
    assert [c.shape[0] for c in entry.layer_chunks(1, rows=20)] == [20, 20, 10]
    streamed = large_n_pair("mutual_knn", entry.layer_chunks(0), entry.layer_chunks(1), k=4)
    assert streamed == large_n_pair("mutual_knn", feats.layers[0], feats.layers[1], k=4)
    with pytest.raises(PrhError, match="layer 2 out of range"):
        next(entry.layer_chunks(2))


def test_float16_storage_reads_back_float32(tmp_path):
    store = FeatureStore(tmp_path)
    feats = _features()
    req = _request(params={"store_dtype": "float16"})
    with store.put(store.key(req), req, store_dtype="float16") as w:
        w.write(feats)
    got = store.open(store.key(req)).layer(1)
    assert got.dtype == np.float32 and np.allclose(got, feats.layers[1], atol=2e-3)
    big = Features([np.full((2, 2), 1e5, np.float32)], ["blocks.0"])
    req2 = _request(dataset_name="big", params={"store_dtype": "float16"})
    with pytest.raises(PrhError, match="layer blocks.0 overflows float16"):
        with store.put(store.key(req2), req2, store_dtype="float16") as w:
            w.write(big)


def test_put_rejects_key_request_mismatch_and_bad_features(tmp_path):
    store = FeatureStore(tmp_path)
    with pytest.raises(PrhError, match="does not match"):
        with store.put("0" * 64, _request()):
            pass
    bad = Features([np.full((2, 2), np.nan, np.float32)], ["blocks.0"])
    with pytest.raises(PrhError, match="model 'm' on dataset 'd'.*non-finite"):
        _commit(store, bad)
    assert store.keys() == [] and list((tmp_path / ".tmp").iterdir()) == []


# ---------------------------------------------------------------- atomicity


def test_exception_inside_put_leaves_nothing(tmp_path):
    store = FeatureStore(tmp_path)
    req = _request()
    key = store.key(req)
    with pytest.raises(RuntimeError):
        with store.put(key, req) as w:
            w.write(_features())
            raise RuntimeError("boom")
    assert not store.has(key) and store.keys() == []
    assert list((tmp_path / ".tmp").iterdir()) == []


def _racer(root: str, seed: int, barrier, results) -> None:
    """Write the same key with seed-specific data, commit after both processes are ready."""
    store = FeatureStore(root)
    req = _request()
    with store.put(store.key(req), req) as w:
        w.write(_features(seed))
        barrier.wait(timeout=60)
    results.put((seed, w.committed))


def test_concurrent_commits_of_one_key_leave_one_whole_entry(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(str(tmp_path), s, barrier, results)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    outcome = dict(results.get(timeout=5) for _ in procs)
    assert sorted(outcome.values()) == [False, True]
    winner = next(s for s, won in outcome.items() if won)
    store = FeatureStore(tmp_path)
    (key,) = store.keys()
    assert store.verify() == []
    got = store.open(key).layers()
    assert all(np.array_equal(g, w) for g, w in zip(got, _features(winner).layers))
    assert list((tmp_path / ".tmp").iterdir()) == []


def _killed_writer(root: str, ready) -> None:
    """Start writing an entry, signal, then hang until killed."""
    store = FeatureStore(root)
    req = _request()
    with store.put(store.key(req), req) as w:
        w.write(_features())
        ready.set()
        time.sleep(600)


def test_killed_writer_leaves_only_a_temp_dir_that_gc_removes(tmp_path):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    p = ctx.Process(target=_killed_writer, args=(str(tmp_path), ready))
    p.start()
    assert ready.wait(60)
    store = FeatureStore(tmp_path)
    assert store.gc(dry_run=True) == []  # the writer is alive: its temp dir is not stale
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    key = store.key(_request())
    assert not store.has(key) and store.keys() == []
    (tmp,) = list((tmp_path / ".tmp").iterdir())
    assert store.gc(dry_run=True) == [f".tmp/{tmp.name}"] and tmp.exists()
    assert store.gc() == [f".tmp/{tmp.name}"] and not tmp.exists()


# ---------------------------------------------------------------- integrity


def test_verify_detects_flipped_byte_and_open_refuses(tmp_path):
    store = FeatureStore(tmp_path)
    good = _commit(store, _features(0))
    bad = _commit(store, _features(1), dataset_name="other")
    chunk = store.path(bad) / "features" / "c" / "1" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    problems = store.verify()
    assert len(problems) == 1 and problems[0].startswith(bad) and "checksum mismatch in features/c/1/0/0" in problems[0]
    assert store.has(bad) and not store.is_valid(bad) and store.is_valid(good)
    with pytest.raises(PrhError, match=f"store entry {bad} is corrupt.*prh store rm {bad}"):
        store.open(bad)
    store.open(good)


def test_verify_detects_missing_manifest_file_and_attrs(tmp_path):
    store = FeatureStore(tmp_path)
    k1 = _commit(store, _features(0))
    k2 = _commit(store, _features(1), dataset_name="d2")
    k3 = _commit(store, _features(2), dataset_name="d3")
    (store.path(k1) / "manifest.json").unlink()
    (store.path(k2) / "features" / "c" / "0" / "0" / "0").unlink()
    (store.path(k3) / "zarr.json").write_text("{not json")
    problems = dict(p.split(": ", 1) for p in store.verify())
    assert set(problems) == {k1, k2, k3}
    assert "missing manifest" in problems[k1]
    assert "missing file features/c/0/0/0" in problems[k2]
    assert "checksum mismatch in zarr.json" in problems[k3]
    for k in (k1, k2, k3):
        with pytest.raises(PrhError, match="corrupt"):
            store.open(k)
    assert store.verify([k1]) == [p for p in store.verify() if p.startswith(k1)]


# ---------------------------------------------------------------- listing, rm, gc


def test_ls_show_rm(tmp_path):
    store = FeatureStore(tmp_path)
    k = _commit(store, _features(dims=(3, 5)))
    (info,) = store.ls()
    assert (info.key, info.model, info.dataset, info.shape) == (k, "m", "d", (2, 6, 5))
    assert info.size_bytes == sum(p.stat().st_size for p in store.path(k).rglob("*") if p.is_file())
    assert 0 <= info.age_s < 60
    shown = store.show(k)
    assert shown["dims"] == [3, 5] and shown["side"] == ["bpb"] and shown["valid"] and shown["attrs"]["request"] == _request()
    store.rm(k)
    assert not store.has(k) and store.ls() == []
    with pytest.raises(PrhError, match="not in the store"):
        store.rm(k)


def test_gc_removes_unreferenced_entries_and_stale_temp(tmp_path):
    store = FeatureStore(tmp_path)
    keep = _commit(store, _features(0))
    drop = _commit(store, _features(1), dataset_name="d2")
    stale = tmp_path / ".tmp" / f"{keep}~{host_name()}~999999999~deadbeef"  # this host, a dead pid
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    untagged = tmp_path / ".tmp" / f"{keep}-999999999-cafe"  # an older prh's name: whose it is cannot be told
    untagged.mkdir()
    plan = store.gc({keep}, dry_run=True)
    assert sorted(plan) == sorted([f".tmp/{stale.name}", drop])
    assert store.has(drop) and stale.exists()
    assert sorted(store.gc({keep})) == sorted(plan)
    assert store.keys() == [keep] and not stale.exists() and store.is_valid(keep)
    assert store.gc() == []  # no referenced set: entries are kept; the untagged temp is kept until it is a day old
    os.utime(untagged, (time.time() - 25 * 3600,) * 2)
    assert store.gc() == [f".tmp/{untagged.name}"] and not untagged.exists()


# ---------------------------------------------------------------- memo and receipts


def test_memo_round_trip_and_corruption_is_a_miss(tmp_path):
    store = FeatureStore(tmp_path)
    k = request_key({"pair": 1})
    assert store.memo_get(k) is None
    scores = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    store.memo_put(k, scores)
    assert np.array_equal(store.memo_get(k), scores)
    path = tmp_path / "memo" / k[:2] / f"{k}.npy"
    assert np.array_equal(np.load(path), scores)  # still a plain .npy for other tools
    data = bytearray(path.read_bytes())
    data[140] ^= 0xFF
    path.write_bytes(bytes(data))
    assert store.memo_get(k) is None
    store.memo_put(k, scores)
    path.write_bytes(path.read_bytes()[:100])
    assert store.memo_get(k) is None
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_receipts_round_trip_and_errors(tmp_path):
    store = FeatureStore(tmp_path / "store")
    k = _commit(store, _features())
    out = tmp_path / "results" / "receipt.json"
    write_receipt(out, k, _request(), store.info(k))
    r = read_receipt(out)
    assert r["key"] == k and r["request"] == _request() and r["entry"]["shape"] == [3, 6, 5] and "age_s" not in r["entry"]
    with pytest.raises(PrhError, match="missing.json does not exist"):
        read_receipt(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(PrhError, match="bad.json is unreadable"):
        read_receipt(tmp_path / "bad.json")
