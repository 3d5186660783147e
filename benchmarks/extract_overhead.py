"""Extraction overhead: a real extraction job's wall time vs a bare forward loop over the same batches (target <= 1.10x).

Run: ``python benchmarks/extract_overhead.py [--config config.yaml] [--repeats 5] [--n-images 10000] [--n-texts 1024]``.

Models and settings come from the config, exactly as the workflow runs them: the zoo ViT ``vit-m-sup`` (trained
into the config's zoo cache first if it is not there) and the packaged MiniLM, the config's extraction parameters,
batch size and thread count.  The datasets are the config's ``fmnist`` and ``scenes`` specs with ``n`` overridden
(default: the whole 10,000-image Fashion-MNIST test split; 1,024 captions).

Three closures are timed, interleaved, ``repeats`` times after one warm-up each, keeping the minimum:
  bare   the model already in memory; ``forward_intermediates`` / ``output_hidden_states`` over batches prepared
         outside the timer (images sliced; texts tokenized and padded beforehand) -- nothing else
  path   ``prh.extract.extract`` (tokenization, preprocessing, pooling, bpb) + ``FeatureStore.put`` commit
  job    ``prh.pipeline.extract_features``, the function the Snakemake rule calls: reads the dataset .npz, loads and
         hashes the model, extracts, commits, verifies and writes the receipt, into a fresh store every time
Printed: path/bare (per-sample overhead) and job/(bare + model load) (what a job adds to loading and running the
model).  A job also has fixed costs (dataset read, hashing, commit, verify, receipt: tens of ms), so on a tiny
dataset such as the default's 1,000 images (``--n-images 1000``) the job ratio of the 0.2 s zoo-ViT loop is higher.  Python start-up and imports are outside every timer.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from prh.config import load_config
from prh.data import Dataset, load_dataset, save_dataset
from prh.extract import extract
from prh.extract.vision import intermediate_kwargs
from prh.models import LoadedModel, load_model
from prh.pipeline import extract_features, resolved_spec, train_zoo_model
from prh.runtime import prepare_job
from prh.plan import Plan
from prh.store import FeatureStore, make_request

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bare_vision(model: LoadedModel, ds: Dataset, batch_size: int) -> Callable[[], None]:
    """Closure running preprocess + forward_intermediates over the batches, nothing else."""
    kwargs = intermediate_kwargs(model.module)
    batches = [ds.images[s : s + batch_size] for s in range(0, ds.n, batch_size)]

    def run() -> None:
        with torch.inference_mode():
            for b in batches:
                model.module.forward_intermediates(model.preprocess(b), **kwargs)

    return run


def bare_language(model: LoadedModel, ds: Dataset, batch_size: int, max_tokens: int) -> Callable[[], None]:
    """Closure running the model with output_hidden_states over batches tokenized beforehand, nothing else."""
    texts = list(ds.texts or [])
    batches = [
        model.tokenizer(texts[s : s + batch_size], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        for s in range(0, len(texts), batch_size)
    ]

    def run() -> None:
        with torch.inference_mode():
            for b in batches:
                model.module(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)

    return run


def extraction_path(model: LoadedModel, ds: Dataset, params: dict, batch_size: int, root: Path) -> Callable[[], None]:
    """Closure running prh's extract and committing the entry to a fresh store."""
    modality = "image" if model.modality == "vision" else "text"

    def run() -> None:
        shutil.rmtree(root, ignore_errors=True)
        store = FeatureStore(root)
        feats = extract(model, ds, params, batch_size=batch_size, progress=False)
        req = make_request(model.name, model.digest, ds.name, modality, ds.digest(modality), params)
        with store.put(store.key(req), req) as w:
            w.write(feats)

    return run


def whole_job(name: str, spec: dict, zoo: list[str], npz: Path, params: dict, batch_size: int, root: Path) -> Callable[[], None]:
    """Closure running the workflow's extraction job function into a fresh store."""

    def run() -> None:
        shutil.rmtree(root, ignore_errors=True)
        with contextlib.redirect_stderr(io.StringIO()):  # the job's tqdm bar is drawn (and timed) but not shown
            extract_features(name, spec, zoo, str(npz), str(root / "store"), params, str(root / "receipt.json"),
                             batch_size=batch_size)  # fmt: skip

    return run


def timed_load(name: str, spec: dict, repeats: int) -> tuple[LoadedModel, float]:
    """Load a model ``repeats`` times; return it and the fastest load in seconds."""
    best, model = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        model = load_model(name, spec)
        best = min(best, time.perf_counter() - t)
    assert model is not None
    return model, best


def best_of(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Minimum wall seconds of each closure over ``repeats`` interleaved runs, after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def zoo_receipt(cfg: dict, model: str, work: Path) -> list[str]:
    """The zoo training receipt of ``model`` (trains it into the config's zoo cache if absent; a no-op otherwise)."""
    if cfg["models"][model]["source"] != "zoo":
        return []
    out = work / f"{model}.zoo.json"
    t = time.perf_counter()
    train_zoo_model(model, cfg["models"][model], f"{cfg['store']}/zoo", str(out))
    print(f"({model}: zoo checkpoint ready in {time.perf_counter() - t:.1f} s)")
    return [str(out)]


def case(cfg: dict, model: str, dataset: str, n: int, repeats: int, work: Path) -> None:
    """Time bare / path / job for one (model, dataset) of the config and print the ratios."""
    plan = Plan(cfg)
    params, batch_size = plan.extraction_params(model), plan.batch_size(model)
    ds = load_dataset(dataset, {**cfg["datasets"][dataset], "n": n})
    npz = work / f"{dataset}-{n}.npz"
    save_dataset(ds, npz)
    zoo = zoo_receipt(cfg, model, work)
    spec = resolved_spec(model, cfg["models"][model], zoo, cfg["store"])
    loaded, load_s = timed_load(model, spec, repeats)
    if loaded.modality == "vision":
        bare = bare_vision(loaded, ds, batch_size)
    else:
        bare = bare_language(loaded, ds, batch_size, int(params["max_tokens"]))
    t = best_of({"bare": bare, "path": extraction_path(loaded, ds, params, batch_size, work / "path"),
                 "job": whole_job(model, spec, zoo, npz, params, batch_size, work / "job")}, repeats)  # fmt: skip
    print(f"{model} on {n} {dataset} (batch {batch_size}): bare forward {t['bare']:.3f} s, model load {load_s:.3f} s, "
          f"extract+commit {t['path']:.3f} s, whole job {t['job']:.3f} s")  # fmt: skip
    print(f"  path / bare = {t['path'] / t['bare']:.3f}   job / (load + bare) = {t['job'] / (load_s + t['bare']):.3f}"
          "   (target <= 1.10)")  # fmt: skip


def main() -> None:
    """Print the overhead of the config's zoo ViT and MiniLM extraction jobs."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the config's `threads`)")
    ap.add_argument("--vision-model", default="vit-m-sup")
    ap.add_argument("--language-model", default="minilm")
    ap.add_argument("--n-images", type=int, default=10000)
    ap.add_argument("--n-texts", type=int, default=1024)
    args = ap.parse_args()
    cfg = load_config(args.config)
    prepare_job(args.threads or cfg["threads"])
    print(f"torch threads {torch.get_num_threads()}, min of {args.repeats} interleaved runs, CPU")
    work = Path(tempfile.mkdtemp(prefix="prh-bench-"))
    try:
        case(cfg, args.vision_model, "fmnist", args.n_images, args.repeats, work)
        case(cfg, args.language_model, "scenes", args.n_texts, args.repeats, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
