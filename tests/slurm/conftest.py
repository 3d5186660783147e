"""The one-node SLURM cluster (tests/slurm/cluster.sh), shared by the real-cluster tests."""

from __future__ import annotations

import subprocess

import pytest
from slurmkit import CLUSTER, cluster_skip_reason


@pytest.fixture(scope="session")
def cluster():
    """A running one-node cluster; stopped at the end only if this session started it."""
    reason = cluster_skip_reason()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(["bash", str(CLUSTER), "up"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    started = proc.stdout.strip().splitlines()[-1] == "started"
    yield
    if started:
        subprocess.run(["bash", str(CLUSTER), "down"], capture_output=True, timeout=120)
