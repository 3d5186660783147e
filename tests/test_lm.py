"""prh.lm: bits-per-byte and multiple-choice scoring against independent full-logit computations."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from prh.errors import PrhError  # noqa: E402
from prh.lm import (  # noqa: E402
    MCItem,
    arithmetic_task,
    choice_loglik,
    corpus_bits_per_byte,
    gloss_task,
    language_scores,
    mc_scores,
    merge_published,
    token_logprobs,
    _windows,
)
from prh.models import LoadedModel  # noqa: E402


class CharTokenizer:
    """Byte-level toy tokenizer: id = byte + 3; 0 pad, 1 bos, 2 eos (independent of transformers' tokenizers)."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __init__(self, bos: bool = True) -> None:
        if not bos:
            self.bos_token_id = None

    def __call__(self, text: str, add_special_tokens: bool = False, return_offsets_mapping: bool = False) -> dict:
        data = text.encode("utf-8")
        if len(data) != len(text):
            raise ValueError("ascii only")
        out: dict = {"input_ids": [b + 3 for b in data]}
        if return_offsets_mapping:
            out["offset_mapping"] = [(i, i + 1) for i in range(len(text))]
        return out


def tiny_llama(vocab: int = 259, seed: int = 0, softcap: float | None = None) -> torch.nn.Module:
    """A random 2-layer Llama over the byte vocabulary (float64 for exact comparisons)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).double().eval()
    with torch.no_grad():  # make predictions far from uniform so errors would show
        model.lm_head.weight.mul_(40.0)
    return model


def loaded(module: torch.nn.Module, tokenizer: object, causal: bool = True) -> LoadedModel:
    """Wrap a module as a LoadedModel."""
    return LoadedModel(name="toy", modality="language", module=module, digest="x", n_params=1, family="llama",
                       is_causal=causal, tokenizer=tokenizer)


def reference_bits(module: torch.nn.Module, ids: list[int]) -> float:
    """Sum of -log2 p(t_i | t_<i), one full forward per prefix, math.log2 of softmax probabilities."""
    total = 0.0
    for i in range(1, len(ids)):
        with torch.no_grad():
            logits = module(input_ids=torch.tensor([ids[:i]])).logits[0, -1]
        p = torch.softmax(logits, -1)[ids[i]].item()
        total -= math.log2(p)
    return total


TEXTS = ["The cat sat on the mat.", "a", "Bits per byte, on a longer sentence with more tokens in it!", "xy z"]


@pytest.fixture(scope="module")
def toy() -> LoadedModel:
    """Random tiny Llama with the byte tokenizer."""
    return loaded(tiny_llama(), CharTokenizer())


def test_bits_per_byte_matches_token_loop(toy: LoadedModel) -> None:
    got = [corpus_bits_per_byte(toy, t, batch_size=3) for t in TEXTS]  # each text fits one window
    want = [reference_bits(toy.module, [1] + [b + 3 for b in t.encode()]) / len(t.encode()) for t in TEXTS]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert np.all(np.array(got) > 0.5)  # scaled head: far from a trivial model


def test_chunked_head_equals_unchunked(toy: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    import prh.lm

    text = " ".join(TEXTS)
    whole = corpus_bits_per_byte(toy, text, window=16, stride=8)
    monkeypatch.setattr(prh.lm, "LOGIT_BUDGET", 259 * 2)  # one position per head call
    assert corpus_bits_per_byte(toy, text, window=16, stride=8, batch_size=2) == pytest.approx(whole, rel=1e-10)


def test_token_logprobs_scores_only_from_first(toy: LoadedModel) -> None:
    seqs = [[1] + [b + 3 for b in t.encode()] for t in TEXTS]
    full = token_logprobs(toy, seqs, batch_size=3)
    first = [min(4, len(x) - 1) for x in seqs]
    part = token_logprobs(toy, seqs, first=first, batch_size=2)
    for x, f, a, b in zip(seqs, first, full, part):
        assert len(a) == len(b) == len(x) - 1
        assert np.isnan(b[: f - 1]).all()  # targets before `first` never reached the head
        np.testing.assert_allclose(b[f - 1 :], a[f - 1 :], rtol=1e-12)
        assert -a.sum() == pytest.approx(reference_bits(toy.module, x), rel=1e-9)


def test_softcap_applied() -> None:
    module = tiny_llama()
    module.config.final_logit_softcapping = 3.0
    model = loaded(module, CharTokenizer())
    ids = [1] + [b + 3 for b in b"soft cap"]
    with torch.no_grad():
        logits = torch.tanh(module(input_ids=torch.tensor([ids])).logits[0] / 3.0) * 3.0
    want = -sum(torch.log_softmax(logits[i - 1], -1)[ids[i]].item() for i in range(1, len(ids))) / math.log(2)
    assert corpus_bits_per_byte(model, "soft cap") * len("soft cap") == pytest.approx(want, rel=1e-9)


def test_without_bos_uses_eos_prefix() -> None:
    module = tiny_llama()
    model = loaded(module, CharTokenizer(bos=False))
    want = reference_bits(module, [2] + [b + 3 for b in b"hello"]) / 5
    assert corpus_bits_per_byte(model, "hello") == pytest.approx(want, rel=1e-9)


def test_windows_cover_every_target_once() -> None:
    for n, window, stride in [(2, 8, 4), (10, 4, 2), (37, 16, 5), (100, 100, 50), (101, 100, 99)]:
        covered = [t for _, end, first in _windows(n, window, stride) for t in range(first, end)]
        assert covered == list(range(1, n))
        assert all(end - begin <= window for begin, end, _ in _windows(n, window, stride))


def test_corpus_bpb_sliding_matches_reference(toy: LoadedModel) -> None:
    text = "sliding windows score each byte exactly once"
    ids = [1] + [b + 3 for b in text.encode()]
    window, stride = 12, 5
    bits = 0.0
    for begin, end, first in _windows(len(ids), window, stride):
        for t in range(first, end):  # context: ids[begin:t]
            with torch.no_grad():
                logits = toy.module(input_ids=torch.tensor([ids[begin:t]])).logits[0, -1]
            bits -= math.log2(torch.softmax(logits, -1)[ids[t]].item())
    got = corpus_bits_per_byte(toy, text, window=window, stride=stride, batch_size=3)
    assert got == pytest.approx(bits / len(text), rel=1e-9)
    assert got != pytest.approx(corpus_bits_per_byte(toy, text), rel=1e-6)  # context cut does change the answer


def test_not_causal_raises(toy: LoadedModel) -> None:
    enc = loaded(toy.module, toy.tokenizer, causal=False)
    with pytest.raises(PrhError, match="toy"):
        corpus_bits_per_byte(enc, "x")
    with pytest.raises(PrhError, match="stride"):
        corpus_bits_per_byte(toy, "abc", window=4, stride=4)


def test_choice_loglik_matches_reference(toy: LoadedModel) -> None:
    items = [MCItem("Q: 2+2 =", ["4", " five", "22"], 0), MCItem("ab", ["c", "cd"], 1)]
    got = choice_loglik(toy, items, batch_size=2)
    for item, ll in zip(items, got):
        for choice, value in zip(item.choices, ll):
            cont = choice if choice.startswith(" ") else " " + choice
            ctx = [1] + [b + 3 for b in item.context.encode()]
            full = ctx + [b + 3 for b in cont.encode()]
            want = reference_bits(toy.module, full) - reference_bits(toy.module, ctx)
            assert value == pytest.approx(-want, rel=1e-9)


def _unpacked(model: LoadedModel, items: list[MCItem], monkeypatch: pytest.MonkeyPatch, **kw) -> list[np.ndarray]:
    """choice_loglik with packing switched off: one sequence per choice."""
    import prh.lm

    with monkeypatch.context() as m:
        m.setattr(prh.lm, "packs_choices", lambda model: False)
        return choice_loglik(model, items, **kw)


MANY = [MCItem("Q: 2+2 =", ["4", " five", "22"], 0), MCItem("ab", ["c", "cd"], 1), MCItem("x", ["yz", "y", "zzzz"], 2),
        MCItem("The word 'cat' means", ["a small feline", "a large dog", "to run"], 0), MCItem(" ", ["a", "b"], 1)]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_packed_choices_equal_one_sequence_per_choice(attn: str, batch_size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The packed route (context once, each continuation masked to context + itself) equals the unpacked route and
    the prefix-by-prefix reference, in float64, for both attention implementations and any batching."""
    from prh.lm import packs_choices

    module = tiny_llama(seed=3)
    module.config._attn_implementation = attn
    model = loaded(module, CharTokenizer())
    assert packs_choices(model)
    got = choice_loglik(model, MANY, batch_size=batch_size)
    want = _unpacked(model, MANY, monkeypatch, batch_size=batch_size)
    for g, w, item in zip(got, want, MANY):
        # eager attention takes its softmax in float32 (over rows of other lengths in either route): 1e-5 bits
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10 if attn == "sdpa" else 1e-5)
        if attn == "eager":
            continue
        ctx = [1] + [b + 3 for b in item.context.encode()]
        cont = " " + item.choices[-1] if not item.choices[-1].startswith(" ") else item.choices[-1]
        ref = reference_bits(module, ctx + [b + 3 for b in cont.encode()]) - reference_bits(module, ctx)
        assert g[-1] == pytest.approx(-ref, rel=1e-9)


def test_packing_respects_a_sliding_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sliding-window model packs only items shorter than its window (the custom mask replaces the windowed one);
    longer items are scored one sequence per choice, with the same values."""
    from transformers import MistralConfig, MistralForCausalLM

    import prh.lm

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=259, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=256, sliding_window=12)
    model = loaded(MistralForCausalLM(cfg).double().eval(), CharTokenizer())
    calls = []
    real = prh.lm.packed_choice_loglik
    monkeypatch.setattr(prh.lm, "packed_choice_loglik", lambda *a, **k: calls.append(1) or real(*a, **k))
    short = [MCItem("ab", ["c", "cd"], 1)]  # packed: 1 + 2 + 2 + 3 = 8 tokens
    long = [MCItem("a longer context than the window", ["one", "two"], 0)]
    for items, packed in ((short, True), (long, False)):
        calls.clear()
        got = choice_loglik(model, items)
        assert bool(calls) is packed
        np.testing.assert_allclose(np.concatenate(got), np.concatenate(_unpacked(model, items, monkeypatch)), rtol=1e-10)


class PreferTokenModel(torch.nn.Module):
    """Stub causal LM whose next-token distribution puts almost all mass on one token id, whatever the input."""

    base_model_prefix = "model"

    def __init__(self, favourite: int, vocab: int = 259) -> None:
        super().__init__()
        self.model = _Const(vocab)
        self.lm_head = torch.nn.Linear(vocab, vocab, bias=False)
        with torch.no_grad():
            self.lm_head.weight.zero_()
            self.lm_head.weight[favourite, :] = 20.0
        self.config = type("Cfg", (), {})()

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.lm_head

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.lm_head


class _Const(torch.nn.Module):
    """Hidden state of all ones at every position."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):  # noqa: ANN201
        return type("Out", (), {"last_hidden_state": torch.ones(*input_ids.shape, self.dim)})()


def test_mc_picks_planted_answer() -> None:
    # the stub makes the byte "q" near-certain, so the continuation " qqq"... is the planted winner
    model = loaded(PreferTokenModel(ord("q") + 3), CharTokenizer())
    items = [MCItem("ctx", ["abc", "qqqq", "zz"], 1), MCItem("more", ["qq", "xyz", "w"], 0), MCItem("x", ["a", "b"], 1)]
    ok = [mc_scores(model, "gloss", [item])["gloss_acc_norm"] for item in items]
    assert ok == [1.0, 1.0, 0.0] and mc_scores(model, "gloss", items)["acc_gloss"] == pytest.approx(2 / 3)


def test_acc_norm_differs_from_raw() -> None:
    # every non-favourite byte costs the same, so raw loglik prefers the shortest choice, acc_norm ties -> first
    model = loaded(PreferTokenModel(ord("q") + 3), CharTokenizer())
    items = [MCItem("c", ["abcdef", "a"], 0)]
    assert mc_scores(model, "arith", items)["arith_acc"] == 0.0
    lls = choice_loglik(model, items)[0]
    assert lls[0] / 7 == pytest.approx(lls[1] / 2, rel=1e-6)


def test_gloss_task_is_well_formed() -> None:
    items = gloss_task(30, seed=1)
    assert len(items) == 30 and items == gloss_task(30, seed=1)
    from prh.data.text import wordnet_glosses

    heldout = {(w, d) for w, d in wordnet_glosses("heldout")}
    answers = np.array([it.answer for it in items])
    assert len(set(answers.tolist())) > 1  # the right answer is not always in the same slot
    for it in items:
        word = it.context.split("'")[1]
        assert len(it.choices) == 4 and len(set(it.choices)) == 4
        assert (word, it.choices[it.answer]) in heldout


def test_arithmetic_task_answers_are_correct() -> None:
    import re

    items = arithmetic_task(200, seed=3)
    for it in items:
        nums = [int(x) for x in re.findall(r"\d+", it.context)]
        a, b = nums[0], nums[1]
        truth = {"buys": a + b, "gives": a - b, "bags": a * b, "shares": a // b}
        key = next(k for k in ("bags", "gives", "shares", "buys") if k in it.context)
        assert int(it.choices[it.answer]) == truth[key]
        assert len(set(it.choices)) == 4 and all(int(c) >= 0 for c in it.choices)
    assert {it.answer for it in items} == {0, 1, 2, 3}


def test_language_scores_row(toy: LoadedModel) -> None:
    items = {"planted": [MCItem("ctx", ["abc", "abd"], 0)]}
    row = language_scores(toy, items, "toytext", "some held out text", window=64, stride=32)
    assert row["bpb"] == pytest.approx(reference_bits(toy.module, [1] + [b + 3 for b in b"some held out text"]) / 18, rel=1e-9)
    assert row["lm_score"] == pytest.approx(1 - row["bpb"]) and row["corpus"] == "toytext" and row["causal"]
    assert set(row) == {"model", "n_params", "causal", "bpb", "lm_score", "corpus", "acc_planted", "planted_acc",
                        "planted_acc_norm"}  # fmt: skip
    assert set(language_scores(toy, items)) == set(row) - {"bpb", "lm_score", "corpus"}  # no corpus: accuracy only
    encoder = loaded(toy.module, toy.tokenizer, causal=False)
    assert language_scores(encoder, items, "toytext", "text") == {"model": "toy", "n_params": 1, "causal": False}


def test_mc_scores_primary_follows_the_task() -> None:
    # raw loglik prefers the 1-byte wrong answer; per-byte normalisation prefers the right, longer one
    model = loaded(PreferTokenModel(ord("q") + 3), CharTokenizer())
    items = [MCItem("c", ["qqqqab", "a"], 0)]
    lls = choice_loglik(model, items)[0]
    assert lls[1] > lls[0] and lls[0] / 7 > lls[1] / 2
    arith = mc_scores(model, "arith", items)
    assert arith == {"acc_arith": 0.0, "arith_acc": 0.0, "arith_acc_norm": 1.0}
    assert mc_scores(model, "gloss", items)["acc_gloss"] == 1.0


def test_merge_published(tmp_path) -> None:  # noqa: ANN001
    df = pd.DataFrame({"model": ["a", "b"], "bpb": [1.0, 2.0]})
    csv = tmp_path / "pub.csv"
    csv.write_text("model,hellaswag,bpb\nb,0.5,9\nc,0.7,1\n")
    out = merge_published(csv, df)
    assert out["model"].tolist() == ["a", "b"]
    assert np.isnan(out.loc[0, "hellaswag"]) and out.loc[1, "hellaswag"] == 0.5
    assert out.loc[1, "bpb"] == 2.0 and out.loc[1, "bpb_published"] == 9
    bad = tmp_path / "bad.csv"
    bad.write_text("name,x\na,1\n")
    with pytest.raises(PrhError, match="model"):
        merge_published(bad, df)
    with pytest.raises(PrhError, match="does not exist"):
        merge_published(tmp_path / "none.csv", df)
