"""Vision zoo: recipes, hashing/caching, atomic checkpoints, and objectives that really learn."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

import prh.zoo.vision as zv
from prh.data import load_dataset
from prh.errors import PrhError
from prh.models import load_model
from prh.zoo.objectives import augment, fold_patches, nt_xent, patch_mask, token_grid

TRAIN = {"source": "fashion-mnist", "split": "train", "n": 2000, "seed": 0}
EVAL = {"source": "fashion-mnist", "split": "test", "n": 500, "seed": 0}
SCENES_TRAIN = {"source": "scenes", "n": 600, "seed": 50}
SCENES_EVAL = {"source": "scenes", "n": 300, "seed": 51}
TINY = {
    "convnext": ("convnext_atto", {"dims": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}),
    "resnet": ("resnet10t", {"channels": [8, 16, 32, 64], "stem_width": 8}),
    "vit": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}),
    "mixer": ("mixer_s16_224", {"img_size": 32, "patch_size": 8, "embed_dim": 32, "num_blocks": 2}),
}


def tiny(family: str, objective: str, steps: int, **extra: object) -> dict:
    """A tiny recipe on 2,000 training and 500 held-out Fashion-MNIST images."""
    arch, kwargs = TINY[family]
    return {"arch": arch, "arch_kwargs": kwargs, "objective": objective, "steps": steps, "batch_size": 64,
            "lr": 3e-3, "dataset": TRAIN, "eval_dataset": EVAL, **extra}


def read_loss(path: Path) -> list[dict[str, str]]:
    """Rows of a loss.csv."""
    with open(path / zv.LOSS_FILE) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One trained checkpoint per objective (tiny budgets), keyed by objective."""
    root = tmp_path_factory.mktemp("zoo")
    recipes = {
        "supervised": tiny("convnext", "supervised", 40),
        "simclr": tiny("resnet", "simclr", 30),
        "mae": tiny("vit", "mae", 30),
        "denoise": tiny("mixer", "denoise", 30),
        "random": tiny("convnext", "random", 0),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread avoids OpenMP spin-waits on a shared 2-core machine
    try:
        return {k: zv.train_vision(r, root / k, name=f"tiny-{k}") for k, r in recipes.items()}
    finally:
        torch.set_num_threads(threads)


def test_supervised_accuracy_far_above_untrained(trained: dict[str, Path]) -> None:
    """Held-out accuracy, recomputed from the saved checkpoint, matches config and beats the untrained init."""
    path = trained["supervised"]
    cfg = json.loads((path / "config.json").read_text())
    model = load_model("sup", {"source": "zoo", "modality": "vision", "checkpoint": str(path)})
    ds = load_dataset("eval", EVAL)
    with torch.no_grad():
        pred = model.module(model.preprocess(ds.images)).argmax(1).numpy()
    acc = float((pred == ds.labels["class"]).mean())
    assert acc == pytest.approx(cfg["metric"]["trained"], abs=1e-9)
    assert cfg["metric"]["untrained"] < 0.2
    assert acc > 0.6 and acc > cfg["metric"]["untrained"] + 0.4


@pytest.mark.parametrize("objective", ["simclr", "mae", "denoise"])
def test_self_supervised_loss_drops(trained: dict[str, Path], objective: str) -> None:
    """Held-out objective loss after training is clearly below the untrained model's; training loss falls."""
    path = trained[objective]
    metric = json.loads((path / "config.json").read_text())["metric"]
    assert metric["name"] == "eval_loss"
    assert metric["trained"] < 0.9 * metric["untrained"]
    losses = [float(r["loss"]) for r in read_loss(path)[1:]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_checkpoint_files_and_loss_csv(trained: dict[str, Path]) -> None:
    """A checkpoint holds exactly model.safetensors, config.json, loss.csv and a manifest that checks out."""
    from prh.io import manifest_problems

    path = trained["supervised"]
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "loss.csv", "manifest.json", "model.safetensors"]
    assert manifest_problems(path) == []
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["num_classes"] == 10 and cfg["family"] == "convnext" and cfg["objective"] == "supervised"
    assert cfg["data_config"]["input_size"] == [3, 32, 32]
    assert cfg["recipe_hash"] == zv.recipe_hash(cfg["recipe"])
    rows = read_loss(path)
    assert list(rows[0]) == ["step", "loss", "lr", "eval_accuracy"]
    assert [int(r["step"]) for r in rows] == list(range(41))
    assert rows[0]["eval_accuracy"] and rows[-1]["eval_accuracy"] and not rows[5]["eval_accuracy"]
    assert not list(path.parent.glob(".*tmp-*"))


def test_ssl_checkpoint_has_no_head_or_extra_modules(trained: dict[str, Path]) -> None:
    """SSL checkpoints save only the backbone: same keys as a timm model built with num_classes=0."""
    for objective in ("simclr", "mae", "denoise", "random"):
        path = trained[objective]
        cfg = json.loads((path / "config.json").read_text())
        ref = zv.create_timm_model(cfg["arch"], cfg["arch_kwargs"], num_classes=0)
        assert cfg["num_classes"] == 0
        assert set(load_file(str(path / "model.safetensors"))) == set(ref.state_dict())


def test_timm_pretrained_overlay_loads_exactly_and_needs_num_classes(trained: dict[str, Path]) -> None:
    """timm.create_model(pretrained=True, overlay file + num_classes) reproduces the saved weights exactly."""
    path = trained["supervised"]
    cfg = json.loads((path / "config.json").read_text())
    weights = str(path / "model.safetensors")
    state = load_file(weights)
    direct = timm.create_model(cfg["arch"], num_classes=10, **cfg["arch_kwargs"])
    direct.load_state_dict(state, strict=True)
    via_timm = timm.create_model(cfg["arch"], pretrained=True, num_classes=10,
                                 pretrained_cfg_overlay=dict(file=weights, num_classes=10), **cfg["arch_kwargs"])
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(direct.eval()(x), via_timm.eval()(x))
        # the pitfall DESIGN.md warns about: without num_classes in the overlay the head is re-initialised
        torch.manual_seed(1)
        no_nc = timm.create_model(cfg["arch"], pretrained=True, num_classes=10,
                                  pretrained_cfg_overlay=dict(file=weights), **cfg["arch_kwargs"])
        assert not torch.allclose(direct(x), no_nc.eval()(x))


def test_random_recipe_is_seeded_init(tmp_path: Path) -> None:
    """A random recipe saves the seeded initialisation: same seed same weights, another seed other weights."""
    r0, r1 = tiny("vit", "random", 0), tiny("vit", "random", 0, seed=1)
    a, b, c = (load_file(str(zv.train_vision(r, tmp_path / d) / "model.safetensors")) for r, d in [(r0, "a"), (r0, "b"), (r1, "c")])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])
    assert zv.recipe_hash(r0) != zv.recipe_hash(r1)


def test_recipe_hash_tracks_recipe_data_and_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash ignores key order and explicit defaults but changes with any field, the data, or the code version."""
    r = tiny("resnet", "supervised", 10)
    h = zv.recipe_hash(r)
    assert zv.recipe_hash(dict(reversed(list(r.items())))) == h
    assert zv.recipe_hash({**r, "weight_decay": zv.RECIPE_DEFAULTS["weight_decay"]}) == h
    changed = [{**r, "steps": 11}, {**r, "lr": 1e-3}, {**r, "seed": 3}, {**r, "objective": "simclr"},
               {**r, "arch_kwargs": {**r["arch_kwargs"], "stem_width": 16}}, {**r, "dataset": {**TRAIN, "n": 1999}}]
    hashes = {zv.recipe_hash(c) for c in changed}
    assert h not in hashes and len(hashes) == len(changed)
    monkeypatch.setattr(zv, "ZOO_CODE_VERSION", zv.ZOO_CODE_VERSION + "-next")
    assert zv.recipe_hash(r) != h


def test_ensure_trained_caches_by_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ensure_trained trains once into cache_root/<hash>, then reuses it; a changed recipe trains anew."""
    r = tiny("vit", "random", 0)
    calls: list[Path] = []
    real = zv.train_vision
    monkeypatch.setattr(zv, "train_vision", lambda rec, out, name="zoo": calls.append(Path(out)) or real(rec, out, name))
    p1 = zv.ensure_trained(r, tmp_path)
    mtime = (p1 / "model.safetensors").stat().st_mtime_ns
    p2 = zv.ensure_trained(dict(r), tmp_path)
    assert p1 == p2 == tmp_path / zv.recipe_hash(r) and len(calls) == 1
    assert (p1 / "model.safetensors").stat().st_mtime_ns == mtime
    (p1 / "loss.csv").unlink()  # incomplete entry -> retrained
    zv.ensure_trained(r, tmp_path)
    p3 = zv.ensure_trained({**r, "seed": 5}, tmp_path)
    assert len(calls) == 3 and p3 != p1 and (p1 / "loss.csv").exists()


def test_failed_training_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash mid-training leaves neither the output directory nor a temp directory behind."""
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(zv, "_fit", boom)
    with pytest.raises(RuntimeError):
        zv.train_vision(tiny("vit", "supervised", 5), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"arch": "resnet999"}, "models.bad.arch: 'resnet999' is not a known timm architecture"),
        ({"objective": "dino"}, "models.bad.objective: 'dino'"),
        ({"steps": 5, "objective": "random"}, "models.bad.steps"),
        ({"steps": 0}, "models.bad.steps"),
        ({"batch_size": "64"}, "models.bad.batch_size"),
        ({"epochs": 3}, "models.bad.epochs: unknown recipe field"),
        ({"dataset": {"source": "digits"}}, "models.bad.dataset"),
        ({"schedule_steps": 1}, "models.bad.schedule_steps"),
        ({"tasks": ["class"]}, "models.bad.tasks"),
        ({"objective": "multitask"}, "models.bad.tasks"),
        ({"objective": "multitask", "tasks": ["class", "class"]}, "models.bad.tasks"),
        ({"objective": "multitask", "tasks": ["colour"]}, "models.bad.tasks: dataset has no label 'colour'"),
        ({"dataset": SCENES_TRAIN}, "models.bad.dataset: objective supervised"),
        ({"arch_kwargs": {"embed_dim": 32, "depth": 1, "num_heads": 2, "img_size": 32, "no_such_kwarg": 1}}, "models.bad.arch_kwargs"),
    ],
)
def test_recipe_mistakes_name_the_field(tmp_path: Path, change: dict, message: str) -> None:
    """User mistakes raise one-line PrhErrors naming models.<name>.<field>."""
    with pytest.raises(PrhError, match=message.replace(".", r"\.").replace("(", r"\(")):
        zv.train_vision({**tiny("vit", "supervised", 2), **change}, tmp_path / "x", name="bad")
    assert not (tmp_path / "x").exists()


def test_default_zoo_spans_families_objectives_budgets_widths() -> None:
    """The default zoo has >= 10 models over >= 3 families, >= 4 objectives, >= 2 budgets and >= 2 widths."""
    zoo = zv.DEFAULT_VISION_ZOO
    recipes = [zv.normalise_recipe(r, n) for n, r in zoo.items()]
    assert len(zoo) >= 10
    assert len({zv.family_of(r["arch"]) for r in recipes}) >= 3
    assert len({r["objective"] for r in recipes}) >= 4
    assert len({r["steps"] for r in recipes if r["steps"]}) >= 2
    assert len({r["width"] for r in recipes}) >= 2


def test_nt_xent_matches_reference() -> None:
    """NT-Xent equals an explicit per-anchor softmax over the 2B-1 other samples."""
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    total = 0.0
    for i in range(10):
        j = (i + 5) % 10
        logits = torch.tensor([float(z[i] @ z[k]) / 0.2 for k in range(10) if k != i])
        pos = [k for k in range(10) if k != i].index(j)
        total += float(-(logits[pos] - torch.logsumexp(logits, 0)))
    assert float(nt_xent(z1, z2, 0.2)) == pytest.approx(total / 10, rel=1e-5)


def test_patch_mask_fold_and_augment_shapes() -> None:
    """Masks cover the requested fraction of 4x4 patches; folding tokens inverts patchification; views differ."""
    g = torch.Generator().manual_seed(0)
    m = patch_mask(3, 32, g, ratio=0.5)
    assert m.shape == (3, 1, 32, 32) and torch.allclose(m.mean(dim=(1, 2, 3)), torch.full((3,), 0.5))
    img = torch.randn(2, 3, 32, 32)
    tokens = img.reshape(2, 3, 4, 8, 4, 8).permute(0, 2, 4, 1, 3, 5).reshape(2, 16, 3 * 64)
    assert torch.equal(fold_patches(tokens, 4, 8), img)
    a, b = augment(img, g), augment(img, g)
    assert a.shape == img.shape and not torch.allclose(a, b)
    feats = torch.randn(2, 17, 8)
    vit = type("V", (), {"num_prefix_tokens": 1})()
    assert torch.equal(token_grid(vit, feats), feats[:, 1:])
    assert token_grid(vit, torch.randn(2, 8, 4, 4)).shape == (2, 16, 8)


def test_retraining_in_another_process_gives_identical_checkpoint_bytes(tmp_path: Path) -> None:
    """The same recipe trained in two fresh processes writes byte-identical weights, so its store keys survive a retrain.

    (safetensors orders a metadata map by a per-process hash; a second metadata key made the bytes differ.)
    """
    import subprocess
    import sys

    from prh.io import file_sha256

    code = ("import sys, torch; torch.set_num_threads(1); from prh.zoo.vision import train_vision; "
            "train_vision({'arch': 'vit_tiny_patch16_224', 'objective': 'supervised', 'steps': 2, 'batch_size': 8, "
            "'arch_kwargs': {'img_size': 32, 'patch_size': 8, 'embed_dim': 16, 'depth': 1, 'num_heads': 2}, "
            "'dataset': {'source': 'fashion-mnist', 'split': 'test', 'n': 32, 'seed': 0}, "
            "'eval_dataset': {'source': 'fashion-mnist', 'split': 'test', 'n': 16, 'seed': 1}}, sys.argv[1])")  # fmt: skip
    for run in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / run)], check=True, timeout=300)
    assert file_sha256(tmp_path / "a" / "model.safetensors") == file_sha256(tmp_path / "b" / "model.safetensors")


def test_stopping_early_follows_the_longer_run(tmp_path: Path) -> None:
    """steps 4 of an 8-step schedule is the 8-step run's first 4 steps (same losses and learning rates, so the same
    weights at each step), not a 4-step run; step 0 of a schedule is the seeded initialisation."""
    def steps(path: Path) -> list[tuple[str, str, str]]:
        return [(r["step"], r["loss"], r["lr"]) for r in read_loss(path) if r["loss"]]  # the training rows

    full = steps(zv.train_vision(tiny("vit", "mae", 8, schedule_steps=8), tmp_path / "full"))
    part = steps(zv.train_vision(tiny("vit", "mae", 4, schedule_steps=8), tmp_path / "part"))
    short = steps(zv.train_vision(tiny("vit", "mae", 4), tmp_path / "short"))
    assert len(full) == 8 and part == full[:4]
    assert [r[2] for r in short] != [r[2] for r in part]
    assert zv.recipe_hash(tiny("vit", "mae", 4, schedule_steps=8)) != zv.recipe_hash(tiny("vit", "mae", 4))
    def weights(steps: int, schedule: int) -> dict[str, torch.Tensor]:
        out = zv.train_vision(tiny("vit", "supervised", steps, schedule_steps=schedule), tmp_path / f"s{steps}-{schedule}")
        return load_file(str(out / "model.safetensors"))

    init, other_init, trained = weights(0, 8), weights(0, 2), weights(2, 8)
    assert all(torch.equal(init[k], other_init[k]) for k in init)  # step 0: the seeded initialisation
    assert not torch.equal(init["blocks.0.attn.qkv.weight"], trained["blocks.0.attn.qkv.weight"])


def test_optional_recipe_fields_leave_other_hashes_alone() -> None:
    """Recipes that do not set schedule_steps / tasks normalise without them (their hashes predate those fields)."""
    r = zv.normalise_recipe(tiny("resnet", "supervised", 10))
    assert not zv.OPTIONAL_RECIPE_KEYS & set(r)


def test_multitask_learns_every_task_of_the_scenes(tmp_path: Path) -> None:
    """The multitask objective trains one head per scene label; held-out mean accuracy rises well above its
    untrained value and above chance of the tasks (colour 1/8, count 1/3), on scenes it never trained on."""
    recipe = {"arch": TINY["vit"][0], "arch_kwargs": TINY["vit"][1], "objective": "multitask", "steps": 60,
              "batch_size": 64, "lr": 3e-3, "dataset": SCENES_TRAIN, "eval_dataset": SCENES_EVAL,
              "tasks": ["colour", "count"]}  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = zv.train_vision(recipe, tmp_path / "mt", name="mt")
    finally:
        torch.set_num_threads(threads)
    metric = json.loads((out / "config.json").read_text())["metric"]
    chance = (1 / 8 + 1 / 3) / 2
    assert metric["name"] == "eval_accuracy" and metric["trained"] > max(metric["untrained"], chance) + 0.15
    state = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("heads") for k in state)  # the task heads are the objective's, not the backbone's
    assert zv.recipe_hash(recipe) != zv.recipe_hash({**recipe, "tasks": ["count", "colour"]})
