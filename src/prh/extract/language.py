"""Layer-wise features (every hidden state) and bits-per-byte of Hugging Face language models.

Batches are padded on the RIGHT for every model, causal ones included: a real token then never sees a pad
(causal mask, attention mask) and keeps its unpadded position ids, so hidden states of real tokens equal an
unpadded run for any architecture without position-id bookkeeping (left padding is only needed to generate).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from prh.errors import PrhError

LOGIT_BUDGET_BYTES = 1 << 28  # float32 logits materialised at once by the chunked log-softmax (256 MiB)


@dataclass
class Tokenized:
    """Token ids of n texts (unpadded) and the UTF-8 bytes their scored tokens cover."""

    ids: list[list[int]]
    n_bytes: np.ndarray  # (n,) int64: bytes of the text span covered by tokens 1.. (the scored ones)


def apply_template(texts: list[str], template: str | None, model_name: str) -> list[str]:
    """Insert each text into ``template`` at ``{text}`` (no template: texts unchanged)."""
    if template is None:
        return list(texts)
    if "{text}" not in template:
        raise PrhError(f"model {model_name!r}: prompt_template {template!r} has no '{{text}}' placeholder")
    return [template.replace("{text}", t) for t in texts]


def scored_bytes(text: str, offsets: list[tuple[int, int]], special: list[int]) -> int:
    """UTF-8 bytes of the text covered by tokens 1..T-1 (token 0 is context only unless it is a special BOS)."""
    real = [(s, e) for (s, e), sp in zip(offsets, special) if not sp]
    if not real:
        return 0
    start = 0 if special[0] else offsets[0][1]
    end = max(e for _, e in real)
    return len(text[start:end].encode("utf-8")) if end > start else 0


def tokenize(tokenizer, texts: list[str], max_tokens: int) -> Tokenized:
    """Tokenize with truncation at ``max_tokens`` (special tokens included); bytes via offsets when available."""
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(
        texts, truncation=True, max_length=max_tokens, return_offsets_mapping=fast,
        return_special_tokens_mask=True, return_attention_mask=False, return_token_type_ids=False,
    )
    ids = [list(map(int, x)) for x in enc["input_ids"]]
    if fast:
        n_bytes = [scored_bytes(t, o, s) for t, o, s in zip(texts, enc["offset_mapping"], enc["special_tokens_mask"])]
    else:  # no offsets: bytes of the decoded text of the scored tokens
        n_bytes = [len(tokenizer.decode(x[1:], skip_special_tokens=True).encode("utf-8")) for x in ids]
    return Tokenized(ids=ids, n_bytes=np.asarray(n_bytes, dtype=np.int64))


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


def target_logprobs(
    lm_head: torch.nn.Module, rows: torch.Tensor, targets: torch.Tensor, softcap: float | None = None,
    budget_bytes: int = LOGIT_BUDGET_BYTES,
) -> torch.Tensor:  # fmt: skip
    """Natural-log p(target | row) for N (hidden row, target id) pairs: (N, D), (N,) -> (N,) at least float32.

    Logits are built a few rows at a time (at most ``budget_bytes`` of float32 logits), so a 262k vocabulary never
    materialises a batch's logits; only the rows passed in go through the head.
    """
    vocab = int(lm_head.weight.shape[0]) if hasattr(lm_head, "weight") else 1 << 17
    step = max(1, budget_bytes // (4 * vocab))
    dtype = torch.promote_types(rows.dtype, torch.float32)
    out = torch.empty(rows.shape[0], dtype=dtype, device=rows.device)
    for s in range(0, rows.shape[0], step):
        logits = lm_head(rows[s : s + step]).to(dtype)  # (step, V)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        out[s : s + step] = torch.log_softmax(logits, dim=-1).gather(1, targets[s : s + step, None])[:, 0]
    return out


def token_bits(
    lm_head: torch.nn.Module, last_hidden: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor,
    softcap: float | None = None, budget_bytes: int = LOGIT_BUDGET_BYTES,
) -> torch.Tensor:  # fmt: skip
    """Per-sample cross-entropy in bits (B,) float64 of tokens 1..T-1 given their prefix (real tokens only)."""
    scored = (mask[:, 1:] * mask[:, :-1]).bool()  # (B, T-1): target and its context are real
    rows = last_hidden[:, :-1][scored]  # (N, D) positions that predict a real token
    nll = -target_logprobs(lm_head, rows, input_ids[:, 1:][scored], softcap, budget_bytes)
    nats = torch.zeros(input_ids.shape[0], dtype=torch.float64, device=last_hidden.device)
    nats.index_add_(0, torch.nonzero(scored, as_tuple=True)[0], nll.double())
    return nats / math.log(2.0)


def length_order(ids: list[list[int]]) -> list[int]:
    """Indices of ``ids`` from longest to shortest (stable), so each batch pads to nearly its own length."""
    return sorted(range(len(ids)), key=lambda i: -len(ids[i]))


def select_states(layers: str | list[int], n_states: int, model_name: str) -> list[int]:
    """``all`` or a list of hidden-state indices (0 = embeddings, negatives allowed) -> sorted indices."""
    from prh.extract.vision import select_levels

    return select_levels(layers, n_states, model_name)


def extract_language(
    model, texts: list[str], params: dict, device: str, batch_size: int, progress: bool, desc: str
) -> tuple[list[np.ndarray], list[str], dict[str, np.ndarray], dict]:
    """Pooled hidden states (embeddings + every layer) for n texts -> per layer (n, d) float32, plus bpb side arrays."""
    from prh.extract import autocast_context

    if model.tokenizer is None:
        raise PrhError(f"model {model.name!r} has no tokenizer; language extraction needs one")
    module = model.module
    base = getattr(module, "base_model", module)
    lm_head = module.get_output_embeddings() if model.is_causal else None
    want_bpb = bool(params["bpb"]) and lm_head is not None
    softcap = getattr(getattr(module, "config", None), "final_logit_softcapping", None)
    full = apply_template(texts, params["prompt_template"], model.name)
    tok = tokenize(model.tokenizer, full, int(params["max_tokens"]))
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    n = len(full)
    outs: list[np.ndarray] = []
    levels: list[int] = []
    n_states = 0
    bits = np.zeros(n, dtype=np.float64)
    t0 = time.perf_counter()
    order = length_order(tok.ids)  # batches of similar length: little padding; rows go back to dataset order
    with torch.inference_mode(), autocast_context(device, params["dtype"]), tqdm(
        total=n, desc=desc, unit="text", disable=not progress
    ) as bar:
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            input_ids, mask = pad_right([tok.ids[i] for i in rows], pad_id)
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
            if want_bpb:
                bits[rows] = token_bits(lm_head, out.last_hidden_state, input_ids, mask, softcap).cpu().numpy()
            bar.update(len(input_ids))
    side: dict[str, np.ndarray] = {}
    if want_bpb:
        n_tokens = np.asarray([max(len(x) - 1, 0) for x in tok.ids], dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            bpb = np.where(tok.n_bytes > 0, bits / tok.n_bytes, np.nan)  # NaN for texts with no scored bytes
        side = {"bpb": bpb, "n_tokens": n_tokens, "n_bytes": tok.n_bytes, "bits": bits}
    attrs = {"pooling": params["pooling"], "wall_s": time.perf_counter() - t0, "padding_side": "right",
             "n_tokens_total": int(sum(len(x) for x in tok.ids))}
    return outs, [f"hidden_states.{i}" for i in levels], side, attrs
