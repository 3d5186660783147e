"""Layer-wise features of timm vision models via the one ``forward_intermediates`` API."""

from __future__ import annotations

import inspect
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from prh.errors import PrhError


def has_cls_token(module: torch.nn.Module) -> bool:
    """True for token models whose block outputs carry a class token as their first prefix token (not XCiT, whose
    class token joins only in its class-attention head, after the blocks ``forward_intermediates`` returns)."""
    if getattr(module, "cls_token", None) is None or int(getattr(module, "num_prefix_tokens", 0)) <= 0:
        return False
    return "return_prefix_tokens" in inspect.signature(module.forward_intermediates).parameters


def resolve_pooling(module: torch.nn.Module, pooling: str, model_name: str) -> str:
    """``auto`` -> ``cls`` for ViTs with a class token, else ``mean``; reject ``cls`` without one."""
    if pooling == "auto":
        return "cls" if has_cls_token(module) else "mean"
    if pooling == "cls" and not has_cls_token(module):
        raise PrhError(f"model {model_name!r} has no class token; use extraction pooling 'mean' or 'auto'")
    if pooling not in ("cls", "mean"):
        raise PrhError(f"model {model_name!r}: vision pooling {pooling!r} is not one of auto, cls, mean")
    return pooling


def intermediate_kwargs(module: torch.nn.Module) -> dict:
    """Keyword arguments for ``forward_intermediates``: token models give NLC blocks plus their prefix tokens."""
    kwargs: dict = {"intermediates_only": True}
    params = inspect.signature(module.forward_intermediates).parameters
    if "return_prefix_tokens" in params and int(getattr(module, "num_prefix_tokens", 0)) > 0:
        kwargs.update(output_fmt="NLC", return_prefix_tokens=True)
    elif "return_prefix_tokens" in params:
        kwargs.update(output_fmt="NLC")
    return kwargs


def level_names(module: torch.nn.Module) -> list[str]:
    """Names of the modules whose outputs ``forward_intermediates`` returns (``blocks.0``, ``stages.1``, ...)."""
    return [str(f["module"]) for f in getattr(module, "feature_info", [])]


def pool_block(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor], pooling: str) -> torch.Tensor:
    """One block output -> (B, D) float32: class token, or mean over patch tokens (B, L, D; prefix tokens excluded) / positions (B, D, H, W)."""
    spatial, prefix = out if isinstance(out, tuple) else (out, None)
    if pooling == "cls":
        assert prefix is not None
        return prefix[:, 0].float()
    if spatial.ndim == 4:
        return spatial.float().mean(dim=(2, 3))
    if spatial.ndim == 3:
        return spatial.float().mean(dim=1)
    return spatial.float().reshape(spatial.shape[0], -1)


def select_levels(layers: str | list[int], n_levels: int, model_name: str) -> list[int]:
    """``all`` or a list of (possibly negative) level indices -> sorted unique non-negative indices."""
    if layers == "all":
        return list(range(n_levels))
    if not isinstance(layers, list) or not all(isinstance(i, int) for i in layers):
        raise PrhError(f"model {model_name!r}: extraction layers must be 'all' or a list of ints, got {layers!r}")
    bad = [i for i in layers if not -n_levels <= i < n_levels]
    if bad:
        raise PrhError(f"model {model_name!r}: layers {bad} out of range (it has {n_levels} layers)")
    return sorted({i % n_levels for i in layers})


def _module_dtype(module: torch.nn.Module) -> torch.dtype:
    """Dtype of the module's first floating parameter."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def extract_vision(
    model, images: np.ndarray, params: dict, device: str, batch_size: int, progress: bool, desc: str
) -> tuple[list[np.ndarray], list[str], dict]:
    """Pooled features after every block for uint8 images (n, H, W, 3) -> per layer (n, d_l) float32."""
    from prh.extract import autocast_context
    from prh.extract.collect import PooledRows

    module = model.module
    if model.preprocess is None or not hasattr(module, "forward_intermediates"):
        raise PrhError(f"model {model.name!r} is not a timm vision model with preprocess and forward_intermediates")
    pooling = resolve_pooling(module, params["pooling"], model.name)
    names = level_names(module)
    levels = select_levels(params["layers"], len(names), model.name)
    kwargs = {**intermediate_kwargs(module), "indices": levels}
    in_dtype = _module_dtype(module)
    n = int(images.shape[0])
    rows_out = PooledRows(n, device, label=f"model {model.name!r}")
    t0 = time.perf_counter()
    with torch.inference_mode(), autocast_context(device, params["dtype"]), tqdm(
        total=n, desc=desc, unit="img", disable=not progress
    ) as bar:
        for start in range(0, n, batch_size):
            x = model.preprocess(images[start : start + batch_size]).to(device=device, dtype=in_dtype)
            blocks = module.forward_intermediates(x, **kwargs)
            if len(blocks) != len(levels):
                raise PrhError(f"model {model.name!r}: forward_intermediates gave {len(blocks)} outputs for {len(levels)} layers")
            rows_out.add(slice(start, start + x.shape[0]), [pool_block(b, pooling) for b in blocks])
            bar.update(x.shape[0])
        outs = rows_out.result()
    attrs = {"pooling": pooling, "wall_s": time.perf_counter() - t0, "forward_kwargs": {k: v for k, v in kwargs.items() if k != "indices"}}
    return outs, [names[i] for i in levels], attrs
