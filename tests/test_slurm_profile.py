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


@pytest.mark.slow
def test_profile_scales_gpu_jobs_by_n_params(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "rules", "workflow", "schemas", "envs", "profiles", "configs"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
    (work / "results-paper" / "data").mkdir(parents=True)
    (work / "results-paper" / "data" / "wit.npz").touch()  # so the extraction jobs are ready at once
    _fake_slurm(tmp_path / "bin")
    log = tmp_path / "sbatch.log"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SBATCH_LOG": str(log)}
    big, small = "meta-llama--Meta-Llama-3-70B", "vit-tiny-patch16-224.augreg-in21k"
    cmd = [str(Path(sys.executable).with_name("snakemake")), f"results-paper/features/wit/{big}.json",
           f"results-paper/features/wit/{small}.json", "--workflow-profile", "profiles/slurm",
           "--configfile", "configs/paper.yaml"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 240
        while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 2):
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    calls = {(big if big in line else small): line.split(" --wrap=")[0].split() for line in log.read_text().splitlines()}
    for call in calls.values():
        assert call[call.index("-p") + 1] == "gpu" and "--gpus=1" in call
        assert "--cpus-per-task=8" in call
    # 70.6e9 bfloat16 parameters x 2 B x 3 + 4000 MB, and 30 + 10 min per 1e9 parameters
    assert calls[big][calls[big].index("--mem") + 1] == str(int(70.6e9 * 2 * 3 / 1e6) + 4000) == "427600"
    assert calls[big][calls[big].index("-t") + 1] == "736"
    # 9,740,115 float32 parameters (with the in21k head): 116 + 4000 MB, 30 min
    assert calls[small][calls[small].index("--mem") + 1] == "4116" and calls[small][calls[small].index("-t") + 1] == "30"
