"""Where a finished run's time went: every job's Snakemake benchmark (results/benchmarks/RULE/...tsv), summed per rule.

Usage: python benchmarks/dag_cost.py [RESULTS_DIR] [--top N]

With the fork server on (prh.worker, the default for local runs), a job's benchmark counts only the thin process
that hands its script to a forked child; the child's own CPU is in the job log's profile line, which
benchmarks/job_overhead.py reads. Run with PRH_WORKER=0 for benchmarks that hold whole jobs.

CPU seconds barely depend on what else the machine runs, wall seconds do; their sum over the cores is a lower
bound of the DAG's wall time on an idle machine with that many cores (the critical path can add to it).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd


def job_costs(results: Path) -> pd.DataFrame:
    """One row per benchmarked job: rule, job (its wildcards path), wall s, cpu s and peak RSS (MB)."""
    rows = []
    root = results / "benchmarks"
    for tsv in sorted(root.rglob("*.tsv")):
        t = pd.read_csv(tsv, sep="\t")
        rule = tsv.relative_to(root).parts[0]
        job = str(tsv.relative_to(root / rule).with_suffix(""))
        rows.append({"rule": rule, "job": job, "wall_s": float(t["s"].iloc[-1]),
                     "cpu_s": float(t["cpu_time"].iloc[-1]), "max_rss_mb": float(t["max_rss"].iloc[-1])})  # fmt: skip
    if not rows:
        raise SystemExit(f"no benchmark files under {root}: run the workflow first")
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default="results")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    jobs = job_costs(Path(args.results))
    per_rule = jobs.groupby("rule").agg(jobs=("job", "size"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"),
                                        max_rss_mb=("max_rss_mb", "max")).sort_values("cpu_s", ascending=False)  # fmt: skip
    print(per_rule.round(1).to_string())
    total = jobs["cpu_s"].sum()
    print(f"\n{len(jobs)} jobs: {jobs['wall_s'].sum():.0f} wall s, {total:.0f} cpu s; cpu s / {args.cores} cores = "
          f"{total / args.cores / 60:.1f} min (a lower bound of the idle wall time)\n")
    print(jobs.sort_values("cpu_s", ascending=False).head(args.top).round(1).to_string(index=False))


if __name__ == "__main__":
    main()
