"""Job process settings: glibc keeps freed heap memory (measured as page faults), torch's thread allowance."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAULTS = """
import resource, sys
import torch
torch.set_num_threads(1)
if sys.argv[1] == "keep":
    from prh.runtime import keep_freed_heap
    assert keep_freed_heap()
conv = torch.nn.Conv2d(32, 32, 3, padding=1)
x = torch.randn(64, 32, 64, 64)  # one batch of activations, 32 MiB: what an EfficientNet block sees at 128 px


def batch():
    with torch.no_grad():
        y = conv(x)
        return float((torch.relu(y) + y)[0, 0, 0, 0])  # three 32 MiB buffers allocated, filled and freed


batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    batch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_heap_stops_refaulting_each_batch() -> None:
    default, kept = _faults("default"), _faults("keep")
    # by default every freed 32 MiB buffer goes back to the kernel and is faulted in again on the next batch
    assert default > 10 * 3 * 4_000, default
    # kept: no refault per batch; at most a few first touches of heap the batches grew into (0-16k pages, by layout)
    assert kept < default / 10, (kept, default)


def test_prepare_job_sets_the_thread_allowance() -> None:
    code = "import torch; from prh.runtime import prepare_job; prepare_job(3); print(torch.get_num_threads())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"


def test_every_job_log_ends_with_its_profile_which_the_overhead_benchmark_reads(tmp_path: Path) -> None:
    """logged() ends the job's log with its phases (after a progress bar's carriage returns); the phases and
    `other` add up to the process's CPU time, and benchmarks/job_overhead.py reads the line back per rule."""
    import importlib.util

    log = tmp_path / "logs" / "extract" / "d" / "m.log"
    code = ("import torch\nfrom tqdm import tqdm\nfrom prh.pipeline import logged\nfrom prh.runtime import phase\n"
            f"with logged({str(log)!r}):\n    with phase('imports'):\n        import zarr\n"
            "    with phase('work'):\n        for _ in tqdm(range(3)): (torch.ones(300, 300) @ torch.ones(300, 300)).sum()\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PRH_WORKER": "0"})  # in-process
    spec = importlib.util.spec_from_file_location("job_overhead", ROOT / "benchmarks" / "job_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (job,) = bench.read_profiles(tmp_path / "logs")["extract"]
    phases = job["phases"]
    assert {"startup", "imports", "work", "other"} <= set(phases)
    assert phases["startup"]["cpu_s"] > 0.1  # the interpreter and `import torch` before logged() began
    assert sum(p["cpu_s"] for p in phases.values()) == pytest.approx(job["cpu_s"], abs=0.005)
    assert {"torch", "zarr"} <= set(job["imported"]) and "transformers" not in job["imported"]
    assert job["wall_s"] >= phases["startup"]["wall_s"] > 0
