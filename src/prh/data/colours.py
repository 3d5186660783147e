"""Colour names and colour photographs: the two inputs of the colour experiment (the paper's Fig. 8).

- ``xkcd-colours``: the 949 names of the XKCD colour survey with their sRGB values, as matplotlib ships them
  (``matplotlib.colors.XKCD_COLORS``), sorted by name. Texts are the bare names ("cloudy blue"); labels ``r``, ``g``,
  ``b`` are the 0-255 channel values; ``meta["hex"]`` the hex codes. A text dataset: any language model of the
  config extracts on it. No subsample: the colour stage picks which names it compares (`prh.colour`).
- ``skimage-photos``: every photograph scikit-image ships inside its wheel (no download): astronaut, chelsea,
  coffee, hubble_deep_field, immunohistochemistry, motorcycle (left view of ``stereo_motorcycle``), retina and
  rocket; the graphics ``colorwheel`` and ``logo`` and the alias ``cat`` (= chelsea) are left out. Each is
  centre-cropped to a square and resized to ``size`` x ``size`` (anti-aliased), as uint8 RGB.
"""

from __future__ import annotations

import numpy as np

from prh.data import Dataset, check_keys, make_dataset, spec_int

PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "motorcycle", "retina",
          "rocket")  # fmt: skip
PHOTO_KEYS = frozenset({"size"})


def xkcd_colours() -> list[tuple[str, str]]:
    """(name, '#rrggbb') of every XKCD colour-survey name, sorted by name."""
    from matplotlib.colors import XKCD_COLORS

    return sorted((key.removeprefix("xkcd:"), hexcode) for key, hexcode in XKCD_COLORS.items())


def hex_to_rgb(codes: list[str]) -> np.ndarray:
    """(n, 3) int64 0-255 channel values of '#rrggbb' codes."""
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in codes], dtype=np.int64).reshape(-1, 3)


def load_xkcd(name: str, spec: dict) -> Dataset:
    """The XKCD colour names as a text Dataset with their RGB values as labels r, g, b."""
    check_keys(name, spec, frozenset())
    names, codes = zip(*xkcd_colours())
    rgb = hex_to_rgb(list(codes))
    return make_dataset(
        name,
        texts=list(names),
        labels={"r": rgb[:, 0], "g": rgb[:, 1], "b": rgb[:, 2]},
        meta={"source": "xkcd-colours", "spec": {"source": "xkcd-colours"}, "hex": list(codes)},
    )


def photo(key: str) -> np.ndarray:
    """One scikit-image sample photograph, (H, W, 3) uint8."""
    from skimage import data

    return data.stereo_motorcycle()[0] if key == "motorcycle" else getattr(data, key)()


def square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square, resized (anti-aliased) to (size, size, 3) uint8."""
    from skimage.transform import resize

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = image[top : top + side, left : left + side, :3]
    out = resize(crop, (size, size), anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def load_photos(name: str, spec: dict) -> Dataset:
    """scikit-image's bundled photographs as an image Dataset of size x size squares (no labels)."""
    check_keys(name, spec, PHOTO_KEYS)
    size = spec_int(name, spec, "size", 256, lo=8)
    images = np.stack([square(photo(key), size) for key in PHOTOS])  # type: ignore[arg-type]
    return make_dataset(name, images=images, meta={"source": "skimage-photos", "spec": {"source": "skimage-photos",
                                                                                         "size": size},
                                                   "photos": list(PHOTOS)})  # fmt: skip
