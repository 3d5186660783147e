"""prh.data.scenes: generated image-caption pairs from real Fashion-MNIST items."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prh.data import load_dataset
from prh.data.fashion_mnist import DEFAULT_PATH
from prh.data.scenes import (
    BACKGROUNDS,
    DENSITIES,
    ITEM_COLOURS,
    NOUNS,
    POSITION_NAMES,
    ROTATION_TERSE,
    ROTATION_VERBOSE,
    SIZE_NAMES,
    caption,
    generate_scenes,
)
from prh.errors import PrhError

pytestmark = pytest.mark.skipif(not Path(DEFAULT_PATH).is_dir(), reason="dataset-fashion-mnist not installed")

COLOURS = [c for c, _ in ITEM_COLOURS]
ITEM_RE = re.compile(
    rf"^(?:a )?(?P<size>{'|'.join(SIZE_NAMES)}) (?P<colour>{'|'.join(COLOURS)}) (?P<noun>{'|'.join(NOUNS)}) "
    rf"(?P<rotation>{'|'.join(ROTATION_TERSE + ROTATION_VERBOSE)}) "
    rf"(?:at the |at |in the )(?P<position>{'|'.join(POSITION_NAMES)})(?: part of the image)?$"
)


@pytest.fixture(scope="module")
def scenes():
    """256 scenes, seed 7."""
    return generate_scenes(256, seed=7)


def parse_dense(text: str) -> dict:
    """Parse a density-30 caption back into background and per-item attributes."""
    text = text.rstrip(".")
    body, background = re.fullmatch(r"(.*), on (?:a plain )?(\w+)(?: background)?", text).groups()
    body = body.split(": ", 1)[-1]  # drop "... N items:"
    body = re.sub(r"^(a simple picture showing|a picture showing|an image of) ", "", body)
    items = [ITEM_RE.match(p) for p in re.split(r", | and ", body)]
    assert all(items), (text, body)
    return {"background": background, "items": [m.groupdict() for m in items]}


def expected_cell(item, canvas: int) -> str:
    """3x3 grid name of the item's centre, computed from its box."""
    cx, cy = item.x0 + item.side / 2, item.y0 + item.side / 2
    row, col = min(int(cy * 3 // canvas), 2), min(int(cx * 3 // canvas), 2)
    return POSITION_NAMES[3 * row + col]


def test_generation_is_deterministic_and_prefix_stable(scenes):
    again = generate_scenes(256, seed=7)
    assert np.array_equal(again.images, scenes.images) and again.scenes == scenes.scenes
    assert np.array_equal(generate_scenes(40, seed=7).images, scenes.images[:40])  # scene i does not depend on n
    assert not np.array_equal(generate_scenes(40, seed=8).images, scenes.images[:40])
    counts = np.bincount([len(s.items) for s in scenes.scenes])
    assert counts[0] == 0 and (counts[1:] > 40).all()  # 1-4 items, roughly uniform


def test_word_counts_within_25_percent_of_density(scenes):
    for d in DENSITIES:
        words = np.array([len(caption(s, d).split()) for s in scenes.scenes])
        assert (words >= 0.75 * d).all() and (words <= 1.25 * d).all(), (d, words.min(), words.max())
        assert abs(words.mean() - d) < 0.1 * d


def test_dense_caption_determines_the_scene_graph(scenes):
    for s in scenes.scenes:
        parsed = parse_dense(caption(s, 30))
        assert parsed["background"] == BACKGROUNDS[s.background][0]
        assert len(parsed["items"]) == len(s.items)
        for got, item in zip(parsed["items"], s.items):
            assert got["noun"] == NOUNS[item.category] and got["colour"] == COLOURS[item.colour]
            assert got["size"] == SIZE_NAMES[item.size] and got["position"] == expected_cell(item, s.canvas)
            rotation = (
                ROTATION_TERSE.index(got["rotation"])
                if got["rotation"] in ROTATION_TERSE
                else ROTATION_VERBOSE.index(got["rotation"])
            )
            assert rotation == item.rotation


def test_sparse_captions_name_the_items_only(scenes):
    for s in scenes.scenes[:64]:
        five = caption(s, 5)
        assert [w for w in re.findall(r"[a-z-]+", five) if w in NOUNS] == [NOUNS[i.category] for i in s.items]
        assert not set(re.findall(r"[a-z]+", five)) & set(COLOURS + SIZE_NAMES)
        ten = caption(s, 10)
        assert [w for w in re.findall(r"[a-z]+", ten) if w in COLOURS] == [COLOURS[i.colour] for i in s.items]


def test_images_do_not_depend_on_density_and_labels_match_captions():
    spec = {"source": "scenes", "n": 128, "seed": 3}
    dense = load_dataset("s", spec | {"density": 30})
    sparse = load_dataset("s", spec | {"density": 5})
    assert dense.image_digest == sparse.image_digest and np.array_equal(dense.images, sparse.images)
    assert dense.text_digest != sparse.text_digest
    assert dense.meta["labels_digest"] == sparse.meta["labels_digest"]
    assert dense.images.shape == (128, 64, 64, 3) and dense.images.dtype == np.uint8
    for i, text in enumerate(dense.texts):
        parsed = parse_dense(text)
        first = parsed["items"][0]
        assert dense.labels["count"][i] == len(parsed["items"]) - 1
        assert NOUNS[dense.labels["category"][i]] == first["noun"]
        assert COLOURS[dense.labels["colour"][i]] == first["colour"]
        # quadrant label agrees with the 3x3 cell named in the caption wherever the cell is unambiguous
        vertical = {"top": 0, "bottom": 1}.get(first["position"].split()[0])
        horizontal = {"left": 0, "right": 1}.get(first["position"].split()[-1])
        if vertical is not None and horizontal is not None:
            assert dense.labels["location"][i] == 2 * vertical + horizontal
    item0 = [s["items"][0] for s in dense.meta["scenes"]]
    item1_x = [
        s["items"][1]["x0"] + s["items"][1]["side"] / 2 if len(s["items"]) > 1 else 32 for s in dense.meta["scenes"]
    ]
    assert dense.labels["relative"].tolist() == [int(a["x0"] + a["side"] / 2 < b) for a, b in zip(item0, item1_x)]
    assert dense.labels["rotation"].tolist() == [a["rotation"] for a in item0]
    assert 0.25 < (~dense.is_train).mean() < 0.35


def test_items_are_real_fashion_mnist_pixels(scenes):
    raw = gzip.decompress((Path(DEFAULT_PATH) / "t10k-images-idx3-ubyte.gz").read_bytes())
    sources = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    labels = np.frombuffer(
        gzip.decompress((Path(DEFAULT_PATH) / "t10k-labels-idx1-ubyte.gz").read_bytes()), np.uint8, offset=8
    )
    checked = 0
    for image, s in zip(scenes.images, scenes.scenes):
        bg = np.array(BACKGROUNDS[s.background][1], np.uint8)
        covered = np.zeros(image.shape[:2], bool)
        expected = np.broadcast_to(bg, image.shape).copy()
        for it in s.items:
            assert labels[it.source_index] == it.category
            gray = np.asarray(Image.fromarray(sources[it.source_index]).resize((it.side, it.side), Image.BILINEAR))
            tint = np.array(ITEM_COLOURS[it.colour][1], np.float64)
            patch = np.round(np.rot90(gray, it.rotation)[..., None] * tint / 255).astype(np.uint8)
            box = (slice(it.y0, it.y0 + it.side), slice(it.x0, it.x0 + it.side))
            expected[box] = np.maximum(expected[box], patch)
            covered[box] = True
        assert np.array_equal(image, expected)
        assert (image[~covered] == bg).all()
        checked += 1
    assert checked == 256


def test_scenes_dataset_round_trips_through_npz(tmp_path):
    from prh.data import load_saved, save_dataset

    ds = load_dataset("s", {"source": "scenes", "n": 32, "seed": 1, "density": 10})
    save_dataset(ds, tmp_path / "s.npz")
    back = load_saved(tmp_path / "s.npz")
    assert (back.image_digest, back.text_digest, back.texts) == (ds.image_digest, ds.text_digest, ds.texts)
    assert back.meta == ds.meta and back.meta["scenes"][0]["items"][0]["category"] == ds.labels["category"][0]


def test_bad_scene_specs_name_the_field(tmp_path):
    with pytest.raises(PrhError, match=r"datasets\.s\.density: 7 is not one of 5, 10, 20, 30"):
        load_dataset("s", {"source": "scenes", "density": 7})
    with pytest.raises(PrhError, match=r"datasets\.s\.path: .* \(install the Debian package dataset-fashion-mnist\)"):
        load_dataset("s", {"source": "scenes", "path": str(tmp_path)})
    with pytest.raises(PrhError, match=r"datasets\.s\.max_items: 5 out of range"):
        load_dataset("s", {"source": "scenes", "max_items": 5})
