"""Benchmark: bounded-memory large-n alignment (``prh.metrics.large_n_pair``) vs the dense engine (``pairwise``).

Usage: .venv/bin/python benchmarks/large_n.py [--sizes 16384,65536,131072] [--d 256] [--k 10]
       [--metrics mutual_knn,cka] [--threads 2] [--device cpu]

One layer pair (x, y): d-dimensional unit rows, y a noisy nonlinear view of x. Every measurement runs in its own
subprocess, which reports its wall time and peak resident memory (``ru_maxrss``, imports and both feature matrices
included; ``base`` is the peak after imports and data, before the metric). The dense path runs where its estimated
peak (n x n float32 Grams, kNN indicators or centred kernels) fits in 80% of the available memory; both values and
the time and memory ratios are printed. Target (DESIGN.md): at most 2 GB at n = 131,072.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

DENSE_BYTES_PER_N2 = {"mutual_knn": 14, "cka": 16}  # estimated dense peak / n^2 (measured at n = 16,384: 12 and 14)
LIMIT_GB = 2.0


def features(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 unit rows x and a noisy nonlinear view y of them, generated in sample chunks."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, d)).astype(np.float32) / np.sqrt(d)
    x, y = np.empty((n, d), np.float32), np.empty((n, d), np.float32)
    for i in range(0, n, 8192):
        c = rng.standard_normal((min(8192, n - i), d), dtype=np.float32)
        x[i : i + len(c)] = c / np.linalg.norm(c, axis=1, keepdims=True)
        v = np.tanh(x[i : i + len(c)] @ w * 4) + 0.5 * rng.standard_normal(c.shape, dtype=np.float32) / np.sqrt(d)
        y[i : i + len(c)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return x, y


def peak_gb() -> float:
    """Peak resident memory of this process so far, GB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(path: str, metric: str, n: int, d: int, k: int, threads: int, device: str) -> None:
    """Run one measurement and print its JSON: seconds, value, peak and base resident memory (GB)."""
    import torch

    from prh.metrics import large_n_pair, pairwise

    torch.set_num_threads(threads)
    x, y = features(n, d, seed=0)
    base = peak_gb()
    params = {"k": k} if metric != "cka" else {}
    start = time.perf_counter()
    if path == "dense":
        value = pairwise(metric, x, y, **params)
    else:
        value = large_n_pair(metric, x, y, device=device, **params)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "value": value, "peak_gb": peak_gb(), "base_gb": base}))


def measure(path: str, metric: str, n: int, args: argparse.Namespace) -> dict:
    """One measurement in a fresh subprocess."""
    cmd = [sys.executable, __file__, "--child", path, metric, str(n), "--d", str(args.d), "--k", str(args.k),
           "--threads", str(args.threads), "--device", args.device]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{path} {metric} n={n} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_gb() -> float:
    """MemAvailable from /proc/meminfo, GB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16384,65536,131072")
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--metrics", default="mutual_knn,cka")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "METRIC", "N"))
    args = parser.parse_args()
    if args.child:
        path, metric, n = args.child
        child(path, metric, int(n), args.d, args.k, args.threads, args.device)
        return
    print(f"large-n benchmark: one layer pair, d = {args.d}, k = {args.k}, {args.threads} threads, device {args.device}")
    print(f"{'metric':11s} {'n':>7s} | {'large s':>8s} {'peak GB':>7s} {'base GB':>7s} | {'dense s':>8s} "
          f"{'peak GB':>7s} | {'time x':>6s} {'mem x':>6s} {'|diff|':>8s} | <= {LIMIT_GB:g} GB")  # fmt: skip
    for metric in args.metrics.split(","):
        for n in map(int, args.sizes.split(",")):
            large = measure("large", metric, n, args)
            need = DENSE_BYTES_PER_N2[metric] * n * n / 2**30
            fits = need < 0.8 * available_gb()
            dense = measure("dense", metric, n, args) if fits else None
            ok = "yes" if large["peak_gb"] <= LIMIT_GB else "NO"
            if dense:
                tail = (f"{dense['seconds']:8.1f} {dense['peak_gb']:7.2f} | {dense['seconds'] / large['seconds']:5.2f}x "
                        f"{dense['peak_gb'] / large['peak_gb']:5.1f}x {abs(dense['value'] - large['value']):8.1e}")  # fmt: skip
            else:
                tail = f"{'needs ~' + format(need, '.0f') + ' GB: not run':>32s} {'':>8s}"
            print(f"{metric:11s} {n:7d} | {large['seconds']:8.1f} {large['peak_gb']:7.2f} {large['base_gb']:7.2f} | "
                  f"{tail} | {ok}   value {large['value']:.6f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
