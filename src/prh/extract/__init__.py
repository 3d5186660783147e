"""Layer-wise feature extraction: one ``extract(model, dataset, params)`` path for every vision and language model.

Parameters (``normalize_params`` fills defaults; all of them enter the store key):
  pooling      vision: ``auto`` (class token for ViTs that have one, else mean) | ``cls`` | ``mean``;
               language: ``mean`` (over real tokens; ``auto`` means ``mean``) | ``last`` (last real token)
  layers       ``all`` or a list of layer indices (language: 0 = embedding output)
  dtype        compute dtype ``float32`` (default) | ``bfloat16`` | ``float16`` (autocast); features are float32
  store_dtype  ``float32`` (default) | ``float16`` on disk
  max_tokens   language: truncation length in tokens, special tokens included (default 512)
  prompt_template  language: ``None`` or a string with ``{text}``
``batch_size``, ``device`` and ``progress`` may appear in params too; they never enter the key.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from prh.config import DTYPE_BYTES, model_modality
from prh.errors import PrhError

VISION_DEFAULTS: dict[str, Any] = {"pooling": "auto", "layers": "all", "dtype": "float32", "store_dtype": "float32"}
LANGUAGE_DEFAULTS: dict[str, Any] = {
    "pooling": "mean", "layers": "all", "dtype": "float32", "store_dtype": "float32",
    "max_tokens": 512, "prompt_template": None,
}
_NON_KEY = ("batch_size", "device", "progress")
_RETIRED = ("bpb",)  # per-caption bits-per-byte, no longer computed (nothing read it): accepted and ignored


@dataclass
class Features:
    """Pooled per-layer features of one model on one dataset."""

    layers: list[np.ndarray]  # per layer (n, d_l) float32, in block order
    layer_names: list[str]
    side: dict[str, np.ndarray] = field(default_factory=dict)  # per-sample (n, ...) arrays stored beside the layers
    attrs: dict = field(default_factory=dict)  # pooling, n_params, wall_s, ...

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.layers[0].shape[0]) if self.layers else 0


def dataset_modality(modality: str) -> str:
    """Which part of a dataset a model reads: vision -> image, language -> text."""
    return {"vision": "image", "language": "text"}[modality]


def normalize_params(params: dict, modality: str, where: str = "extraction") -> dict:
    """Fill defaults for ``vision`` or ``language`` params, drop non-key fields, reject unknown ones."""
    defaults = VISION_DEFAULTS if modality == "vision" else LANGUAGE_DEFAULTS
    optional = {"input_size"} if modality == "vision" else set()  # in the key only when given (keys stay stable)
    unknown = sorted(set(params) - set(defaults) - set(_NON_KEY) - set(_RETIRED) - optional)
    if unknown:
        raise PrhError(f"{where}: unknown {modality} extraction parameter(s) {unknown} (known: {sorted(defaults)})")
    out = {**defaults, **{k: v for k, v in params.items() if k not in _NON_KEY + _RETIRED}}
    if modality == "language" and out["pooling"] == "auto":
        out["pooling"] = "mean"
    allowed = ("auto", "cls", "mean") if modality == "vision" else ("mean", "last")
    if out["pooling"] not in allowed:
        raise PrhError(f"{where}: pooling {out['pooling']!r} is not one of {allowed} for {modality} models")
    for name in ("dtype", "store_dtype"):
        if out[name] not in (DTYPE_BYTES if name == "dtype" else ("float32", "float16")):
            raise PrhError(f"{where}: {name} {out[name]!r} is not supported")
    if modality == "language" and (not isinstance(out["max_tokens"], int) or out["max_tokens"] < 2):
        raise PrhError(f"{where}: max_tokens {out['max_tokens']!r} must be an int >= 2")
    if isinstance(out["layers"], tuple):
        out["layers"] = list(out["layers"])
    return out


def autocast_context(device: str, dtype: str) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (no-op for float32)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    from prh.models import torch_dtype

    return torch.autocast(device_type=torch.device(device).type, dtype=torch_dtype(dtype))


def _place(model, device: str) -> None:
    """Move the model to ``device`` if it lives elsewhere, and put it in eval mode."""
    if getattr(model.module, "hf_device_map", None):  # placed over several devices by accelerate: leave it there
        model.module.eval()
        return
    dev = torch.device(device)
    p = next(model.module.parameters(), None)
    if p is not None and p.device != dev and not (dev.type == "cuda" and dev.index is None and p.device.type == "cuda"):
        model.module.to(dev)
    model.module.eval()


def check_inputs(model, dataset) -> None:
    """Refuse inputs a model cannot read: vision needs uint8 RGB (n, H, W, 3) images, language non-empty texts."""
    if model.modality == "vision":
        images = dataset.images
        if images is None or len(images) == 0:
            raise PrhError(f"dataset {dataset.name!r} has no images for vision model {model.name!r}")
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise PrhError(
                f"dataset {dataset.name!r}: images are {images.dtype} with shape {images.shape}, but vision model "
                f"{model.name!r} needs uint8 RGB (n, H, W, 3) (convert grayscale/RGBA/float images to uint8 RGB)"
            )
        return
    if not dataset.texts:
        raise PrhError(f"dataset {dataset.name!r} has no texts for language model {model.name!r}")
    empty = [i for i, t in enumerate(dataset.texts) if not isinstance(t, str) or not t.strip()]
    if empty:
        raise PrhError(
            f"dataset {dataset.name!r}: {len(empty)} empty text(s) (first at index {empty[0]}); language model "
            f"{model.name!r} needs a non-empty caption for every sample"
        )


def extract(model, dataset, params: dict, device: str = "cpu", batch_size: int = 64, progress: bool = True) -> Features:
    """Pooled features of every layer of ``model`` on ``dataset``: per layer (n, d_l) float32."""
    p = normalize_params(params, model.modality, where=f"model {model.name!r}")
    if batch_size < 1:
        raise PrhError(f"batch_size {batch_size} must be >= 1")
    desc = f"extract {model.name} on {dataset.name}"
    check_inputs(model, dataset)
    _place(model, device)
    t0 = time.perf_counter()
    if model.modality == "vision":
        from prh.extract.vision import extract_vision

        layers, names, attrs = extract_vision(model, dataset.images, p, device, batch_size, progress, desc)
    else:
        from prh.extract.language import extract_language

        layers, names, attrs = extract_language(model, list(dataset.texts), p, device, batch_size, progress, desc)
    attrs.update(
        model=model.name, dataset=dataset.name, family=model.family, n_params=int(model.n_params), n=dataset.n,
        dtype=p["dtype"], device=str(device), batch_size=int(batch_size), total_wall_s=time.perf_counter() - t0,
    )
    return Features(layers=layers, layer_names=names, attrs=attrs)


def extract_to_store(
    store, model_name: str, model_spec: dict, dataset, params: dict, *, weights_digest: str,
    load_model_fn: Callable[..., Any], device: str = "cpu", batch_size: int = 64, progress: bool = True,
) -> tuple[str, bool]:
    """Extract ``model_name`` on ``dataset`` into ``store`` unless its key is already committed -> (key, created)."""
    from prh.runtime import phase
    from prh.store import make_request

    modality = model_modality(model_name, model_spec)
    p = normalize_params(params, modality, where=f"model {model_name!r}")
    ds_modality = dataset_modality(modality)
    with phase("dataset digest"):
        request = make_request(model_name, weights_digest, dataset.name, ds_modality, dataset.digest(ds_modality), p)
    key = store.key(request)
    if store.has(key):
        with phase("store verify"):
            problems = store.verify([key])
        if not problems:
            return key, False
        # A corrupt entry is never served: drop it (atomically, out of sight) and recompute it below.
        print(f"prh: store entry {problems[0]}; removing it and recomputing model {model_name!r} on dataset {dataset.name!r}",
              file=sys.stderr, flush=True)  # fmt: skip
        with contextlib.suppress(PrhError, OSError):  # another job may have removed it already
            store.rm(key)
    with phase("model build"):
        model = load_model_fn(model_name, model_spec, device=device, dtype=p["dtype"])
    if model.digest != weights_digest:
        raise PrhError(f"model {model_name!r}: loaded weights digest {model.digest[:16]} != expected {weights_digest[:16]} (weights changed; rerun)")
    if model.modality != modality:
        raise PrhError(f"model {model_name!r} loaded as {model.modality} but its spec implies {modality}; set modality in its spec")
    with phase("work"):
        features = extract(model, dataset, p, device=device, batch_size=batch_size, progress=progress)
    with phase("store commit"):
        with store.put(key, request, store_dtype=p["store_dtype"]) as writer:
            writer.write(features)
    return key, True
