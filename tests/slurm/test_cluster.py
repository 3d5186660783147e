"""The SLURM profile on a real one-node cluster (tests/slurm/cluster.sh: slurmctld, slurmd, slurmdbd + MariaDB).

The reduced e2e config runs through ``--workflow-profile profiles/slurm`` (account and per-job CPUs and memory
overridden for a 2-core node); while it runs, one running job is cancelled with ``scancel``. Checked afterwards:
every job went through sbatch (sacct lists it, GPU rules in ``gpu`` with one GPU, CPU rules in ``cpu`` without),
the cancelled job was retried and the run ended cleanly, the tables and store keys equal the suite's local run
(tests/conftest.py), and a rerun submits nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from slurmkit import (
    SNAKEMAKE,
    job_cpu_seconds,
    profile_for_cluster,
    run_with_one_cancel,
    sacct,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GPU_RULES = {"extract", "train_zoo_model", "score_language_model"}  # the profile's gpu partition; gpu=1 from the rule
CANCEL_RULES = ("train_zoo_model", "extract")  # long enough to be caught running


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
    config = work / "config.yaml"  # the cluster's two dummy GPUs: each GPU rule's job asks for one (a small model)
    config.write_text(config.read_text() + "\ngpus: 2\n")
    profile = profile_for_cluster(work)
    plan = planned(work, profile)
    run = run_with_one_cancel(work, profile, CANCEL_RULES, min_running_s=3.0)
    jobs = run["jobs"]
    cpu = job_cpu_seconds([j["JobIDRaw"] for j in jobs]) if jobs else 0.0
    print(f"\nSLURM run of the e2e config: {run['wall_s']:.0f} s wall, {cpu:.0f} CPU-s in jobs, {len(jobs)} jobs "
          f"submitted ({dict(Counter(j['Partition'] for j in jobs))}), scancel of job {run['cancelled']}")  # fmt: skip
    return {**run, "work": work, "profile": profile, "plan": plan}


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
