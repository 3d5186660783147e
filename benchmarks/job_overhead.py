"""Where each job's fixed cost goes: per rule and phase, beside the `import torch` floor measured in the same run.

Usage: python benchmarks/job_overhead.py [--logs logs] [--results results] [--rerun]

Every workflow job ends its log with a ``prh job profile:`` line (``prh.pipeline.logged``): CPU and wall seconds of
its phases (startup = interpreter + the script's imports; imports = the job's own lazy imports; dataset, weights
digest, dataset digest, store verify, model build, work, store commit, receipt; other = the rest) and the heavy
packages it imported.  A job run in a child of the fork server (prh.worker) also gets a ``prh job client:`` line:
the CPU of the thin job process that handed its script over.  This script reads those lines from a finished run's
logs and prints, per rule, the mean CPU seconds per phase, the jobs' CPU (child + client) as a multiple of the
floor, and what the imported packages cost alone.

``--rerun`` also runs the cheapest job of each rule again, now, in a scratch copy of the workflow and its results
(the feature store is shared read-only: a cached extraction only verifies its entry), so its numbers and the floor
come from the same minute of the same machine.  Floors: ``python -c "import torch"`` (CPU seconds, min of 3) and a
fixed float32 matmul (1024 x 1024, 50 times).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from prh.pipeline import PROFILE_LINE  # the lines jobs write: one definition, where they are written
from prh.worker import CLIENT_LINE

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PHASES = ("startup", "imports", "dataset", "weights digest", "dataset digest", "store verify", "model build", "work",
          "store commit", "receipt", "other")  # fmt: skip


def child_cpu(cmd: list[str], **kw) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one child process run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, wall


def import_cpu(statement: str, repeats: int = 3) -> float:
    """Least CPU seconds over ``repeats`` fresh interpreters running ``statement``."""
    return min(child_cpu([PY, "-c", statement])[0] for _ in range(repeats))


def matmul_s() -> float:
    """Seconds of 50 float32 1024 x 1024 matmuls on one thread (the machine's arithmetic speed)."""
    code = ("import time, torch; torch.set_num_threads(1); a = torch.randn(1024, 1024); a @ a; t = time.perf_counter()\n"
            "for _ in range(50): a @ a\nprint(time.perf_counter() - t)")  # fmt: skip
    return float(subprocess.run([PY, "-c", code], check=True, capture_output=True, text=True).stdout)


def read_profiles(logs: Path) -> dict[str, list[dict]]:
    """{rule: [profile, ...]} from every job log under ``logs`` (the rule is the log's first folder)."""
    out: dict[str, list[dict]] = defaultdict(list)
    for log in sorted(logs.rglob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        lines = [ln for ln in text if PROFILE_LINE in ln]
        if lines:
            profile = json.loads(lines[-1].rsplit(PROFILE_LINE, 1)[1])
            clients = [ln for ln in text if CLIENT_LINE in ln]  # a delegated job's own (thin) process
            client = json.loads(clients[-1].rsplit(CLIENT_LINE, 1)[1])["cpu_s"] if clients else 0.0
            out[log.relative_to(logs).parts[0]].append({**profile, "client_cpu_s": client, "log": str(log)})
    return dict(out)


def job_cpu(job: dict) -> float:
    """A job's whole CPU seconds: its script's process (or forked child) plus, when delegated, the job process."""
    return job["cpu_s"] + job.get("client_cpu_s", 0.0)


def phase_table(profiles: dict[str, list[dict]], floor: float) -> list[str]:
    """Mean CPU seconds per phase and rule, the mean job CPU and its ratio to the floor."""
    shown = [p for p in PHASES if any(p in j["phases"] for js in profiles.values() for j in js)]
    head = (f"{'rule':<22}{'jobs':>5}{'forked':>7}" + "".join(f"{p[:10]:>11}" for p in shown)
            + f"{'client':>8}{'job cpu':>9}{'/floor':>8}{'sum':>8}")  # fmt: skip
    rows = [head]
    for rule, jobs in sorted(profiles.items()):
        mean = {p: sum(j["phases"].get(p, {}).get("cpu_s", 0.0) for j in jobs) / len(jobs) for p in shown}
        cpu, client = sum(map(job_cpu, jobs)), sum(j.get("client_cpu_s", 0.0) for j in jobs)
        forked = sum(bool(j.get("in_worker")) for j in jobs)
        rows.append(f"{rule:<22}{len(jobs):>5}{forked:>7}" + "".join(f"{mean[p]:>11.2f}" for p in shown)
                    + f"{client / len(jobs):>8.2f}{cpu / len(jobs):>9.2f}{cpu / len(jobs) / floor:>8.2f}{cpu:>8.1f}")  # fmt: skip
    total = sum(job_cpu(j) for js in profiles.values() for j in js)
    fixed = sum(j["phases"].get(p, {}).get("cpu_s", 0.0) + j.get("client_cpu_s", 0.0) for js in profiles.values()
                for j in js for p in ("startup", "imports"))  # fmt: skip
    rows.append(f"all jobs: {total:.1f} CPU-s (forked children + job processes; a fork server's own start, about"
                f" one `import` of its packages, is not in a job's log); startup + imports + clients {fixed:.1f}"
                f" CPU-s ({fixed / total:.0%})")  # fmt: skip
    return rows


def package_costs(profiles: dict[str, list[dict]]) -> list[str]:
    """What each rule's heavy imports cost alone (fresh interpreter, min of 2), against `import torch`."""
    rows = []
    for rule, jobs in sorted(profiles.items()):
        own = [j for j in jobs if not j.get("in_worker")]  # a forked child inherits the server's imports
        if not own:
            rows.append(f"{rule:<22} all {len(jobs)} jobs ran in fork-server children: the server imported once")
            continue
        pkgs = sorted({p for j in own for p in j["imported"]})
        cpu = import_cpu("; ".join(f"import {p}" for p in pkgs), repeats=2) if pkgs else 0.0
        rows.append(f"{rule:<22} imports {' '.join(pkgs) or '-'}: {cpu:.2f} CPU-s alone")
    return rows


def rerun_cheapest(profiles: dict[str, list[dict]], results: Path, logs: Path) -> dict[str, dict[str, dict]]:
    """Run each rule's cheapest logged job again, in a scratch copy of the workflow, once in its own process
    (PRH_WORKER=0) and once in a child of a warm fork server (prh.worker): {rule: {mode: profile}}."""
    out: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="prh-overhead-") as tmp, tempfile.TemporaryDirectory(prefix="w", dir="/tmp") as sockets:
        work = Path(tmp)
        for name in ("Snakefile", "rules", "workflow", "schemas", "envs", "profiles", "configs", "config.yaml"):
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, work / name)
        shutil.copytree(results, work / results.name, symlinks=True)
        shutil.copytree(logs, work / "logs")  # --summary names a job's log from the run's metadata, for files that exist
        if (logs.parent / ".snakemake" / "metadata").is_dir():
            shutil.copytree(logs.parent / ".snakemake" / "metadata", work / ".snakemake" / "metadata")
        (work / "features").symlink_to((ROOT / "features").resolve())
        snakemake = [str(Path(PY).with_name("snakemake")), "--cores", "1", "--rerun-triggers", "mtime"]
        summary = subprocess.run([*snakemake, "--summary"], cwd=work, capture_output=True, text=True, check=True).stdout
        target_of = {}
        for line in summary.splitlines()[1:]:
            cells = line.split("\t")
            if len(cells) > 3 and cells[3].startswith("logs/"):  # output_file, date, rule, log-file(s), ...
                target_of[cells[3].split(",")[0]] = cells[0]
        for mode, env in (("own process", {"PRH_WORKER": "0"}), ("fork server", {"PRH_WORKER": "1"})):
            env = {**os.environ, **env, "PRH_WORKER_DIR": sockets}
            for rule, jobs in sorted(profiles.items()):
                cheapest = min(jobs, key=lambda j: j["cpu_s"])
                log = str(Path(cheapest["log"]).resolve().relative_to(logs.resolve().parent))
                target = target_of.get(log)
                if target is None:
                    continue
                # with the worker, run until a forked child ran it (the first runs start a server and run in-process)
                for _attempt in range(6 if mode == "fork server" else 1):
                    subprocess.run([*snakemake, "--forcerun", target, "--", target], cwd=work, env=env, check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
                    got = [j for j in read_profiles(work / "logs").get(rule, [])
                           if j["log"].endswith(log.split("/", 1)[1])]  # fmt: skip
                    if mode == "own process" or (got and got[-1].get("in_worker")):
                        break
                    _wait_for_socket(Path(sockets))
                    time.sleep(5)
                if got and (mode == "own process" or got[-1].get("in_worker")):
                    out.setdefault(rule, {})[mode] = {**got[-1], "target": target}
        for log in Path(sockets).glob("*.log"):  # each server's own start: its imports, paid once per run
            print("".join(f"  {line}" for line in log.read_text().splitlines(keepends=True) if "imported" in line), end="")
        for pid in Path(sockets).glob("*.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid.read_text()), 9)
    return out


def _wait_for_socket(folder: Path, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while not list(folder.glob("*.sock")) and time.time() < deadline:
        time.sleep(0.5)


def rerun_table(runs: dict[str, dict[str, dict]], floor: float) -> list[str]:
    """Per rule: the job's CPU in its own process and with the fork server (child + the thin job process), /floor."""
    rows = [f"{'rule':<22}{'own process':>13}{'/floor':>8}{'fork server':>13}{'/floor':>8}{'ratio':>7}  target"]
    totals = [0.0, 0.0]
    for rule, modes in sorted(runs.items()):
        own = job_cpu(modes["own process"]) if "own process" in modes else None
        fork = modes.get("fork server")
        fork_cpu = job_cpu(fork) if fork else None
        if own is None or fork_cpu is None:
            continue
        totals[0] += own
        totals[1] += fork_cpu
        rows.append(f"{rule:<22}{own:>13.2f}{own / floor:>8.2f}{fork_cpu:>13.2f}{fork_cpu / floor:>8.2f}"
                    f"{fork_cpu / own:>7.2f}  {fork['target']}")  # fmt: skip
    if totals[0]:
        rows.append(f"{'all':<22}{totals[0]:>13.2f}{'':>8}{totals[1]:>13.2f}{'':>8}{totals[1] / totals[0]:>7.2f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logs", type=Path, default=ROOT / "logs")
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--rerun", action="store_true", help="also rerun each rule's cheapest job now")
    args = ap.parse_args()
    floor = import_cpu("import torch")
    print(f"floor: python -c 'import torch' {floor:.2f} CPU-s (min of 3); 50 x 1024^2 float32 matmul "
          f"{matmul_s():.2f} s on one thread; python {sys.version.split()[0]}")  # fmt: skip
    profiles = read_profiles(args.logs)
    if not profiles:
        raise SystemExit(f"no '{PROFILE_LINE}' lines under {args.logs}: run the workflow first")
    print("\nmean CPU seconds per job and phase, from the run's logs:")
    print("\n".join(phase_table(profiles, floor)))
    print("\nheavy packages each rule imports, and what they cost alone:")
    print("\n".join(package_costs(profiles)))
    if args.rerun:
        print("\neach rule's cheapest job run again now (store shared read-only), CPU seconds:")
        print("\n".join(rerun_table(rerun_cheapest(profiles, args.results, args.logs), floor)))


if __name__ == "__main__":
    main()
