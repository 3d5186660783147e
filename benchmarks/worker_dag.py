"""The default DAG with and without the fork server (prh.worker), back to back, each from a fresh clone of HEAD and an
empty store: wall time, the CPU of the whole run, the jobs' CPU from their log lines, and whether every table,
figure reading and store key is the same.

Usage: python benchmarks/worker_dag.py [--configfile CONFIG] [--cores 2] [--worker-only [--keep DIR] [--against RUN]]
       [--pin 0]

``--keep DIR`` leaves the one run's clone (store, results, logs) in DIR; ``--against RUN`` compares its tables,
figure readings and store keys with an earlier run's directory (e.g. one kept from the code before a change).

``--pin 0`` runs Snakemake and everything it starts on CPU 0 alone while it still schedules ``--cores`` jobs: a
machine of the same kind at half the speed (two cores, each half as fast, have the throughput of one), which is how
the issue-32 target "10 minutes on the slower machine" is checked here.

CPU of the whole run = Snakemake and every process it started and waited for (``getrusage(RUSAGE_CHILDREN)``), plus,
with the worker, the forked children (their ``prh job profile:`` lines) and each server's own start (its log), which
Snakemake does not wait for. The jobs' CPU from their log lines omits what an own-process job spends after its script
ends (interpreter teardown), so the whole-run figure is the one to compare. Floors from the same minute:
``python -c "import torch"`` (CPU seconds, min of 3) and 50 float32 1024 x 1024 matmuls on one thread.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from job_overhead import import_cpu, job_cpu, matmul_s, read_profiles

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU = re.compile(r"^prh worker \d+: imported .* in ([0-9.]+) CPU-s$", re.M)


def run_dag(work: Path, worker: bool, args: argparse.Namespace) -> dict:
    """Clone HEAD into ``work``, run the DAG there and measure it."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    (work / ".venv").symlink_to(ROOT / ".venv")
    sockets = Path(tempfile.mkdtemp(prefix="w", dir="/tmp"))  # this run's servers only
    env = {**os.environ, "PRH_WORKER": "1" if worker else "0", "PRH_WORKER_DIR": str(sockets),
           "PYTHONPATH": str(work / "src")}  # fmt: skip
    cmd = [str(Path(sys.executable).with_name("snakemake")), "--workflow-profile", "profiles/local", "--cores",
           str(args.cores), *(["--configfile", args.configfile] if args.configfile else [])]  # fmt: skip
    before, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    pin = (lambda: os.sched_setaffinity(0, {int(c) for c in args.pin.split(",")})) if args.pin else None
    subprocess.run(cmd, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   preexec_fn=pin)  # fmt: skip
    wall, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    waited = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    jobs = [j for js in read_profiles(work / "logs").values() for j in js]
    children = sum(j["cpu_s"] for j in jobs if j.get("in_worker"))
    servers = [float(x) for log in sockets.glob("*.log") for x in SERVER_CPU.findall(log.read_text())]
    return {"wall": wall, "run_cpu": waited + children + sum(servers), "job_cpu": sum(map(job_cpu, jobs)) + sum(servers),
            "jobs": len(jobs), "servers": len(servers), "work": work}  # fmt: skip


def same_outputs(a: Path, b: Path) -> tuple[int, list[str]]:
    """(files compared, those that differ): every results table and figure reading, and the store's keys."""
    files = sorted(p.relative_to(a) for p in (a / "results").rglob("*") if p.suffix in (".csv", ".json"))
    # benchmarks are timings; the receipts of zoo, prepare and extraction jobs name paths and times
    files = [f for f in files if f.parts[1] not in ("benchmarks", "zoo", "prepared", "features")]
    differ = [str(f) for f in files if not filecmp.cmp(a / f, b / f, shallow=False)]
    keys = [sorted(p.name for p in (d / "features" / "entries").glob("*/*")) for d in (a, b)]
    return len(files), differ + ([] if keys[0] == keys[1] else ["store keys"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", help="a config other than the default")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--worker-only", action="store_true", help="one run, with the fork server")
    ap.add_argument("--keep", type=Path, help="with --worker-only: run in this new directory and keep it")
    ap.add_argument("--against", type=Path, help="with --worker-only: compare the outputs with this earlier run")
    ap.add_argument("--pin", default="", help="comma-separated CPUs the whole run is confined to (e.g. 0)")
    args = ap.parse_args()
    print(f"floor: python -c 'import torch' {import_cpu('import torch'):.2f} CPU-s (min of 3); 50 x 1024^2 float32 "
          f"matmul {matmul_s():.2f} s on one thread; load average {os.getloadavg()[0]:.1f}"
          + (f"; run pinned to CPU(s) {args.pin} with --cores {args.cores}" if args.pin else ""))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="prh-worker-dag-") as tmp:
        if args.worker_only:
            w = run_dag(args.keep or Path(tmp) / "worker", True, args)
            print(f"wall {w['wall']:.1f} s ({w['wall'] / 60:.2f} min); CPU-s, whole run {w['run_cpu']:.1f}; CPU-s, jobs' "
                  f"log lines {w['job_cpu']:.1f}; jobs {w['jobs']}; fork servers started: {w['servers']}")  # fmt: skip
            if args.against:
                n, differ = same_outputs(w["work"], args.against)
                print(f"outputs against {args.against}: {n} tables and readings compared, "
                      + ("all byte-equal, store keys equal" if not differ else f"differ: {', '.join(differ)}"))  # fmt: skip
            return
        runs = {mode: run_dag(Path(tmp) / mode, mode == "worker", args) for mode in ("worker", "own process")}
        w, o = runs["worker"], runs["own process"]
        print(f"{'':<34}{'worker':>12}{'own process':>13}{'ratio':>8}")
        for key, label in (("wall", "wall s"), ("run_cpu", "CPU-s, whole run"), ("job_cpu", "CPU-s, jobs' log lines")):
            print(f"{label:<34}{w[key]:>12.1f}{o[key]:>13.1f}{w[key] / o[key]:>8.2f}")
        print(f"jobs {w['jobs']} / {o['jobs']}; fork servers started: {w['servers']}")
        n, differ = same_outputs(w["work"], o["work"])
        print(f"outputs: {n} tables and readings compared, "
              + ("all byte-equal, store keys equal" if not differ else f"DIFFER: {', '.join(differ)}"))  # fmt: skip


if __name__ == "__main__":
    main()
