"""Content-addressed zarr feature store: atomic commits, checksum manifests, pair-score memo, receipts.

Layout under ``root``::

    entries/<key[:2]>/<key>/      committed entries (zarr v3 group + manifest.json)
    .tmp/<key>-<pid>-<uuid>/      entries being written (same filesystem, renamed into place)
    memo/<key[:2]>/<key>.npy      memoised pair scores (valid .npy with a sha256 trailer)

An entry is visible only after ``os.rename`` of a complete temp dir whose ``manifest.json`` lists the
sha256 of every file in it.  ``open()`` verifies the whole entry against its manifest before returning
(eager, one sha256 pass over the files: ~0.1 s per 100 MB), so a corrupt entry is never read silently.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno as _errno
import functools
import hashlib
import io
import json
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from prh.errors import PrhError
from prh.io import MANIFEST, canonical, content_key, manifest_problems, remove_tree, replace_file, tmp_owner, write_manifest

EXTRACTOR_VERSION = "1"
SAMPLE_CHUNK = 16384  # samples per stored chunk: an entry with more is chunked along samples (readers stream it)
NON_KEY_PARAMS = frozenset({"batch_size", "device", "progress"})
_MEMO_TRAILER = b"\nPRH-SHA256:"
_ACTIVE_TMP: set[str] = set()


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


def _pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


class StoredEntry:
    """A committed entry, read lazily: layers are loaded one chunk at a time."""

    def __init__(self, key: str, path: Path) -> None:
        import zarr

        self.key = key
        self.path = path
        try:
            self._group = zarr.open_group(str(path), mode="r")
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
        """Where the committed entry for ``key`` lives."""
        return self.entries_dir / key[:2] / key

    def keys(self) -> list[str]:
        """Keys of every committed entry, sorted."""
        if not self.entries_dir.is_dir():
            return []
        return sorted(p.name for p in self.entries_dir.glob("??/*") if p.is_dir())

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
        if request_key(request) != key:
            raise PrhError(f"store key {key} does not match its request (expected {request_key(request)})")
        tmp = self.tmp_dir / f"{key}-{os.getpid()}-{uuid.uuid4().hex}"
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
        """Integrity problems of one committed entry (empty when sound)."""
        d = self.path(key)
        problems = manifest_problems(d)
        if problems and problems[0].startswith(("missing manifest", "unreadable manifest", "manifest.json lists")):
            return problems
        named = json.loads((d / MANIFEST).read_text()).get("key")
        if named != key:
            problems.insert(0, f"manifest names key {named!r}")
        if not problems:
            try:
                json.loads((d / "zarr.json").read_text())["attributes"]["request"]
            except (OSError, ValueError, KeyError, TypeError):
                problems.append("unreadable attrs in zarr.json")
        return problems

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
            shape = json.loads((d / "features" / "zarr.json").read_text())["shape"]
        except (OSError, ValueError, KeyError) as e:
            raise _corrupt(key, f"unreadable metadata ({type(e).__name__})") from e
        created = root_meta.get("created", "")
        try:
            age = time.time() - _dt.datetime.fromisoformat(created).timestamp()
        except ValueError:
            age = float("nan")
        req = root_meta.get("request", {})
        return EntryInfo(
            key=key, model=str(req.get("model", {}).get("id")), dataset=str(req.get("dataset", {}).get("id")),
            shape=tuple(int(s) for s in shape), size_bytes=_dir_size(d), created=created, age_s=age,  # type: ignore[arg-type]
        )

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
        doomed = self.tmp_dir / f"rm-{label}-{os.getpid()}-{uuid.uuid4().hex}"
        os.rename(path, doomed)
        if doomed.is_dir():
            shutil.rmtree(doomed, ignore_errors=True)
        else:
            doomed.unlink(missing_ok=True)

    def stale_temps(self) -> list[Path]:
        """Temp dirs and temp files of writers that are gone (entries, memos, zoo checkpoints, model caches)."""
        out = []
        for p in sorted(self.tmp_dir.glob("*")) if self.tmp_dir.is_dir() else []:
            parts = p.name.rsplit("-", 2)
            pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else -1
            live = str(p) in _ACTIVE_TMP or (pid != os.getpid() and pid > 0 and _pid_alive(pid))
            if not live:
                out.append(p)
        for p in sorted(self.memo_dir.glob("??/.*.tmp")) if self.memo_dir.is_dir() else []:
            pid_s = p.name.split(".")[-3]
            if not (pid_s.isdigit() and int(pid_s) != os.getpid() and _pid_alive(int(pid_s))):
                out.append(p)
        for folder in (ZOO_DIR, MODEL_CACHE_DIR):
            for p in sorted((self.root / folder).glob(".*.tmp-*")):
                pid = tmp_owner(p)
                if pid is not None and not (pid != os.getpid() and _pid_alive(pid)):
                    out.append(p)
        return out

    def gc(self, referenced_keys: set[str] | None = None, dry_run: bool = False) -> list[str]:
        """Remove stale temp dirs and, when ``referenced_keys`` is given, entries not in it; return what went."""
        removed = []
        for p in self.stale_temps():
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
        """File holding the memoised array for ``key``."""
        return self.memo_dir / key[:2] / f"{key}.npy"

    def memo_put(self, key: str, array: np.ndarray) -> None:
        """Memoise ``array`` under ``key``: a valid .npy followed by a sha256 trailer, written atomically."""
        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        payload = buf.getvalue()
        trailer = _MEMO_TRAILER + hashlib.sha256(payload).hexdigest().encode() + b"\n"
        try:
            replace_file(self._memo_path(key), payload + trailer)
        except OSError as e:
            raise _write_failed(f"memo {key}", self.memo_dir, e) from None

    def memo_get(self, key: str) -> np.ndarray | None:
        """The memoised array for ``key``, or None when absent or corrupt (a miss)."""
        try:
            data = self._memo_path(key).read_bytes()
        except OSError:  # absent, or unreadable (a directory, permissions): recompute
            return None
        cut = data.rfind(_MEMO_TRAILER)
        if cut < 0:
            return None
        payload, digest = data[:cut], data[cut + len(_MEMO_TRAILER) :].strip()
        if hashlib.sha256(payload).hexdigest().encode() != digest:
            warnings.warn(f"memo {key} is corrupt (checksum mismatch): recomputing it; `prh store verify` lists damage")
            return None
        try:
            return np.load(io.BytesIO(payload), allow_pickle=False)
        except (ValueError, EOFError, OSError):
            return None

    def memo_keys(self) -> list[str]:
        """Keys of every memoised pair result, sorted."""
        return sorted(p.stem for p in self.memo_dir.glob("??/*.npy")) if self.memo_dir.is_dir() else []

    def _memo_problem(self, key: str) -> str | None:
        """Why the memo file of ``key`` is unusable, or None when it is sound."""
        data = self._memo_path(key).read_bytes()
        cut = data.rfind(_MEMO_TRAILER)
        if cut < 0:
            return "no checksum trailer (truncated or foreign file)"
        if hashlib.sha256(data[:cut]).hexdigest().encode() != data[cut + len(_MEMO_TRAILER) :].strip():
            return "checksum mismatch"
        try:
            np.load(io.BytesIO(data[:cut]), allow_pickle=False)
        except (ValueError, EOFError, OSError) as e:
            return f"unreadable array ({type(e).__name__})"
        return None

    # ---- whole-store audit
    def audit(self) -> list[Damage]:
        """Every damaged thing in the store: entries, memoised pair scores, zoo checkpoints, converted model caches."""
        damage = [Damage("entry", key, problem, f"prh store rm {key}") for key in self.keys()
                  for problem in ["; ".join(self._problems(key))] if problem]  # fmt: skip
        for key in self.memo_keys():
            problem = self._memo_problem(key)
            if problem:
                damage.append(Damage("memo", f"memo/{key}", problem, f"prh store rm memo/{key}"))
        for kind, folder in (("zoo checkpoint", ZOO_DIR), ("model cache", MODEL_CACHE_DIR)):
            for d in sorted(p for p in (self.root / folder).glob("*") if p.is_dir() and not p.name.startswith(".")):
                problems = manifest_problems(d)
                if problems:
                    ident = f"{folder}/{d.name}"
                    damage.append(Damage(kind, ident, "; ".join(problems), f"prh store rm {ident}"))
        return damage

    def remove(self, ident: str) -> list[str]:
        """Remove one entry key, ``memo/<key>``, ``zoo/<dir>`` or ``hf-cache/<dir>`` atomically; return what went."""
        head, _, tail = ident.partition("/")
        if not tail:
            self.rm(ident)
            return [f"entries/{ident[:2]}/{ident}"]
        path = self._memo_path(tail) if head == "memo" else self.root / head / tail
        if head not in ("memo", ZOO_DIR, MODEL_CACHE_DIR) or "/" in tail or not path.exists():
            raise PrhError(f"store item {ident!r} is not in the store at {self.root} (see `prh store verify`)")
        self._discard(path, tail)
        return [path.relative_to(self.root).as_posix()]


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
    """Read a receipt written by ``write_receipt``; PrhError naming the file if it is missing or broken."""
    try:
        receipt = json.loads(Path(path).read_text())
        if not isinstance(receipt, dict) or not isinstance(receipt.get("key"), str):
            raise ValueError("no key")
    except FileNotFoundError:
        raise PrhError(f"receipt {path} does not exist (rerun the extraction rule that writes it)") from None
    except (OSError, ValueError) as e:
        raise PrhError(f"receipt {path} is unreadable ({e}); delete it and rerun the workflow") from None
    return receipt
