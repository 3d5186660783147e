"""Content-addressed zarr feature store: atomic commits, checksum manifests, pair-score memo, receipts.

Layout under ``root``::

    entries/<key[:2]>/<key>/      committed entries (zarr v3 group + manifest.json)
    .tmp/<key>~<host>~<pid>~<uuid>/  entries being written (same filesystem, renamed into place)
    memo/<key[:2]>/<key>.npy      memoised pair scores (valid .npy, then its key and shape, then a sha256 trailer)

An entry is visible only after ``os.rename`` of a complete temp dir whose ``manifest.json`` lists the
sha256 of every file in it.  ``open()`` verifies the whole entry before returning (eager, one sha256 pass over the
files: ~0.1 s per 100 MB; its request must hash to its key and its zarr layout match its attrs), so a corrupt or
misplaced entry is never read silently, and a chunk that vanishes while it is read (a concurrent ``rm`` or ``gc``)
is an error, never zarr's fill value.  Every path is built from a validated 64-hex key.  Temp names carry their
writer's host and pid, so ``gc`` never judges another machine's writer by a local pid.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno as _errno
import functools
import hashlib
import io
import json
import math
import os
import re
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from prh.errors import PrhError
from prh.io import (
    canonical,
    content_key,
    manifest_problems,
    read_manifest,
    remove_tree,
    replace_file,
    write_manifest,
    writer_gone,
    writer_tag,
)

EXTRACTOR_VERSION = "1"
SAMPLE_CHUNK = 16384  # samples per stored chunk: an entry with more is chunked along samples (readers stream it)
NON_KEY_PARAMS = frozenset({"batch_size", "device", "progress"})
_MEMO_TRAILER = b"\nPRH-SHA256:"
_MEMO_META = b"\nPRH-MEMO:"  # memos since store format 2: the .npy, then {"key", "shape", "dtype"}, then the trailer
_OLD_MEMO = "older memo format without its key"
_ACTIVE_TMP: set[str] = set()
KEY_RE = re.compile(r"^[0-9a-f]{64}$")  # a store key: entries, memos, zoo recipes (prh.io.content_key)
ITEM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # a zoo checkpoint or model cache directory (never a temp)
OTHER_HOST_AGE_S = 24 * 3600.0  # gc removes a temp of another host's writer only after this long without a change


class FeaturesLike(Protocol):
    """What ``EntryWriter.write`` needs: ``prh.extract.Features`` satisfies it."""

    layers: list[np.ndarray]
    layer_names: list[str]
    side: dict[str, np.ndarray]
    attrs: dict


# --------------------------------------------------------------------------- keys


def request_key(request: dict) -> str:
    """SHA-256 hex (64 chars) of the canonical JSON of a request."""
    return content_key(request)


def check_key(key: object, what: str = "store key") -> str:
    """``key`` when it is a store key (64 lowercase hex digits), else a one-line PrhError naming it."""
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise PrhError(f"{what} {key!r} is not a store key (64 lowercase hex digits)")
    return key


def make_request(
    model_name: str, weights_digest: str, dataset_name: str, modality: str, dataset_digest: str, params: dict
) -> dict:
    """Everything that determines an entry's bytes; batch size, device and progress are dropped."""
    extraction = {k: v for k, v in params.items() if k not in NON_KEY_PARAMS}
    return canonical(
        {
            "model": {"id": model_name, "weights_digest": weights_digest},
            "dataset": {"id": dataset_name, "modality": modality, "content_digest": dataset_digest},
            "extraction": extraction,
            "extractor_version": EXTRACTOR_VERSION,
        }
    )


# --------------------------------------------------------------------------- file helpers


def _dir_size(directory: Path) -> int:
    """Total bytes of the files under ``directory``."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _write_failed(what: str, where: Path, e: OSError) -> PrhError:
    """One-line error for a failed store write (disk full, read-only file system, permissions)."""
    code = _errno.errorcode.get(e.errno, "") if e.errno else ""
    why = f"{e.strerror or e}" + (f" [{code}]" if code else "")
    return PrhError(f"{what}: cannot write to {where}: {why}; free disk space or make it writable, then rerun")


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape features (from package metadata; imports nothing)."""
    from importlib import metadata

    out = {}
    for dist in ("prh", "torch", "timm", "transformers", "zarr", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def _now_iso() -> str:
    """Current UTC time, ISO 8601."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class EntryInfo:
    """One committed entry as ``prh store ls`` lists it."""

    key: str
    model: str
    dataset: str
    shape: tuple[int, int, int]  # (layers, samples, max dim)
    size_bytes: int
    created: str  # ISO 8601 UTC
    age_s: float

    def as_dict(self) -> dict:
        """JSON-ready dict."""
        return {**self.__dict__, "shape": list(self.shape)}


@functools.cache
def _listed_files_store() -> type:
    """A read-only zarr LocalStore for which a file its entry's manifest lists but that is absent is an error.

    zarr reads an absent chunk as its fill value (zeros); an entry renamed away by a concurrent ``rm`` or ``gc``
    while a job streams it would read as zeros.  Reads through this store raise instead, on any file system: no
    lock is needed, and a chunk that was read was read whole (``rm`` and ``gc`` rename an entry out of sight before
    deleting it).
    """
    from zarr.storage import LocalStore

    class ListedFilesStore(LocalStore):
        def __init__(self, root: Path, key: str, listed: frozenset[str]) -> None:
            super().__init__(str(root), read_only=True)
            self.entry_key, self.listed = key, listed

        async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
            buf = await super().get(key, prototype, byte_range)
            if buf is None and key in self.listed:
                raise PrhError(f"store entry {self.entry_key}: {key} vanished while being read (the entry was removed, "
                               f"e.g. by `prh store rm` or `gc`, meanwhile); rerun to recompute it")  # fmt: skip
            return buf

    return ListedFilesStore


class StoredEntry:
    """A committed entry, read lazily: layers are loaded one chunk at a time; a listed file that vanishes is an error."""

    def __init__(self, key: str, path: Path) -> None:
        import zarr

        self.key = key
        self.path = path
        try:
            listed = frozenset(read_manifest(path)["files"])
        except ValueError:  # opened without verification (``prh store show``): nothing to hold reads to
            listed = frozenset()
        try:
            self._group = zarr.open_group(_listed_files_store()(path, key, listed), mode="r")
            self._features = self._group["features"]
            self.dims: np.ndarray = np.asarray(self._group["dims"][:], dtype=np.int64)  # (L,)
            self.attrs: dict = dict(self._group.attrs)
        except Exception as e:  # noqa: BLE001 - any read failure means a broken entry
            raise _corrupt(key, f"unreadable zarr group ({type(e).__name__}: {e})") from e

    @property
    def n_layers(self) -> int:
        """Number of layers L."""
        return int(self._features.shape[0])

    @property
    def n(self) -> int:
        """Number of samples n."""
        return int(self._features.shape[1])

    @property
    def shape(self) -> tuple[int, int, int]:
        """Stored array shape (L, n, d_max)."""
        return tuple(int(s) for s in self._features.shape)  # type: ignore[return-value]

    @property
    def layer_names(self) -> list[str]:
        """Layer names in block order."""
        return list(self.attrs["layer_names"])

    @property
    def request(self) -> dict:
        """The canonical request the key was computed from."""
        return dict(self.attrs["request"])

    def _index(self, i: int) -> int:
        """Layer ``i`` (negative counts from the end) as an index in range, else a PrhError."""
        if not -self.n_layers <= i < self.n_layers:
            raise PrhError(f"store entry {self.key}: layer {i} out of range (it has {self.n_layers} layers)")
        return i % self.n_layers

    def layer(self, i: int) -> np.ndarray:
        """Features of layer ``i``: (n, d_i) float32."""
        i = self._index(i)
        return np.asarray(self._features[i, :, : int(self.dims[i])], dtype=np.float32)

    def layers(self) -> list[np.ndarray]:
        """All layers, each (n, d_l) float32."""
        return [self.layer(i) for i in range(self.n_layers)]

    def layer_chunks(self, i: int, rows: int | None = None) -> Iterator[np.ndarray]:
        """Layer ``i`` as consecutive (rows, d_i) float32 sample chunks (default: the stored chunking)."""
        i = self._index(i)
        rows = rows or int(self._features.chunks[1])
        for r0 in range(0, self.n, rows):
            yield np.asarray(self._features[i, r0 : r0 + rows, : int(self.dims[i])], dtype=np.float32)

    @property
    def side_names(self) -> list[str]:
        """Names of the side arrays (e.g. ``bpb``, ``n_tokens``, ``n_bytes``)."""
        return sorted(self._group["side"].array_keys()) if "side" in self._group else []

    def side(self, name: str) -> np.ndarray:
        """Side array ``name``: (n,) or (n, ...)."""
        if name not in self.side_names:
            raise PrhError(f"store entry {self.key} has no side array {name!r} (has: {self.side_names})")
        return np.asarray(self._group["side"][name][:])


def _corrupt(key: str, why: str) -> PrhError:
    """The one-line error for a corrupt entry."""
    return PrhError(
        f"store entry {key} is corrupt: {why} (run `prh store verify`; delete it with `prh store rm {key}` to recompute)"
    )


class EntryWriter:
    """Writes one entry into a temp dir; ``FeatureStore.put`` commits it."""

    def __init__(self, path: Path, key: str, request: dict, store_dtype: str) -> None:
        self.path = path
        self.key = key
        self.request = request
        self.store_dtype = store_dtype
        self.written = False
        self.committed = False  # True when this writer's entry became the visible one

    def _label(self) -> str:
        """'model on dataset' for error messages."""
        return f"model {self.request.get('model', {}).get('id')!r} on dataset {self.request.get('dataset', {}).get('id')!r}"

    def _check(self, features: FeaturesLike) -> tuple[int, int]:
        """Validate shapes and finiteness; return (n, d_max)."""
        if not features.layers:
            raise PrhError(f"{self._label()}: extraction produced no layers")
        if len(features.layer_names) != len(features.layers):
            raise PrhError(f"{self._label()}: {len(features.layer_names)} layer names for {len(features.layers)} layers")
        n = features.layers[0].shape[0]
        for name, a in zip(features.layer_names, features.layers):
            if a.ndim != 2 or a.shape[0] != n:
                raise PrhError(f"{self._label()}: layer {name} has shape {a.shape}, expected ({n}, d)")
            if not np.isfinite(a).all():
                raise PrhError(f"{self._label()}: layer {name} has non-finite features (try dtype float32)")
            if self.store_dtype == "float16" and np.abs(a).max(initial=0.0) > np.finfo(np.float16).max:
                raise PrhError(f"{self._label()}: layer {name} overflows float16 storage (use store_dtype float32)")
        return n, max(a.shape[1] for a in features.layers)

    def write(self, features: FeaturesLike) -> None:
        """Write layers (zero-padded to d_max; a chunk per layer and SAMPLE_CHUNK samples), dims, side arrays, attrs."""
        if self.written:
            raise PrhError(f"{self._label()}: features already written to store entry {self.key}")
        n, d_max = self._check(features)
        try:
            self._write(features, n, d_max)
        except OSError as e:
            raise _write_failed(f"store entry {self.key} ({self._label()})", self.path.parent.parent, e) from None
        self.written = True

    def _write(self, features: FeaturesLike, n: int, d_max: int) -> None:
        """The zarr writes of ``write`` (into the temp dir)."""
        import zarr
        from zarr.codecs import BloscCodec

        n_layers = len(features.layers)
        codec = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
        group = zarr.open_group(str(self.path), mode="w")
        arr = group.create_array(
            "features", shape=(n_layers, n, d_max), chunks=(1, min(n, SAMPLE_CHUNK), d_max), dtype=self.store_dtype,
            compressors=codec, fill_value=0, config={"write_empty_chunks": True},
        )
        padded = np.zeros((n, d_max), dtype=self.store_dtype)
        for i, layer in enumerate(features.layers):
            padded[:, : layer.shape[1]] = layer
            padded[:, layer.shape[1] :] = 0
            arr[i] = padded
        dims = group.create_array("dims", shape=(n_layers,), dtype="int64", compressors=None)
        dims[:] = np.array([a.shape[1] for a in features.layers], dtype=np.int64)
        side = group.create_group("side")
        for name, values in features.side.items():
            values = np.asarray(values)
            if values.shape[:1] != (n,):
                raise PrhError(f"{self._label()}: side array {name!r} has shape {values.shape}, expected ({n}, ...)")
            s = side.create_array(name, shape=values.shape, dtype=values.dtype, compressors=None)
            s[...] = values
        attrs = {
            **canonical(features.attrs, "attrs"),
            "request": self.request,
            "key": self.key,
            "layer_names": list(features.layer_names),
            "store_dtype": self.store_dtype,
            "versions": dict(_library_versions()),
            "created": _now_iso(),
        }
        group.update_attributes(attrs)  # one zarr.json write (attrs.update writes once per key)


ZOO_DIR = "zoo"  # <root>/zoo/<recipe dir>: checkpoints the workflow trained (rules/zoo.smk)
MODEL_CACHE_DIR = "hf-cache"  # <root>/hf-cache/<name>-<digest12>: packaged GGUF models converted once


@dataclass(frozen=True)
class Damage:
    """One damaged item of the store, as ``prh store verify`` reports it."""

    kind: str  # entry, memo, zoo checkpoint, model cache
    ident: str  # store key, or a store-relative name such as memo/<key> or zoo/<dir>
    problem: str
    repair: str  # the command that removes it; the workflow recomputes it when next needed

    def line(self) -> str:
        """One line: kind, identity, problem and the repair command."""
        return f"{self.kind} {self.ident}: {self.problem} -> repair: {self.repair}, then rerun the workflow"


class FeatureStore:
    """A directory of content-addressed feature entries."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.entries_dir = self.root / "entries"
        self.tmp_dir = self.root / ".tmp"
        self.memo_dir = self.root / "memo"

    # ---- keys and paths
    @staticmethod
    def key(request: dict) -> str:
        """SHA-256 key of a request."""
        return request_key(request)

    def path(self, key: str) -> Path:
        """Where the committed entry for ``key`` lives (PrhError unless ``key`` is a store key)."""
        check_key(key)
        return self.entries_dir / key[:2] / key

    def keys(self) -> list[str]:
        """Keys of every committed entry, sorted (directories that are not keys under their prefix are ignored)."""
        if not self.entries_dir.is_dir():
            return []
        return sorted(p.name for p in self.entries_dir.glob("??/*")
                      if KEY_RE.match(p.name) and p.parent.name == p.name[:2] and p.is_dir())  # fmt: skip

    def has(self, key: str) -> bool:
        """True when ``key`` is committed (visible); says nothing about integrity (see ``is_valid``)."""
        return self.path(key).is_dir()

    def is_valid(self, key: str) -> bool:
        """True when ``key`` is committed and matches its manifest."""
        return self.has(key) and not self._problems(key)

    # ---- reading
    def open(self, key: str, verify: bool = True) -> StoredEntry:
        """Open a committed entry; with ``verify`` (default) checksum every file first, raising PrhError if corrupt."""
        if not self.has(key):
            raise PrhError(f"store entry {key} is not in the store at {self.root}")
        if verify:
            problems = self._problems(key)
            if problems:
                raise _corrupt(key, "; ".join(problems))
        return StoredEntry(key, self.path(key))

    # ---- writing
    @contextlib.contextmanager
    def put(self, key: str, request: dict, store_dtype: str = "float32") -> Iterator[EntryWriter]:
        """Yield a writer into a temp dir; on normal exit commit it atomically (first committer wins)."""
        if store_dtype not in ("float32", "float16"):
            raise PrhError(f"store_dtype {store_dtype!r} is not float32 or float16")
        if request_key(request) != check_key(key):
            raise PrhError(f"store key {key} does not match its request (expected {request_key(request)})")
        tmp = self.tmp_dir / f"{key}{writer_tag()}{uuid.uuid4().hex}"
        writer = EntryWriter(tmp, key, canonical(request), store_dtype)
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
        except OSError as e:
            raise _write_failed(f"store entry {key} ({writer._label()})", self.root, e) from None
        _ACTIVE_TMP.add(str(tmp))
        try:
            yield writer
            if not writer.written:
                raise PrhError(f"store entry {key}: put() exited without writing features")
            try:
                self._write_manifest(tmp, key)
                writer.committed = self._commit(tmp, key)
            except OSError as e:
                raise _write_failed(f"store entry {key} ({writer._label()})", self.root, e) from None
        except BaseException:
            remove_tree(tmp)  # settles zarr writes still in flight after a failed one
            raise
        else:
            shutil.rmtree(tmp, ignore_errors=True)  # lost the commit race: ours is a complete duplicate
        finally:
            _ACTIVE_TMP.discard(str(tmp))

    def _write_manifest(self, directory: Path, key: str) -> None:
        """Write ``manifest.json`` with the sha256 and size of every file in the entry."""
        write_manifest(directory, key=key, extractor_version=EXTRACTOR_VERSION, created=_now_iso())

    def _commit(self, tmp: Path, key: str) -> bool:
        """Rename the temp dir into place; False (ours discarded) if another writer committed first."""
        dest = self.path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            return False
        try:
            os.rename(tmp, dest)
        except OSError:
            if dest.exists():
                return False
            raise
        return True

    # ---- integrity
    def _problems(self, key: str) -> list[str]:
        """Integrity problems of one committed entry (empty when sound): its files against its manifest, then that
        its request hashes to ``key`` (an entry copied or edited under another key fails) and its zarr layout."""
        d = self.path(key)
        problems = manifest_problems(d)
        if problems and problems[0].startswith(("missing manifest", "unreadable manifest", "manifest.json lists")):
            return problems
        named = read_manifest(d).get("key")
        if named != key:
            problems.insert(0, f"manifest names key {named!r}")
        return problems or _placement_problems(d, key)

    def verify(self, keys: list[str] | None = None) -> list[str]:
        """Re-checksum committed entries; one line ``<key>: <problem>; ...`` per corrupt or partial entry."""
        out = []
        for key in self.keys() if keys is None else keys:
            problems = self._problems(key) if self.has(key) else ["not in the store"]
            if problems:
                out.append(f"{key}: " + "; ".join(problems))
        return out

    # ---- listing and removal
    def info(self, key: str) -> EntryInfo:
        """Summary of one committed entry (reads only metadata)."""
        d = self.path(key)
        try:
            root_meta = json.loads((d / "zarr.json").read_text())["attributes"]
            shape = tuple(int(s) for s in json.loads((d / "features" / "zarr.json").read_text())["shape"])
            created = str(root_meta.get("created", ""))
            req = root_meta.get("request", {})
            model, dataset = str(req.get("model", {}).get("id")), str(req.get("dataset", {}).get("id"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise _corrupt(key, f"unreadable metadata ({type(e).__name__})") from e
        try:
            age = time.time() - _dt.datetime.fromisoformat(created).timestamp()
        except ValueError:
            age = float("nan")
        return EntryInfo(key=key, model=model, dataset=dataset, shape=shape,  # type: ignore[arg-type]
                         size_bytes=_dir_size(d), created=created, age_s=age)  # fmt: skip

    def ls(self) -> list[EntryInfo]:
        """Info for every committed entry, sorted by model then dataset."""
        infos = []
        for key in self.keys():
            try:
                infos.append(self.info(key))
            except PrhError:
                infos.append(EntryInfo(key, "?", "?", (0, 0, 0), _dir_size(self.path(key)), "", float("nan")))
        return sorted(infos, key=lambda e: (e.model, e.dataset, e.key))

    def show(self, key: str) -> dict:
        """Everything known about an entry: info, attrs, dims, side arrays, path."""
        entry = self.open(key, verify=False)
        return {
            **self.info(key).as_dict(), "path": str(entry.path), "attrs": entry.attrs,
            "dims": entry.dims.tolist(), "side": entry.side_names, "valid": self.is_valid(key),
        }

    def rm(self, key: str) -> None:
        """Remove a committed entry (renamed out of sight first, so it disappears atomically)."""
        if not self.has(key):
            raise PrhError(f"store entry {key} is not in the store at {self.root}")
        self._discard(self.path(key), key)

    def _discard(self, path: Path, label: str) -> None:
        """Rename ``path`` out of sight (into ``.tmp``), then delete it: it disappears atomically."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        doomed = self.tmp_dir / f"rm-{label}{writer_tag()}{uuid.uuid4().hex}"
        os.rename(path, doomed)
        if doomed.is_dir():
            shutil.rmtree(doomed, ignore_errors=True)
        else:
            doomed.unlink(missing_ok=True)

    def _temp_candidates(self) -> list[Path]:
        """Every temp file or dir a writer of the store makes: entries (and removals) in ``.tmp``, memo temp files,
        zoo checkpoint and model cache temp dirs (named with their writer by ``prh.io.writer_tag``, or untagged by an
        older prh)."""
        out = sorted(self.tmp_dir.glob("*")) if self.tmp_dir.is_dir() else []
        out += sorted(self.memo_dir.glob("??/.*.tmp")) if self.memo_dir.is_dir() else []
        for folder in (ZOO_DIR, MODEL_CACHE_DIR):
            out += sorted(p for p in (self.root / folder).glob(".*.tmp*") if ".tmp~" in p.name or ".tmp-" in p.name)
        return out

    def stale_temps(self, other_host_age_s: float = OTHER_HOST_AGE_S) -> list[Path]:
        """Temp dirs and files of writers that are gone: of this host's writers whose pid is dead, of other hosts'
        (or untagged) ones only after ``other_host_age_s`` seconds without a change (``prh.io.writer_gone``)."""
        return [p for p in self._temp_candidates() if str(p) not in _ACTIVE_TMP and writer_gone(p, other_host_age_s)]

    def gc(self, referenced_keys: set[str] | None = None, dry_run: bool = False,
           other_host_age_s: float = OTHER_HOST_AGE_S) -> list[str]:  # fmt: skip
        """Remove stale temps (``stale_temps``) and memos in the older format (never read again) and, when
        ``referenced_keys`` is given, entries not in it; return what went (store-relative)."""
        removed = []
        for p in self.stale_temps(other_host_age_s) + [self._memo_path(k) for k in self.old_format_memos()]:
            removed.append(p.relative_to(self.root).as_posix())
            if not dry_run:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        if referenced_keys is not None:
            for key in self.keys():
                if key not in referenced_keys:
                    removed.append(key)
                    if not dry_run:
                        self.rm(key)
        return removed

    # ---- memo of pair scores
    def _memo_path(self, key: str) -> Path:
        """File holding the memoised array for ``key`` (PrhError unless ``key`` is a store key)."""
        check_key(key, "memo key")
        return self.memo_dir / key[:2] / f"{key}.npy"

    def memo_put(self, key: str, array: np.ndarray) -> None:
        """Memoise ``array`` under ``key``: a valid .npy, its key, shape and dtype, and a sha256 trailer over both,
        written atomically (a memo copied under another key's path is a miss, never that key's result)."""
        path = self._memo_path(key)
        arr = np.asarray(array)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        meta = {"key": key, "shape": list(arr.shape), "dtype": arr.dtype.str}
        body = buf.getvalue() + _MEMO_META + json.dumps(meta, sort_keys=True).encode()
        trailer = _MEMO_TRAILER + hashlib.sha256(body).hexdigest().encode() + b"\n"
        try:
            replace_file(path, body + trailer)
        except OSError as e:
            raise _write_failed(f"memo {key}", self.memo_dir, e) from None

    def memo_get(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """The memoised array for ``key`` (of ``shape`` when given), or None when absent, corrupt, of the older
        format, misplaced or of another shape (a miss: the caller recomputes it)."""
        try:
            data = self._memo_path(key).read_bytes()
        except OSError:  # absent, or unreadable (a directory, permissions): recompute
            return None
        array, problem = _parse_memo(key, data)
        if array is not None and shape is not None and array.shape != tuple(shape):
            array, problem = None, f"holds shape {array.shape}, expected {tuple(shape)}"
        if problem is not None and problem != _OLD_MEMO:
            warnings.warn(f"memo {key} is unusable ({problem}): recomputing it; `prh store verify` lists damage")
        return array

    def memo_keys(self) -> list[str]:
        """Keys of every memoised pair result, sorted."""
        if not self.memo_dir.is_dir():
            return []
        paths = self.memo_dir.glob("??/*.npy")
        return sorted(p.stem for p in paths if KEY_RE.match(p.stem) and p.parent.name == p.stem[:2])

    def _memo_problem(self, key: str) -> str | None:
        """Why the memo file of ``key`` is unusable, or None when it is sound."""
        try:
            data = self._memo_path(key).read_bytes()
        except OSError as e:
            return f"unreadable ({type(e).__name__})"
        return _parse_memo(key, data)[1]

    def old_format_memos(self) -> list[str]:
        """Keys of memos in the older format, without their key (never read: a miss, recomputed when next needed)."""
        return [k for k in self.memo_keys() if self._memo_problem(k) == _OLD_MEMO]

    # ---- whole-store audit
    def audit(self) -> list[Damage]:
        """Every damaged thing in the store: entries, memoised pair scores, zoo checkpoints, converted model caches."""
        damage = [Damage("entry", key, problem, f"prh store rm {key}") for key in self.keys()
                  for problem in ["; ".join(self._problems(key))] if problem]  # fmt: skip
        for key in self.memo_keys():
            problem = self._memo_problem(key)
            if problem not in (None, _OLD_MEMO):
                damage.append(Damage("memo", f"memo/{key}", str(problem), f"prh store rm memo/{key}"))
        for kind, folder in (("zoo checkpoint", ZOO_DIR), ("model cache", MODEL_CACHE_DIR)):
            for d in sorted(p for p in (self.root / folder).glob("*") if p.is_dir() and ITEM_RE.match(p.name)):
                problems = manifest_problems(d)
                if problems:
                    ident = f"{folder}/{d.name}"
                    damage.append(Damage(kind, ident, "; ".join(problems), f"prh store rm {ident}"))
        return damage

    def item_path(self, ident: str) -> Path:
        """The path of one store item as ``verify`` names it: an entry key, ``memo/<key>``, ``zoo/<dir>`` or
        ``hf-cache/<dir>``; a one-line PrhError for anything else (``.``, ``..``, a temp, a nested path, '')."""
        head, sep, tail = ident.partition("/")
        try:
            if not sep:
                return self.path(ident)
            if head == "memo":
                return self._memo_path(tail)
        except PrhError:
            pass
        else:
            if head in (ZOO_DIR, MODEL_CACHE_DIR) and ITEM_RE.match(tail) and tail not in (".", ".."):
                return self.root / head / tail
        raise PrhError(f"store item {ident!r} is not one item of the store: name an entry key, memo/<key>, zoo/<dir> "
                       f"or hf-cache/<dir> as `prh store verify` prints them")  # fmt: skip

    def remove(self, ident: str) -> list[str]:
        """Remove one entry key, ``memo/<key>``, ``zoo/<dir>`` or ``hf-cache/<dir>`` atomically; return what went."""
        path = self.item_path(ident)
        if not os.path.lexists(path):
            raise PrhError(f"store item {ident!r} is not in the store at {self.root} (see `prh store verify`)")
        self._discard(path, path.stem if ident.startswith("memo/") else path.name)
        return [path.relative_to(self.root).as_posix()]


def _parse_memo(key: str, data: bytes) -> tuple[np.ndarray | None, str | None]:
    """(array, None) for a sound memo file of ``key``, else (None, why it is unusable)."""
    cut = data.rfind(_MEMO_TRAILER)
    if cut < 0:
        return None, "no checksum trailer (truncated or foreign file)"
    body = data[:cut]
    if hashlib.sha256(body).hexdigest().encode() != data[cut + len(_MEMO_TRAILER) :].strip():
        return None, "checksum mismatch"
    meta_at = body.rfind(_MEMO_META)
    if meta_at < 0:
        return None, _OLD_MEMO
    try:
        meta = json.loads(body[meta_at + len(_MEMO_META) :])
        array = np.load(io.BytesIO(body[:meta_at]), allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        return None, f"unreadable array ({type(e).__name__})"
    if not isinstance(meta, dict) or meta.get("key") != key:
        named = meta.get("key") if isinstance(meta, dict) else meta
        return None, f"holds the result of key {str(named)[:16]}, not of its own key (copied from another memo?)"
    if list(array.shape) != meta.get("shape") or array.dtype.str != meta.get("dtype"):
        return None, f"holds a {array.dtype.str} {array.shape} array; its record says {meta.get('dtype')} {meta.get('shape')}"
    return array, None


def _placement_problems(d: Path, key: str) -> list[str]:
    """An entry whose files match its manifest: does its request hash to ``key``, and its layout match its attrs?"""
    try:
        attrs = json.loads((d / "zarr.json").read_text())["attributes"]
        named = request_key(attrs["request"])
    except (OSError, ValueError, KeyError, TypeError, PrhError):
        return ["unreadable attrs in zarr.json"]
    problems = []
    if named != key:
        problems.append(f"its request hashes to {named[:16]}, not to its key (an entry copied or edited under another key)")
    if attrs.get("key") != key:
        problems.append(f"its attrs name key {str(attrs.get('key'))[:16]}")
    return problems + _layout_problems(d, attrs)


def _layout_problems(d: Path, attrs: dict) -> list[str]:
    """The zarr layout ``EntryWriter`` writes: features (L, n, d_max) in the stored dtype, a chunk per layer and
    SAMPLE_CHUNK samples, every chunk listed in the manifest; dims (L,) int64 with 1 <= dims <= d_max = max(dims)."""
    try:
        meta = json.loads((d / "features" / "zarr.json").read_text())
        shape, chunks = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        encoding = meta["chunk_key_encoding"]
        dims_meta = json.loads((d / "dims" / "zarr.json").read_text())
        if dims_meta.get("codecs") != [{"name": "bytes", "configuration": {"endian": "little"}}]:
            return ["dims array is not stored raw, as prh writes it"]
        dims = np.frombuffer((d / "dims" / "c" / "0").read_bytes(), dtype="<i8")  # the one uncompressed chunk
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return [f"unreadable features or dims array ({type(e).__name__})"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s > 0 for s in shape)):
        return [f"features has shape {shape!r}, not (layers, samples, max dim)"]
    n_layers, n, d_max = shape
    names = attrs.get("layer_names")
    problems = []
    if meta.get("data_type") != attrs.get("store_dtype") or meta.get("data_type") not in ("float32", "float16"):
        problems.append(f"features dtype {meta.get('data_type')!r} is not its store_dtype {attrs.get('store_dtype')!r}")
    if chunks != [1, min(n, SAMPLE_CHUNK), d_max] or encoding != {"name": "default", "configuration": {"separator": "/"}}:
        return problems + [f"features chunks {chunks} are not [1, {min(n, SAMPLE_CHUNK)}, {d_max}] in default encoding"]
    if not isinstance(names, list) or len(names) != n_layers:
        problems.append(f"{len(names) if isinstance(names, list) else 'no'} layer names for {n_layers} layers")
    one_chunk = dims_meta.get("shape") == dims_meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    if not one_chunk or dims_meta.get("data_type") != "int64" or dims.shape != (n_layers,) or dims.min(initial=1) < 1 \
            or dims.max(initial=d_max) != d_max:
        problems.append(f"dims {dims.tolist()[:8]} do not give {n_layers} layer widths of at most {d_max} (max = {d_max})")
    listed = set(read_manifest(d)["files"])
    missing = [f"features/c/{i}/{j}/0" for i in range(n_layers) for j in range(math.ceil(n / chunks[1]))
               if f"features/c/{i}/{j}/0" not in listed]  # fmt: skip
    if missing:
        problems.append(f"{len(missing)} features chunks not in the manifest (first {missing[0]}): they would read as zeros")
    return problems


# --------------------------------------------------------------------------- receipts


def write_receipt(path: str | os.PathLike, key: str, request: dict, entry_info: EntryInfo | dict) -> None:
    """Write a Snakemake output receipt naming the store key, atomically."""
    info = entry_info.as_dict() if isinstance(entry_info, EntryInfo) else dict(entry_info)
    info.pop("age_s", None)  # changes with time; a receipt's bytes should not
    receipt = {"key": key, "request": canonical(request), "entry": canonical(info, "entry_info")}
    try:
        replace_file(Path(path), (json.dumps(receipt, indent=1, sort_keys=True) + "\n").encode())
    except OSError as e:
        raise _write_failed(f"receipt for store entry {key}", Path(path).parent, e) from None


def read_receipt(path: str | os.PathLike) -> dict:
    """Read a receipt written by ``write_receipt``; PrhError naming the file if it is missing, broken or names no
    store key (so a key from a receipt never leads outside the store)."""
    try:
        receipt = json.loads(Path(path).read_text())
        if not isinstance(receipt, dict) or not isinstance(receipt.get("key"), str) or not KEY_RE.match(receipt["key"]):
            raise ValueError("no store key")
    except FileNotFoundError:
        raise PrhError(f"receipt {path} does not exist (rerun the extraction rule that writes it)") from None
    except (OSError, ValueError) as e:
        raise PrhError(f"receipt {path} is unreadable ({e}); delete it and rerun the workflow") from None
    return receipt
