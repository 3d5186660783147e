"""Snakemake's own lock: a second `snakemake` in a working directory where a run is active refuses to start."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# A test-only rule appended to the copied Snakefile: it runs after the real job and holds the first run open until
# the test releases it, so the second run meets an active run however slowly it starts on a loaded machine. It waits
# for the real job: Snakemake reports an existing output of a job still running as incomplete before it looks at the
# lock (a race the test lost once Snakemake started in 1.7 s instead of 14 s).
HOLD_RULE = """

rule hold_for_test:
    input:
        "results/data/digits.npz",
    output:
        "held.txt",
    shell:
        "touch holding; while [ ! -e release ]; do sleep 0.1; done; touch {output}"
"""
TARGETS = ["results/data/digits.npz", "held.txt"]  # a real prh job and the holder


def snakemake(*args: str) -> list[str]:
    return [SNAKEMAKE, *TARGETS, "--cores", "1", "--configfile", "config.yaml", *args]


def test_second_run_in_the_same_directory_is_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "rules", "workflow", "schemas", "envs"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
    shutil.copy(ROOT / "tests" / "e2e" / "config.yaml", work / "config.yaml")
    with open(work / "Snakefile", "a") as f:
        f.write(HOLD_RULE)
    locks = work / ".snakemake" / "locks"

    with open(work / "first.out", "w") as log:
        first = subprocess.Popen(snakemake(), cwd=work, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while not (work / "holding").exists():  # the real job is done; the run (and its lock) is held open
                assert first.poll() is None, (work / "first.out").read_text()[-3000:]
                assert time.monotonic() < deadline, "the first run never reached the holding rule"
                time.sleep(0.1)
            assert locks.is_dir() and any(locks.iterdir())  # the first run holds its lock
            second = subprocess.run(snakemake(), check=False, cwd=work, capture_output=True, text=True, timeout=300)
            still_running = first.poll() is None
            (work / "release").touch()
            rc_first = first.wait(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
    out = second.stdout + second.stderr
    assert still_running, (work / "first.out").read_text()[-3000:]
    assert second.returncode != 0, out[-3000:]
    assert "Directory cannot be locked" in out, out[-3000:]
    assert "--unlock" in out  # Snakemake names the way out (meant for a dead run's stale lock)
    assert rc_first == 0, (work / "first.out").read_text()[-3000:]  # the refused run did not disturb the active one
    assert all((work / t).is_file() for t in TARGETS)
    assert not (locks.is_dir() and any(locks.iterdir()))  # released when the first run ended
    again = subprocess.run(snakemake(), check=False, cwd=work, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr  # and the next run in that directory goes ahead
