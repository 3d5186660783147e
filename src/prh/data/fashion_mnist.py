"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (real IDX files, 60k train + 10k test, 28x28).

Labels: ``class`` (0-9, `CLASS_NAMES`) and ``coarse`` (0-4, `COARSE_NAMES`): tops {T-shirt/top, Pullover, Coat,
Shirt} = 0, bottoms {Trouser} = 1, dresses {Dress} = 2, footwear {Sandal, Sneaker, Ankle boot} = 3, bags {Bag} = 4.

Probe split (``is_train``): ``probe_split: official`` keeps the package's train/test membership (split ``all`` only);
``probe_split: random`` (the default for ``train``/``test``) holds out ``test_fraction`` of each class, seeded.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from prh.data import (
    Dataset,
    check_keys,
    field_name,
    make_dataset,
    probe_split,
    spec_choice,
    spec_float,
    spec_int,
    subsample,
)
from prh.errors import PrhError

# Debian's IDX files; PRH_FASHION_MNIST names another folder holding them (a machine without the package)
DEFAULT_PATH = os.environ.get("PRH_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
COARSE_NAMES = ["top", "bottom", "dress", "footwear", "bag"]
COARSE_OF_CLASS = np.array([0, 1, 0, 2, 0, 3, 0, 3, 4, 3], dtype=np.int64)  # class -> coarse
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
KEYS = frozenset({"path", "split", "n", "seed", "sample", "probe_split", "test_fraction"})


MAX_IDX_BYTES = 1 << 28  # an IDX file's data may hold at most 256 MiB (Fashion-MNIST's largest: 47 MB)


def read_idx(path: Path) -> np.ndarray:
    """Parse an unsigned-byte IDX file (gzip or raw) into a uint8 array of its declared shape.

    Decompression is capped: at most the header's claim (itself at most MAX_IDX_BYTES) plus one byte is read, so a
    gzip bomb costs nothing; a corrupt, truncated or oversized file is a one-line PrhError naming it.
    """
    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) < 4 or head[:3] != b"\x00\x00\x08":
                raise PrhError(f"{path}: not an unsigned-byte IDX file (bad magic {head.hex()})")
            ndim = head[3]
            raw_dims = f.read(4 * ndim)
            if ndim == 0 or len(raw_dims) != 4 * ndim:
                raise PrhError(f"{path}: IDX header declares {ndim} dimensions but ends early (truncated?)")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            size = math.prod(dims)
            if size > MAX_IDX_BYTES:
                raise PrhError(f"{path}: IDX header claims {dims} ({size:,} bytes), more than the cap of {MAX_IDX_BYTES:,}")
            data = f.read(size + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise PrhError(f"{path}: unreadable IDX file ({type(e).__name__}: {e}); reinstall {DEBIAN_PACKAGE}") from None
    if len(data) < size:
        raise PrhError(f"{path}: IDX header says {dims} but holds {len(data)} bytes (truncated?)")
    if len(data) > size:
        raise PrhError(f"{path}: IDX file holds more bytes than its header's {dims} (not one IDX array)")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def idx_file(root: Path, stem: str, field: str) -> Path:
    """The gzip or raw IDX file ``root/stem[.gz]``; PrhError naming the path and the Debian package if absent."""
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise PrhError(f"{field}: {root / stem}.gz not found (install the Debian package {DEBIAN_PACKAGE})")


def read_split(path: str, split: str, field: str = "fashion-mnist path") -> tuple[np.ndarray, np.ndarray]:
    """Grayscale images (n, 28, 28) uint8 and class labels (n,) int64 of the train or test split (cached)."""
    root = Path(path)
    prefix = SPLIT_PREFIX[split]
    images = idx_file(root, f"{prefix}-images-idx3-ubyte", field)
    labels = idx_file(root, f"{prefix}-labels-idx1-ubyte", field)
    return read_pair(str(images), str(labels), file_stamp(images), file_stamp(labels))


def file_stamp(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of a file: part of the cache key, so a rewritten file is parsed again."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=4)
def read_pair(images_file: str, labels_file: str, *stamps: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Parse an images/labels IDX pair into (n, H, W) uint8 and (n,) int64 (read-only: cached and shared)."""
    images = read_idx(Path(images_file))
    labels = read_idx(Path(labels_file)).astype(np.int64)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise PrhError(f"{images_file}: {images.shape} images for {labels.shape} labels in {labels_file}")
    labels.setflags(write=False)
    return images, labels


def to_rgb(gray: np.ndarray) -> np.ndarray:
    """(n, H, W) uint8 grayscale -> (n, H, W, 3) uint8 RGB with equal channels."""
    return np.repeat(gray[..., None], 3, axis=-1)


def load(name: str, spec: dict) -> Dataset:
    """Fashion-MNIST as RGB uint8 (n, 28, 28, 3) with ``class``/``coarse`` labels and a probe split."""
    check_keys(name, spec, KEYS)
    path = str(spec.get("path", DEFAULT_PATH))
    split = spec_choice(name, spec, "split", "test", ("train", "test", "all"))
    seed = spec_int(name, spec, "seed", 0)
    sample = spec_choice(name, spec, "sample", "stratified", ("stratified", "random"))
    default_probe = "official" if split == "all" else "random"
    probe = spec_choice(name, spec, "probe_split", default_probe, ("official", "random"))
    if probe == "official" and split != "all":
        raise PrhError(f"{field_name(name, 'probe_split')}: 'official' needs split: all (got split: {split})")
    test_fraction = spec_float(name, spec, "test_fraction", 0.3, 0.0, 1.0)
    parts = ["train", "test"] if split == "all" else [split]
    loaded = [read_split(path, p, field_name(name, "path")) for p in parts]
    gray = np.concatenate([g for g, _ in loaded])
    classes = np.concatenate([c for _, c in loaded])
    official_train = np.concatenate([np.full(len(c), p == "train") for p, (_, c) in zip(parts, loaded)])
    n = spec_int(name, spec, "n", None, lo=1, hi=len(classes))
    keep = subsample(len(classes), n, seed, classes if sample == "stratified" else None)
    classes = classes[keep]
    is_train = official_train[keep] if probe == "official" else probe_split(len(keep), seed, test_fraction, classes)
    resolved = {
        "source": "fashion-mnist",
        "path": path,
        "split": split,
        "n": len(keep),
        "seed": seed,
        "sample": sample,
        "probe_split": probe,
        "test_fraction": test_fraction,
    }
    return make_dataset(
        name,
        images=to_rgb(gray[keep]),
        labels={"class": classes, "coarse": COARSE_OF_CLASS[classes]},
        is_train=is_train,
        meta={
            "source": "fashion-mnist",
            "spec": resolved,
            "indices": keep.tolist() if n is not None else None,
            "label_names": {"class": CLASS_NAMES, "coarse": COARSE_NAMES},
        },
    )
