"""The SLURM profile through the real executor plugin: fake sbatch/sacct record what would be submitted."""

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
def test_profile_submits_gpu_and_cpu_jobs_with_their_resources(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "rules", "workflow", "schemas", "envs", "profiles"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
    shutil.copy(ROOT / "tests" / "e2e" / "config.yaml", work / "config.yaml")
    (work / "results" / "data").mkdir(parents=True)
    (work / "results" / "data" / "fmnist.npz").touch()  # so the extraction job is ready at once
    _fake_slurm(tmp_path / "bin")
    log = tmp_path / "sbatch.log"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SBATCH_LOG": str(log)}
    cmd = [str(Path(sys.executable).with_name("snakemake")), "results/features/fmnist/minilm.json",
           "results/data/scenes.npz", "--workflow-profile", "profiles/slurm", "--configfile", "config.yaml"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 240
        while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 2):
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    calls = {("extract" if "rule_extract" in line else "dataset"): line.split(" --wrap=")[0]
             for line in log.read_text().splitlines()}  # fmt: skip
    extract, dataset = calls["extract"].split(), calls["dataset"].split()
    assert extract[extract.index("-p") + 1] == "gpu" and "--gpus=1" in extract
    # no n_params in the config: 1e8 assumed -> 1e8 x 4 B x 3 + 4000 MB, and 30 + 10 min per 1e9 params
    assert extract[extract.index("--mem") + 1] == "5200" and extract[extract.index("-t") + 1] == "31"
    assert dataset[dataset.index("-p") + 1] == "cpu" and not any(a.startswith(("--gpus", "--gres")) for a in dataset)
    assert dataset[dataset.index("-t") + 1] == "60"
