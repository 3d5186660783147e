"""The fork server (prh.worker): a delegated job runs in a forked child with the job's stdio, directory, environment
and exit status; a killed job kills its child; a server serves only jobs that would import what it imported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import prh
from prh import worker

JOB = """
import os, sys, time
from prh.errors import PrhError
from prh.pipeline import logged
with logged(sys.argv[1]):
    print(f"job pid={os.getpid()} child={os.environ.get('PRH_WORKER_CHILD')} cwd={os.getcwd()} "
          f"tag={os.environ.get('JOB_TAG')}", flush=True)
    print(f"to the console {os.environ.get('JOB_TAG')}", file=sys.__stdout__, flush=True)
    Path = __import__("pathlib").Path
    Path(sys.argv[1] + ".pid").write_text(str(os.getpid()))
    what = sys.argv[2]
    if what == "sleep":
        time.sleep(60)
        Path(sys.argv[1] + ".finished").write_text("x")
    if what == "error":
        raise PrhError("models.m: a bad field")
    if what == "crash":
        raise ZeroDivisionError("boom")
    if what.isdigit():
        sys.exit(int(what))
"""


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    """A job environment with its own socket folder and a server that preloads only prh.pipeline (no torch)."""
    run = Path(tempfile.mkdtemp(prefix="prhw-", dir="/tmp"))  # a socket path must be short (107 bytes)
    (tmp_path / "run").symlink_to(run)
    e = {**os.environ, "PRH_WORKER_DIR": str(run), "PRH_WORKER_PRELOAD": "prh.pipeline", "PRH_WORKER": "1"}
    for k in (worker.CHILD_VAR, "SLURM_JOB_ID"):
        e.pop(k, None)
    yield e
    for pid_file in run.glob("*.pid"):
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError, FileNotFoundError):
            pass
    shutil.rmtree(run, ignore_errors=True)


def run_job(tmp_path: Path, env: dict, what: str, tag: str = "a", **kw) -> subprocess.CompletedProcess:
    script = tmp_path / "job.py"
    script.write_text(JOB)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(script), str(tmp_path / f"{tag}.log"), what], check=False, cwd=work,
                          env={**env, "JOB_TAG": tag}, capture_output=True, text=True, timeout=120, **kw)  # fmt: skip


def wait_for_server(env: dict) -> Path:
    """The socket of the server the first job started (waits for it to listen)."""
    folder = Path(env["PRH_WORKER_DIR"])
    deadline = time.time() + 120
    while time.time() < deadline:
        socks = list(folder.glob("*.sock")) if folder.is_dir() else []
        if socks:
            return socks[0]
        time.sleep(0.2)
    raise AssertionError(f"no server socket under {folder}: {[p.read_text() for p in folder.glob('*.log')]}")


def started_server(tmp_path: Path, env: dict) -> Path:
    """Run one job: it starts the server, waits for it and runs in its child."""
    first = run_job(tmp_path, env, "0", tag="first")
    assert first.returncode == 0 and "child=1" in (tmp_path / "first.log").read_text(), first.stderr
    return wait_for_server(env)


def test_jobs_arriving_together_start_one_server_and_all_run_in_its_children(tmp_path, env):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    (tmp_path / "work").mkdir()
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / f"j{i}.log"), "0"], cwd=tmp_path / "work",
                              env={**env, "JOB_TAG": f"j{i}"}, stderr=subprocess.PIPE, text=True) for i in range(4)]  # fmt: skip
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    for i in range(4):
        assert "child=1" in (tmp_path / f"j{i}.log").read_text(), errs[i]  # none imported it all itself
    assert len(list(Path(env["PRH_WORKER_DIR"]).glob("*.pid"))) == 1  # one server


def test_a_server_that_dies_while_starting_leaves_the_job_to_run_in_its_own_process_at_once(tmp_path, env):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "dies_on_import.py").write_text("raise SystemExit(3)\n")
    bad = {**env, "PRH_WORKER_PRELOAD": "dies_on_import", "PYTHONPATH": f"{tmp_path / 'mods'}:{env.get('PYTHONPATH', '')}"}
    t = time.monotonic()
    job = run_job(tmp_path, bad, "0", tag="alone")
    assert job.returncode == 0 and "child=None" in (tmp_path / "alone.log").read_text(), job.stderr
    assert time.monotonic() - t < worker.START_WAIT_S / 2  # it saw the start die; it did not wait it out
    assert worker.CLIENT_LINE not in (tmp_path / "alone.log").read_text()  # an in-process job has no client line


def test_a_delegated_job_runs_in_a_child_with_the_jobs_stdio_directory_environment_and_status(tmp_path, env):
    sock = started_server(tmp_path, env)
    server_pid = int(sock.with_suffix(".pid").read_text())
    ok = run_job(tmp_path, env, "pass", tag="ok")
    log = (tmp_path / "ok.log").read_text()
    child = int((tmp_path / "ok.log.pid").read_text())
    assert ok.returncode == 0 and f"job pid={child} child=1 cwd={tmp_path / 'work'} tag=ok" in log
    assert ok.stdout.strip() == "to the console ok"  # the job's own stdout, passed to the child
    assert "prh job profile:" in log
    profile, client = (json.loads(log.split(tag, 1)[1].splitlines()[0])
                       for tag in ("prh job profile:", worker.CLIENT_LINE))  # fmt: skip
    assert profile["in_worker"] and log.index("prh job profile:") < log.index(worker.CLIENT_LINE)
    assert 0 < client["cpu_s"] <= client["wall_s"] + 0.5  # the thin job process's own cost, added after the child's
    assert child != server_pid
    assert run_job(tmp_path, env, "3", tag="three").returncode == 3
    err = run_job(tmp_path, env, "error", tag="err")
    assert err.returncode == 1 and err.stderr.strip() == "error: models.m: a bad field"  # one line, on the console
    assert (tmp_path / "err.log").read_text().strip().endswith("\nerror: models.m: a bad field")  # its log's last line
    crash = run_job(tmp_path, env, "crash", tag="crash")
    assert crash.returncode == 1 and crash.stderr.rstrip().endswith("ZeroDivisionError: boom")  # as in-process
    assert int((tmp_path / "three.log.pid").read_text()) != child  # a fresh child per job


def test_a_killed_job_process_kills_its_child_and_a_terminated_one_terminates_it(tmp_path, env):
    started_server(tmp_path, env)
    for sig in (signal.SIGKILL, signal.SIGTERM):
        tag = f"sleep-{sig.name}"
        script = tmp_path / "job.py"
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / f"{tag}.log"), "sleep"],
                                cwd=tmp_path / "work", env={**env, "JOB_TAG": tag}, stderr=subprocess.PIPE)  # fmt: skip
        pid_file = tmp_path / f"{tag}.log.pid"
        deadline = time.time() + 60
        while not pid_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        child = int(pid_file.read_text())
        if child == proc.pid:  # ran in-process: say why
            proc.kill()
            logs = [p.read_text() for p in Path(env["PRH_WORKER_DIR"]).glob("*.log")]
            raise AssertionError(f"not delegated: {proc.communicate()[1]!r}; server logs {logs}")
        proc.send_signal(sig)
        rc = proc.wait(timeout=30)
        deadline = time.time() + 10
        while Path(f"/proc/{child}").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{child}").exists(), f"child {child} outlived its job ({sig.name})"
        assert not (tmp_path / f"{tag}.log.finished").exists()
        assert rc != 0


def test_the_server_is_chosen_by_what_a_job_would_import(tmp_path, monkeypatch):
    monkeypatch.setenv("PRH_WORKER_DIR", str(tmp_path))
    base = worker.socket_path()
    assert worker.socket_path() == base
    monkeypatch.setenv("HF_HOME", str(tmp_path / "another-hub"))
    other_hub = worker.socket_path()
    assert other_hub != base
    monkeypatch.setenv("SOME_UNRELATED_VAR", "x")  # not read at import: same server
    assert worker.socket_path() == other_hub
    fake = tmp_path / "prh"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "mod.py").write_text("x = 1\n")
    monkeypatch.setattr(prh, "__file__", str(fake / "__init__.py"))
    before = worker.socket_path()
    st = (fake / "mod.py").stat()
    os.utime(fake / "mod.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # an edited prh source file
    assert worker.socket_path() != before


def test_the_worker_is_off_where_asked_and_where_nothing_is_shared(monkeypatch):
    for var in (worker.CHILD_VAR, "SLURM_JOB_ID", "PRH_WORKER"):
        monkeypatch.delenv(var, raising=False)
    assert worker.enabled({"worker": True}) and worker.enabled(None)
    assert not worker.enabled({"worker": False})
    monkeypatch.setenv("PRH_WORKER", "0")
    assert not worker.enabled(None)
    monkeypatch.delenv("PRH_WORKER")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert not worker.enabled(None)
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv(worker.CHILD_VAR, "1")
    assert not worker.enabled(None)


def test_an_idle_server_exits_and_removes_its_socket(tmp_path, env):
    sock = Path(env["PRH_WORKER_DIR"]) / "s.sock"
    code = "from pathlib import Path; from prh.worker import serve; import sys; serve(Path(sys.argv[1]), idle_s=1.0)"
    proc = subprocess.Popen([sys.executable, "-c", code, str(sock)], env=env)
    assert proc.wait(timeout=120) == 0
    assert not sock.exists() and not sock.with_suffix(".pid").exists()
