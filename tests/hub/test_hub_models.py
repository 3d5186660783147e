"""Hub models through prh's loaders, offline: every architecture class of configs/paper.yaml loads from a hub cache in
the real layout and extracts; the weights digest names the commit and the content of the files loaded; the loader
reads exactly the resolved commit; a partial cache fails in one line."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hubkit import TIMM_MODELS, _lm_configs, lm_files, move_ref, repo_path, timm_files, tiny_tokenizer, write_snapshot

import prh.models as pm
from prh.data import load_dataset, make_dataset
from prh.errors import PrhError
from prh.extract import extract
from prh.hub import HubMissing

pytestmark = pytest.mark.slow


def timm_spec(model_id: str) -> dict:
    """The config entry of a hub timm model of the test cache (its shrinking kwargs; DINOv2 at its img_size)."""
    kwargs = TIMM_MODELS[model_id]
    return {"source": "timm", "id": model_id, "arch_kwargs": kwargs} | (
        {"input_size": kwargs["img_size"]} if "img_size" in kwargs else {})  # fmt: skip


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Four real Fashion-MNIST test images, 112 px RGB."""
    small = load_dataset("f", {"source": "fashion-mnist", "split": "test", "n": 4, "seed": 0}).images
    return np.repeat(np.repeat(small, 4, axis=1), 4, axis=2)


@pytest.mark.parametrize("model_id", list(TIMM_MODELS))
def test_every_timm_class_loads_from_the_cache_and_extracts(hub, images: np.ndarray, model_id: str) -> None:
    """Weights come from the commit refs/main names; the digest carries that commit, the weight file's sha256 (as an
    independent hash of the blob), the preprocessing and kwargs; features are finite, one row per image."""
    cache, commits = hub
    spec = timm_spec(model_id)
    loaded = pm.load_model("v", spec)
    repo = loaded.digest.split(":")[2].split("@")[0]
    commit = commits[repo]
    snap = repo_path(cache, repo) / "snapshots" / commit
    weight_file = next(p for p in snap.iterdir() if p.suffix == ".safetensors")
    assert f"{repo}@{commit}:{weight_file.name}=" in loaded.digest
    assert loaded.digest == pm.weights_digest("v", spec) and not loaded.module.training
    feats = extract(loaded, make_dataset("x", images=images), {}, progress=False)
    assert len(feats.layers) >= 2 and all(f.shape[0] == 4 and np.isfinite(f).all() for f in feats.layers)
    blob = hashlib.sha256(weight_file.read_bytes()).hexdigest()
    assert pm.weights_digest("v", spec) != pm.weights_digest("v", spec | {"arch_kwargs": {**spec["arch_kwargs"], "drop_rate": 0.1}})
    assert blob not in loaded.digest  # content ids enter through files_digest, never as a bare path or name


@pytest.mark.parametrize("repo", list(_lm_configs()))
def test_every_llm_family_builds_and_extracts_from_the_cache(hub, repo: str) -> None:
    """The tiny model of each LLM family (Bloom, Llama, OLMo, Gemma, Mistral, Mixtral) loads as its real model type,
    causal, with the tokenizer of its snapshot, and extracts mean-pooled hidden states."""
    cache, commits = hub
    loaded = pm.load_model("lm", {"source": "hf", "id": repo, "causal": True})
    expected_type = _lm_configs()[repo]().model_type
    assert loaded.family == expected_type and loaded.is_causal and loaded.tokenizer is not None
    assert loaded.digest.startswith(f"hf:{repo}@{commits[repo]}:weights=") and ":tokenizer=" in loaded.digest
    feats = extract(loaded, make_dataset("t", texts=["a red dress on a chair", "two shoes", "a bag"]), {}, progress=False)
    assert len(feats.layers) == 3 and all(f.shape == (3, 32) and np.isfinite(f).all() for f in feats.layers)


def _features(spec: dict, images: np.ndarray | None = None) -> np.ndarray:
    loaded = pm.load_model("m", spec)
    data = make_dataset("x", images=images) if images is not None else make_dataset("t", texts=["a cat", "dogs"])
    return extract(loaded, data, {}, progress=False).layers[-1]


def test_loader_reads_exactly_the_resolved_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  images: np.ndarray) -> None:  # fmt: skip
    """After refs/main moves to a snapshot with other weights, the same spec loads the new weights under a new
    digest; the old commit, asked for by sha (revision or a Plan-resolved commit), still loads the old weights."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    vit, lm = "vit_base_patch16_224.mae", "huggyllama/llama-7b"
    vit_spec, lm_spec = timm_spec(vit), {"source": "hf", "id": lm}
    corpus = load_dataset("c", {"source": "wordnet", "split": "train", "max_chars": 50_000}).texts
    with tempfile.TemporaryDirectory() as tok:
        tiny_tokenizer(Path(tok), corpus)
        old = {name: write_snapshot(tmp_path, *timm_files(vit, TIMM_MODELS[vit], seed=0)) if name == "vit" else
               write_snapshot(tmp_path, lm, lm_files(_lm_configs()[lm](), Path(tok), seed=0)) for name in ("vit", "lm")}  # fmt: skip
        before = {"vit": (_features(vit_spec, images), pm.weights_digest("v", vit_spec)),
                  "lm": (_features(lm_spec), pm.weights_digest("l", lm_spec))}  # fmt: skip
        new = {"vit": write_snapshot(tmp_path, *timm_files(vit, TIMM_MODELS[vit], seed=1)),
               "lm": write_snapshot(tmp_path, lm, lm_files(_lm_configs()[lm](), Path(tok), seed=1))}  # fmt: skip
    for name, spec, inputs in (("vit", vit_spec, images), ("lm", lm_spec, None)):
        assert old[name] != new[name]
        moved = _features(spec, inputs)
        assert not np.allclose(moved, before[name][0]) and new[name] in pm.weights_digest(name, spec)
        pinned = spec | {"revision": old[name]}
        assert np.array_equal(_features(pinned, inputs), before[name][0])
        assert pm.weights_digest(name, pinned) == before[name][1]
        assert np.array_equal(_features(spec | {"commit": old[name]}, inputs), before[name][0])


def test_partial_cache_fails_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot without the weight file timm reads, or an LM without its weights or a shard its index names, stops
    at once with one line naming the model field, the repository and prefetch."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    repo, files = timm_files("convnext_tiny.fb_in1k", TIMM_MODELS["convnext_tiny.fb_in1k"])
    write_snapshot(tmp_path, repo, {"config.json": files["config.json"]})
    spec = timm_spec("convnext_tiny.fb_in1k")
    with pytest.raises(HubMissing, match=r"^models\.cnx\.id: model timm/convnext_tiny\.fb_in1k@main: none of "
                       r"model\.safetensors, pytorch_model\.bin of commit \w{12} is in the cache; run `prh prefetch"):  # fmt: skip
        pm.load_model("cnx", spec)
    write_snapshot(tmp_path, "org/lm", {"config.json": b'{"model_type": "llama"}'})
    with pytest.raises(HubMissing, match=r"models\.lm\.id: model org/lm@main: no weights .* in commit"):
        pm.weights_digest("lm", {"source": "hf", "id": "org/lm"})
    index = b'{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}'
    write_snapshot(tmp_path, "org/lm", {"config.json": b"{}", "model.safetensors.index.json": index,
                                        "model-00001-of-00002.safetensors": b"x"})  # fmt: skip
    with pytest.raises(HubMissing, match=r"file model-00002-of-00002\.safetensors of commit \w{12} is not in the cache"):
        pm.weights_digest("lm", {"source": "hf", "id": "org/lm"})


def test_timm_preprocessing_is_checked_against_the_loaded_model(hub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest's preprocessing comes from timm's pretrained config without building the model; a loaded model
    that would preprocess otherwise stops in one line instead of extracting under a wrong key."""
    import prh.models.vision as mv

    spec = timm_spec("vit_base_patch16_224.augreg_in21k")
    real = mv.timm_data_config("v", spec)
    assert real["input_size"] == [3, 224, 224] and real["interpolation"] == "bicubic"
    monkeypatch.setattr(mv, "timm_data_config", lambda name, s: {**real, "crop_pct": 0.5})
    with pytest.raises(PrhError, match=r"models\.v\.id: the loaded model preprocesses with .* but its digest names"):
        pm.load_model("v", spec)


def test_moved_ref_changes_the_digest_of_that_model_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Digests follow refs/main: moving one repository's ref changes its model's digest and no other's; moving it
    back restores the old digest (old store entries stay valid)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    a = write_snapshot(tmp_path, *timm_files("resnet18.a1_in1k", TIMM_MODELS["resnet18.a1_in1k"]))
    write_snapshot(tmp_path, *timm_files("convnext_tiny.fb_in1k", TIMM_MODELS["convnext_tiny.fb_in1k"]))
    specs = {m: timm_spec(m) for m in ("resnet18.a1_in1k", "convnext_tiny.fb_in1k")}
    before = {m: pm.weights_digest(m, s) for m, s in specs.items()}
    torch.manual_seed(0)
    b = write_snapshot(tmp_path, *timm_files("resnet18.a1_in1k", TIMM_MODELS["resnet18.a1_in1k"], seed=7))
    after = {m: pm.weights_digest(m, s) for m, s in specs.items()}
    assert after["resnet18.a1_in1k"] != before["resnet18.a1_in1k"] and b in after["resnet18.a1_in1k"]
    assert after["convnext_tiny.fb_in1k"] == before["convnext_tiny.fb_in1k"]
    move_ref(tmp_path, "timm/resnet18.a1_in1k", a)
    assert pm.weights_digest("resnet18.a1_in1k", specs["resnet18.a1_in1k"]) == before["resnet18.a1_in1k"]
