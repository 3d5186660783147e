"""GPUs as SLURM hands them out, on the one-node cluster's `gpu` partition (two dummy GPUs: tests/slurm/cluster.sh).

Two 1-GPU jobs run at the same time on distinct devices and a 2-GPU job sees both, each taking exactly what SLURM
assigned (no slot lock); through the workflow, a model whose estimate needs two GPUs is submitted with --gpus=2
and its extraction runs on both.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from slurmkit import ACCOUNT, profile_for_cluster, run_with_one_cancel

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROBE = """
import json, os, sys, time
from prh.devices import acquire_gpus
with acquire_gpus(int(sys.argv[1]), 2, sys.argv[2], wait_s=0) as ids:
    start = time.time()
    time.sleep(4)
    print(json.dumps({"ids": ids, "env": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}))
"""


def _wait_done(ids: list[str], timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(ids)], capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(1)
    subprocess.run(["scancel", *ids], capture_output=True)
    pytest.fail(f"jobs {ids} still queued or running after {timeout} s")


def test_jobs_use_the_gpus_slurm_assigns(cluster, tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    locks = tmp_path / "locks"
    jobs = {}
    for name, n in (("a", 1), ("b", 1), ("pair", 2)):
        cmd = ["sbatch", "--parsable", "-A", ACCOUNT, "-p", "gpu", f"--gpus={n}", "-c", "1", "--mem=500",
               "-o", str(tmp_path / f"{name}.out"), "--wrap", f"{sys.executable} {probe} {n} {locks}"]  # fmt: skip
        jobs[name] = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    _wait_done(list(jobs.values()))
    seen = {name: json.loads((tmp_path / f"{name}.out").read_text().strip().splitlines()[-1]) for name in jobs}
    print(f"\nSLURM gpu partition: {({n: (jobs[n], s['ids']) for n, s in seen.items()})}")
    assert sorted(seen["a"]["ids"] + seen["b"]["ids"]) == ["0", "1"]  # distinct devices ...
    assert seen["a"]["start"] < seen["b"]["end"] and seen["b"]["start"] < seen["a"]["end"]  # ... at the same time
    assert seen["pair"]["ids"] == ["0", "1"] and seen["pair"]["env"] == "0,1"
    assert all(s["env"] == ",".join(s["ids"]) for s in seen.values())
    assert not locks.exists()  # no slot lock was taken


CONFIG = """
store: features
results: results
threads: 1
device: cpu
gpus: 2
gpu_memory_gb: 2.5  # a GPU holds (2.5 - 2) / 1.1 = 0.45 GB of weights: 0.8 GB of float32 weights need two
datasets:
  digits: {source: digits, n: 64, seed: 0}
models:
  small: {source: zoo, modality: vision, arch: vit_tiny_patch16_224, objective: random, width: 32, steps: 0,
          n_params: 10000000, arch_kwargs: {img_size: 32, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}}
  big: {source: zoo, modality: vision, arch: vit_tiny_patch16_224, objective: random, width: 64, steps: 0,
        n_params: 200000000, arch_kwargs: {img_size: 32, patch_size: 8, embed_dim: 64, depth: 2, num_heads: 2}}
"""


def test_a_model_needing_two_gpus_gets_two(cluster, copy_workflow, tmp_path):
    work = copy_workflow(tmp_path / "work", extra=("profiles",))
    (work / "config.yaml").write_text(textwrap.dedent(CONFIG))
    profile = profile_for_cluster(work)
    targets = ("results/features/digits/small.json", "results/features/digits/big.json")
    run = run_with_one_cancel(work, profile, (), 1e9, targets=targets, timeout=900)
    assert run["rc"] == 0, (work / "snakemake.out").read_text()[-5000:]
    extract = {j["Comment"].split("_")[-1]: j for j in run["jobs"] if j["rule"] == "extract"}
    assert set(extract) == {"small", "big"}, run["jobs"]
    for model, n, ids in (("small", 1, None), ("big", 2, "0,1")):
        job = extract[model]
        assert job["Partition"] == "gpu" and re.search(r"gres/gpu=(\d+)", job["AllocTRES"]).group(1) == str(n), job
        line = next(x for x in (work / "logs" / "extract" / "digits" / f"{model}.log").read_text().splitlines()
                    if x.startswith(f"prh: models.{model} on "))  # fmt: skip
        print(f"\n{model}: job {job['JobIDRaw']} in {job['Partition']}, {job['AllocTRES']}: {line}")
        assert line.startswith(f"prh: models.{model} on {n} GPU(s): {ids or ''}")
    assert not (work / "features" / ".gpu-locks").exists()
