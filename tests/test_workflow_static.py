"""The workflow as users inspect it: DAG and rule graph render, lint and snakefmt are clean, paper config builds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / cmd[0]), *cmd[1:]], cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.parametrize("flag", ["--dag", "--rulegraph"])
def test_graphs_print_only_dot_and_render(flag, tmp_path):
    proc = run("snakemake", flag)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.lstrip().startswith("digraph") and proc.stdout.rstrip().endswith("}")
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=proc.stdout, capture_output=True, text=True, timeout=120)
        assert svg.returncode == 0 and "<svg" in svg.stdout


def test_lint_is_clean():
    proc = run("snakemake", "--lint")
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_snakefmt_check_passes():
    proc = run("snakefmt", "--check", "Snakefile", "rules")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_paper_config_dag_builds_offline():
    proc = run("snakemake", "-n", "--configfile", "configs/paper.yaml", env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "extract" in proc.stdout and "1596" in proc.stdout  # 78 x (Places + 19 VTAB) + (17 + 19) on WIT


@pytest.mark.parametrize("quick", [False, True])
def test_gpu_benchmark_dag_config_builds(quick, tmp_path):
    """benchmarks/gpu.sh's GPU subset of the default config (and its --quick dry run) validates and its DAG builds."""
    out = tmp_path / "config.yaml"
    args = ["benchmarks/gpu_checks.py", "dag-config", "--device", "cuda", "--out", str(out)] + (["--quick"] if quick else [])
    made = run("python", *args)
    assert made.returncode == 0, made.stderr[-2000:]
    proc = run("snakemake", "-n", "--configfile", str(out), env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    import yaml

    cfg = yaml.safe_load(out.read_text())
    heatmap = yaml.safe_load((ROOT / "config.yaml").read_text())["report"]["heatmaps"][0]
    assert cfg["report"]["heatmaps"] == [heatmap] and set(heatmap[1:]) <= set(cfg["models"])
    assert "extract" in proc.stdout and ("sweep" in proc.stdout or "sample" in proc.stdout)
