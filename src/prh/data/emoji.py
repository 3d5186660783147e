"""Emoji image-name pairs: Noto Color Emoji glyphs with their names and keywords (designed icons, not photos).

Real image-text pairs from Debian packages, with no rendering choices beyond the font's own art:

- items: every fully-qualified single-code-point emoji of Unicode's ``emoji-test.txt`` (Debian ``unicode-data``;
  one code point, or one plus U+FE0F emoji presentation) that ``NotoColorEmoji.ttf`` (Debian
  ``fonts-noto-color-emoji``) maps; skin-tone and hair components, flags of two regional indicators and ZWJ
  sequences are not single code points and are left out. 1,377 items with emoji-test 15.0 and Noto 2.042.
- image: the glyph drawn by Pillow at the font's one bitmap size (109 px, a 136 x 128 colour bitmap,
  ``embedded_color=True``), centred on a white 136 x 136 square, alpha-composited and resized to ``size`` x
  ``size`` (Lanczos). Designed icons on white: a stand-in for image-caption pairs, not natural photos.
- caption, ``density: name``: the CLDR short name (``annotations/en.xml`` type="tts" of Debian
  ``unicode-cldr-core``, e.g. "grinning face"); for code points newer than that CLDR (Emoji 15.0) the name
  emoji-test.txt gives, which is the same CLDR name. ``density: keywords``: "name: keyword, keyword, ..." with
  the CLDR keywords other than the name (the name alone where CLDR has none). ``captions: C`` (default 1) also
  keeps C texts per item in ``meta["captions"]``: that caption, then name, keywords and their combinations as
  separate texts (:meth:`Emoji.captions`), for the test-time-scaling stage (``prh.tts``).
- labels: ``group`` (9) and ``subgroup`` (97) of emoji-test.txt, numbered in file order over all items, so an
  id means the same class in every sample.

Sampling is deterministic by seed: ``sample: stratified`` (default) balances groups, ``random`` is uniform.
``meta`` holds each sampled item's code points and ``unicodedata`` name ("" where Python's Unicode database
predates the code point).
"""

from __future__ import annotations

import functools
import re
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prh.data import (
    Dataset,
    check_keys,
    field_name,
    make_dataset,
    probe_split,
    rng_for,
    spec_choice,
    spec_float,
    spec_int,
    subsample,
)
from prh.errors import PrhError

FONT_PATH = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST_PATH = "/usr/share/unicode/emoji/emoji-test.txt"
CLDR_PATH = "/usr/share/unicode/cldr/common/annotations/en.xml"
FONT_SIZE = 109  # the only bitmap strike of NotoColorEmoji (136 x 128 px glyphs)
CANVAS = 136  # white square the glyph is centred on before resizing
DENSITIES = ("name", "keywords")
VS16 = 0xFE0F  # emoji presentation selector
KEYS = frozenset({"n", "seed", "size", "density", "sample", "test_fraction", "captions"})
MAX_CAPTIONS = 64


@dataclass(frozen=True)
class Emoji:
    """One item: its code points, names, CLDR keywords and emoji-test group/subgroup."""

    codepoints: tuple[int, ...]  # the code point, plus U+FE0F where the fully-qualified form has it
    name: str  # CLDR short name
    keywords: tuple[str, ...]  # CLDR keywords other than the name
    unicode_name: str  # unicodedata.name, or "" when Python's database predates the code point
    group: str
    subgroup: str

    @property
    def text(self) -> str:
        """The string to draw."""
        return "".join(map(chr, self.codepoints))

    def caption(self, density: str) -> str:
        """``name`` or ``name: keyword, keyword, ...``."""
        if density == "keywords" and self.keywords:
            return f"{self.name}: {', '.join(self.keywords)}"
        return self.name

    def alternatives(self) -> list[str]:
        """Every text naming this emoji: the name, name + all keywords, each keyword, name + one keyword, and
        pairs of keywords (distinct, in this order)."""
        kws = self.keywords
        texts = [self.name, self.caption("keywords"), *kws, *(f"{self.name}: {k}" for k in kws),
                 *(f"{a}, {b}" for i, a in enumerate(kws) for b in kws[i + 1 :])]  # fmt: skip
        return list(dict.fromkeys(texts))

    def captions(self, density: str, count: int, rng: np.random.Generator) -> list[str]:
        """``count`` texts: the caption at ``density``, then the other alternatives in a seeded random order (cycled
        when an emoji has fewer: an emoji without keywords repeats its name)."""
        first = self.caption(density)
        rest = [t for t in self.alternatives() if t != first]
        rest = [rest[i] for i in rng.permutation(len(rest))] or [first]
        return [first] + [rest[i % len(rest)] for i in range(count - 1)]


def _require(path: str, package: str, field: str) -> str:
    """The path of a Debian data file, or a PrhError naming the package that installs it."""
    if not Path(path).is_file():
        raise PrhError(f"{field}: {path} not found (install the Debian package {package})")
    return path


def data_files(field: str) -> tuple[str, str, str]:
    """(font, emoji-test.txt, CLDR annotations) paths, each checked to exist."""
    return (
        _require(FONT_PATH, "fonts-noto-color-emoji", field),
        _require(EMOJI_TEST_PATH, "unicode-data", field),
        _require(CLDR_PATH, "unicode-cldr-core", field),
    )


def parse_emoji_test(text: str) -> list[tuple[tuple[int, ...], str, str, str]]:
    """Fully-qualified single-code-point entries of emoji-test.txt -> (code points, group, subgroup, name)."""
    out = []
    group = subgroup = ""
    for line in text.splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line.strip() and not line.startswith("#"):
            points, rest = line.split(";", 1)
            status, comment = rest.split("#", 1)
            cps = tuple(int(c, 16) for c in points.split())
            single = len(cps) == 1 or (len(cps) == 2 and cps[1] == VS16)
            if status.strip() == "fully-qualified" and single:
                name = re.sub(r"^\S+\s+E\d+\.\d+\s+", "", comment.strip())  # "😀 E1.0 grinning face" -> name
                out.append((cps, group, subgroup, name))
    return out


def parse_cldr(text: str) -> dict[str, tuple[str, list[str]]]:
    """CLDR annotations XML -> {code point string without U+FE0F: (tts name, keywords)}."""
    names: dict[str, str] = {}
    keywords: dict[str, list[str]] = {}
    for node in ET.fromstring(text.encode("utf-8")).iter("annotation"):
        cp, value = node.get("cp", ""), (node.text or "").strip()
        if node.get("type") == "tts":
            names[cp] = value
        else:
            keywords[cp] = [k.strip() for k in value.split("|") if k.strip()]
    return {cp: (names.get(cp, ""), keywords.get(cp, [])) for cp in set(names) | set(keywords)}


def font_codepoints(font_path: Path) -> frozenset[int]:
    """Code points the font's cmap maps to a glyph."""
    from fontTools.ttLib import TTFont

    with TTFont(str(font_path), lazy=True) as font:
        return frozenset(font.getBestCmap())


@functools.lru_cache(maxsize=2)
def catalogue(font: str, emoji_test: str, cldr: str) -> tuple[Emoji, ...]:
    """Every item the font draws, in emoji-test.txt order (see the module docstring)."""
    entries = parse_emoji_test(Path(emoji_test).read_text(encoding="utf-8"))
    annotations = parse_cldr(Path(cldr).read_text(encoding="utf-8"))
    drawn = font_codepoints(Path(font))
    items = []
    for cps, group, subgroup, test_name in entries:
        if cps[0] not in drawn:
            continue
        key = chr(cps[0])
        name, words = annotations.get(key, ("", []))
        name = name or test_name
        items.append(Emoji(cps, name, tuple(w for w in words if w != name), unicodedata.name(key, "").lower(), group, subgroup))
    return tuple(items)


@functools.lru_cache(maxsize=1)
def _font(path: str):  # noqa: ANN202 - PIL.ImageFont.FreeTypeFont
    """The colour emoji font at its bitmap size."""
    from PIL import ImageFont

    return ImageFont.truetype(path, FONT_SIZE)


def render(text: str, size: int = 64, font: str = FONT_PATH) -> np.ndarray:
    """(size, size, 3) uint8 RGB: the emoji drawn in colour, centred on white, resized with Lanczos."""
    from PIL import Image, ImageDraw

    f = _font(font)
    left, top, right, bottom = f.getbbox(text)
    glyph = Image.new("RGBA", (CANVAS, CANVAS), (255, 255, 255, 0))
    xy = ((CANVAS - (right - left)) // 2 - left, (CANVAS - (bottom - top)) // 2 - top)
    ImageDraw.Draw(glyph).text(xy, text, font=f, embedded_color=True)
    image = Image.alpha_composite(Image.new("RGBA", (CANVAS, CANVAS), (255, 255, 255, 255)), glyph).convert("RGB")
    if size != CANVAS:
        image = image.resize((size, size), Image.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def label_ids(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """(n,) int64 ids numbered in order of first appearance, and the names in id order."""
    names = list(dict.fromkeys(values))
    index = {v: i for i, v in enumerate(names)}
    return np.array([index[v] for v in values], dtype=np.int64), names


def load(name: str, spec: dict) -> Dataset:
    """Emoji dataset: images (n, size, size, 3) on white, name or keyword captions, group/subgroup labels."""
    check_keys(name, spec, KEYS)
    seed = spec_int(name, spec, "seed", 0)
    size = spec_int(name, spec, "size", 64, lo=8, hi=CANVAS)
    density = spec_choice(name, spec, "density", "name", DENSITIES)
    sample = spec_choice(name, spec, "sample", "stratified", ("stratified", "random"))
    test_fraction = spec_float(name, spec, "test_fraction", 0.3, 0.0, 1.0)
    n_captions = spec_int(name, spec, "captions", 1, lo=1, hi=MAX_CAPTIONS)
    font, emoji_test, cldr = data_files(field_name(name, "source"))
    items = catalogue(font, emoji_test, cldr)
    groups, group_names = label_ids([e.group for e in items])
    subgroups, subgroup_names = label_ids([e.subgroup for e in items])
    n = spec_int(name, spec, "n", None, lo=1, hi=len(items))
    keep = subsample(len(items), n, seed, groups if sample == "stratified" else None)
    chosen = [items[i] for i in keep]
    resolved = {"source": "emoji", "n": len(keep), "seed": seed, "size": size, "density": density, "sample": sample,
                "test_fraction": test_fraction}  # fmt: skip
    extra = {}
    if n_captions > 1:  # texts stay the caption at density; meta["captions"] holds all of them
        resolved["captions"] = n_captions
        rng = rng_for(seed, f"emoji-captions-{density}")
        extra["captions"] = [e.captions(density, n_captions, rng) for e in chosen]
    return make_dataset(
        name,
        images=np.stack([render(e.text, size, font) for e in chosen]),
        texts=[e.caption(density) for e in chosen],
        labels={"group": groups[keep], "subgroup": subgroups[keep]},
        is_train=probe_split(len(keep), seed, test_fraction, groups[keep]),
        meta={
            "source": "emoji",
            "spec": resolved,
            "n_available": len(items),
            "label_names": {"group": group_names, "subgroup": subgroup_names},
            "codepoints": [" ".join(f"U+{c:04X}" for c in e.codepoints) for e in chosen],
            "unicode_names": [e.unicode_name for e in chosen],
            **extra,
        },
    )
