"""The emoji dataset: Noto Color Emoji glyphs paired with CLDR names/keywords, emoji-test groups as labels."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import prh.data.emoji as emoji
from prh.data import load_dataset
from prh.errors import PrhError
from prh.probe import probe_model

pytestmark = pytest.mark.skipif(
    not all(Path(p).is_file() for p in (emoji.FONT_PATH, emoji.EMOJI_TEST_PATH, emoji.CLDR_PATH)),
    reason="apt-get install fonts-noto-color-emoji unicode-data unicode-cldr-core",
)
GRINNING = "\U0001f600"


@pytest.fixture(scope="module")
def full() -> object:
    """Every item at the default 64 px, name captions."""
    return load_dataset("emoji", {"source": "emoji"})


def index_of(ds, codepoints: str) -> int:  # noqa: ANN001
    """Row of the item with these code points ("U+1F600")."""
    return ds.meta["codepoints"].index(codepoints)


def cldr_entry(char: str) -> tuple[str, list[str]]:
    """(tts name, keywords) of a character, read from the CLDR XML by regex (independent of prh's parser)."""
    text = Path(emoji.CLDR_PATH).read_text(encoding="utf-8")
    name = re.search(rf'<annotation cp="{re.escape(char)}" type="tts">([^<]*)</annotation>', text).group(1)
    words = re.search(rf'<annotation cp="{re.escape(char)}">([^<]*)</annotation>', text).group(1)
    return name, [w.strip() for w in words.split("|")]


def group_of(codepoint: str) -> tuple[str, str]:
    """(group, subgroup) header above a fully-qualified code point's line in emoji-test.txt, scanning the file by hand."""
    group = subgroup = ""
    for line in Path(emoji.EMOJI_TEST_PATH).read_text(encoding="utf-8").splitlines():
        group = line[len("# group: "):] if line.startswith("# group: ") else group
        subgroup = line[len("# subgroup: "):] if line.startswith("# subgroup: ") else subgroup
        if line.split(";")[0].strip() == codepoint and "fully-qualified" in line:
            return group, subgroup
    raise AssertionError(codepoint)


def test_every_single_codepoint_emoji_renders(full) -> None:  # noqa: ANN001
    """All fully-qualified single-code-point emoji of emoji-test.txt are drawn, each visibly (>= 2% non-white pixels)."""
    lines = [l for l in Path(emoji.EMOJI_TEST_PATH).read_text(encoding="utf-8").splitlines()
             if "; fully-qualified" in l and re.fullmatch(r"[0-9A-F]+( FE0F)?", l.split(";")[0].strip())]  # fmt: skip
    assert full.n == len(lines) == full.meta["n_available"] == 1377
    assert full.images.shape == (1377, 64, 64, 3) and full.images.dtype == np.uint8
    assert (full.images < 250).any(-1).mean(axis=(1, 2)).min() > 0.02
    assert len(set(full.meta["codepoints"])) == full.n


def test_grinning_face_image_is_coloured(full) -> None:  # noqa: ANN001
    """U+1F600 is a yellow face on white: a third or more of the pixels drawn, the drawn ones saturated yellow."""
    image = full.images[index_of(full, "U+1F600")].astype(float)
    np.testing.assert_array_equal(full.images[index_of(full, "U+1F600")], emoji.render(GRINNING, 64))
    assert (image[0, 0] == 255).all() and (image[-1, -1] == 255).all()  # white background
    drawn = (image < 240).any(-1)
    assert drawn.mean() > 0.3
    r, g, b = image[drawn].mean(axis=0)
    assert r > 180 and g > 130 and b < 100  # yellow: red and green high, blue low
    assert (image.max(-1) - image.min(-1))[drawn].mean() > 80  # saturated, not grey


def test_name_and_keyword_captions() -> None:
    """density name -> CLDR's tts name (here equal to the Unicode name); keywords -> 'name: other keywords'."""
    name, words = cldr_entry(GRINNING)
    assert name == "grinning face" == unicodedata.name(GRINNING).lower()
    spec = {"source": "emoji", "n": 200, "seed": 3, "sample": "random"}
    by_name, by_words = load_dataset("e", {**spec, "density": "name"}), load_dataset("e", {**spec, "density": "keywords"})
    assert by_name.image_digest == by_words.image_digest and by_name.text_digest != by_words.text_digest
    for i, (a, b) in enumerate(zip(by_name.texts, by_words.texts)):
        assert b == a or b.startswith(a + ": ")
    item = next(e for e in emoji.catalogue(*emoji.data_files("e")) if e.text == GRINNING)
    assert item.caption("name") == name
    assert item.caption("keywords") == f"{name}: {', '.join(w for w in words if w != name)}" == "grinning face: face, grin"


def test_group_and_subgroup_labels(full) -> None:  # noqa: ANN001
    """Labels are emoji-test.txt's groups (9) and subgroups (97), numbered in file order, matching a hand scan."""
    names = full.meta["label_names"]
    assert len(names["group"]) == 9 and len(names["subgroup"]) == 97
    assert names["group"][0] == "Smileys & Emotion" and names["subgroup"][0] == "face-smiling"
    assert set(full.labels["group"].tolist()) == set(range(9)) and set(full.labels["subgroup"].tolist()) == set(range(97))
    for cp in ("U+1F600", "U+1F408", "U+2615", "U+1F3F3 U+FE0F"):
        i = index_of(full, cp)
        expected = group_of(cp.replace("U+", ""))
        assert (names["group"][full.labels["group"][i]], names["subgroup"][full.labels["subgroup"][i]]) == expected


def test_labels_are_probe_tasks() -> None:
    """A linear probe on raw 8 px pixels predicts the group above the majority rate (probe split stratified by group)."""
    ds = load_dataset("e", {"source": "emoji", "size": 8, "sample": "random"})
    test_groups = Counter(ds.labels["group"][~ds.is_train].tolist())
    assert set(test_groups) == set(range(9)) and 0.25 < (~ds.is_train).mean() < 0.35
    X = ds.images.reshape(ds.n, -1).astype(np.float32) / 255
    tasks = {"group": {"dataset": "e", "label": "group", "group": "natural"}}
    acc = probe_model([X], ds.labels, ds.is_train, tasks, dataset="e", C_grid=(0.1,)).set_index("task")["accuracy"]
    majority = max(test_groups.values()) / sum(test_groups.values())
    assert acc["group"] > majority + 0.05


def test_sample_is_deterministic_by_seed_and_balanced() -> None:
    """n items; the same seed gives the same bytes, another seed another sample; stratified balances the groups."""
    a, b = (load_dataset("e", {"source": "emoji", "n": 90, "seed": 1}) for _ in range(2))
    c = load_dataset("e", {"source": "emoji", "n": 90, "seed": 2})
    assert a.n == 90 and a.images.shape == (90, 64, 64, 3) and len(a.texts) == 90
    assert (a.image_digest, a.text_digest, a.meta["labels_digest"]) == (b.image_digest, b.text_digest, b.meta["labels_digest"])
    assert a.meta["codepoints"] != c.meta["codepoints"] and a.image_digest != c.image_digest
    counts = Counter(a.labels["group"].tolist())
    flags = a.meta["label_names"]["group"].index("Flags")  # only 5 single-code-point flags exist: all are taken
    others = [v for k, v in counts.items() if k != flags]
    assert counts[flags] == 5 and len(others) == 8 and max(others) - min(others) <= 1


def test_spec_mistakes_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown density, out-of-range n and a missing Debian package name the field / the package."""
    with pytest.raises(PrhError, match=r"datasets\.e\.density: 'words' is not one of name, keywords"):
        load_dataset("e", {"source": "emoji", "density": "words"})
    with pytest.raises(PrhError, match=r"datasets\.e\.n: 5000 out of range \[1, 1377\]"):
        load_dataset("e", {"source": "emoji", "n": 5000})
    monkeypatch.setattr(emoji, "FONT_PATH", "/nonexistent/NotoColorEmoji.ttf")
    with pytest.raises(PrhError, match=r"datasets\.e\.source: .* not found \(install the Debian package fonts-noto-color-emoji\)"):
        load_dataset("e", {"source": "emoji"})
