"""Model loaders: one `load_model(name, spec)` for zoo checkpoints, packaged language models and hub ids."""

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
