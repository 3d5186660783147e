"""Vision zoo: small timm architectures trained on Fashion-MNIST under several objectives, cached by recipe hash.

A recipe is plain config (arch, arch_kwargs, objective, dataset, steps, batch_size, lr, seed, ...). Two optional
fields serve the hypothesis experiments: ``schedule_steps`` (the length of the run whose learning-rate schedule and
data order are followed; training stops after ``steps`` of them, so a recipe with steps s and schedule_steps S is the
step-s checkpoint of the S-step run), and ``tasks`` (the labels the "multitask" objective trains one head each on,
e.g. the scenes' category, colour, count, location, ...).
`ensure_trained(recipe, cache_root)` returns `cache_root/<recipe_hash>` and trains only when absent, so a
checkpoint is retrained only when its recipe, its training data or the training code (ZOO_CODE_VERSION) changes.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from prh.errors import PrhError
from prh.io import atomic_dir, exclusive, manifest_problems
from prh.models.vision import CHECKPOINT_FILE, CONFIG_FILE, create_timm_model, family_of, make_preprocess
from prh.io import canonical_json, content_key
from prh.zoo.objectives import Objective, make_objective

ZOO_CODE_VERSION = "vision-zoo-1"  # bump whenever training code changes what a recipe produces
IMAGE_SIZE = 32
NUM_CLASSES = 10
LOSS_FILE = "loss.csv"
OBJECTIVES = ("supervised", "multitask", "simclr", "mae", "denoise", "random")
DATA_CONFIG: dict[str, Any] = {
    "input_size": [3, IMAGE_SIZE, IMAGE_SIZE],
    "mean": [0.2860, 0.2860, 0.2860],  # Fashion-MNIST pixel mean / std
    "std": [0.3530, 0.3530, 0.3530],
    "interpolation": "bilinear",
    "crop_pct": 1.0,
    "crop_mode": "center",
}
TRAIN_DATA: dict[str, Any] = {"source": "fashion-mnist", "split": "train", "n": 10000, "seed": 0}
RECIPE_DEFAULTS: dict[str, Any] = {
    "arch_kwargs": {},
    "dataset": TRAIN_DATA,
    "eval_dataset": None,  # default: the dataset's test split, 1,000 images
    "steps": 0,
    "batch_size": 128,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "seed": 0,
    "width": None,  # informational: the width the recipe is filed under
}
# optional fields: absent unless set, so the recipe hashes of models that do not use them never change
OPTIONAL_RECIPE_KEYS = frozenset({"schedule_steps", "tasks"})
RECIPE_KEYS = frozenset(RECIPE_DEFAULTS) | {"arch", "objective"} | OPTIONAL_RECIPE_KEYS
TRAIN_SOURCES = ("fashion-mnist", "scenes")


def _vit(dim: int, depth: int, heads: int, patch: int = 8) -> dict[str, Any]:
    """ViT kwargs on 32x32 inputs (patch 8: 16 patch tokens + CLS)."""
    return {"img_size": IMAGE_SIZE, "patch_size": patch, "embed_dim": dim, "depth": depth, "num_heads": heads}


def _resnet(w: int) -> dict[str, Any]:
    """resnet10t kwargs with stage widths w, 2w, 4w, 8w."""
    return {"channels": [w, 2 * w, 4 * w, 8 * w], "stem_width": w}


def _convnext(w: int) -> dict[str, Any]:
    """convnext_atto kwargs with dims w, 2w, 4w, 8w and depths 1, 1, 2, 1."""
    return {"dims": [w, 2 * w, 4 * w, 8 * w], "depths": [1, 1, 2, 1]}


def _mixer(dim: int, blocks: int, patch: int = 8) -> dict[str, Any]:
    """MLP-Mixer kwargs on 32x32 inputs (patch 8: 16 tokens)."""
    return {"img_size": IMAGE_SIZE, "patch_size": patch, "embed_dim": dim, "num_blocks": blocks}


def _recipe(arch: str, kwargs: dict[str, Any], objective: str, steps: int, width: int) -> dict[str, Any]:
    """A default-zoo recipe (Fashion-MNIST train, 10k images; batch 128; AdamW lr 1e-3)."""
    return {"arch": arch, "arch_kwargs": kwargs, "objective": objective, "steps": steps, "width": width}


VIT, RESNET, CONVNEXT, MIXER = "vit_tiny_patch16_224", "resnet10t", "convnext_atto", "mixer_s16_224"
DEFAULT_VISION_ZOO: dict[str, dict[str, Any]] = {
    "vit-s-sup": _recipe(VIT, _vit(64, 4, 2), "supervised", 150, 64),
    "vit-s-mae": _recipe(VIT, _vit(64, 4, 2), "mae", 150, 64),
    "vit-s-random": _recipe(VIT, _vit(64, 4, 2), "random", 0, 64),
    "vit-m-sup": _recipe(VIT, _vit(128, 4, 4), "supervised", 100, 128),
    "resnet-s-sup": _recipe(RESNET, _resnet(16), "supervised", 150, 16),
    "resnet-m-sup": _recipe(RESNET, _resnet(32), "supervised", 150, 32),
    "resnet-s-simclr": _recipe(RESNET, _resnet(16), "simclr", 150, 16),
    "resnet-s-denoise": _recipe(RESNET, _resnet(16), "denoise", 150, 16),
    "resnet-s-random": _recipe(RESNET, _resnet(16), "random", 0, 16),
    "convnext-s-sup": _recipe(CONVNEXT, _convnext(16), "supervised", 150, 16),
    "convnext-s-sup-long": _recipe(CONVNEXT, _convnext(16), "supervised", 450, 16),
    "convnext-s-simclr": _recipe(CONVNEXT, _convnext(16), "simclr", 150, 16),
    "mixer-s-sup": _recipe(MIXER, _mixer(64, 4), "supervised", 150, 64),
    "mixer-s-denoise": _recipe(MIXER, _mixer(64, 4), "denoise", 150, 64),
    "mixer-s-random": _recipe(MIXER, _mixer(64, 4), "random", 0, 64),
}


def _check_int(name: str, recipe: dict[str, Any], key: str, lo: int) -> int:
    """recipe[key] as an int >= lo, else PrhError naming the field."""
    v = recipe[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise PrhError(f"models.{name}.{key}: expected an integer >= {lo}, got {v!r}")
    return v


def normalise_recipe(recipe: dict[str, Any], name: str = "?") -> dict[str, Any]:
    """Recipe with defaults filled in and every field checked; PrhError names the bad field."""
    unknown = sorted(set(recipe) - RECIPE_KEYS)
    if unknown:
        raise PrhError(f"models.{name}.{unknown[0]}: unknown recipe field (expected one of {sorted(RECIPE_KEYS)})")
    if "arch" not in recipe:
        raise PrhError(f"models.{name}.arch: missing (a timm architecture, e.g. {VIT})")
    r = {**RECIPE_DEFAULTS, **recipe}
    family_of(str(r["arch"]), name)  # raises PrhError for unknown architectures
    if r.get("objective") not in OBJECTIVES:
        raise PrhError(f"models.{name}.objective: {r.get('objective')!r} is not one of {list(OBJECTIVES)}")
    steps = _check_int(name, r, "steps", 0)
    _check_int(name, r, "batch_size", 2)
    _check_int(name, r, "seed", 0)
    if "schedule_steps" in r:
        schedule = _check_int(name, r, "schedule_steps", 1)
        if steps > schedule or r["objective"] == "random":
            raise PrhError(f"models.{name}.schedule_steps: must be >= steps ({steps}) and the objective trained, got {schedule}")
    elif (r["objective"] == "random") != (steps == 0):
        raise PrhError(f"models.{name}.steps: objective {r['objective']!r} needs steps {'== 0' if steps else '> 0'}, got {steps}")
    if not isinstance(r["arch_kwargs"], dict):
        raise PrhError(f"models.{name}.arch_kwargs: expected a mapping, got {r['arch_kwargs']!r}")
    if not isinstance(r["dataset"], dict) or r["dataset"].get("source") not in TRAIN_SOURCES:
        raise PrhError(f"models.{name}.dataset: expected a {' or '.join(TRAIN_SOURCES)} dataset spec, got {r['dataset']!r}")
    _check_tasks(name, r)
    if r["eval_dataset"] is None:
        r["eval_dataset"] = _held_out(r["dataset"])
    return json.loads(canonical_json(r))  # tuples -> lists, a deep copy


def _check_tasks(name: str, r: dict[str, Any]) -> None:
    """``tasks`` is a non-empty list of distinct label names exactly when the objective is multitask."""
    tasks = r.get("tasks")
    if (r["objective"] == "multitask") != (tasks is not None):
        raise PrhError(f"models.{name}.tasks: needed by (and only by) objective multitask, got {tasks!r}")
    if tasks is not None and (not isinstance(tasks, list) or not tasks or len(set(tasks)) != len(tasks)
                              or not all(isinstance(t, str) for t in tasks)):  # fmt: skip
        raise PrhError(f"models.{name}.tasks: expected a list of distinct label names, got {tasks!r}")
    if r["objective"] == "supervised" and r["dataset"]["source"] != "fashion-mnist":
        raise PrhError(f"models.{name}.dataset: objective supervised trains on Fashion-MNIST classes; use multitask")


def _held_out(train: dict[str, Any]) -> dict[str, Any]:
    """The default evaluation set of a training set: Fashion-MNIST's test split, or 1,000 other scenes."""
    if train["source"] == "fashion-mnist":
        return {**train, "split": "test", "n": 1000, "seed": 0}
    return {**train, "n": 1000, "seed": int(train.get("seed", 0)) + 1}


@functools.lru_cache(maxsize=8)
def _load_split(spec_json: str, name: str) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """(uint8 images (n,H,W,3), int64 labels by name, content digest) of a dataset spec, memoised in-process."""
    from prh.data import load_dataset

    ds = load_dataset(name, json.loads(spec_json))
    if ds.images is None or not ds.labels:
        raise PrhError(f"{name}: zoo training needs images with labels")
    digest = f"{ds.image_digest}:{ds.meta.get('labels_digest', '')}"
    return ds.images, {k: v.astype(np.int64) for k, v in ds.labels.items()}, digest


def dataset_digest(spec: dict[str, Any], name: str = "?") -> str:
    """Content digest (images + labels) of a training dataset spec."""
    return _load_split(canonical_json(spec), f"models.{name}.dataset")[2]


def recipe_hash(recipe: dict[str, Any], name: str = "?") -> str:
    """sha256 of the normalised recipe, its datasets' content digests and ZOO_CODE_VERSION."""
    r = normalise_recipe(recipe, name)
    payload = {
        "recipe": r,
        "train_data": dataset_digest(r["dataset"], name),
        "eval_data": dataset_digest(r["eval_dataset"], name),
        "code": ZOO_CODE_VERSION,
    }
    return content_key(payload)


def image_tensors(spec: dict[str, Any], name: str = "?", tasks: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed (n,3,32,32) float images of a dataset spec, with its (n,) int64 classes, or with the (n, T)
    labels of ``tasks`` in that order."""
    images, labels, _ = _load_split(canonical_json(spec), f"models.{name}.dataset")
    missing = sorted(set(tasks or ["class"]) - set(labels))
    if missing:
        raise PrhError(f"models.{name}.tasks: dataset has no label {missing[0]!r} (it has {sorted(labels)})")
    preprocess = make_preprocess(DATA_CONFIG)
    x = torch.cat([preprocess(images[i : i + 2048]) for i in range(0, len(images), 2048)])
    y = labels["class"] if tasks is None else np.stack([labels[t] for t in tasks], axis=1)
    return x, torch.from_numpy(np.ascontiguousarray(y))


def lr_at(step: int, steps: int, lr: float) -> float:
    """Learning rate: linear warmup over the first 10% of steps, then cosine decay to 0."""
    warm = max(1, steps // 10)
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def batches(n: int, batch_size: int, steps: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Index batches for `steps` steps: epochs of seeded permutations, last partial batch dropped."""
    out: list[torch.Tensor] = []
    while len(out) < steps:
        perm = torch.randperm(n, generator=gen)
        out.extend(perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size))
    return out[:steps]


def _evaluate(objective: Objective | None, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Held-out metric of the objective with the model in eval mode (None for untrained-only recipes)."""
    if objective is None:
        return None
    model.eval()
    return objective.evaluate(model, x, y)


def _fit(
    model: torch.nn.Module, objective: Objective, r: dict[str, Any], x: torch.Tensor, y: torch.Tensor, desc: str
) -> list[tuple[int, float, float]]:
    """Train model + objective heads with AdamW; returns (step, loss, lr) rows."""
    params = [p for p in list(model.parameters()) + list(objective.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=r["lr"], weight_decay=r["weight_decay"])
    gen = torch.Generator().manual_seed(r["seed"])
    rows: list[tuple[int, float, float]] = []
    model.train()
    schedule = r.get("schedule_steps", r["steps"])  # the run followed; training stops after r["steps"] of it
    order = batches(len(x), min(r["batch_size"], len(x)), schedule, gen)[: r["steps"]]
    bar = tqdm(order, desc=desc, unit="step", leave=False)
    for step, idx in enumerate(bar):
        lr = lr_at(step, schedule, r["lr"])
        for group in opt.param_groups:
            group["lr"] = lr
        loss = objective.loss(model, x[idx], y[idx], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        value = float(loss.detach())
        rows.append((step + 1, value, lr))
        bar.set_postfix(loss=f"{value:.4f}")
    return rows


def _write_loss_csv(path: Path, rows: list[tuple[int, float, float]], metric: str, before: float | None, after: float | None) -> None:
    """loss.csv: step, loss, lr and the held-out metric at step 0 (untrained) and at the last step."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "lr", metric])
        w.writerow([0, "", "", "" if before is None else f"{before:.6g}"])
        for i, (step, loss, lr) in enumerate(rows):
            last = i == len(rows) - 1 and after is not None
            w.writerow([step, f"{loss:.6g}", f"{lr:.6g}", f"{after:.6g}" if last else ""])


def _save(tmp: Path, model: torch.nn.Module, config: dict[str, Any]) -> None:
    """Write model.safetensors (the timm state dict) and config.json into `tmp`."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # One metadata key only: safetensors writes a metadata map in per-process hash order, so two keys would give a
    # retrained, tensor-identical checkpoint other bytes, hence another weights digest and store keys (the recipe
    # hash is in config.json).
    save_file(state, str(tmp / CHECKPOINT_FILE), metadata={"format": "pt"})
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def train_vision(recipe: dict[str, Any], out_dir: str | os.PathLike, name: str = "zoo") -> Path:
    """Train a recipe and write model.safetensors, config.json and loss.csv into `out_dir` atomically."""
    r = normalise_recipe(recipe, name)
    rhash = recipe_hash(r, name)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    x, y = image_tensors(r["dataset"], name, r.get("tasks"))
    x_eval, y_eval = image_tensors(r["eval_dataset"], name, r.get("tasks"))
    supervised = r["objective"] == "supervised"
    torch.manual_seed(r["seed"])
    model = create_timm_model(r["arch"], r["arch_kwargs"], num_classes=NUM_CLASSES if supervised else 0, name=name)
    classes = [int(c) for c in (torch.maximum(y.amax(0), y_eval.amax(0)) + 1).reshape(-1)] if r.get("tasks") else None
    objective = None if r["objective"] == "random" else make_objective(r["objective"], model, IMAGE_SIZE, classes)
    metric = objective.metric if objective is not None else "eval_loss"
    before = _evaluate(objective, model, x_eval, y_eval)
    rows = _fit(model, objective, r, x, y, name) if objective is not None else []
    after = _evaluate(objective, model, x_eval, y_eval)
    model.eval()
    config = {
        "arch": r["arch"],
        "arch_kwargs": r["arch_kwargs"],
        "num_classes": NUM_CLASSES if supervised else 0,
        "family": family_of(r["arch"], name),
        "data_config": DATA_CONFIG,
        "objective": r["objective"],
        "recipe": r,
        "recipe_hash": rhash,
        "zoo_code_version": ZOO_CODE_VERSION,
        "n_params": sum(p.numel() for p in model.parameters()),
        "metric": {"name": metric, "untrained": before, "trained": after},
        "train_seconds": round(time.perf_counter() - t0, 3),
        "torch_threads": torch.get_num_threads(),
    }
    with atomic_dir(out, keep_existing=lambda p: is_trained(p, rhash), manifest=True) as commit:
        _save(commit.path, model, config)
        _write_loss_csv(commit.path / LOSS_FILE, rows, metric, before, after)
    return out


def is_trained(path: Path, rhash: str) -> bool:
    """True when `path` holds a complete checkpoint (files as its manifest lists them) for recipe hash `rhash`."""
    cfg = path / CONFIG_FILE
    if not (cfg.is_file() and (path / CHECKPOINT_FILE).is_file() and (path / LOSS_FILE).is_file()):
        return False
    if manifest_problems(path, deep=False):
        return False
    try:
        return json.loads(cfg.read_text()).get("recipe_hash") == rhash
    except (OSError, json.JSONDecodeError):
        return False


def ensure_trained(recipe: dict[str, Any], cache_root: str | os.PathLike, name: str = "zoo") -> Path:
    """`cache_root/<recipe_hash>`, trained first only if absent or incomplete."""
    rhash = recipe_hash(recipe, name)
    path = Path(cache_root) / rhash
    if is_trained(path, rhash):
        return path
    with exclusive(Path(cache_root) / ".locks" / f"{rhash}.lock"):  # a concurrent run trains it once, not twice
        if not is_trained(path, rhash):
            train_vision(recipe, path, name)
    return path
