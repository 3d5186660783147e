"""Time one `Scorer.score` call against 10 stored reference models, and the same call without the cached references.

The baseline, measured in the same run, prepares every reference from the store on each call (what a scorer without a
cache, or the reference code's per-call loop, does). Prints seconds per call and the ratio.
    .venv/bin/python benchmarks/scorer_speed.py [--refs 10 --n 1000 --layers 8 --dim 256 --repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from prh.extract import Features
from prh.scorer import Scorer
from prh.store import FeatureStore, make_request, write_receipt


def build_store(root: Path, refs: int, n: int, layers: int, dim: int, seed: int = 0) -> list[str]:
    """Write ``refs`` reference models (noisy views of one latent) into a store with receipts; return their names."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 16))
    store = FeatureStore(root / "features")
    names = []
    for r in range(refs):
        feats = [(latent @ rng.normal(size=(16, dim)) + rng.normal(size=(n, dim))).astype(np.float32) for _ in range(layers)]
        name = f"ref{r:02d}"
        request = make_request(name, f"w{r}", "bench", "image", "bench-digest", {"pooling": "mean"})
        key = store.key(request)
        with store.put(key, request) as writer:
            writer.write(Features(feats, [f"blocks.{i}" for i in range(layers)], {}, {}))
        write_receipt(root / "results" / "features" / "bench" / f"{name}.json", key, request, store.info(key))
        names.append(name)
    return names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--refs", type=int, default=10)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = build_store(root, a.refs, a.n, a.layers, a.dim)
        rng = np.random.default_rng(1)
        mine = [rng.normal(size=(a.n, 192)).astype(np.float32) for _ in range(6)]
        kw = dict(store=str(root / "features"), results=str(root / "results"), metric="mutual_knn", k=10)
        start = time.perf_counter()
        scorer = Scorer("bench", names, **kw)
        setup = time.perf_counter() - start
        cached = min(_timed(lambda: scorer.score(mine)) for _ in range(a.repeats))
        fresh = min(_timed(lambda: Scorer("bench", names, **kw).score(mine)) for _ in range(a.repeats))
        print(f"{a.refs} references x {a.layers + 1} layers, n = {a.n}; your model: 6 + 1 layers")
        print(f"one-time reference preparation   {setup:8.3f} s")
        print(f"score() with cached references   {cached:8.3f} s per call ({cached / a.refs * 1e3:.0f} ms per reference)")
        print(f"score() re-preparing references  {fresh:8.3f} s per call (baseline)")
        print(f"speed-up of repeated calls       {fresh / cached:8.1f} x")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
