"""Fault test on the real one-node cluster: a job cancelled with ``scancel`` while it runs is resubmitted, and the
run ends with exactly the bytes of an uncancelled local run and nothing in the store a rerun would trust wrongly.

Small on purpose, so it can be looped (``pytest tests/slurm/test_scancel.py --count 50 -p randomly``): one zoo ViT
trained and extracted on Fashion-MNIST through ``profiles/slurm`` (3 sbatch jobs with the dataset's, plus the
resubmission). Which of training and extraction is cancelled is drawn per run (pytest-randomly seeds ``random``), so
both a killed training and a killed extraction (mid-write into the zarr store) are exercised.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from slurmkit import profile_for_cluster, run_with_one_cancel

from prh.store import FeatureStore

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL, DATASET = "vit-sup", "fmnist"
TARGET = f"results/features/{DATASET}/{MODEL}.json"
RULES = ("train_zoo_model", "extract")  # one of them is cancelled
SUBMITTED = ("dataset", "train_zoo_model", "extract")  # every job of the target, each one sbatch


@pytest.fixture
def cancelled_run(cluster, copy_workflow, tmp_path: Path) -> dict:
    work = copy_workflow(tmp_path / "work", extra=("profiles",))
    rule = random.choice(RULES)
    run = run_with_one_cancel(work, profile_for_cluster(work), (rule,), min_running_s=1.0, targets=(TARGET,), timeout=600)
    print(f"\nscancel of a running {rule} job ({run['cancelled']}): run rc {run['rc']} in {run['wall_s']:.0f} s, "
          f"states {[(j['rule'], j['State']) for j in run['jobs']]}")  # fmt: skip
    return {**run, "work": work, "rule": rule}


def entry_layers(work: Path) -> tuple[str, list[np.ndarray]]:
    """Store key and layers of the target's committed entry in ``work``."""
    key = json.loads((work / TARGET).read_text())["key"]
    return key, FeatureStore(work / "features").open(key).layers()


def test_a_cancelled_job_is_resubmitted_and_the_bytes_equal_a_local_run(cancelled_run, e2e_run):
    work, log = cancelled_run["work"], (cancelled_run["work"] / "snakemake.out").read_text()
    assert cancelled_run["rc"] == 0, log[-5000:]
    jobs = {j["JobIDRaw"]: j for j in cancelled_run["jobs"]}
    cancelled = cancelled_run["cancelled"]
    assert cancelled is not None, f"no {cancelled_run['rule']} job was caught running:\n{log[-3000:]}"
    assert jobs[cancelled]["State"].startswith("CANCELLED"), jobs[cancelled]
    again = [j for i, j in jobs.items() if j["Comment"] == jobs[cancelled]["Comment"] and int(i) > int(cancelled)]
    assert [j["State"] for j in again] == ["COMPLETED"], jobs
    assert sorted(j["rule"] for j in jobs.values() if j["State"] == "COMPLETED") == sorted(SUBMITTED)
    assert len(jobs) == len(SUBMITTED) + 1

    store = FeatureStore(work / "features")
    key, layers = entry_layers(work)
    want_key, want = entry_layers(e2e_run)
    assert key == want_key and store.keys() == [key] and store.verify() == []
    assert len(layers) == len(want) and all(np.array_equal(a, b) for a, b in zip(layers, want))
    zoo = json.loads((work / "results" / "zoo" / f"{MODEL}.json").read_text())["checkpoint"]
    assert zoo == json.loads((e2e_run / "results" / "zoo" / f"{MODEL}.json").read_text())["checkpoint"]
