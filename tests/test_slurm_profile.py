"""SLURM resource arithmetic no one-node cluster can run: fake sbatch/sacct record what the real executor plugin submits.

Partitions, GPUs, scancel and retries are tested on a real cluster (tests/slurm/test_cluster.py); a 70B-parameter
model's 428 GB, 12-hour extraction job would be refused there, so its request is checked here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE = {
    "sbatch": 'echo "$@" >> "$SBATCH_LOG"; cat > /dev/null; echo 4242',
    **{tool: "exit 0" for tool in ("sacct", "squeue", "sinfo", "sacctmgr", "scontrol", "scancel")},
}


def _fake_slurm(bin_dir: Path) -> None:
    bin_dir.mkdir()
    for tool, body in FAKE.items():
        (bin_dir / tool).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / tool).chmod(0o755)


# (target, model) -> (GPUs, host mem_mb, runtime min) the profile submits for configs/paper.yaml (gpus: 4, 80 GB GPUs)
PAPER_JOBS = {
    # bfloat16 weights of 130 / 141.2 / 93.4 GB over GPUs holding (80 - 2) / 1.1 = 70.9 GB each -> 2 GPUs; host memory
    # one 16 GB shard + 4 GB; runtime 30 + 10 min per 1e9 parameters
    ("results-paper/features/wit/huggyllama--llama-65b.json", "huggyllama--llama-65b"): (2, 20000, 680),
    ("results-paper/features/wit/meta-llama--Meta-Llama-3-70B.json", "meta-llama--Meta-Llama-3-70B"): (2, 20000, 736),
    ("results-paper/features/wit/mistralai--Mixtral-8x7B-v0.1.json", "mistralai--Mixtral-8x7B-v0.1"): (2, 20000, 497),
    # a 7B scoring job: 14 GB of weights on one GPU, sized like extraction
    ("results-paper/lm/huggyllama--llama-7b.json", "huggyllama--llama-7b"): (1, 20000, 100),
    # 9.7e6 float32 parameters: 0.039 GB x 3 + 4 GB of host memory, 30 min, one GPU
    ("results-paper/features/wit/vit-tiny-patch16-224.augreg-in21k.json", "vit-tiny-patch16-224.augreg-in21k"): (1, 4116, 30),
}


@pytest.mark.slow
def test_profile_sizes_gpu_jobs_by_model(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "rules", "workflow", "schemas", "envs", "profiles", "configs"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
    (work / "results-paper" / "data").mkdir(parents=True)
    for data in ("wit", "openwebtext"):
        (work / "results-paper" / "data" / f"{data}.npz").touch()  # so the model jobs are ready at once
    _fake_slurm(tmp_path / "bin")
    log = tmp_path / "sbatch.log"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SBATCH_LOG": str(log)}
    cmd = [str(Path(sys.executable).with_name("snakemake")), *(t for t, _ in PAPER_JOBS), "--workflow-profile",
           "profiles/slurm", "--configfile", "configs/paper.yaml"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 240
        while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < len(PAPER_JOBS)):
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    lines = log.read_text().splitlines()
    calls = {}
    for (target, model), _ in PAPER_JOBS.items():
        rule = "score_language_model" if "/lm/" in target else "extract"
        [call] = [line.split(" --wrap=")[0].split() for line in lines if model in line and f"rule_{rule}_" in line]
        calls[model] = call
    for (_, model), (gpus, mem_mb, runtime) in PAPER_JOBS.items():
        call = calls[model]
        assert call[call.index("-p") + 1] == "gpu" and f"--gpus={gpus}" in call, (model, call)
        assert "--cpus-per-task=8" in call
        assert (call[call.index("--mem") + 1], call[call.index("-t") + 1]) == (str(mem_mb), str(runtime)), model
