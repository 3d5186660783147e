"""Device choice and GPU slot assignment (Snakemake's ``--resources gpu=N`` limits the count but assigns no ids)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

from prh.errors import PrhError

_BASE_ENV = "PRH_CUDA_VISIBLE_BASE"  # the device list slots index into, while a slot is held


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` if available else ``cpu``; ``cpu``/``cuda``/``cuda:N``/``mps`` checked and returned."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(requested)
    except (RuntimeError, ValueError):
        raise PrhError(f"device {requested!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PrhError(f"device {requested!r} requested but CUDA is not available (use device: auto or cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PrhError(f"device {requested!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return requested


def _try_lock(path: Path) -> int | None:
    """Open ``path`` and take a non-blocking exclusive flock; the fd, or None if it is held elsewhere."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def visible_id(slot: int, visible: str | None) -> str:
    """Device id for ``slot``: the slot-th entry of an existing ``CUDA_VISIBLE_DEVICES`` (e.g. Slurm's), else the slot."""
    ids = [v for v in (visible or "").split(",") if v.strip()]
    if not ids:
        return str(slot)
    if slot >= len(ids):
        raise PrhError(f"GPU slot {slot} but CUDA_VISIBLE_DEVICES={visible!r} lists only {len(ids)} device(s); lower resources gpu")
    return ids[slot].strip()


@contextlib.contextmanager
def acquire_gpu(
    n_devices: int, lock_dir: str | os.PathLike, poll_s: float = 0.2, timeout_s: float | None = None
) -> Iterator[int | None]:
    """Hold a free GPU slot ``i`` (lock file ``lock_dir/gpu<i>.lock``) with ``CUDA_VISIBLE_DEVICES=i``; yields i.

    Call it before CUDA is initialised in the process (CUDA reads the variable once).
    With ``n_devices <= 0`` nothing is locked and the environment is left alone (yields None).
    The lock is released by the kernel if the process dies, so a killed job never strands a slot.
    """
    if n_devices <= 0:
        yield None
        return
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    fd, slot = None, -1
    while fd is None:
        for slot in range(n_devices):
            fd = _try_lock(lock_dir / f"gpu{slot}.lock")
            if fd is not None:
                break
        if fd is None:
            if deadline is not None and time.monotonic() > deadline:
                raise PrhError(f"no free GPU slot among {n_devices} in {lock_dir} after {timeout_s} s")
            time.sleep(poll_s)
    saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", _BASE_ENV)}
    base = saved[_BASE_ENV] if saved[_BASE_ENV] is not None else (saved["CUDA_VISIBLE_DEVICES"] or "")
    try:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_id(slot, base)
        os.environ[_BASE_ENV] = base  # nested holders map slots onto the same original device list
        yield slot
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
