"""Language scores: bits-per-byte on held-out text and downstream multiple-choice accuracy.

Scoring convention: each text is tokenised without special tokens and the tokenizer's BOS token (else its EOS
token, as a document separator) is prepended, so *every* text token is predicted and scored; the bytes are the
UTF-8 bytes of the scored text. A tokenizer with neither leaves the first token unscored and its bytes uncounted.
Log-probabilities come from the base model's last hidden state pushed through the LM head a few positions at a
time, so a 262k vocabulary never materialises logits for the whole batch.

Multiple choice follows lm-evaluation-harness: each continuation (with a leading space) is scored by its summed
log-likelihood given the context; ``acc`` takes the argmax of that, ``acc_norm`` (Hellaswag) of it divided by the
continuation's UTF-8 byte length. Each task reports both and names one primary (``TASK_NORMALIZE``). Where the
model takes a custom attention mask, an item is scored in one packed sequence (its context once, each continuation
masked to the context and itself, at its unpacked positions): the same probabilities for a fraction of the tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from prh.errors import PrhError
from prh.extract.language import length_order, pad_right
from prh.models import LoadedModel

LOGIT_BUDGET = 1 << 24  # float32 logits per head call (64 MB); only scored positions reach the head
NAMES = ["Tom", "Anna", "Ravi", "Mia", "Omar", "Lena", "Jin", "Sara", "Paul", "Zoe"]
OBJECTS = ["apples", "books", "marbles", "pencils", "stamps", "cookies", "shells", "cards"]


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question: a context, candidate continuations, and the index of the right one."""

    context: str
    choices: list[str]
    answer: int


# ---------------------------------------------------------------------------------------- token scoring
def target_logprobs(
    lm_head: torch.nn.Module, rows: torch.Tensor, targets: torch.Tensor, softcap: float | None, budget_bytes: int
) -> torch.Tensor:
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


def _require_causal(model: LoadedModel) -> None:
    """Raise unless the model can predict tokens."""
    if not model.is_causal or model.tokenizer is None:
        raise PrhError(f"models.{model.name}: not a causal language model with a tokenizer; bits-per-byte needs an LM head")


def _base_and_head(model: LoadedModel) -> tuple[torch.nn.Module, torch.nn.Module, float | None]:
    """(base transformer returning hidden states, LM head, final logit soft-cap or None)."""
    module = model.module
    head = module.get_output_embeddings()
    base = getattr(module, getattr(module, "base_model_prefix", "model"), None)
    if head is None or base is None or base is module:
        raise PrhError(f"models.{model.name}: {type(module).__name__} has no separable base model and LM head")
    config = module.config.get_text_config() if hasattr(module.config, "get_text_config") else module.config
    return base, head, getattr(config, "final_logit_softcapping", None)


def _prefix_id(tokenizer: Any) -> int | None:
    """Token prepended to every text: BOS, else EOS, else None."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return None


def _device_of(module: torch.nn.Module) -> torch.device:
    """Device of the module's first parameter (input embeddings for accelerate-placed models)."""
    emb = module.get_input_embeddings() if hasattr(module, "get_input_embeddings") else None
    return (emb.weight if emb is not None else next(module.parameters())).device


@torch.no_grad()
def token_logprobs(
    model: LoadedModel, sequences: list[list[int]], *, first: list[int] | None = None, batch_size: int = 8
) -> list[np.ndarray]:
    """Per token-id sequence of length T, (T-1,) float64 log2 p(t_i | t_<i) for i = 1..T-1.

    Only targets i >= ``first[j]`` (default 1: all) go through the LM head; earlier entries are NaN, so a caller
    that sums an unscored position gets NaN rather than a silently wrong total.
    """
    _require_causal(model)
    base, head, softcap = _base_and_head(model)
    device = _device_of(model.module)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    first = first if first is not None else [1] * len(sequences)
    order = length_order(sequences)
    budget = 4 * LOGIT_BUDGET  # bytes of float32 logits per head call
    result: list[np.ndarray] = [np.full(max(0, len(x) - 1), np.nan) for x in sequences]
    for b in tqdm(range(0, len(order), batch_size), desc=f"score {model.name}", unit="batch", mininterval=2):
        idx = [i for i in order[b : b + batch_size] if len(sequences[i]) > 1]
        if not idx:
            continue
        ids, mask = pad_right([sequences[i] for i in idx], pad)  # right padding: real tokens never see pads
        want = torch.zeros((len(idx), ids.shape[1] - 1), dtype=torch.bool)
        for row, i in enumerate(idx):
            want[row, max(1, first[i]) - 1 : len(sequences[i]) - 1] = True
        ids, mask, want = ids.to(device), mask.to(device), want.to(device)
        hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state
        lp = torch.full(want.shape, float("nan"), dtype=torch.float64, device=device)
        lp[want] = target_logprobs(head, hidden[:, :-1][want], ids[:, 1:][want], softcap, budget).double() / math.log(2.0)
        lp = lp.cpu().numpy()
        for row, i in enumerate(idx):
            result[i] = lp[row, : len(sequences[i]) - 1]
    return result


# --------------------------------------------------------------------------------------- bits per byte
def _encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a text without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """Sliding windows (begin, end, first scored target index) covering targets 1..n-1 exactly once."""
    out, scored_to = [], 1
    for begin in range(0, max(1, n - 1), stride):
        end = min(begin + window, n)
        if end > scored_to:
            out.append((begin, end, scored_to))
            scored_to = end
        if end == n:
            break
    return out


def corpus_bits_per_byte(model: LoadedModel, text: str, *, window: int = 512, stride: int = 256, batch_size: int = 8) -> float:
    """Bits per byte of one long text: sliding windows (each target scored once, with >= window-stride context)."""
    _require_causal(model)
    if not 0 < stride <= window - 1:
        raise PrhError(f"language.stride: {stride} must be in 1..window-1 (window={window})")
    toks = _encode(model.tokenizer, text)
    prefix = _prefix_id(model.tokenizer)
    ids = ([prefix] if prefix is not None else []) + toks
    wins = _windows(len(ids), window, stride)
    lps = token_logprobs(model, [ids[b:e] for b, e, _ in wins], first=[f - b for b, _, f in wins], batch_size=batch_size)
    bits = sum(-lp[first - begin - 1 :].sum() for (begin, _, first), lp in zip(wins, lps))
    n_bytes = len(text.encode("utf-8"))
    return float(bits / n_bytes) if n_bytes else float("nan")


# -------------------------------------------------------------------------------------- multiple choice
def _continuation(choice: str) -> str:
    """The continuation text scored after the context (a leading space unless it has one)."""
    return choice if choice[:1].isspace() else " " + choice


def _choice_sequence(tokenizer: Any, prefix: int | None, context: str, cont: str) -> tuple[list[int], int]:
    """(token ids of prefix+context+continuation, number of continuation tokens), split as lm-eval does."""
    ctx = list(tokenizer(context, add_special_tokens=False)["input_ids"])
    whole = list(tokenizer(context + cont, add_special_tokens=False)["input_ids"])
    cont_ids = whole[len(ctx) :] if whole[: len(ctx)] == ctx else list(tokenizer(cont, add_special_tokens=False)["input_ids"])
    return ([prefix] if prefix is not None else []) + ctx + cont_ids, len(cont_ids)


def choice_loglik(model: LoadedModel, items: list[MCItem], *, batch_size: int = 8) -> list[np.ndarray]:
    """Per item, (n_choices,) summed log2-likelihood of each continuation given the context.

    Models that take a custom attention mask (:func:`packs_choices`) score each item in one packed sequence (the
    context once, then every continuation attending to the context and to itself: :func:`packed_choice_loglik`);
    others score one sequence per choice. Both compute the same conditional probabilities.
    """
    _require_causal(model)
    prefix = _prefix_id(model.tokenizer)
    seqs, n_cont = [], []
    for item in items:
        for choice in item.choices:
            ids, k = _choice_sequence(model.tokenizer, prefix, item.context, _continuation(choice))
            seqs.append(ids)
            n_cont.append(k)
    bounds = np.cumsum([0] + [len(item.choices) for item in items])
    if packs_choices(model) and all(len(x) > k > 0 for x, k in zip(seqs, n_cont)):
        packs = [_packed_item(seqs[a:b], n_cont[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        if packs and max(len(p[0]) for p in packs) <= _mask_span(model):
            return packed_choice_loglik(model, packs, batch_size=batch_size)
    lps = token_logprobs(model, seqs, first=[len(x) - k for x, k in zip(seqs, n_cont)], batch_size=batch_size)
    flat = np.array([lp[len(lp) - k :].sum() if k else -np.inf for lp, k in zip(lps, n_cont)])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def packs_choices(model: LoadedModel) -> bool:
    """Whether the model's base takes position ids and a custom 4D additive attention mask (transformers' sdpa and
    eager attention do; flash attention and hand-written modules may not)."""
    import inspect

    base, _, _ = _base_and_head(model)
    impl = getattr(getattr(base, "config", None), "_attn_implementation", None)
    return impl in ("sdpa", "eager") and "position_ids" in inspect.signature(base.forward).parameters


def _mask_span(model: LoadedModel) -> float:
    """Longest packed sequence whose custom mask means what it says: a sliding-window model applies the given
    mask in its windowed layers too, so a pack may not outgrow the window."""
    base, _, _ = _base_and_head(model)
    window = getattr(getattr(base, "config", None), "sliding_window", None)
    return float(window) if window else math.inf


Pack = tuple[list[int], list[int], list[int]]  # (token ids, position ids, group: -1 context, j continuation j)


def _packed_item(seqs: list[list[int]], n_cont: list[int]) -> Pack:
    """One item's choice sequences (shared prefix + context, then continuation j) -> one packed sequence."""
    c = len(seqs[0]) - n_cont[0]
    ids, pos, group = list(seqs[0][:c]), list(range(c)), [-1] * c
    for j, (x, k) in enumerate(zip(seqs, n_cont)):
        if x[: len(x) - k] != ids[:c]:
            raise PrhError("multiple choice: the choices of one item tokenise their shared context differently")
        ids += x[len(x) - k :]
        pos += range(c, c + k)
        group += [j] * k
    return ids, pos, group


@torch.no_grad()
def packed_choice_loglik(model: LoadedModel, packs: list[Pack], *, batch_size: int = 8) -> list[np.ndarray]:
    """Per packed item, (n_choices,) summed log2 p(continuation j | context): token q attends to key t <= q when t
    is context or in q's own continuation, with q's unpacked position id, so each continuation sees exactly the
    tokens it would see alone; continuation j's first token is predicted from the last context token."""
    base, head, softcap = _base_and_head(model)
    device = _device_of(model.module)
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    dtype = next(base.parameters()).dtype
    out = [np.zeros(max(g) + 1) for _, _, g in packs]
    order = length_order([p[0] for p in packs])
    for b in tqdm(range(0, len(order), batch_size), desc=f"score {model.name}", unit="batch", mininterval=2):
        idx = order[b : b + batch_size]
        width = len(packs[idx[0]][0])
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        pos = torch.zeros((len(idx), width), dtype=torch.long)
        group = torch.full((len(idx), width), -2, dtype=torch.long)  # -2: padding
        for row, i in enumerate(idx):
            t, p, g = packs[i]
            ids[row, : len(t)], pos[row, : len(t)], group[row, : len(t)] = torch.tensor(t), torch.tensor(p), torch.tensor(g)
        q, k = group[:, :, None], group[:, None, :]
        causal, own = torch.ones(width, width, dtype=torch.bool).tril(), torch.eye(width, dtype=torch.bool)
        allowed = causal & ((q != -2) & ((k == -1) | (k == q)) | own)  # a padding row attends to itself alone
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
        hidden = base(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device)).last_hidden_state
        rows, cols, targets, owner = [], [], [], []
        for row, i in enumerate(idx):
            t, _, g = packs[i]
            c = g.count(-1)
            for s in range(c, len(t)):
                rows.append(row)
                cols.append(c - 1 if g[s - 1] != g[s] else s - 1)  # a continuation's first token: the last context token
                targets.append(t[s])
                owner.append((i, g[s]))
        lp = target_logprobs(head, hidden[rows, cols], torch.tensor(targets, device=device), softcap, 4 * LOGIT_BUDGET)
        for (i, j), v in zip(owner, (lp.double() / math.log(2.0)).cpu().numpy()):
            out[i][j] += v
    return out


def _correct(items: list[MCItem], lls: list[np.ndarray], normalize: bool) -> np.ndarray:
    """(n,) bool: argmax of each item's log-likelihoods (per continuation byte when ``normalize``) is its answer."""
    correct = []
    for item, ll in zip(items, lls):
        if normalize:
            ll = ll / np.array([len(_continuation(c).encode("utf-8")) for c in item.choices])
        correct.append(int(np.argmax(ll)) == item.answer)
    return np.array(correct, dtype=bool)


def mc_scores(model: LoadedModel, task: str, items: list[MCItem], *, batch_size: int = 8) -> dict[str, float]:
    """``acc_<task>`` (the task's primary: ``TASK_NORMALIZE``) plus ``<task>_acc`` and ``<task>_acc_norm``, one scoring pass."""
    if not items:
        raise PrhError(f"models.{model.name}: multiple-choice task {task!r} has no items")
    lls = choice_loglik(model, items, batch_size=batch_size)
    raw, norm = float(_correct(items, lls, False).mean()), float(_correct(items, lls, True).mean())
    return {f"acc_{task}": norm if TASK_NORMALIZE.get(task, True) else raw, f"{task}_acc": raw, f"{task}_acc_norm": norm}


# -------------------------------------------------------------------------------------- task generators
def _place(rng: np.random.Generator, right: str, wrong: list[str]) -> tuple[list[str], int]:
    """Shuffle the right answer among the wrong ones; return (choices, index of the right one)."""
    choices = [right, *wrong]
    perm = rng.permutation(len(choices))
    return [choices[i] for i in perm], int(np.where(perm == 0)[0][0])


def gloss_task(n: int, seed: int = 0, *, split: str = "heldout", n_choices: int = 4) -> list[MCItem]:
    """n items "The word '<w>' means" -> its WordNet definition among n_choices-1 definitions of other words."""
    from prh.data.text import wordnet_glosses

    seen: set[str] = set()
    pool: list[tuple[str, str]] = []
    for word, definition in wordnet_glosses(split):
        if word not in seen and 10 <= len(definition) <= 120:
            seen.add(word)
            pool.append((word, definition))
    if n > len(pool):
        raise PrhError(f"language.tasks.gloss.n: {n} exceeds the {len(pool)} usable {split} glosses")
    rng = np.random.default_rng(seed)
    items = []
    for i in rng.choice(len(pool), size=n, replace=False):
        word, definition = pool[i]
        others = [pool[j][1] for j in rng.choice(len(pool), size=3 * n_choices, replace=False) if j != i]
        wrong = list(dict.fromkeys(d for d in others if d != definition))[: n_choices - 1]
        choices, answer = _place(rng, definition, wrong)
        items.append(MCItem(context=f"The word '{word}' means", choices=choices, answer=answer))
    return items


def _arith_problem(rng: np.random.Generator) -> tuple[str, int, list[int]]:
    """(question, answer, plausible wrong answers) for one templated word problem."""
    name, obj = NAMES[rng.integers(len(NAMES))], OBJECTS[rng.integers(len(OBJECTS))]
    kind = int(rng.integers(4))
    a, b = int(rng.integers(2, 13)), int(rng.integers(2, 10))
    if kind == 0:
        q, ans = f"{name} has {a} {obj} and buys {b} more. How many {obj} does {name} have?", a + b
    elif kind == 1:
        a = a + b
        q, ans = f"{name} has {a} {obj} and gives {b} to a friend. How many {obj} does {name} have left?", a - b
    elif kind == 2:
        q, ans = f"{name} buys {a} bags with {b} {obj} in each. How many {obj} does {name} have?", a * b
    else:
        a = a * b
        q, ans = f"{name} shares {a} {obj} equally among {b} friends. How many {obj} does each friend get?", a // b
    return q + " Answer:", ans, [a + b, abs(a - b), a * b, a, b, ans + 1, ans - 1, ans + 2, ans + 10]


def arithmetic_task(n: int, seed: int = 0, *, n_choices: int = 4) -> list[MCItem]:
    """n templated one-step word problems (GSM8K analogue); choices are the answer and n_choices-1 distractors."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        question, ans, pool = _arith_problem(rng)
        wrong = [v for v in dict.fromkeys(pool) if v != ans and v >= 0]
        picked = [str(wrong[j]) for j in rng.choice(len(wrong), size=n_choices - 1, replace=False)]
        choices, answer = _place(rng, str(ans), picked)
        items.append(MCItem(context=question, choices=choices, answer=answer))
    return items


TASKS = {"gloss": gloss_task, "arith": arithmetic_task}
# Primary accuracy per task, as lm-evaluation-harness reports it: per-byte normalised (acc_norm) for free-text
# choices of different lengths, raw log-likelihood (acc) for short numeric answers, where dividing by 1-3 bytes
# favours long wrong numbers (though for SmolLM2 both acc and acc_norm sit below chance on arith: 0.15).
TASK_NORMALIZE = {"gloss": True, "arith": False}


def make_tasks(spec: dict[str, dict]) -> dict[str, list[MCItem]]:
    """Task name -> items from a config mapping like {"gloss": {"n": 100, "seed": 0}, "arith": {...}}."""
    out = {}
    for task, params in spec.items():
        if task not in TASKS:
            raise PrhError(f"language.tasks.{task}: unknown task (choose from {sorted(TASKS)})")
        out[task] = TASKS[task](int(params.get("n", 100)), int(params.get("seed", 0)))
    return out


# ---------------------------------------------------------------------------------------------- tables
def language_scores(
    model: LoadedModel, tasks: dict[str, list[MCItem]], corpus: str | None = None, text: str | None = None, *,
    window: int = 512, stride: int = 256, batch_size: int = 8,
) -> dict[str, Any]:  # fmt: skip
    """One row of results/lm/scores.csv: model, n_params, causal; for causal LMs bpb and lm_score (1 - bpb) on
    ``text`` (named ``corpus``) when one is given, and ``mc_scores`` of every task."""
    row: dict[str, Any] = {"model": model.name, "n_params": model.n_params, "causal": model.is_causal}
    if not model.is_causal:
        return row
    if text is not None:
        bpb = corpus_bits_per_byte(model, text, window=window, stride=stride, batch_size=batch_size)
        row.update(bpb=bpb, lm_score=1.0 - bpb, corpus=corpus)
    for task, items in tasks.items():
        row.update(mc_scores(model, task, items, batch_size=batch_size))
    return row


def merge_published(csv_path: str | Path, df: pd.DataFrame) -> pd.DataFrame:
    """Left-join a user CSV of published downstream scores (column ``model`` + score columns) onto a scores table."""
    path = Path(csv_path)
    if not path.is_file():
        raise PrhError(f"language.published: {path} does not exist")
    try:
        published = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise PrhError(f"language.published: {path} is not a readable CSV ({type(e).__name__})") from e
    if "model" not in published.columns:
        raise PrhError(f"language.published: {path} has no 'model' column (columns: {list(published.columns)})")
    if published["model"].duplicated().any():
        dup = published.loc[published["model"].duplicated(), "model"].iloc[0]
        raise PrhError(f"language.published: {path} lists model {dup!r} more than once")
    clash = {c: f"{c}_published" for c in published.columns if c != "model" and c in df.columns}
    return df.merge(published.rename(columns=clash), on="model", how="left")
