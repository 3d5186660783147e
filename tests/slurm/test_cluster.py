"""The SLURM profile on a real one-node cluster (tests/slurm/cluster.sh: slurmctld, slurmd, slurmdbd + MariaDB).

The reduced e2e config runs through ``--workflow-profile profiles/slurm`` (account and per-job CPUs and memory
overridden for a 2-core node); while it runs, one running job is cancelled with ``scancel``. Checked afterwards:
every job went through sbatch (sacct lists it, GPU rules in ``gpu`` with one GPU, CPU rules in ``cpu`` without),
the cancelled job was retried and the run ended cleanly, the tables and store keys equal the suite's local run
(tests/conftest.py), and a rerun submits nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLUSTER = Path(__file__).with_name("cluster.sh")
ACCOUNT = "prh-test"  # created by cluster.sh
GPU_RULES = {"extract", "train_zoo_model", "score_language_model"}  # the profile's set-resources with gpu: 1
CANCEL_RULES = ("rule_train_zoo_model", "rule_extract")  # long enough to be caught running
SACCT_FIELDS = ("JobIDRaw", "JobName", "Partition", "State", "AllocTRES", "WorkDir", "Comment")


def _cluster_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: tests/slurm/cluster.sh installs slurm-wlm and runs slurmd as root"
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        return "needs apt-get (Debian) to install slurm-wlm, slurmdbd and mariadb-server"
    return None


@pytest.fixture(scope="session")
def cluster():
    """A running one-node cluster; stopped at the end only if this session started it."""
    reason = _cluster_skip_reason()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = proc.stdout.strip().splitlines()[-1] == "started"
    yield
    if started:
        subprocess.run(["bash", str(CLUSTER), "down"], capture_output=True, timeout=120)


def profile_for_cluster(work: Path) -> Path:
    """profiles/slurm copied into ``work``, with what differs on the test cluster: account, CPUs, memory, polling."""
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(slurm_account=ACCOUNT, slurm_partition="cpu", cpus_per_task=1, mem_mb=1000)
    for res in profile["set-resources"].values():
        if res.get("gpu"):
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


def cancel_one_running_job(proc: subprocess.Popen, work: Path, min_running_s: float = 3.0) -> str | None:
    """scancel the first CANCEL_RULES job seen RUNNING for ``min_running_s`` that is still running; its id."""
    seen: dict[str, float] = {}
    while proc.poll() is None:
        now = time.monotonic()
        for job, comment in running_jobs(work):
            if not comment.startswith(CANCEL_RULES):
                continue
            seen.setdefault(job, now)
            if now - seen[job] >= min_running_s and subprocess.run(["scancel", job], capture_output=True).returncode == 0:
                return job
        time.sleep(0.5)
    return None


def planned(work: Path, profile: Path) -> Counter:
    """Rule -> job count of a dry run through the profile."""
    proc = subprocess.run([SNAKEMAKE, "-n", "--workflow-profile", str(profile), "--configfile", "config.yaml"],
                          cwd=work, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    block = proc.stdout.split("Job stats:")[1].split("\n\n")[0] if "Job stats:" in proc.stdout else ""
    return Counter({r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", block, re.MULTILINE) if r != "total"})


@pytest.fixture(scope="module")
def slurm_run(cluster, copy_workflow, tmp_path_factory) -> dict:
    work = copy_workflow(tmp_path_factory.mktemp("slurm") / "work", extra=("profiles",))
    profile = profile_for_cluster(work)
    plan = planned(work, profile)
    since = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    time.sleep(1)  # sacct's --starttime has one-second resolution
    cmd = [SNAKEMAKE, "--workflow-profile", str(profile), "--configfile", "config.yaml"]
    start = time.perf_counter()
    with open(work / "snakemake.out", "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            cancelled = cancel_one_running_job(proc, work)
            rc = proc.wait(timeout=1500)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the plugin may ignore SIGTERM while it polls
            proc.wait()
            rc = None
        finally:
            leftover = [job for job, _ in running_jobs(work)]
            if leftover:
                subprocess.run(["scancel", *leftover], capture_output=True)
    wall = time.perf_counter() - start
    jobs = sacct(since, work)
    cpu = job_cpu_seconds([j["JobIDRaw"] for j in jobs]) if jobs else 0.0
    print(f"\nSLURM run of the e2e config: {wall:.0f} s wall, {cpu:.0f} CPU-s in jobs, {len(jobs)} jobs submitted "
          f"({dict(Counter(j['Partition'] for j in jobs))}), scancel of job {cancelled}")  # fmt: skip
    return {"work": work, "profile": profile, "plan": plan, "since": since, "rc": rc, "wall_s": wall,
            "cancelled": cancelled, "jobs": jobs}  # fmt: skip


def test_the_run_ends_cleanly(slurm_run):
    assert slurm_run["rc"] == 0, (slurm_run["work"] / "snakemake.out").read_text()[-5000:]


def test_every_job_went_through_sbatch_on_its_partition(slurm_run):
    jobs = slurm_run["jobs"]
    done = [j for j in jobs if j["State"] == "COMPLETED"]
    expected = slurm_run["plan"] - Counter({"all": slurm_run["plan"]["all"]})  # `all` is a local rule
    assert Counter(j["rule"] for j in done) == expected
    for j in jobs:
        gpus = re.search(r"gres/gpu=(\d+)", j["AllocTRES"])
        if j["rule"] in GPU_RULES:
            assert j["Partition"] == "gpu" and gpus and gpus.group(1) == "1", j
        else:
            assert j["Partition"] == "cpu" and gpus is None, j


def test_a_cancelled_job_is_retried(slurm_run):
    jobs = {j["JobIDRaw"]: j for j in slurm_run["jobs"]}
    cancelled = slurm_run["cancelled"]
    assert cancelled is not None, "no job of rule train_zoo_model or extract was caught running"
    assert jobs[cancelled]["State"].startswith("CANCELLED")
    retries = [j for i, j in jobs.items() if j["Comment"] == jobs[cancelled]["Comment"] and int(i) > int(cancelled)]
    assert [j["State"] for j in retries] == ["COMPLETED"]
    assert sum(not j["State"].startswith(("COMPLETED", "CANCELLED")) for j in jobs.values()) == 0


def tables_and_keys(work: Path) -> dict[str, str]:
    """Relative path -> text of every result table; -> store key of every extraction receipt and zoo checkpoint
    (receipts also hold timestamps and seconds, which differ between any two runs)."""
    out = {str(p.relative_to(work)): p.read_text() for p in (work / "results").rglob("*.csv")}
    for path in (work / "results" / "features").glob("*/*.json"):
        out[str(path.relative_to(work))] = json.loads(path.read_text())["key"]
    for path in (work / "results" / "zoo").glob("*.json"):
        out[str(path.relative_to(work))] = json.loads(path.read_text())["checkpoint"]
    return out


def test_results_equal_a_local_run(slurm_run, e2e_run):
    assert slurm_run["rc"] == 0
    local, remote = tables_and_keys(e2e_run), tables_and_keys(slurm_run["work"])
    assert len(local) > 20 and set(remote) == set(local)
    differ = sorted(p for p in local if local[p] != remote[p])
    assert differ == []


def test_a_rerun_submits_nothing(slurm_run):
    assert slurm_run["rc"] == 0
    work, before = slurm_run["work"], len(slurm_run["jobs"])
    cmd = [SNAKEMAKE, "--workflow-profile", str(slurm_run["profile"]), "--configfile", "config.yaml"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert len(sacct(slurm_run["since"], work)) == before
