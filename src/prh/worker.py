"""A fork server for workflow jobs: one long-lived process per machine imports torch, timm, transformers, zarr,
pandas, matplotlib and prh once; each job's script then runs in a child forked from it, so a job pays for its own
work instead of 3-6 CPU-seconds of imports (``benchmarks/job_overhead.py`` measures both).

The job process Snakemake starts stays the job: it sends its script, argv, working directory, environment and its
stdin/stdout/stderr to the server, which forks a child that adopts them and runs the script; the job process waits,
forwards SIGTERM/SIGINT/SIGHUP to the child, and exits with the child's status. A child whose job process dies (a
SIGKILL) kills itself within a quarter second, so a killed job leaves what a killed process would: nothing a rerun
trusts (the store writes atomically). The first job finding no server starts one in the background and waits for
it to listen (at most ``START_WAIT_S``), as do the jobs arriving meanwhile; a job runs in its own process only where
no server starts (it died, or took too long).

A server only serves jobs that would import exactly what it imported: its socket is named by a hash of the Python
executable, ``sys.path``, the size and mtime of every prh source file and the environment variables read at import
time (``HF_*``, ``TORCH*``, ``CUDA*``, ...), so an edited prh or another hub cache starts a new server. It forks from
its only thread, before any torch computation (so before any OpenMP pool), and exits after ``IDLE_S`` without jobs.
Off with ``worker: false`` in the config, under SLURM (one job per allocation: nothing to share), off Linux.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

IDLE_S = 60.0  # a server with no job for this long exits
# PRH_WORKER_PRELOAD (comma-separated modules) replaces PRELOAD, e.g. for tests that need no torch; PRH_WORKER_DIR
# replaces the sockets' folder /tmp/prh-worker-UID
PRELOAD = ("torch", "timm", "transformers", "zarr", "numpy", "scipy.stats", "sklearn.linear_model", "pandas",
           "matplotlib.pyplot", "seaborn", "prh.extract", "prh.models.vision", "prh.models.language", "prh.store",
           "prh.data", "prh.experiment", "prh.probe", "prh.lm", "prh.figures", "umap",
           # transformers imports lazily: without these a language job's first load pays ~1 CPU-s for its auto
           # classes, accelerate and the model index; the families are those of the packaged and zoo models
           "transformers.modeling_utils", "transformers.models.auto.modeling_auto",
           "transformers.models.auto.tokenization_auto", "transformers.models.llama.modeling_llama",
           "transformers.models.bert.modeling_bert", "transformers.models.mpnet.modeling_mpnet",
           "transformers.models.qwen2.modeling_qwen2", "transformers.models.gemma3.modeling_gemma3")  # fmt: skip
# Environment read when those modules are imported (cache locations, offline mode, thread and device settings)
IMPORT_ENV = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TORCH", "CUDA", "OMP_", "MKL_", "OPENBLAS", "PYTHON", "PRH_",
              "TIMM", "XDG_", "HOME", "PATH", "LD_", "MPLBACKEND", "MPLCONFIGDIR", "NUMBA", "KMP_")  # fmt: skip
START_WAIT_S = 120.0  # how long a job waits for a starting server before it runs in its own process
CLIENT_LINE = "prh job client:"  # a delegated job's own process cost, appended to its log after the child's profile
CHILD_VAR = "PRH_WORKER_CHILD"  # set in a forked child: its script runs there, never delegated again


def socket_path() -> Path:
    """The socket of the server that imports exactly what this process would (see the module docstring)."""
    import prh

    h = hashlib.sha256(json.dumps([sys.executable, sys.path[1:]]).encode())  # [0]: the script's folder
    for f in sorted(Path(prh.__file__).parent.rglob("*.py")):
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    env = {k: v for k, v in os.environ.items() if k.startswith(IMPORT_ENV) and k != CHILD_VAR}
    h.update(json.dumps(env, sort_keys=True).encode())
    folder = Path(os.environ.get("PRH_WORKER_DIR") or f"/tmp/prh-worker-{os.getuid()}")  # short: AF_UNIX takes 107 B
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{h.hexdigest()[:20]}.sock"


def enabled(config: dict | None) -> bool:
    """Whether this job may run in the fork server: not in a forked child, not off (config ``worker: false`` or
    PRH_WORKER=0), not under SLURM, and only where fork(2) and Unix sockets exist."""
    if os.environ.get(CHILD_VAR) or os.environ.get("PRH_WORKER", "1") == "0" or "SLURM_JOB_ID" in os.environ:
        return False
    if config is not None and config.get("worker") is False:
        return False
    return sys.platform == "linux" and hasattr(socket, "send_fds")


def delegate(config: dict | None = None, log_path: str | os.PathLike | None = None) -> None:
    """Run this job's script (``sys.argv``) in the fork server and exit with its status; return (run it here) when
    the worker is off or no server is ready, starting one in the background for the jobs after this one.

    After the child succeeds, this process appends its own cost (CLIENT_LINE) to the job's log, where the child wrote
    its profile: the two lines together are the job's whole CPU (benchmarks/job_overhead.py adds them)."""
    if not enabled(config) or not Path(sys.argv[0]).is_file():  # `python -c`, an interactive session: nothing to rerun
        return
    path = socket_path()
    conn = _connect(path)
    if conn is None:  # no server: start one (or find one starting) and wait for it rather than import it all here
        alive = _start_server(path)
        if alive is None or not _await_socket(path, alive) or (conn := _connect(path)) is None:
            return
    with conn:
        header = {"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ), "pid": os.getpid()}
        try:
            socket.send_fds(conn, [json.dumps(header).encode() + b"\n"], [0, 1, 2])
        except OSError as e:  # a closed stdio descriptor, a server that just exited: run here
            print(f"prh worker: could not hand the job to {path.name} ({e}); running it in this process", file=sys.stderr)
            return
        code = _wait_for_child(conn)
    if code == 0 and log_path is not None:  # a failed job's log stays its one error line
        _append_client_cost(Path(log_path))
    if code is None:
        print(f"prh worker: {path.name} closed the connection without starting the job; running it in this process",
              file=sys.stderr)  # fmt: skip
        return
    sys.exit(code)


def _append_client_cost(log: Path) -> None:
    """Append this (thin) job process's CPU and wall seconds to the job's log, when the child left one."""
    from prh.runtime import process_age_s

    with contextlib.suppress(OSError):
        if log.is_file():
            with open(log, "a") as out:
                cost = {"cpu_s": round(time.process_time(), 3), "wall_s": round(process_age_s() or 0.0, 3)}
                out.write(f"{CLIENT_LINE} {json.dumps(cost)}\n")


def _wait_for_child(conn: socket.socket) -> int | None:
    """The child's exit status, read from the server's connection (signals meanwhile are forwarded to the child), or
    None when the server closed the connection without starting one (it was exiting): the job then runs here."""
    stream = conn.makefile("r")
    first = stream.readline().split()
    if len(first) != 2 or first[0] != "pid":
        return None
    child = int(first[1])

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    last = stream.readline().split()
    if len(last) == 2 and last[0] == "exit":
        return int(last[1])
    print(f"prh worker: job process {child} ended without an exit status (killed?)", file=sys.stderr)
    return 1


def _connect(path: Path) -> socket.socket | None:
    """A connection to the server listening on ``path``, or None when none is."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def _start_server(path: Path) -> Callable[[], bool] | None:
    """Start a server for ``path`` in the background unless one is starting (a lock file, holding the starting
    server's pid, guards the start) -> whether that server is still alive, or None when no start is under way."""
    from prh.io import pid_alive

    lock = path.with_suffix(".starting")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        with contextlib.suppress(OSError, ValueError):
            if time.time() - lock.stat().st_mtime < START_WAIT_S:  # another job is starting it
                pid = int(lock.read_text() or 0)
                return (lambda: pid_alive(pid)) if pid else (lambda: lock.exists())
            lock.unlink(missing_ok=True)  # a start that died: the next job tries again
        return None
    log = path.with_suffix(".log")
    with open(log, "ab") as out:
        server = subprocess.Popen([sys.executable, "-m", "prh.worker", str(path)], stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=out, start_new_session=True, close_fds=True, env={**os.environ})  # fmt: skip
    os.write(fd, str(server.pid).encode())
    os.close(fd)
    return lambda: server.poll() is None


def _await_socket(path: Path, alive: Callable[[], bool], timeout_s: float = START_WAIT_S) -> bool:
    """Wait until a server listens on ``path`` (True), or its start died or took ``timeout_s`` (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if not alive():
            return path.exists()
        time.sleep(0.05)
    return False


# -- the server ---------------------------------------------------------------------------------------------------------
def serve(path: Path, idle_s: float = IDLE_S) -> None:
    """Import PRELOAD, listen on ``path`` and fork one child per job until ``idle_s`` pass without a job."""
    import importlib

    from prh.hub import go_offline

    go_offline()  # every delegated job is offline (prh.pipeline.logged); the hub library reads this at import
    os.environ.setdefault("MPLBACKEND", "Agg")
    preload = os.environ["PRH_WORKER_PRELOAD"].split(",") if os.environ.get("PRH_WORKER_PRELOAD") else PRELOAD
    for name in preload:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    if threading.active_count() != 1:  # forking a process with threads can copy a held lock into the child
        raise SystemExit(f"prh worker: importing {preload} started threads; not serving")
    gc.collect()
    gc.freeze()  # the children's collections skip the preloaded objects, so they neither scan nor copy their pages
    print(f"prh worker {os.getpid()}: imported {', '.join(preload)} in {time.process_time():.2f} CPU-s", flush=True)
    path.with_suffix(".pid").write_text(str(os.getpid()))
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(tmp))
        server.listen(64)
        os.replace(tmp, path)  # ready the moment the name exists
    finally:
        path.with_suffix(".starting").unlink(missing_ok=True)
    server.settimeout(1.0)
    children: set[int] = set()
    last = time.monotonic()
    try:
        while children or time.monotonic() - last < idle_s:
            children -= _reaped(children)
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            last = time.monotonic()
            with conn:
                pid = _fork_job(server, conn)
            if pid:
                children.add(pid)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a job connecting now gets ECONNREFUSED and runs in-process
        server.close()
        path.with_suffix(".pid").unlink(missing_ok=True)


def _reaped(children: set[int]) -> set[int]:
    """Children that have exited (and are now reaped)."""
    done = set()
    for pid in children:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                done.add(pid)
        except ChildProcessError:
            done.add(pid)
    return done


def _fork_job(server: socket.socket, conn: socket.socket) -> int | None:
    """Read one job's header and stdio from ``conn`` and fork its child (None when the header is unreadable)."""
    try:
        conn.settimeout(10.0)
        msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
        while not msg.endswith(b"\n"):
            more = conn.recv(1 << 20)
            if not more:
                raise OSError("header cut short")
            msg += more
        header = json.loads(msg)
    except (OSError, ValueError):
        return None
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    code = 1
    try:
        server.close()
        code = _run_child(conn, header, fds)
    finally:
        os._exit(code)


def _run_child(conn: socket.socket, header: dict, fds: list[int]) -> int:
    """In the forked child: adopt the job's stdio, directory, environment and argv, run its script, report status."""
    import runpy
    import traceback

    os.setpgid(0, 0)
    for fd, target in zip(fds, (0, 1, 2), strict=False):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(header["cwd"])
    os.environ.clear()
    os.environ.update(header["env"])
    os.environ[CHILD_VAR] = "1"
    sys.argv = list(header["argv"])
    conn.settimeout(None)
    conn.sendall(f"pid {os.getpid()}\n".encode())
    _die_with(int(header["pid"]))
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL if sig != signal.SIGINT else signal.default_int_handler)
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int | None):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - the job's traceback, as a plain interpreter would print it
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(OSError):
        conn.sendall(f"exit {code}\n".encode())
    return code


def _die_with(job_pid: int) -> None:
    """Kill this child (and what it started) as soon as the job process ``job_pid`` is gone: a SIGKILL of the job
    cannot be forwarded, so a thread waits on the job's pidfd (polls it where pidfds are missing)."""
    import select

    def watch() -> None:
        try:
            fd = os.pidfd_open(job_pid)
        except ProcessLookupError:
            os.killpg(0, signal.SIGKILL)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])  # readable when the process has exited
            os.killpg(0, signal.SIGKILL)
        while True:
            time.sleep(0.25)
            with contextlib.suppress(PermissionError):
                try:
                    os.kill(job_pid, 0)
                except ProcessLookupError:
                    os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="prh-worker-watch").start()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
