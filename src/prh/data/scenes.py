"""Paired image-caption scenes built from real Fashion-MNIST test items (prh's offline stand-in for WIT).

A scene is a dark canvas (``canvas`` x ``canvas`` RGB, background colour a latent) holding 1 to ``max_items`` items.
Each item is a real Fashion-MNIST test image (Debian ``dataset-fashion-mnist``), resized to a size class
(small = 0.28, large = 0.42 of the canvas, bilinear), rotated by k x 90 degrees counter-clockwise, tinted with a
palette colour, and composited with a pixel-wise maximum (so overlaps never hide an item's brighter pixels).
Images depend only on (n, seed, canvas, max_items, path); captions are written from the scene graph at a word
density (5, 10, 20 or 30 words, within +-25%):

- 5: the items' categories ("a sneaker and a bag")
- 10: + each item's colour
- 20: + each item's size and position (3x3 grid of its centre: "top left", ..., "center", ...)
- 30: + each item's rotation and the background, so the caption determines the scene graph

``captions: C`` (default 1) also keeps C captions per scene in ``meta["captions"]`` (``texts`` unchanged), for the
test-time-scaling stage (``prh.tts``): with ``caption_items: all`` (default) the first is the caption above and the
others name every item in another order and wording at the same density; with ``caption_items: some`` each of the C
names a random subset of the items (:func:`caption_variants`).

Labels (all (n,) int64; "first item" = item 0, the first one named in every caption):
``count`` (items - 1), ``location`` (quadrant of the first item's centre: 0 top-left, 1 top-right,
2 bottom-left, 3 bottom-right), ``rotation`` (first item's k), ``relative`` (1 if the first item's centre is left
of the second item's, or of the canvas centre in one-item scenes), ``category`` (first item's Fashion-MNIST class),
``colour`` and ``size`` (first item's), ``background``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

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
)
from prh.data.fashion_mnist import CLASS_NAMES, DEFAULT_PATH, read_split
from prh.errors import PrhError

DENSITIES = (5, 10, 20, 30)
NOUNS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
ITEM_COLOURS: list[tuple[str, tuple[int, int, int]]] = [
    ("white", (255, 255, 255)),
    ("red", (255, 48, 48)),
    ("green", (48, 220, 48)),
    ("blue", (64, 96, 255)),
    ("yellow", (255, 230, 0)),
]
BACKGROUNDS: list[tuple[str, tuple[int, int, int]]] = [
    ("black", (0, 0, 0)),
    ("gray", (40, 40, 40)),
    ("navy", (0, 0, 64)),
    ("maroon", (64, 0, 0)),
]
SIZE_NAMES = ["small", "large"]
SIZE_FRACTIONS = (0.28, 0.42)  # item side / canvas side
POSITION_NAMES = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
ROTATION_TERSE = ["upright", "turned left", "upside down", "turned right"]  # k x 90 degrees counter-clockwise
ROTATION_VERBOSE = ["standing upright", "rotated to the left", "turned upside down", "rotated to the right"]
COUNT_WORDS = ["one", "two", "three", "four"]
LOCATION_NAMES = ["top left", "top right", "bottom left", "bottom right"]
MAX_OVERLAP = 0.2  # at most this fraction of the smaller item's box may be covered by another item
KEYS = frozenset({"n", "seed", "density", "canvas", "max_items", "path", "test_fraction", "captions", "caption_items"})
MAX_CAPTIONS = 64


@dataclass(frozen=True)
class SceneItem:
    """One placed item: a real Fashion-MNIST test image and its latent attributes."""

    source_index: int  # index into the Fashion-MNIST test split
    category: int  # its Fashion-MNIST class, 0-9
    x0: int  # left column of its box on the canvas
    y0: int  # top row of its box
    side: int  # box side in pixels
    size: int  # 0 small, 1 large
    colour: int  # index into ITEM_COLOURS
    rotation: int  # k: rotated k x 90 degrees counter-clockwise

    @property
    def centre(self) -> tuple[float, float]:
        """(x, y) centre of the item's box in pixels."""
        return self.x0 + self.side / 2, self.y0 + self.side / 2

    def position(self, canvas: int) -> int:
        """Cell of the 3x3 grid (row-major, index into POSITION_NAMES) holding the centre."""
        x, y = self.centre
        return min(int(3 * y / canvas), 2) * 3 + min(int(3 * x / canvas), 2)


@dataclass(frozen=True)
class Scene:
    """A scene graph: background and items (item 0 is the 'first item' of the labels and captions)."""

    canvas: int
    background: int  # index into BACKGROUNDS
    items: tuple[SceneItem, ...]


@dataclass(frozen=True)
class SceneSet:
    """Generated scenes and their rendered images (n, canvas, canvas, 3) uint8."""

    images: np.ndarray
    scenes: list[Scene]
    seed: int
    path: str


def item_side(canvas: int, size: int) -> int:
    """Pixel side of an item of size class 0 (small) or 1 (large) on a canvas."""
    return int(round(SIZE_FRACTIONS[size] * canvas))


def overlap_ok(box: tuple[int, int, int], others: list[tuple[int, int, int]]) -> bool:
    """True if box (x0, y0, side) covers at most MAX_OVERLAP of each other box and vice versa."""
    x0, y0, s = box
    for ox, oy, os_ in others:
        w = max(0, min(x0 + s, ox + os_) - max(x0, ox))
        h = max(0, min(y0 + s, oy + os_) - max(y0, oy))
        if w * h > MAX_OVERLAP * min(s, os_) ** 2:
            return False
    return True


def sample_scene(rng: np.random.Generator, canvas: int, max_items: int, categories: np.ndarray) -> Scene:
    """Draw one scene graph: background, 1..max_items items with source images and attributes."""
    background = int(rng.integers(len(BACKGROUNDS)))
    boxes: list[tuple[int, int, int]] = []
    items = []
    for _ in range(int(rng.integers(1, max_items + 1))):
        source = int(rng.integers(len(categories)))
        size, colour, rotation = int(rng.integers(2)), int(rng.integers(len(ITEM_COLOURS))), int(rng.integers(4))
        side = item_side(canvas, size)
        for _attempt in range(100):  # rejection sampling; the last draw is kept if none fits
            x0, y0 = (int(v) for v in rng.integers(0, canvas - side + 1, size=2))
            if overlap_ok((x0, y0, side), boxes):
                break
        boxes.append((x0, y0, side))
        items.append(SceneItem(source, int(categories[source]), x0, y0, side, size, colour, rotation))
    return Scene(canvas, background, tuple(items))


def render_item(gray: np.ndarray, item: SceneItem) -> np.ndarray:
    """A (28, 28) uint8 source image -> the item's (side, side, 3) uint8 patch: resize, rotate, tint."""
    g = np.asarray(Image.fromarray(gray).resize((item.side, item.side), Image.BILINEAR))
    g = np.rot90(g, item.rotation).astype(np.uint32)
    colour = np.array(ITEM_COLOURS[item.colour][1], dtype=np.uint32)
    return ((g[..., None] * colour + 127) // 255).astype(np.uint8)


def render_scene(scene: Scene, sources: np.ndarray) -> np.ndarray:
    """(canvas, canvas, 3) uint8 image of a scene; sources is the (N, 28, 28) Fashion-MNIST test split."""
    image = np.empty((scene.canvas, scene.canvas, 3), dtype=np.uint8)
    image[:] = BACKGROUNDS[scene.background][1]
    for item in scene.items:
        box = image[item.y0 : item.y0 + item.side, item.x0 : item.x0 + item.side]
        np.maximum(box, render_item(sources[item.source_index], item), out=box)
    return image


def generate_scenes(n: int, seed: int, canvas: int = 64, max_items: int = 4, path: str = DEFAULT_PATH) -> SceneSet:
    """n scenes drawn from one seeded stream (scene i does not depend on n) and their images (n, canvas, canvas, 3)."""
    if not 1 <= max_items <= len(COUNT_WORDS):
        raise PrhError(f"scenes max_items: {max_items} out of range [1, {len(COUNT_WORDS)}]")
    sources, categories = read_split(path, "test", "scenes path")
    rng = rng_for(seed, "scenes")
    scenes = [sample_scene(rng, canvas, max_items, categories) for _ in range(n)]
    images = np.stack([render_scene(s, sources) for s in scenes]) if n else np.zeros((0, canvas, canvas, 3), np.uint8)
    return SceneSet(images=images, scenes=scenes, seed=seed, path=path)


# ---------------------------------------------------------------- captions

PREFIXES = ["", "an image of", "a picture showing", "a simple picture showing"]
COUNT_STYLES = ["", "{n} {items}:", "exactly {n} {items}:"]
POSITION_STYLES = ["at the {p}", "at {p}", "in the {p} part of the image"]
BACKGROUND_STYLES = ["on a plain {b} background", "on {b}"]


def n_words(text: str) -> int:
    """Whitespace-separated word count."""
    return len(text.split())


PREFIX_WORDS = [n_words(p) for p in PREFIXES]
COUNT_STYLE_WORDS = [n_words(c.format(n="one", items="items")) for c in COUNT_STYLES]
POSITION_STYLE_WORDS = [n_words(p.format(p="")) for p in POSITION_STYLES]
POSITION_WORDS = [n_words(p) for p in POSITION_NAMES]
ROTATION_WORDS = [[n_words(r) for r in ROTATION_TERSE], [n_words(r) for r in ROTATION_VERBOSE]]
BACKGROUND_STYLE_WORDS = [n_words(b.format(b="")) for b in BACKGROUND_STYLES]


def attributes_at(density: int) -> set[str]:
    """Item/scene attributes a caption of this density names besides the categories."""
    if density not in DENSITIES:
        raise PrhError(f"scenes density: {density} is not one of {', '.join(map(str, DENSITIES))}")
    return {
        5: set(),
        10: {"colour"},
        20: {"colour", "size", "position"},
        30: {"colour", "size", "position", "rotation", "background"},
    }[density]


def item_phrase(item: SceneItem, canvas: int, attrs: set[str], article: bool, pos_style: int, rot_style: int) -> str:
    """One item's description, e.g. 'a small red sneaker upside down at the top left'."""
    words = ["a"] if article else []
    if "size" in attrs:
        words.append(SIZE_NAMES[item.size])
    if "colour" in attrs:
        words.append(ITEM_COLOURS[item.colour][0])
    words.append(NOUNS[item.category])
    if "rotation" in attrs:
        words.append((ROTATION_TERSE, ROTATION_VERBOSE)[rot_style][item.rotation])
    if "position" in attrs:
        words.append(POSITION_STYLES[pos_style].format(p=POSITION_NAMES[item.position(canvas)]))
    return " ".join(words)


def join_items(phrases: list[str], use_and: bool) -> str:
    """'A, B and C' (use_and) or 'A, B, C'."""
    if use_and and len(phrases) > 1:
        return ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return ", ".join(phrases)


def render_caption(scene: Scene, attrs: set[str], style: tuple[int, int, bool, bool, int, int, int]) -> str:
    """The caption of a scene for a style (prefix, count, article, and, position, rotation, background)."""
    prefix, count, article, use_and, pos_style, rot_style, bg_style = style
    k = len(scene.items)
    parts = [PREFIXES[prefix], COUNT_STYLES[count].format(n=COUNT_WORDS[k - 1], items="item" if k == 1 else "items")]
    parts.append(
        join_items([item_phrase(i, scene.canvas, attrs, article, pos_style, rot_style) for i in scene.items], use_and)
    )
    if "background" in attrs:
        parts[-1] += ","
        parts.append(BACKGROUND_STYLES[bg_style].format(b=BACKGROUNDS[scene.background][0]))
    return " ".join(p for p in parts if p) + "."


def style_totals(scene: Scene, attrs: set[str]) -> np.ndarray:
    """Word count of the caption for every style choice: an array with one axis per render_caption style field
    (article and "and" axes: index 0 = with them)."""
    k = len(scene.items)
    base = k * (1 + int("size" in attrs) + int("colour" in attrs))
    pos = [sum(w + POSITION_WORDS[i.position(scene.canvas)] for i in scene.items) for w in POSITION_STYLE_WORDS]
    rot = [sum(words[i.rotation] for i in scene.items) for words in ROTATION_WORDS]
    bg = [w + n_words(BACKGROUNDS[scene.background][0]) for w in BACKGROUND_STYLE_WORDS]
    axes = [  # word counts of each style choice, in the order of render_caption's style tuple
        PREFIX_WORDS,
        COUNT_STYLE_WORDS,
        [k, 0],  # articles
        [int(k > 1), 0],  # "and"
        pos if "position" in attrs else [0],
        rot if "rotation" in attrs else [0],
        bg if "background" in attrs else [0],
    ]
    return base + sum(np.reshape(a, [-1 if j == i else 1 for j in range(len(axes))]) for i, a in enumerate(axes))


def _style(index: tuple[int, ...]) -> tuple[int, int, bool, bool, int, int, int]:
    """A style_totals index -> render_caption's style tuple."""
    prefix, count, article, use_and, pos_style, rot_style, bg_style = (int(i) for i in index)
    return (prefix, count, article == 0, use_and == 0, pos_style, rot_style, bg_style)


def caption(scene: Scene, density: int) -> str:
    """The caption naming the attributes of `density` whose word count is closest to density (first style wins ties)."""
    attrs = attributes_at(density)
    totals = style_totals(scene, attrs)
    index = np.unravel_index(int(np.argmin(np.abs(totals - density))), totals.shape)  # first minimum: C order
    return render_caption(scene, attrs, _style(index))


def caption_variants(scene: Scene, density: int, count: int, rng: np.random.Generator, items: str = "all") -> list[str]:
    """``count`` captions of one scene graph at one density. ``items="all"``: the first is :func:`caption`; each
    other one names every item, in a random order, with a random style among those within +-25% of density words
    (the closest if none). ``items="some"``: every caption names a random non-empty subset of the items (uniform
    size, random order) in such a style, as different people describing a scene each mention part of it."""
    if items not in ("all", "some"):
        raise PrhError(f"scenes caption_items: {items!r} is not one of all, some")
    attrs = attributes_at(density)
    out = [caption(scene, density)] if items == "all" else []
    while len(out) < count:
        k = len(scene.items) if items == "all" else int(rng.integers(1, len(scene.items) + 1))
        order = rng.permutation(len(scene.items))[:k]
        part = Scene(scene.canvas, scene.background, tuple(scene.items[i] for i in order))
        totals = style_totals(part, attrs)
        gap = np.abs(totals - density)
        ok = np.flatnonzero(gap <= 0.25 * density)
        choices = ok if ok.size else np.flatnonzero(gap == gap.min())
        index = np.unravel_index(int(choices[rng.integers(choices.size)]), totals.shape)
        out.append(render_caption(part, attrs, _style(index)))
    return out


# ---------------------------------------------------------------- labels and the dataset


def scene_labels(scenes: list[Scene]) -> dict[str, np.ndarray]:
    """Probe targets (n,) int64 per label name (see the module docstring)."""

    def first(s: Scene) -> SceneItem:
        return s.items[0]

    def quadrant(s: Scene) -> int:
        x, y = first(s).centre
        return 2 * int(y >= s.canvas / 2) + int(x >= s.canvas / 2)

    def left_of(s: Scene) -> int:
        other = s.items[1].centre[0] if len(s.items) > 1 else s.canvas / 2
        return int(first(s).centre[0] < other)

    rows = {
        "count": [len(s.items) - 1 for s in scenes],
        "location": [quadrant(s) for s in scenes],
        "rotation": [first(s).rotation for s in scenes],
        "relative": [left_of(s) for s in scenes],
        "category": [first(s).category for s in scenes],
        "colour": [first(s).colour for s in scenes],
        "size": [first(s).size for s in scenes],
        "background": [s.background for s in scenes],
    }
    return {k: np.array(v, dtype=np.int64) for k, v in rows.items()}


def scene_dict(scene: Scene) -> dict:
    """A scene graph as plain JSON data (lists, ints): what meta["scenes"] holds."""
    return {"canvas": scene.canvas, "background": scene.background, "items": [asdict(i) for i in scene.items]}


LABEL_NAMES = {
    "count": COUNT_WORDS,
    "location": LOCATION_NAMES,
    "rotation": ["0", "90", "180", "270"],
    "relative": ["not left", "left"],
    "category": CLASS_NAMES,
    "colour": [c for c, _ in ITEM_COLOURS],
    "size": SIZE_NAMES,
    "background": [b for b, _ in BACKGROUNDS],
}


def load(name: str, spec: dict) -> Dataset:
    """Scenes dataset: images (n, canvas, canvas, 3), captions at spec density, scene labels, seeded probe split."""
    check_keys(name, spec, KEYS)
    n = spec_int(name, spec, "n", 1024, lo=1, hi=1_000_000)
    seed = spec_int(name, spec, "seed", 0)
    density = spec_choice(name, spec, "density", 30, DENSITIES)
    canvas = spec_int(name, spec, "canvas", 64, lo=32, hi=1024)
    max_items = spec_int(name, spec, "max_items", 4, lo=1, hi=len(COUNT_WORDS))
    test_fraction = spec_float(name, spec, "test_fraction", 0.3, 0.0, 1.0)
    n_captions = spec_int(name, spec, "captions", 1, lo=1, hi=MAX_CAPTIONS)
    caption_items = spec_choice(name, spec, "caption_items", "all", ("all", "some"))
    path = str(spec.get("path", DEFAULT_PATH))
    read_split(path, "test", field_name(name, "path"))  # a missing path is reported under this dataset's field
    ss = generate_scenes(n, seed, canvas, max_items, path)  # type: ignore[arg-type]
    resolved = {
        "source": "scenes",
        "n": n,
        "seed": seed,
        "density": density,
        "canvas": canvas,
        "max_items": max_items,
        "path": path,
        "test_fraction": test_fraction,
    }
    extra = {}
    if n_captions > 1:  # texts stay the first caption of each scene; meta["captions"] holds all of them
        resolved |= {"captions": n_captions, "caption_items": caption_items}
        rng = rng_for(seed, f"scenes-captions-{density}" + ("" if caption_items == "all" else f"-{caption_items}"))
        extra["captions"] = [caption_variants(s, density, n_captions, rng, caption_items)  # type: ignore[arg-type]
                             for s in ss.scenes]
    return make_dataset(
        name,
        images=ss.images,
        texts=[caption(s, density) for s in ss.scenes],
        labels=scene_labels(ss.scenes),
        is_train=probe_split(n, seed, test_fraction),  # type: ignore[arg-type]
        meta={
            "source": "scenes",
            "spec": resolved,
            "label_names": LABEL_NAMES,
            "scenes": [scene_dict(s) for s in ss.scenes],
            **extra,
        },
    )
