"""Atomic file writes: a temp file in the destination's folder, fsync, then os.replace."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

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
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def _write_failed(path: Path, e: OSError) -> PrhError:
    """One-line error for a failed write (disk full, read-only file system, permissions); the old file is intact."""
    code = errno.errorcode.get(e.errno, "") if e.errno else ""
    why = f"{e.strerror or e}" + (f" [{code}]" if code else "")
    return PrhError(f"cannot write {path}: {why} (any previous version is unchanged); free disk space or make {path.parent} writable, then rerun")


def write_json_atomic(path: str | os.PathLike, obj: object) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_csv_atomic(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Atomically write a table as CSV (no index)."""
    write_bytes_atomic(path, table.to_csv(index=False).encode())
