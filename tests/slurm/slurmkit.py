"""Helpers of the real-cluster tests: the test cluster's profile, sacct / squeue queries, a run with one scancel."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CLUSTER = Path(__file__).with_name("cluster.sh")
ACCOUNT = "prh-test"  # created by cluster.sh
SACCT_FIELDS = ("JobIDRaw", "JobName", "Partition", "State", "AllocTRES", "WorkDir", "Comment")


def cluster_skip_reason() -> str | None:
    """Why the one-node cluster cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root: tests/slurm/cluster.sh installs slurm-wlm and runs slurmd as root"
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        return "needs apt-get (Debian) to install slurm-wlm, slurmdbd and mariadb-server"
    return None


def profile_for_cluster(work: Path) -> Path:
    """profiles/slurm copied into ``work``, with what differs on the test cluster: account, CPUs, memory, polling."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(slurm_account=ACCOUNT, slurm_partition="cpu", cpus_per_task=1, mem_mb=1000)
    for res in profile["set-resources"].values():
        if res.get("slurm_partition") == "gpu":
            res.update(slurm_partition="gpu", cpus_per_task=1)
        else:
            res.update(cpus_per_task=1, mem_mb=2000)
    profile["slurm-init-seconds-before-status-checks"] = 2  # a fast poll: MinJobAge (300 s) stays far above 3 x 2 s
    profile["slurm-keep-successful-logs"] = True
    (work / "profiles" / "slurm" / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return work / "profiles" / "slurm"


def sacct(since: str, work: Path) -> list[dict[str, str]]:
    """Accounting records (main job, not steps) of jobs started since ``since`` in working directory ``work``."""
    cmd = ["sacct", "-X", "-a", "--parsable2", "--noheader", "--starttime", since, "--format", ",".join(SACCT_FIELDS)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = [dict(zip(SACCT_FIELDS, line.split("|"))) for line in out.splitlines() if line]
    for row in rows:
        row["rule"] = row["Comment"].removeprefix("rule_").split("_wildcards_")[0]
    return [r for r in rows if r["WorkDir"] == str(work)]


def cpu_seconds(total_cpu: str) -> float:
    """sacct's TotalCPU ([D-][HH:]MM:SS[.mmm]) in seconds."""
    days, _, clock = total_cpu.rpartition("-")
    parts = [float(x) for x in clock.split(":")]
    return (float(days or 0) * 24 * 3600) + sum(x * 60**i for i, x in enumerate(reversed(parts)))


def job_cpu_seconds(ids: list[str]) -> float:
    """CPU time of these jobs, steps included (sacct -X reports none for the allocation itself)."""
    out = subprocess.run(["sacct", "-j", ",".join(ids), "--parsable2", "--noheader", "--format", "JobIDRaw,TotalCPU"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return sum(cpu_seconds(cpu) for job, cpu in (line.split("|") for line in out.splitlines()) if "." not in job)


def running_jobs(work: Path) -> list[tuple[str, str]]:
    """(job id, comment) of this run's RUNNING jobs."""
    out = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%k|%Z"], capture_output=True, text=True).stdout
    return [(i, k) for i, k, z in (line.split("|") for line in out.splitlines()) if z == str(work)]


def cancel_one_running_job(proc: subprocess.Popen, work: Path, rules: tuple[str, ...], min_running_s: float) -> str | None:
    """scancel the first job of ``rules`` (comment prefixes ``rule_<name>``) seen RUNNING for ``min_running_s`` that
    is still running; its id, or None if the run ended first."""
    prefixes = tuple(f"rule_{r}_" for r in rules)
    seen: dict[str, float] = {}
    while proc.poll() is None:
        now = time.monotonic()
        for job, comment in running_jobs(work):
            if not comment.startswith(prefixes):
                continue
            seen.setdefault(job, now)
            if now - seen[job] >= min_running_s and subprocess.run(["scancel", job], capture_output=True).returncode == 0:
                return job
        time.sleep(0.25)
    return None


def run_with_one_cancel(work: Path, profile: Path, rules: tuple[str, ...], min_running_s: float,
                        targets: tuple[str, ...] = (), timeout: float = 1500) -> dict:  # fmt: skip
    """Run the workflow in ``work`` through ``profile`` while cancelling one running job of ``rules`` with scancel.

    -> {"since", "rc" (None on timeout), "wall_s", "cancelled" (job id or None), "jobs" (sacct rows)}; jobs still
    running at the end (after a timeout) are cancelled.
    """
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    time.sleep(1)  # sacct's --starttime has one-second resolution
    cmd = [SNAKEMAKE, *targets, "--workflow-profile", str(profile), "--configfile", "config.yaml"]  # targets first: --configfile takes a list
    start = time.perf_counter()
    with open(work / "snakemake.out", "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            cancelled = cancel_one_running_job(proc, work, rules, min_running_s)
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the plugin may ignore SIGTERM while it polls
            proc.wait()
            rc = None
        finally:
            leftover = [job for job, _ in running_jobs(work)]
            if leftover:
                subprocess.run(["scancel", *leftover], capture_output=True)
    wall = time.perf_counter() - start
    return {"since": since, "rc": rc, "wall_s": wall, "cancelled": cancelled, "jobs": sacct(since, work)}
