"""Kill soak: SIGKILL the whole workflow at random moments, resume it as a user would, and check the end result.

1. Reference: one uninterrupted run of the workflow (a fresh copy in a work dir, its own empty store), timed.
2. Soak: a second fresh copy with an empty store.  N times: start `snakemake --rerun-incomplete`, SIGKILL its whole
   process group at a moment drawn uniformly over this run's expected duration (the reference wall time, scaled by the
   share of the reference's jobs this run still has to do), then report the store: entries present, how many verify,
   stale temp files.  A run refused because the killed one left Snakemake's lock behind is followed by
   `snakemake --unlock` and started again, as a user would.  Then the last run goes to the end.
3. Every CSV under results/ must equal the reference's (floats within 1e-12, timing columns ignored), the store must
   hold the reference's keys, every entry must verify, and `prh store gc` must leave no temp file behind.

    .venv/bin/python benchmarks/kill_soak.py                                     # repo config.yaml, 10 kills
    .venv/bin/python benchmarks/kill_soak.py --configfile tests/e2e/config.yaml --kills 3 --seed 1
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from prh.store import FeatureStore

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PRH = [sys.executable, "-m", "prh.cli"]
WORKFLOW = ("Snakefile", "rules", "workflow", "schemas", "envs")
TIMING = re.compile(r"(seconds|elapsed|time|duration|_s$)", re.IGNORECASE)
STEPS = re.compile(r"(\d+) of (\d+) steps")
LOCKED = "Directory cannot be locked"


def make_workdir(path: Path, config: Path) -> dict:
    """A fresh copy of the workflow in ``path`` with ``config`` as its config.yaml; returns the config."""
    path.mkdir(parents=True)
    for name in WORKFLOW:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, path / name)
    shutil.copy(config, path / "config.yaml")
    return yaml.safe_load(config.read_text())


def command(cores: int) -> list[str]:
    return [SNAKEMAKE, "--cores", str(cores), "--configfile", "config.yaml", "--rerun-incomplete"]


def steps(log: Path) -> tuple[int, int] | None:
    """(done, total) from the last 'X of Y steps' line Snakemake printed, or None before the first."""
    found = STEPS.findall(log.read_text(errors="replace")) if log.exists() else []
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (Snakemake and every job it started) and wait until it is gone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"process group {proc.pid} survived SIGKILL")


def run_until(work: Path, cores: int, log: Path, kill_at: float | None) -> tuple[str, float]:
    """Start the workflow; kill it ``kill_at`` s in (None: let it finish) -> (how it ended, seconds it ran).

    A start refused by a stale Snakemake lock is answered with `snakemake --unlock` and a fresh start.
    """
    while True:
        with open(log, "w") as out:
            start = time.monotonic()
            proc = subprocess.Popen(command(cores), cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
            try:
                rc = proc.wait(timeout=kill_at)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                return "killed", time.monotonic() - start
        ran = time.monotonic() - start
        if rc != 0 and LOCKED in log.read_text(errors="replace"):
            print(f"  the killed run left Snakemake's lock: snakemake --unlock ({ran:.1f} s lost)", flush=True)
            subprocess.run(command(cores) + ["--unlock"], cwd=work, check=True, capture_output=True)
            continue
        return ("finished" if rc == 0 else f"failed (exit {rc})"), ran


def stale_temps(store_root: Path, results: Path) -> tuple[int, int]:
    """(temp files/dirs anywhere under the store and results, what `prh store gc` would remove)."""
    n = 0
    for base in (store_root, results):
        for p in base.rglob(".*") if base.is_dir() else []:
            if p.name == ".tmp":
                n += sum(1 for _ in p.iterdir())
            elif ".tmp" in p.name or "tmp-" in p.name:
                n += 1
    return n, len(FeatureStore(store_root).gc(dry_run=True))


def store_state(store_root: Path) -> tuple[int, int, list[str]]:
    """(entries present, entries that verify, problem lines)."""
    store = FeatureStore(store_root)
    keys = store.keys()
    problems = store.verify(keys)
    return len(keys), len(keys) - len(problems), problems


def compare_results(ref: Path, got: Path) -> tuple[int, list[str]]:
    """(CSVs equal, differences) between two results/ folders (floats within 1e-12, timing columns ignored)."""
    out, equal = [], 0
    ref_files = {p.relative_to(ref) for p in ref.rglob("*.csv")}
    got_files = {p.relative_to(got) for p in got.rglob("*.csv")}
    out += [f"{p}: missing after the soak" for p in sorted(ref_files - got_files)]
    out += [f"{p}: not in the reference run" for p in sorted(got_files - ref_files)]
    for rel in sorted(ref_files & got_files):
        a, b = pd.read_csv(ref / rel), pd.read_csv(got / rel)
        a, b = (t.drop(columns=[c for c in t.columns if TIMING.search(str(c))]) for t in (a, b))
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=0, atol=1e-12)
            equal += 1
        except AssertionError as e:
            out.append(f"{rel}: " + " ".join(str(e).split())[:300])
    return equal, out


def main() -> int:
    """Run the soak; 0 when every kill was recovered from cleanly."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", type=Path, default=ROOT / "config.yaml", help="workflow config (default: config.yaml)")
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLs before the run is let finish (default 10)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--cores", type=int, default=2, help="snakemake --cores (default 2)")
    ap.add_argument("--workdir", type=Path, help="where the two work dirs go (default: a temp dir, removed on success)")
    args = ap.parse_args()
    config = args.configfile.resolve()
    base = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="prh-kill-soak-"))
    rng = random.Random(args.seed)
    t_start = time.monotonic()
    rc = 1
    try:
        rc = run_soak(args, config, base, rng, t_start)
        return rc
    finally:
        if not args.workdir and rc == 0:
            shutil.rmtree(base, ignore_errors=True)
        elif rc != 0:
            print(f"work dirs kept under {base}")


def run_soak(args: argparse.Namespace, config: Path, base: Path, rng: random.Random, t_start: float) -> int:
    """The reference run, the kills and the final comparison; 0 when clean."""
    ref, soak = base / "reference", base / "soak"
    cfg = make_workdir(ref, config)
    make_workdir(soak, config)
    print(f"kill soak: {config.name}, {args.kills} kills, seed {args.seed}, work dirs under {base}", flush=True)
    how, t_ref = run_until(ref, args.cores, ref / "snakemake.out", None)
    if how != "finished":
        print(f"reference run {how}; see {ref / 'snakemake.out'}")
        return 1
    total = (steps(ref / "snakemake.out") or (0, 1))[1]
    print(f"reference run: {t_ref:.1f} s, {total} jobs", flush=True)

    store_root, results = soak / cfg["store"], soak / cfg["results"]
    failures, kills, left = [], 0, total
    header = f"{'kill':>4} {'at s':>7} {'of ~s':>7} {'jobs done':>10} {'entries':>8} {'verify':>7} {'stale tmp':>10} {'gc would rm':>12}"
    print(header, flush=True)
    for i in range(1, args.kills + 1):
        expected = t_ref * left / total
        at = rng.uniform(0, expected)
        how, ran = run_until(soak, args.cores, soak / f"run-{i}.out", at)
        if how != "killed":
            print(f"{i:>4} run {how} after {ran:.1f} s, before the kill at {at:.1f} s", flush=True)
            if how != "finished":
                failures.append(f"run {i} {how}")
            break
        kills += 1
        done, of = steps(soak / f"run-{i}.out") or (0, left)
        left = max(of - done, 1)
        n, ok, problems = store_state(store_root)
        n_tmp, n_gc = stale_temps(store_root, results)
        print(f"{i:>4} {ran:>7.1f} {expected:>7.1f} {f'{done}/{of}':>10} {n:>8} {ok:>7} {n_tmp:>10} {n_gc:>12}", flush=True)
        failures += [f"after kill {i}: {p}" for p in problems]

    how, ran = run_until(soak, args.cores, soak / "run-final.out", None)
    print(f"final run: {how} in {ran:.1f} s", flush=True)
    if how != "finished":
        failures.append(f"final run {how}; see {soak / 'run-final.out'}")
    n_tmp, n_gc = stale_temps(store_root, results)
    gc = subprocess.run(PRH + ["--store", str(store_root), "--results", str(results), "store", "gc"],
                        check=False, capture_output=True, text=True)  # fmt: skip
    n_tmp_after, _ = stale_temps(store_root, results)
    print(f"stale temp files before `prh store gc`: {n_tmp} ({n_gc} the gc knows); after: {n_tmp_after}", flush=True)
    if gc.returncode != 0:
        failures.append(f"prh store gc exited {gc.returncode}: {gc.stderr.strip()[-300:]}")
    if n_tmp_after:
        failures.append(f"{n_tmp_after} temp files left after prh store gc")
    n, ok, problems = store_state(store_root)
    ref_keys, got_keys = set(FeatureStore(ref / cfg["store"]).keys()), set(FeatureStore(store_root).keys())
    print(f"store: {n} entries, {ok} verify; keys {'equal to' if ref_keys == got_keys else 'DIFFER from'} the reference's")
    failures += problems
    if ref_keys != got_keys:
        models = sorted({FeatureStore(store_root).info(k).model for k in got_keys - ref_keys})
        failures.append(f"store keys: {len(ref_keys - got_keys)} missing, {len(got_keys - ref_keys)} extra "
                        f"(the extra ones are of {', '.join(models)})")  # fmt: skip
    equal, diffs = compare_results(ref / cfg["results"], results)
    n_csv = len(list((ref / cfg["results"]).rglob("*.csv")))
    print(f"results: {equal}/{n_csv} CSVs equal to the reference run's (floats within 1e-12)")
    for d in diffs:
        print(f"  {d}")
    failures += diffs
    print(f"wall time: {time.monotonic() - t_start:.0f} s")
    if failures:
        print(f"kill soak: {kills}/{args.kills} kills, FAILED: " + "; ".join(failures[:5]))
        return 1
    print(f"kill soak: {kills}/{args.kills} clean" + ("" if kills == args.kills else " (the run finished before the rest)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
