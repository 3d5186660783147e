"""Layer-wise features (every hidden state) of Hugging Face language models.

Batches are padded on the RIGHT for every model, causal ones included: a real token then never sees a pad
(causal mask, attention mask) and keeps its unpadded position ids, so hidden states of real tokens equal an
unpadded run for any architecture without position-id bookkeeping (left padding is only needed to generate).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from prh.errors import PrhError

def apply_template(texts: list[str], template: str | None, model_name: str) -> list[str]:
    """Insert each text into ``template`` at ``{text}`` (no template: texts unchanged)."""
    if template is None:
        return list(texts)
    if "{text}" not in template:
        raise PrhError(f"model {model_name!r}: prompt_template {template!r} has no '{{text}}' placeholder")
    return [template.replace("{text}", t) for t in texts]


def tokenize(tokenizer, texts: list[str], max_tokens: int) -> list[list[int]]:
    """Token ids of each text (unpadded), truncated at ``max_tokens`` (special tokens included)."""
    enc = tokenizer(texts, truncation=True, max_length=max_tokens, return_attention_mask=False, return_token_type_ids=False)
    return [list(map(int, x)) for x in enc["input_ids"]]


def pad_right(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists -> input_ids (B, T) int64 and attention mask (B, T) int64."""
    t = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), t), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return input_ids, mask


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, D) hidden states -> (B, D) float32: mean over real tokens, or the last real token."""
    if pooling == "last":
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    m = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def length_order(ids: list[list[int]]) -> list[int]:
    """Indices of ``ids`` from longest to shortest (stable), so each batch pads to nearly its own length."""
    return sorted(range(len(ids)), key=lambda i: -len(ids[i]))


def select_states(layers: str | list[int], n_states: int, model_name: str) -> list[int]:
    """``all`` or a list of hidden-state indices (0 = embeddings, negatives allowed) -> sorted indices."""
    from prh.extract.vision import select_levels

    return select_levels(layers, n_states, model_name)


def extract_language(
    model, texts: list[str], params: dict, device: str, batch_size: int, progress: bool, desc: str
) -> tuple[list[np.ndarray], list[str], dict]:
    """Pooled hidden states (embeddings + every layer) for n texts -> per layer (n, d) float32, names, attrs."""
    from prh.extract import autocast_context

    if model.tokenizer is None:
        raise PrhError(f"model {model.name!r} has no tokenizer; language extraction needs one")
    base = getattr(model.module, "base_model", model.module)
    ids = tokenize(model.tokenizer, apply_template(texts, params["prompt_template"], model.name), int(params["max_tokens"]))
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    n = len(ids)
    outs: list[np.ndarray] = []
    levels: list[int] = []
    n_states = 0
    t0 = time.perf_counter()
    order = length_order(ids)  # batches of similar length: little padding; rows go back to dataset order
    with torch.inference_mode(), autocast_context(device, params["dtype"]), tqdm(
        total=n, desc=desc, unit="text", disable=not progress
    ) as bar:
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            input_ids, mask = pad_right([ids[i] for i in rows], pad_id)
            input_ids, mask = input_ids.to(device), mask.to(device)
            out = base(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
            states = getattr(out, "hidden_states", None)
            if not states:
                raise PrhError(f"model {model.name!r} returned no hidden states (its forward ignores output_hidden_states=True)")
            if not outs:
                n_states = len(states)
                levels = select_states(params["layers"], n_states, model.name)
                outs = [np.empty((n, states[i].shape[-1]), dtype=np.float32) for i in levels]
            widths = [int(states[i].shape[-1]) for i in levels] if len(states) == n_states else []
            if widths != [d.shape[1] for d in outs]:
                raise PrhError(
                    f"model {model.name!r} returned {len(states)} hidden states at batch {start // batch_size} "
                    f"but {n_states} at batch 0 (or their widths changed); its layer count must be fixed"
                )
            for dst, i in zip(outs, levels):
                dst[rows] = pool_hidden(states[i], mask, params["pooling"]).cpu().numpy()
            bar.update(len(input_ids))
    attrs = {"pooling": params["pooling"], "wall_s": time.perf_counter() - t0, "padding_side": "right",
             "n_tokens_total": int(sum(len(x) for x in ids))}
    return outs, [f"hidden_states.{i}" for i in levels], attrs
