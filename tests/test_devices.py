"""Device resolution, scheduler-assigned GPUs, local GPU slots (per host, bounded wait) and memory estimates."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import socket
import time

import pytest

from prh import devices
from prh.devices import (
    Placement,
    acquire_gpus,
    check_fits,
    estimate,
    host_lock_dir,
    resolve_device,
    scheduler_devices,
    wait_seconds,
)
from prh.errors import PrhError

SCHEDULER_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "PRH_GPU_DEVICES", "PRH_GPU_WAIT_S",
                  "PRH_GPU_LOCK_DIR")  # fmt: skip


@pytest.fixture
def bare_env(monkeypatch):
    """No scheduler, no prh GPU settings in the environment: a plain local run."""
    for var in SCHEDULER_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_resolve_device():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(PrhError, match="'gpu7' is not a torch device"):
        resolve_device("gpu7")
    if not torch.cuda.is_available():
        with pytest.raises(PrhError, match="'cuda:1' requested but CUDA is not available"):
            resolve_device("cuda:1")


def test_scheduler_devices_come_from_the_environment():
    assert scheduler_devices({}) is None
    assert scheduler_devices({"SLURM_JOB_GPUS": ""}) is None
    assert scheduler_devices({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ("CUDA_VISIBLE_DEVICES", ["2", "3"])
    assert scheduler_devices({"CUDA_VISIBLE_DEVICES": ""}) == ("CUDA_VISIBLE_DEVICES", [])  # set empty: no device
    assert scheduler_devices({"SLURM_JOB_GPUS": "5,7"}) == ("SLURM_JOB_GPUS", ["5", "7"])
    assert scheduler_devices({"SLURM_JOB_GPUS": "5,7", "SLURM_STEP_GPUS": "7"}) == ("SLURM_STEP_GPUS", ["7"])
    assert scheduler_devices({"SLURM_JOB_GPUS": "5", "CUDA_VISIBLE_DEVICES": "0"}) == ("CUDA_VISIBLE_DEVICES", ["0"])


def test_scheduler_assigned_devices_take_no_lock(tmp_path, bare_env):
    bare_env.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    with acquire_gpus(2, 4, tmp_path / "locks") as ids:
        assert ids == ["3", "1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "3,1"
        with acquire_gpus(1, 4, tmp_path / "locks") as again:  # a second job given the same devices: no contention
            assert again == ["3", "1"]
    assert not (tmp_path / "locks").exists()
    with pytest.raises(PrhError, match=r"models.m needs 3 GPU\(s\) but CUDA_VISIBLE_DEVICES='3,1' assigns 2; request gpu=3"):
        with acquire_gpus(3, 4, tmp_path / "locks", who="models.m"):
            pass
    bare_env.delenv("CUDA_VISIBLE_DEVICES")
    bare_env.setenv("SLURM_JOB_GPUS", "6")
    with acquire_gpus(1, 4, tmp_path / "locks") as ids:  # SLURM's global ids: counted, CUDA_VISIBLE_DEVICES untouched
        assert ids == ["6"] and "CUDA_VISIBLE_DEVICES" not in os.environ
    with acquire_gpus(0, 4, tmp_path / "locks") as none:
        assert none is None
    assert not (tmp_path / "locks").exists()


def test_local_slots_are_distinct_and_restored(tmp_path, bare_env):
    with acquire_gpus(2, 3, tmp_path) as ids:
        assert ids == ["0", "1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
        text = (tmp_path / "gpu0.lock").read_text()
        assert f"pid {os.getpid()} on {socket.gethostname()}" in text
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and (tmp_path / "gpu0.lock").read_text() == ""
    bare_env.setenv("PRH_GPU_DEVICES", "4,6")  # local runs on a subset: slots index into it
    with acquire_gpus(2, 2, tmp_path) as ids:
        assert ids == ["4", "6"] and os.environ["CUDA_VISIBLE_DEVICES"] == "4,6"
    with pytest.raises(PrhError, match=r"needs 3 GPU\(s\) but gpus is 2 and PRH_GPU_DEVICES lists 2"):
        with acquire_gpus(3, 2, tmp_path):
            pass


def test_lock_dir_is_per_host(tmp_path, bare_env):
    assert host_lock_dir(tmp_path) == tmp_path / ".gpu-locks" / socket.gethostname()
    bare_env.setenv("PRH_GPU_LOCK_DIR", str(tmp_path / "local"))
    assert host_lock_dir(tmp_path / "store") == tmp_path / "local" / socket.gethostname()


def test_wait_seconds_from_env_or_config(bare_env):
    assert wait_seconds(600) == 600.0
    bare_env.setenv("PRH_GPU_WAIT_S", "2.5")
    assert wait_seconds(600) == 2.5
    bare_env.setenv("PRH_GPU_WAIT_S", "soon")
    with pytest.raises(PrhError, match="PRH_GPU_WAIT_S='soon' is not a number of seconds"):
        wait_seconds(600)


def _hold(lock_dir: str, n: int, slots: int, ready, release) -> None:
    """Hold n slots until ``release`` is set."""
    for var in SCHEDULER_VARS:
        os.environ.pop(var, None)
    with acquire_gpus(n, slots, lock_dir, who="models.holder"):
        ready.set()
        release.wait(30)


def test_slot_wait_times_out_naming_the_holders(tmp_path, bare_env):
    ctx = mp.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), 1, 2, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with acquire_gpus(1, 2, tmp_path, wait_s=0.0) as ids:  # the other slot is free
            assert ids == ["1"]
        t0 = time.monotonic()
        with pytest.raises(PrhError) as err:
            with acquire_gpus(2, 2, tmp_path, wait_s=0.3, poll_s=0.02, who="models.big"):
                pass
        waited = time.monotonic() - t0
    finally:
        release.set()
        holder.join(10)
    msg = str(err.value)
    assert "\n" not in msg and waited >= 0.3
    assert msg.startswith(f"models.big: no 2 free GPU slot(s) among 2 in {tmp_path} after 0.3 s")
    assert f"held by gpu0: pid {holder.pid} on {socket.gethostname()} (models.holder)" in msg
    assert "gpu1" not in msg.split("held by")[1]  # a free slot is not blamed
    with acquire_gpus(2, 2, tmp_path, wait_s=0.0) as ids:  # the holder's exit freed its slot
        assert ids == ["0", "1"]


def test_filesystem_without_flock_gives_one_line(tmp_path, bare_env):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    bare_env.setattr(devices.fcntl, "flock", no_flock)
    with pytest.raises(PrhError) as err:
        with acquire_gpus(1, 2, tmp_path):
            pass
    msg = str(err.value)
    assert "\n" not in msg and "does not support flock (No locks available)" in msg
    assert "set PRH_GPU_LOCK_DIR to a local directory" in msg
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def _worker(lock_dir: str, n: int, log) -> None:
    """Hold n slots for a moment and log (visible ids, start, end)."""
    for var in SCHEDULER_VARS:
        os.environ.pop(var, None)
    with acquire_gpus(n, 4, lock_dir, poll_s=0.01) as ids:
        start = time.monotonic()
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(ids)
        time.sleep(0.15)
        log.put((tuple(ids), start, time.monotonic()))


def test_concurrent_jobs_never_share_a_device(tmp_path):
    """Seven jobs (2-GPU and 1-GPU) on 4 slots, like `snakemake --resources gpu=4`: no device is held twice at once."""
    ctx = mp.get_context("fork")
    log = ctx.Queue()
    sizes = [2, 1, 2, 1, 2, 1, 1]
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), n, log)) for n in sizes]
    for p in procs:
        p.start()
    rows = [log.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert [p.exitcode for p in procs] == [0] * len(sizes)
    assert sorted(len(ids) for ids, _, _ in rows) == sorted(sizes)
    for dev in {d for ids, _, _ in rows for d in ids}:
        spans = sorted((s, e) for ids, s, e in rows if dev in ids)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:])), (dev, spans)
    assert all(len(set(ids)) == len(ids) for ids, _, _ in rows)


def test_estimates_size_gpu_count_and_memory():
    # LLaMA-65B in bfloat16: 130 GB of weights; a GPU of 80 GB holds (80 - 2) / 1.1 = 70.9 GB of them
    big = estimate(65e9, "bfloat16", gpus=4, gpu_memory_gb=80)
    assert big.weights_gb == pytest.approx(130.0) and big.gpus == 2 and big.fits
    assert big.gpu_gb == pytest.approx(130 * 1.1 + 2 * 2) and big.host_gb == pytest.approx(16 + 4)
    assert estimate(70.6e9, "bfloat16", 4, 80).gpus == 2  # 141.2 GB <= 2 x 70.9
    assert estimate(70.6e9, "bfloat16", 4, 40).gpus == 4  # 141.2 GB / 34.5 GB per 40 GB GPU
    assert estimate(7e9, "bfloat16", 4, 80).gpus == 1
    assert estimate(65e9, "bfloat16", 4, 80, load_in_4bit=True).gpus == 1  # 32.5 GB in 4 bit
    capped = estimate(70.6e9, "bfloat16", 1, 80)
    assert capped.gpus == 1 and not capped.fits
    cpu = estimate(7e9, "bfloat16", 0, 80)
    assert cpu.gpus == 0 and cpu.host_gb == pytest.approx(14 * 3 + 4)
    assert estimate(65e9, "bfloat16", 1, 80, offload="cpu").host_gb == pytest.approx(130 * 3 + 4)


def test_a_model_too_big_for_its_gpus_stops_at_once_unless_offloaded():
    est = estimate(70.6e9, "bfloat16", 1, 80)
    with pytest.raises(PrhError) as err:
        check_fits("llama-70b", est, 1, 80, "none")
    assert str(err.value) == ("models.llama-70b: 141.2 GB of weights need 157 GB of GPU memory but 1 GPU(s) x 80 GB are "
                              "visible; raise gpus (and the job's gpu), or set offload: cpu or disk")  # fmt: skip
    check_fits("llama-70b", est, 2, 80, "none")
    check_fits("llama-70b", est, 1, 80, "disk")


def test_placement_spreads_over_exactly_the_visible_devices(tmp_path):
    share = int((80 - 2) / 1.1 * 1e9)
    assert Placement(2, 80).hf_kwargs(130.0) == {"device_map": "auto", "max_memory": {0: share, 1: share}}
    cpu = Placement(1, 80, "cpu").hf_kwargs(130.0)
    assert cpu["max_memory"] == {0: share, "cpu": int(130e9) + 2**30} and "offload_folder" not in cpu
    disk = Placement(1, 80, "disk", str(tmp_path / "off")).hf_kwargs(130.0)
    assert disk["offload_folder"] == str(tmp_path / "off") and (tmp_path / "off").is_dir()
    assert "cpu" not in disk["max_memory"]
