"""The colour experiment (Fig. 8): each function against an independent loop or scipy / scikit-image computation, the
Mantel p-value's type-I error, the two data sources, the config checks, the plan and the figure."""

from __future__ import annotations

import copy
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr

from prh import colour as C

ROOT = Path(__file__).resolve().parents[1]


def tiny_images(seed: int = 0, n: int = 2, h: int = 5, w: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def loop_cooccurrence(images: np.ndarray, levels: int, radius: int) -> np.ndarray:
    """Every ordered pair of distinct pixels of one image at Chebyshev distance <= radius, counted by their cells."""
    n_cells = levels**3
    counts = np.zeros((n_cells, n_cells))
    n, h, w, _ = images.shape

    def cell(px: np.ndarray) -> int:
        r, g, b = (int(v) * levels // 256 for v in px)
        return (r * levels + g) * levels + b

    for i, y, x, y2, x2 in product(range(n), range(h), range(w), range(h), range(w)):
        if (y, x) != (y2, x2) and max(abs(y - y2), abs(x - x2)) <= radius:
            counts[cell(images[i, y, x]), cell(images[i, y2, x2])] += 1
    return counts


@pytest.mark.parametrize("levels,radius", [(2, 1), (3, 2), (2, 4)])
def test_cooccurrence_equals_a_loop_over_pixel_pairs(levels: int, radius: int) -> None:
    images = tiny_images(levels)
    got = C.cooccurrence(C.rgb_cells(images, levels), levels**3, radius)
    np.testing.assert_array_equal(got, loop_cooccurrence(images, levels, radius))


def test_rgb_cells_and_centres_agree_with_per_pixel_arithmetic() -> None:
    images = tiny_images(1)
    cells = C.rgb_cells(images, 4)
    centres = C.cell_centres(4)
    for idx in np.ndindex(images.shape[:3]):
        r, g, b = (int(v) // 64 for v in images[idx])
        assert cells[idx] == 16 * r + 4 * g + b
        assert np.all(np.abs(centres[cells[idx]] - images[idx]) <= 32)  # the pixel lies in its cell


def test_pmi_equals_the_formula_cell_by_cell() -> None:
    counts = loop_cooccurrence(tiny_images(2), 2, 1)
    got = C.pmi(counts, pseudo=0.5)
    total = (counts + 0.5).sum()
    for a, b in product(range(8), range(8)):
        pa = (counts[a] + 0.5).sum() / total
        pb = (counts[b] + 0.5).sum() / total
        assert got[a, b] == pytest.approx(np.log((counts[a, b] + 0.5) / total / (pa * pb)))


def test_pmi_distance_is_zero_on_the_diagonal_and_decreasing_in_pmi() -> None:
    values = np.random.default_rng(3).normal(size=(6, 6))
    values = values + values.T
    d = C.pmi_distance(values)
    off = ~np.eye(6, dtype=bool)
    assert np.all(np.diag(d) == 0) and d[off].min() == 0
    order = np.argsort(values[off])
    assert np.all(np.diff(d[off][order]) <= 0)


def test_lab_and_cosine_distances_equal_pairwise_loops() -> None:
    from skimage.color import deltaE_cie76, rgb2lab

    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, size=(7, 3))
    feats = rng.normal(size=(7, 5))
    lab_d, cos_d = C.lab_distance(rgb), C.cosine_distance(feats)
    for i, j in product(range(7), range(7)):
        li, lj = (rgb2lab(rgb[k][None, None] / 255.0)[0, 0] for k in (i, j))
        assert lab_d[i, j] == pytest.approx(deltaE_cie76(li, lj), abs=1e-9)
        cos = feats[i] @ feats[j] / np.linalg.norm(feats[i]) / np.linalg.norm(feats[j])
        assert cos_d[i, j] == pytest.approx(0.0 if i == j else 1 - cos, abs=1e-12)


def test_pick_colours_takes_the_name_nearest_each_populated_cell_centre() -> None:
    from skimage.color import deltaE_cie76, rgb2lab

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(40, 3))
    pixels = rng.integers(0, 50, size=8).astype(float)
    pixels[3] = 0.0  # an empty cell is never compared
    idx, cells = C.pick_colours(rgb, pixels, 2, min_share=0.05)
    expected = {}
    for cell in range(8):
        if pixels[cell] < 0.05 * pixels.sum():
            continue
        r, g, b = cell // 4, cell // 2 % 2, cell % 2
        centre = rgb2lab(np.array([[[r, g, b]]]) * 128 / 255.0 + 64 / 255.0)[0, 0]
        members = [i for i in range(40) if all(int(v) // 128 == c for v, c in zip(rgb[i], (r, g, b)))]
        if members:
            expected[cell] = min(members, key=lambda i: deltaE_cie76(rgb2lab(rgb[i][None, None] / 255.0)[0, 0], centre))
    assert list(cells) == list(expected) and list(idx) == list(expected.values())


def test_stored_layer_rule() -> None:
    assert [C.stored_layer(r, 7) for r in ("middle", "last", 2, -1)] == [3, 6, 2, 6]


def random_distance(rng: np.random.Generator, m: int, integer: bool = False) -> np.ndarray:
    """(m, m) Euclidean distances of random points, or city-block distances of small integer points (many ties)."""
    from scipy.spatial.distance import cdist

    if integer:
        x = rng.integers(0, 4, size=(m, 2))
        return cdist(x, x, metric="cityblock")
    x = rng.normal(size=(m, 3))
    return cdist(x, x)


def test_mantel_equals_a_scipy_loop_over_the_same_permutations() -> None:
    """Integer distances with many ties: the permuted rank matrix must equal re-ranking each permuted matrix."""
    rng = np.random.default_rng(6)
    a, b = random_distance(rng, 9, integer=True), random_distance(rng, 9)
    rho, p, null = C.mantel(a, b, permutations=60, seed=11)
    perms = np.random.default_rng(11)
    expected = [spearmanr(squareform(a[q][:, q], checks=False), squareform(b, checks=False)).statistic
                for q in (perms.permutation(9) for _ in range(60))]  # fmt: skip
    np.testing.assert_allclose(null, expected, atol=1e-12)
    assert rho == pytest.approx(spearmanr(squareform(a, checks=False), squareform(b, checks=False)).statistic)
    assert rho == pytest.approx(C.spearman_condensed(a, b))
    assert p == (1 + np.sum(np.array(expected) >= rho)) / 61


def test_mantel_type_one_error_is_alpha_on_independent_matrices() -> None:
    """300 pairs of independent distance matrices, K = 99: P(p <= 0.05) is exactly 5/100 under exchangeability."""
    hits = {0.05: 0, 0.2: 0}
    for seed in range(300):
        rng = np.random.default_rng(seed)
        _, p, _ = C.mantel(random_distance(rng, 10), random_distance(rng, 10), permutations=99, seed=seed)
        for alpha in hits:
            hits[alpha] += p <= alpha
    assert 4 <= hits[0.05] <= 28  # 15 expected, +-3 sd
    assert 38 <= hits[0.2] <= 82  # 60 expected, +-3 sd


def test_mantel_detects_a_shared_structure() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(12, 2))
    a = np.linalg.norm(x[:, None] - x[None], axis=-1)
    b = np.linalg.norm((x + 0.1 * rng.normal(size=x.shape))[:, None] - x[None], axis=-1)
    b = (b + b.T) / 2
    np.fill_diagonal(b, 0)
    rho, p, _ = C.mantel(a, b, permutations=199, seed=0)
    assert rho > 0.8 and p == 1 / 200


def test_procrustes_undoes_rotation_reflection_scale_and_shift() -> None:
    rng = np.random.default_rng(8)
    ref = rng.normal(size=(10, 2))
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag([1, -1])
    moved = 3.0 * ref @ rot + np.array([5.0, -2.0])
    np.testing.assert_allclose(C.procrustes_onto(moved, ref), ref - ref.mean(axis=0), atol=1e-10)


PARAMS = {"levels": 2, "radius": 1, "min_share": 0.01, "layer": "middle", "permutations": 19, "seed": 0}


def test_colour_tables_test_only_the_fixed_layer() -> None:
    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, size=(30, 3))
    names = [f"c{i}" for i in range(30)]
    layers = [rng.normal(size=(30, 4)) for _ in range(5)]
    align, layout = C.colour_tables(names, rgb, [tiny_images(0, n=3, h=8, w=8)], {"lm": layers},
                                    {"lm": [f"h{i}" for i in range(5)]}, PARAMS)  # fmt: skip
    lm = align[align["source"] == "lm"]
    assert list(lm["chosen"]) == [False, False, True, False, False]
    assert lm["p_value"].notna().tolist() == [False, False, True, False, False]
    m = int(align["n_colours"].iloc[0])
    assert 2 <= m <= 8 and set(layout["source"]) == {"cielab", "pixels", "lm"} and len(layout) == 3 * m
    chosen = layout[layout["source"] == "cielab"]["name"].map(names.index).to_numpy()
    rho = C.spearman_condensed(C.cosine_distance(layers[2][chosen]), C.lab_distance(rgb[chosen]))
    assert lm["rho"].iloc[2] == pytest.approx(rho)
    srgb = spearmanr(pdist(rgb[chosen].astype(float)), pdist(C.cielab(rgb[chosen]))).statistic
    assert align.set_index("source").loc["srgb", "rho"] == pytest.approx(srgb)


# -- data sources ------------------------------------------------------------------------------------
def test_xkcd_source_holds_every_name_with_its_rgb() -> None:
    from matplotlib.colors import XKCD_COLORS, to_rgb

    from prh.data import load_dataset

    ds = load_dataset("colours", {"source": "xkcd-colours"})
    assert ds.n == len(XKCD_COLORS) == 949 and ds.images is None
    for i in (0, 500, 948):
        rgb = np.array(to_rgb(XKCD_COLORS[f"xkcd:{ds.texts[i]}"])) * 255
        np.testing.assert_allclose([ds.labels[c][i] for c in "rgb"], rgb, atol=1e-6)


def test_skimage_photos_are_squares_of_the_bundled_photographs() -> None:
    from skimage import data

    from prh.data import load_dataset
    from prh.data.colours import PHOTOS, square

    ds = load_dataset("photos", {"source": "skimage-photos", "size": 16})
    assert ds.images.shape == (len(PHOTOS), 16, 16, 3) and ds.texts is None
    np.testing.assert_array_equal(ds.images[PHOTOS.index("astronaut")], square(data.astronaut(), 16))
    coffee = data.coffee()[:, 100:500]  # 400 x 600: the centre square
    assert np.abs(ds.images[PHOTOS.index("coffee")].mean((0, 1)) - coffee.mean((0, 1))).max() < 3


# -- config and plan ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def default() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def with_colour(cfg: dict, **colour: object) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["datasets"]["xkcd"] = {"source": "xkcd-colours"}
    cfg["datasets"]["photos"] = {"source": "skimage-photos"}
    cfg["colour"] = {"names": "xkcd", "images": ["photos", "emoji-names"], **colour}
    return cfg


def test_plan_runs_the_colour_stage_only_when_configured(default: dict) -> None:
    from prh.config import validate_config
    from prh.plan import Plan

    off = Plan(validate_config(default))
    assert "colour" not in off.figures and not off.colour_tables()
    on = Plan(validate_config(with_colour(default)))
    lms = on.colour_models()
    assert lms == off.language_models() and {("xkcd", m) for m in lms} <= set(on.extractions())
    assert on.figures["colour"].inputs == {"colour": on.paths.colour("alignment"),
                                           "colour_layout": on.paths.colour("layout")}  # fmt: skip
    assert set(on.colour_tables()) <= set(on.report_inputs()["tables"])
    assert on.colour_inputs()["images"] == [on.paths.data("photos"), on.paths.data("emoji-names")]


@pytest.mark.parametrize("change,field", [
    ({"names": "photos"}, "colour.names"),
    ({"images": []}, "colour.images"),
    ({"images": ["wordnet-heldout"]}, "colour.images.0"),
    ({"models": ["vit-m-sup"]}, "colour.models"),
    ({"layer": "first"}, "colour.layer"),
])  # fmt: skip
def test_colour_config_mistakes_name_the_field(default: dict, change: dict, field: str) -> None:
    from prh.config import ConfigError, validate_config

    with pytest.raises(ConfigError) as err:
        validate_config(with_colour(default, **change))
    assert field in str(err.value)


# -- figure ------------------------------------------------------------------------------------------
def test_colour_figure_writes_its_files_and_reads_the_table(tmp_path: Path) -> None:
    from prh.figures import fig_colour

    rng = np.random.default_rng(10)
    rgb = rng.integers(0, 256, size=(40, 3))
    layers = [rng.normal(size=(40, 4)) for _ in range(3)]
    align, layout = C.colour_tables([f"c{i}" for i in range(40)], rgb, [tiny_images(1, n=3, h=9, w=9)],
                                    {"lm": layers}, {"lm": ["h0", "h1", "h2"]}, PARAMS)  # fmt: skip
    res = fig_colour(align, layout, tmp_path / "colour.png")
    assert all(Path(p).stat().st_size > 0 for p in (res.png, res.svg, res.csv, tmp_path / "colour_stats.csv"))
    px = align[align["source"] == "pixels"].iloc[0]
    lm = align[(align["source"] == "lm") & align["chosen"]].iloc[0]
    assert f"rho = {px['rho']:.2f}" in res.reading and f"rho {lm['rho']:.2f} to {lm['rho']:.2f}" in res.reading
    assert len(pd.read_csv(res.csv)) == len(layout)
