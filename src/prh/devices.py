"""Device choice and GPU assignment.

A job's GPUs come from the scheduler when its environment names them (``CUDA_VISIBLE_DEVICES``, set by SLURM's gres
plugin or by hand, else ``SLURM_STEP_GPUS`` / ``SLURM_JOB_GPUS``): exactly those are used and no lock is taken.
Otherwise (a local ``snakemake --resources gpu=N`` run, which bounds the count but assigns no ids) a job holds ``n``
free slots among the config's ``gpus``, as flock'd files in a per-host directory, for at most ``wait_s`` seconds.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prh.errors import PrhError

DEVICES_ENV = "PRH_GPU_DEVICES"  # local runs: the device ids slots index into (default 0..gpus-1)
LOCK_DIR_ENV = "PRH_GPU_LOCK_DIR"  # local runs: where slot locks live (default <store>/.gpu-locks)
WAIT_ENV = "PRH_GPU_WAIT_S"  # overrides config gpu_wait_s
SLURM_GPU_ENVS = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS")


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


def _ids(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def scheduler_devices(env: dict[str, str] | os._Environ[str] = os.environ) -> tuple[str, list[str]] | None:
    """(variable, device ids) the job's environment already assigns, or None when nothing does.

    ``CUDA_VISIBLE_DEVICES`` (even empty: no device) wins; SLURM's lists only count the devices (under cgroup device
    constraints CUDA renumbers them, so prh leaves ``CUDA_VISIBLE_DEVICES`` unset as SLURM did).
    """
    if "CUDA_VISIBLE_DEVICES" in env:
        return "CUDA_VISIBLE_DEVICES", _ids(env["CUDA_VISIBLE_DEVICES"])
    for var in SLURM_GPU_ENVS:
        if env.get(var, "").strip():
            return var, _ids(env[var])
    return None


def wait_seconds(config_wait_s: float) -> float:
    """The slot wait: ``PRH_GPU_WAIT_S`` if set, else the config's ``gpu_wait_s``."""
    raw = os.environ.get(WAIT_ENV)
    if raw is None:
        return float(config_wait_s)
    try:
        return float(raw)
    except ValueError:
        raise PrhError(f"{WAIT_ENV}={raw!r} is not a number of seconds") from None


def host_lock_dir(store_root: str | os.PathLike) -> Path:
    """This host's slot-lock directory: ``$PRH_GPU_LOCK_DIR`` or ``<store>/.gpu-locks``, then ``/<hostname>``
    (slots are a host's GPUs: jobs on other nodes sharing the store never contend for them)."""
    base = os.environ.get(LOCK_DIR_ENV) or Path(store_root) / ".gpu-locks"
    return Path(base) / socket.gethostname()


def _try_lock(path: Path) -> int | None:
    """Open ``path`` and take a non-blocking exclusive flock; the fd, or None if it is held elsewhere."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return None
        raise PrhError(
            f"GPU slot lock {path}: the filesystem does not support flock ({e.strerror}); set {LOCK_DIR_ENV} to a "
            "local directory (e.g. /tmp/prh-gpu-locks), or run under a scheduler that sets CUDA_VISIBLE_DEVICES"
        ) from None
    return fd


def _holder(path: Path) -> str:
    """What a lock file says about its holder (written when taken)."""
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _release(fds: list[int], clear: bool = False) -> None:
    for fd in fds:
        if clear:
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def acquire_gpus(
    n: int, slots: int, lock_dir: str | os.PathLike, wait_s: float = 600.0, poll_s: float = 0.2, who: str = ""
) -> Iterator[list[str] | None]:
    """The ``n`` GPU ids a job runs on, with ``CUDA_VISIBLE_DEVICES`` naming exactly them while held; None if n <= 0.

    Scheduler-assigned devices (``scheduler_devices``) are used as they are, without a lock. Otherwise ``n`` distinct
    free slots among ``slots`` (files ``lock_dir/gpu<i>.lock``) are held; a slot's id is the i-th of
    ``PRH_GPU_DEVICES`` (default i). Waits at most ``wait_s`` seconds, then stops in one line naming the holders.
    Call it before CUDA is initialised in the process (CUDA reads the variable once). The kernel drops the locks of
    a killed process, so a killed job never strands a slot.
    """
    if n <= 0:
        yield None
        return
    assigned = scheduler_devices()
    if assigned is not None:
        var, ids = assigned
        if len(ids) < n:
            raise PrhError(f"{who or 'job'} needs {n} GPU(s) but {var}={','.join(ids)!r} assigns {len(ids)}; "
                           f"request gpu={n} from the scheduler")  # fmt: skip
        yield ids
        return
    yield from _hold_slots(n, slots, Path(lock_dir), wait_s, poll_s, who)


def _hold_slots(n: int, slots: int, lock_dir: Path, wait_s: float, poll_s: float, who: str) -> Iterator[list[str]]:
    base = _ids(os.environ.get(DEVICES_ENV, "")) or [str(i) for i in range(slots)]
    if n > min(slots, len(base)):
        raise PrhError(f"{who or 'job'} needs {n} GPU(s) but gpus is {slots}"
                       + (f" and {DEVICES_ENV} lists {len(base)}" if os.environ.get(DEVICES_ENV) else ""))  # fmt: skip
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PrhError(f"GPU slot locks: cannot create {lock_dir} ({e.strerror}); set {LOCK_DIR_ENV}") from None
    deadline = time.monotonic() + wait_s
    while True:
        held: dict[int, int] = {}
        for slot in range(slots):
            fd = _try_lock(lock_dir / f"gpu{slot}.lock")
            if fd is not None:
                held[slot] = fd
                if len(held) == n:
                    break
        if len(held) == n:
            break
        _release(list(held.values()))  # never sit on part of a request: two 2-GPU jobs on 3 slots would deadlock
        if time.monotonic() >= deadline:
            busy = [i for i in range(slots) if i not in held]
            holders = "; ".join(f"gpu{i}: {_holder(lock_dir / f'gpu{i}.lock')}" for i in busy)
            raise PrhError(f"{who or 'job'}: no {n} free GPU slot(s) among {slots} in {lock_dir} after {wait_s:g} s "
                           f"(held by {holders}); raise gpu_wait_s or {WAIT_ENV}, or free them")  # fmt: skip
        time.sleep(poll_s)
    ids = [base[slot] for slot in held]
    for slot, fd in held.items():
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({who or 'prh'})\n".encode(), 0)
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
        yield ids
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
        _release(list(held.values()), clear=True)


# -- memory estimates (one source for job resources, `prh models ls` and the load-time check) ------------------
GPU_HEADROOM = 1.1  # activations and allocator slack, relative to the weights a GPU holds
GPU_RESERVE_GB = 2.0  # CUDA context and workspace per GPU
HOST_SHARD_GB = 16.0  # a GPU load streams weights through host memory one checkpoint shard at a time
HOST_BASE_GB = 4.0  # interpreter, tokenizer, data and pooled features


@dataclass(frozen=True)
class Estimate:
    """A model job's memory: ``gpus`` devices holding ``gpu_gb`` in all, and ``host_gb`` of host memory."""

    weights_gb: float
    gpus: int
    gpu_gb: float
    host_gb: float
    fits: bool  # the GPUs hold every weight (else the rest is offloaded, or the job stops)


def weights_gb(n_params: float, dtype: str, load_in_4bit: bool = False) -> float:
    """The weights' size in GB (1e9 bytes) at ``dtype`` (0.5 bytes a parameter in 4 bit)."""
    from prh.config import DTYPE_BYTES

    return n_params * (0.5 if load_in_4bit else DTYPE_BYTES[dtype]) / 1e9


def per_gpu_weights_gb(gpu_memory_gb: float) -> float:
    """The weights one GPU of ``gpu_memory_gb`` may hold (its accelerate ``max_memory``)."""
    return max((gpu_memory_gb - GPU_RESERVE_GB) / GPU_HEADROOM, 0.1)


def estimate(n_params: float, dtype: str, gpus: int, gpu_memory_gb: float, offload: str = "none",
             load_in_4bit: bool = False) -> Estimate:  # fmt: skip
    """Memory of a job running one model: on ``gpus`` GPUs at most (0: on the CPU).

    GPU: the weights x GPU_HEADROOM + GPU_RESERVE_GB per GPU, over ceil(weights / per-GPU share) GPUs (capped at
    ``gpus``). Host: on the CPU or offloading to it, the weights x 3 (loaded, cast, working copy) + HOST_BASE_GB;
    on GPUs, one shard (the weights x 3 below HOST_SHARD_GB) + HOST_BASE_GB.
    """
    w = weights_gb(n_params, dtype, load_in_4bit)
    if gpus <= 0:
        return Estimate(w, 0, 0.0, w * 3 + HOST_BASE_GB, True)
    want = max(1, math.ceil(w / per_gpu_weights_gb(gpu_memory_gb)))
    n = min(want, gpus)
    host = (w * 3 if offload == "cpu" else min(w * 3, HOST_SHARD_GB)) + HOST_BASE_GB
    return Estimate(w, n, w * GPU_HEADROOM + GPU_RESERVE_GB * n, host, want <= n)


def check_fits(name: str, est: Estimate, visible: int, gpu_memory_gb: float, offload: str) -> None:
    """Stop at once, in one line, when ``visible`` GPUs cannot hold the model and the config allows no offload."""
    if offload != "none" or visible * per_gpu_weights_gb(gpu_memory_gb) >= est.weights_gb:
        return
    raise PrhError(f"models.{name}: {est.weights_gb:.1f} GB of weights need {est.gpu_gb:.0f} GB of GPU memory but "
                   f"{visible} GPU(s) x {gpu_memory_gb:g} GB are visible; raise gpus (and the job's gpu), or set "
                   "offload: cpu or disk")  # fmt: skip


@dataclass(frozen=True)
class Placement:
    """How a job spreads a Hugging Face model over its ``devices`` visible GPUs (accelerate ``device_map``)."""

    devices: int
    gpu_memory_gb: float
    offload: str = "none"
    offload_folder: str = ""

    def hf_kwargs(self, weights: float) -> dict:
        """``from_pretrained`` keywords: ``device_map="auto"`` with ``max_memory`` on exactly the visible devices, a CPU
        share (``offload: cpu``) or an ``offload_folder`` (``disk``) only when asked for (``weights`` in GB)."""
        share = int(per_gpu_weights_gb(self.gpu_memory_gb) * 1e9)
        max_memory: dict[int | str, int] = {i: share for i in range(self.devices)}
        kwargs: dict = {"device_map": "auto", "max_memory": max_memory}
        if self.offload == "cpu":
            max_memory["cpu"] = int(weights * 1e9) + 2**30
        elif self.offload == "disk":
            Path(self.offload_folder).mkdir(parents=True, exist_ok=True)
            kwargs["offload_folder"] = self.offload_folder
        return kwargs
