"""Atomic writes: files (temp file + fsync + os.replace) and directories (temp dir + optional manifest + rename)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from prh.errors import PrhError

if TYPE_CHECKING:
    import pandas as pd


def _umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temp path beside ``path``; on normal exit give it the usual 0666 & ~umask mode and rename it over ``path``.

    Readers see the old file or the whole new one, never a part; on error the temp file is removed and the old file
    is untouched.  OSErrors become a one-line PrhError naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise _write_failed(path, e) from None
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _write_failed(path, e) from None
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``), fsynced before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def replace_file(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path`` named by its writer (``writer_tag``), fsync, ``os.replace``;
    OSError on failure, temp removed.

    The low-level form of ``write_bytes_atomic`` for callers that word their own error (the store).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{writer_tag()}{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_failed(path: Path, e: OSError) -> PrhError:
    """One-line error for a failed write (disk full, read-only file system, permissions); the old file is intact."""
    code = errno.errorcode.get(e.errno, "") if e.errno else ""
    why = f"{e.strerror or e}" + (f" [{code}]" if code else "")
    return PrhError(f"cannot write {path}: {why} (any previous version is unchanged); free disk space or make {path.parent} writable, then rerun")


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet runs a cell starting with one of these as a formula


def _is_number(text: str) -> bool:
    """True when ``text`` parses as a float ('-0.5', '+1e3', '-inf'): a number, not a formula."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def formula_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, prefixed with ``'``; numbers and other cells unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """The table with ``formula_safe`` applied to the cells of its text columns (numeric columns untouched)."""
    text = [i for i, dtype in enumerate(table.dtypes) if dtype == object or str(dtype) in ("string", "str")]
    if not text:
        return table
    out = table.copy()
    for i in text:
        out.isetitem(i, out.iloc[:, i].map(formula_safe))
    return out


def write_csv_atomic(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Atomically write a table as CSV (no index); text cells that a spreadsheet would run as formulas are prefixed."""
    write_bytes_atomic(path, spreadsheet_safe(table).to_csv(index=False).encode())


# --------------------------------------------------------------------------- checksummed directories

MANIFEST = "manifest.json"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


STAMP_SETTLE_S = 2.0  # a file changed this recently may change again within its timestamp's resolution: not memoised


def memo_dir() -> Path:
    """Where stamp memos live: ``PRH_DIGEST_CACHE``, else ``$XDG_CACHE_HOME/prh/stamps`` (``~/.cache/prh/stamps``)."""
    if os.environ.get("PRH_DIGEST_CACHE"):
        return Path(os.environ["PRH_DIGEST_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "prh" / "stamps"


def file_stamp(path: str | os.PathLike) -> list[int]:
    """(device, inode, size, mtime_ns, ctime_ns) of a file: any write, rename over it or ``touch`` changes it (ctime
    cannot be set back from user space)."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def stamp_memo(path: str | os.PathLike, tag: str, compute: Callable[[], str]) -> str:
    """``compute()`` for the file at ``path``, remembered across processes for as long as the file's stamp holds.

    A receipt for work done once on a file's bytes (its sha256, a dataset's verified digests): the first process
    computes it and writes ``<memo_dir>/<sha256(path, tag)>.json`` atomically with the stamp it saw before reading;
    later processes trust it while :func:`file_stamp` is unchanged.  A file changed within ``STAMP_SETTLE_S`` of the
    read is not memoised, and a memo that cannot be written (read-only home) only costs the recomputation.
    """
    real = os.path.realpath(path)
    entry = memo_dir() / f"{hashlib.sha256(f'{real}|{tag}'.encode()).hexdigest()[:32]}.json"
    stamp = file_stamp(real)
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        memo = json.loads(entry.read_text())
        if memo["stamp"] == stamp and memo["path"] == real and isinstance(memo["value"], str):
            return memo["value"]
    value = compute()
    settled = time.time_ns() - max(stamp[3], stamp[4]) > STAMP_SETTLE_S * 1e9
    if settled and file_stamp(real) == stamp:
        with contextlib.suppress(OSError, PrhError):
            entry.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(entry, {"path": real, "tag": tag, "stamp": stamp, "value": value})
    return value


def tree_files(directory: str | os.PathLike) -> list[str]:
    """Relative posix paths of every regular file under ``directory`` except the manifest, sorted."""
    root = Path(directory)
    out = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def write_manifest(directory: str | os.PathLike, **fields: object) -> None:
    """Write ``manifest.json``: the sha256 and size of every file under ``directory``, plus ``fields``."""
    root = Path(directory)
    files = {rel: {"sha256": file_sha256(root / rel), "size": (root / rel).stat().st_size} for rel in tree_files(root)}
    replace_file(root / MANIFEST, json.dumps({**fields, "files": files}, indent=1, sort_keys=True).encode())


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of ``directory``; ValueError when it is absent or unreadable."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST).read_text())
    except FileNotFoundError:
        raise ValueError("missing manifest.json (partial, foreign or pre-manifest directory)") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"unreadable manifest.json ({type(e).__name__})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError("manifest.json lists no files")
    return manifest


def manifest_problems(
    directory: str | os.PathLike, deep: bool = True, sha256: Callable[[Path], str] = file_sha256
) -> list[str]:
    """What differs between ``directory`` and its manifest (empty when sound); ``deep`` re-hashes (with ``sha256``,
    e.g. a memoised hasher), else compares sizes only."""
    root = Path(directory)
    try:
        listed: dict[str, Any] = read_manifest(root)["files"]
    except ValueError as e:
        return [str(e)]
    present = set(tree_files(root))
    problems = []
    for rel, meta in sorted(listed.items()):
        if not isinstance(meta, dict):
            problems.append(f"manifest entry of {rel} is not an object")
        elif rel not in present:
            problems.append(f"missing file {rel}")
        elif deep and ((root / rel).stat().st_size != meta.get("size") or sha256(root / rel) != meta.get("sha256")):
            problems.append(f"checksum mismatch in {rel}")
        elif not deep and (root / rel).stat().st_size != meta.get("size"):
            problems.append(f"size mismatch in {rel}")
    return problems + [f"unlisted file {rel}" for rel in sorted(present - set(listed))]


# --------------------------------------------------------------------------- writes that never outlive their call


def settle_zarr_writes(timeout_s: float = 300.0) -> None:
    """Wait until no task is left on zarr's IO event loop.

    zarr writes chunks and metadata as concurrent tasks on its own IO thread; when one fails, the call that
    started them raises at once while its siblings still run.  Cleaning up before this returns would race with
    them (files re-created inside a removed temp dir).
    """
    import asyncio

    from zarr.core import sync as zsync

    loop = zsync.loop[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def drained() -> None:
        me = asyncio.current_task()
        while others := [t for t in asyncio.all_tasks() if t is not me and not t.done()]:
            await asyncio.wait(others)

    asyncio.run_coroutine_threadsafe(drained(), loop).result(timeout_s)


def host_name() -> str:
    """This machine's host name as it appears in temp names (characters other than [A-Za-z0-9_.-] become '_')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "unknown-host"


def writer_tag() -> str:
    """``~<host>~<pid>~``: names a temp file or dir by its writer, so gc can tell whose it is and whether it is alive."""
    return f"~{host_name()}~{os.getpid()}~"


_OWNER = re.compile(r"~([A-Za-z0-9_.-]+)~([0-9]+)~")


def tmp_owner(path: Path) -> tuple[str, int] | None:
    """(host, pid) of the writer named in a temp name made with ``writer_tag`` (None when the name has no tag)."""
    m = _OWNER.search(path.name)
    return (m.group(1), int(m.group(2))) if m else None


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def last_change(path: Path) -> float:
    """Newest mtime (epoch s) of ``path`` and, for a directory, of everything under it: a writer's last activity."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest


def writer_gone(path: Path, other_host_age_s: float) -> bool:
    """True when the writer of temp ``path`` is certainly gone: on this host its pid is dead; a temp of another host
    (or an untagged one) counts as gone only after ``other_host_age_s`` seconds without a change, since that host's
    pids cannot be seen from here (a SLURM job on a compute node, seen from a login node)."""
    owner = tmp_owner(path)
    if owner is not None and owner[0] == host_name():
        return owner[1] != os.getpid() and not pid_alive(owner[1])
    try:
        return time.time() - last_change(path) > other_host_age_s
    except OSError:  # removed meanwhile
        return False


def _tmp_prefix(name: str) -> str:
    """Temp-dir prefix beside a target: hidden, names the target and its writer (``writer_tag``) for gc."""
    return f".{name}.tmp{writer_tag()}"


def remove_tree(path: Path) -> None:
    """Remove a directory tree after every zarr write that might still target it has finished."""
    settle_zarr_writes()
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class DirCommit:
    """The temp dir an ``atomic_dir`` block writes into, and whether it became the visible ``target``."""

    path: Path
    target: Path
    committed: bool = False


@contextlib.contextmanager
def atomic_dir(
    target: str | os.PathLike, *, keep_existing: Callable[[Path], bool] | None = None, manifest: bool = False
) -> Iterator[DirCommit]:
    """Yield a temp dir beside ``target``; on normal exit rename it into place (optionally with a checksum manifest).

    If ``target`` exists and ``keep_existing(target)`` is true (a sound copy by another writer), ours is discarded
    and ``committed`` stays False; otherwise the old directory is swapped out and removed.  On error every zarr write
    is settled, the temp dir removed and the old ``target`` left untouched; OSErrors become a one-line PrhError.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        commit = DirCommit(Path(tempfile.mkdtemp(prefix=_tmp_prefix(target.name), dir=target.parent)), target)
    except OSError as e:
        raise _write_failed(target, e) from None
    try:
        yield commit
        if manifest:
            write_manifest(commit.path)
        os.chmod(commit.path, 0o777 & ~_umask())
        commit.committed = _swap_in(commit.path, target, keep_existing)
    except BaseException as e:
        remove_tree(commit.path)
        if isinstance(e, OSError):
            raise _write_failed(target, e) from None
        raise
    if not commit.committed:
        shutil.rmtree(commit.path, ignore_errors=True)


def _swap_in(tmp: Path, target: Path, keep_existing: Callable[[Path], bool] | None) -> bool:
    """Rename ``tmp`` to ``target``, moving an existing ``target`` aside first unless it is to be kept."""
    for _ in range(100):  # concurrent writers: each loop sees the other's move finished
        if target.exists():
            if keep_existing is not None and keep_existing(target):
                return False
            aside = target.with_name(f"{_tmp_prefix(target.name)}old-{uuid.uuid4().hex}")
            try:
                os.rename(target, aside)
            except FileNotFoundError:
                continue
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.exists():
                    os.rename(aside, target)
                raise
            shutil.rmtree(aside, ignore_errors=True)
            return True
        try:
            os.rename(tmp, target)
            return True
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise OSError(errno.EBUSY, f"{target} kept changing under concurrent writers")


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path`` (created if absent) for the block: one builder per artefact at a time.

    The kernel drops the lock when its holder dies, so a killed builder never blocks the next one.
    """
    import fcntl

    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- canonical JSON and content keys


def canonical(obj: Any, where: str = "request") -> Any:
    """A JSON-ready copy of ``obj``: tuples -> lists, numpy scalars -> Python, non-finite floats rejected."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): canonical(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [canonical(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        raise PrhError(f"{where} = {obj!r} is not a finite number; store keys need finite values")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise PrhError(f"{where} has type {type(obj).__name__}, which a store key cannot hold (use str/int/float/list/dict)")


def canonical_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, ``repr``-stable floats, UTF-8 kept."""
    return json.dumps(canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_key(obj: Any) -> str:
    """SHA-256 hex of the canonical JSON of ``obj``: the one content key of store entries, memos and zoo recipes."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
