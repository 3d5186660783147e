"""Layer-wise features (every hidden state) of Hugging Face language models.

Batches are padded on the RIGHT for every model, causal ones included: a real token then never sees a pad
(causal mask, attention mask) and keeps its unpadded position ids, so hidden states of real tokens equal an
unpadded run for any architecture without position-id bookkeeping (left padding is only needed to generate).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Iterator, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor

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
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    real = np.arange(int(lengths.max()))[None, :] < lengths[:, None]
    input_ids = np.full(real.shape, pad_id, dtype=np.int64)
    input_ids[real] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(input_ids), torch.from_numpy(real.astype(np.int64))


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, D) hidden states -> (B, D) float32: mean over real tokens, or the last real token."""
    if pooling == "last":
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    m = mask.to(torch.float32).unsqueeze(-1)
    return (hidden.float() * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def length_order(items: Sequence[Sized]) -> list[int]:
    """Indices of ``items`` (token lists or texts) from longest to shortest (stable), so each batch pads little."""
    return sorted(range(len(items)), key=lambda i: -len(items[i]))


def length_batches(texts: list[str], batch_size: int) -> list[list[int]]:
    """Dataset indices in batches of similar character length, longest first (stable): each batch pads little, and
    no batch needs the whole dataset tokenized first."""
    order = length_order(texts)
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def tokenized_batches(
    tokenizer, texts: list[str], batches: list[list[int]], max_tokens: int, pad_id: int, pin: bool, ahead: int = 2
) -> Iterator[tuple[list[int], int, torch.Tensor, torch.Tensor]]:
    """(rows, real tokens, input_ids, mask) of each batch, tokenized and padded in one background thread ``ahead``
    batches in advance, so the device's forward pass does not wait for the tokenizer (it releases the GIL)."""

    def encode(rows: list[int]) -> tuple[int, torch.Tensor, torch.Tensor]:
        ids = tokenize(tokenizer, [texts[i] for i in rows], max_tokens)
        input_ids, mask = pad_right(ids, pad_id)
        if pin:
            input_ids, mask = input_ids.pin_memory(), mask.pin_memory()
        return sum(map(len, ids)), input_ids, mask

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prh-tokenize") as pool:
        queue = deque(pool.submit(encode, rows) for rows in batches[:ahead])
        for k, rows in enumerate(batches):
            n_tokens, input_ids, mask = queue.popleft().result()
            if k + ahead < len(batches):
                queue.append(pool.submit(encode, batches[k + ahead]))
            yield rows, n_tokens, input_ids, mask


def select_states(layers: str | list[int], n_states: int, model_name: str) -> list[int]:
    """``all`` or a list of hidden-state indices (0 = embeddings, negatives allowed) -> sorted indices."""
    from prh.extract.vision import select_levels

    return select_levels(layers, n_states, model_name)


def extract_language(
    model, texts: list[str], params: dict, device: str, batch_size: int, progress: bool, desc: str
) -> tuple[list[np.ndarray], list[str], dict]:
    """Pooled hidden states (embeddings + every layer) for n texts -> per layer (n, d) float32, names, attrs."""
    from prh.extract import autocast_context
    from prh.extract.collect import PooledRows

    if model.tokenizer is None:
        raise PrhError(f"model {model.name!r} has no tokenizer; language extraction needs one")
    base = getattr(model.module, "base_model", model.module)
    texts = apply_template(texts, params["prompt_template"], model.name)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    n = len(texts)
    rows_out = PooledRows(n, device, label=f"model {model.name!r}")
    levels: list[int] = []
    n_states = n_tokens = 0
    t0 = time.perf_counter()
    batches = length_batches(texts, batch_size)  # rows go back to dataset order
    pin = torch.device(device).type == "cuda"
    with torch.inference_mode(), autocast_context(device, params["dtype"]), tqdm(
        total=n, desc=desc, unit="text", disable=not progress
    ) as bar:
        encoded = tokenized_batches(model.tokenizer, texts, batches, int(params["max_tokens"]), pad_id, pin)
        for b, (rows, real, input_ids, mask) in enumerate(encoded):
            input_ids, mask = input_ids.to(device, non_blocking=pin), mask.to(device, non_blocking=pin)
            out = base(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
            states = getattr(out, "hidden_states", None)
            if not states:
                raise PrhError(f"model {model.name!r} returned no hidden states (its forward ignores output_hidden_states=True)")
            if not n_states:
                n_states = len(states)
                levels = select_states(params["layers"], n_states, model.name)
            if len(states) != n_states:
                raise PrhError(
                    f"model {model.name!r} returned {len(states)} hidden states at batch {b} "
                    f"but {n_states} at batch 0; its layer count must be fixed"
                )
            rows_out.add(rows, [pool_hidden(states[i], mask, params["pooling"]) for i in levels])
            n_tokens += real
            bar.update(len(rows))
        outs = rows_out.result()
    attrs = {"pooling": params["pooling"], "wall_s": time.perf_counter() - t0, "padding_side": "right",
             "n_tokens_total": n_tokens}
    return outs, [f"hidden_states.{i}" for i in levels], attrs
