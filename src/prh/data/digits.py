"""scikit-learn's handwritten digits (1,797 8x8 images, values 0-16) as RGB uint8.

Labels: ``class`` (0-9), ``parity`` (0 even, 1 odd) and ``loop`` (1 for digits written with a closed loop:
0, 6, 8, 9; 4 counts as open because this data set mostly writes it with an open top).
"""

from __future__ import annotations

import numpy as np

from prh.data import Dataset, check_keys, make_dataset, probe_split, spec_choice, spec_float, spec_int, subsample

LOOP_DIGITS = (0, 6, 8, 9)
KEYS = frozenset({"n", "seed", "size", "sample", "test_fraction"})


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as (n, 8, 8) uint8 scaled 0-16 -> 0-255, and their (n,) int64 classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    return images, d.target.astype(np.int64)


def upsample_nearest(gray: np.ndarray, size: int) -> np.ndarray:
    """(n, h, w) -> (n, size, size) by nearest-neighbour sampling (identity when size == h == w)."""
    rows = (np.arange(size) * gray.shape[1]) // size
    cols = (np.arange(size) * gray.shape[2]) // size
    return gray[:, rows][:, :, cols]


def load(name: str, spec: dict) -> Dataset:
    """Digits as RGB uint8 (n, size, size, 3) with ``class``/``parity``/``loop`` labels and a seeded probe split."""
    check_keys(name, spec, KEYS)
    seed = spec_int(name, spec, "seed", 0)
    size = spec_int(name, spec, "size", 8, lo=8, hi=1024)
    sample = spec_choice(name, spec, "sample", "stratified", ("stratified", "random"))
    test_fraction = spec_float(name, spec, "test_fraction", 0.3, 0.0, 1.0)
    gray, classes = digits_uint8()
    n = spec_int(name, spec, "n", None, lo=1, hi=len(classes))
    keep = subsample(len(classes), n, seed, classes if sample == "stratified" else None)
    gray, classes = upsample_nearest(gray[keep], size), classes[keep]
    resolved = {
        "source": "digits",
        "n": len(keep),
        "seed": seed,
        "size": size,
        "sample": sample,
        "test_fraction": test_fraction,
    }
    return make_dataset(
        name,
        images=np.repeat(gray[..., None], 3, axis=-1),
        labels={
            "class": classes,
            "parity": classes % 2,
            "loop": np.isin(classes, LOOP_DIGITS).astype(np.int64),
        },
        is_train=probe_split(len(keep), seed, test_fraction, classes),
        meta={
            "source": "digits",
            "spec": resolved,
            "label_names": {
                "class": [str(i) for i in range(10)],
                "parity": ["even", "odd"],
                "loop": ["open", "closed loop"],
            },
        },
    )
