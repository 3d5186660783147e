"""Datasets: real images and text from offline packages, generated image-caption scenes, and hub loaders.

`load_dataset(name, spec)` dispatches on ``spec["source"]`` to one loader per source:

- ``fashion-mnist``: Debian ``dataset-fashion-mnist`` IDX files (`prh.data.fashion_mnist`)
- ``digits``: scikit-learn's 1,797 8x8 handwritten digits (`prh.data.digits`)
- ``scenes``: image-caption pairs generated from real Fashion-MNIST items (`prh.data.scenes`)
- ``emoji``: Noto Color Emoji glyphs paired with their CLDR names / keywords (`prh.data.emoji`; designed icons)
- ``wordnet`` / ``pydoc``: English glosses / Python docs as text corpora (`prh.data.text`)
- ``xkcd-colours`` / ``skimage-photos``: XKCD colour names with RGB (text) and scikit-image's photographs, the
  colour experiment's inputs (`prh.data.colours`)
- ``hf``: a Hugging Face dataset, hub id or local ``save_to_disk`` folder (`prh.data.hub`; paper config only)

Digests are content-only: ``image_digest`` covers the image bytes and shape, ``text_digest`` the texts;
labels and the probe split change no feature, so they are in neither and get ``meta["labels_digest"]``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from prh.errors import PrhError
from prh.io import atomic_path, stamp_memo

Modality = Literal["image", "text"]

# source -> "module:function"; each loader is `(name, spec) -> Dataset`, imported only when used.
SOURCES: dict[str, str] = {
    "fashion-mnist": "prh.data.fashion_mnist:load",
    "digits": "prh.data.digits:load",
    "scenes": "prh.data.scenes:load",
    "emoji": "prh.data.emoji:load",
    "wordnet": "prh.data.text:load_wordnet",
    "pydoc": "prh.data.text:load_pydoc",
    "xkcd-colours": "prh.data.colours:load_xkcd",
    "skimage-photos": "prh.data.colours:load_photos",
    "hf": "prh.data.hub:load",
}
COMMON_KEYS = frozenset({"source", "description"})  # accepted by every source


@dataclass(frozen=True)
class Dataset:
    """A materialised dataset; row i of every field describes the same input i."""

    name: str
    images: np.ndarray | None  # (n, H, W, 3) uint8 RGB
    texts: list[str] | None  # n strings
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n,) int64
    is_train: np.ndarray | None = None  # (n,) bool probe split
    image_digest: str | None = None  # sha256 hex of the image bytes and shape
    text_digest: str | None = None  # sha256 hex of the utf-8 texts
    meta: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of samples."""
        if self.images is not None:
            return int(self.images.shape[0])
        return len(self.texts or [])

    def digest(self, modality: Modality) -> str:
        """Content digest of the part of the dataset a model of that modality reads."""
        d = self.image_digest if modality == "image" else self.text_digest
        if d is None:
            raise PrhError(f"dataset {self.name!r} has no {modality} data")
        return d


# ---------------------------------------------------------------- digests


def image_digest(images: np.ndarray) -> str:
    """sha256 hex over the shape, dtype and C-order bytes of (n, H, W, 3) uint8 images."""
    h = hashlib.sha256(f"images{tuple(int(s) for s in images.shape)}{images.dtype.str}|".encode())
    h.update(np.ascontiguousarray(images).data)
    return h.hexdigest()


def text_digest(texts: list[str]) -> str:
    """sha256 hex over the utf-8 JSON list of n texts."""
    return hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode("utf-8")).hexdigest()


def labels_digest(labels: dict[str, np.ndarray], is_train: np.ndarray | None) -> str:
    """sha256 hex over the (name, (n,) int64 values) label pairs and the (n,) bool probe split."""
    h = hashlib.sha256(b"labels|")
    for key in sorted(labels):
        h.update(f"{key}:{labels[key].shape}|".encode())
        h.update(np.ascontiguousarray(labels[key], dtype=np.int64).data)
    if is_train is not None:
        h.update(b"is_train|")
        h.update(np.ascontiguousarray(is_train, dtype=np.bool_).data)
    return h.hexdigest()


def make_dataset(
    name: str,
    *,
    images: np.ndarray | None = None,
    texts: list[str] | None = None,
    labels: dict[str, np.ndarray] | None = None,
    is_train: np.ndarray | None = None,
    meta: dict | None = None,
    known: dict[str, str] | None = None,
) -> Dataset:
    """Check shapes and build a Dataset with its digests computed (labels_digest goes into meta); ``known``: digests
    already verified against these very arrays (``image_digest``, ``text_digest``, ``labels_digest``), not recomputed."""
    if images is None and texts is None:
        raise PrhError(f"dataset {name!r}: neither images nor texts")
    if images is not None and (images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3):
        raise PrhError(f"dataset {name!r}: images must be (n, H, W, 3) uint8, got {images.shape} {images.dtype}")
    n = int(images.shape[0]) if images is not None else len(texts or [])
    if texts is not None:
        texts = [str(t) for t in texts]
        if len(texts) != n:
            raise PrhError(f"dataset {name!r}: {len(texts)} texts for {n} images")
    labels = {k: np.asarray(v, dtype=np.int64) for k, v in (labels or {}).items()}
    for k, v in labels.items():
        if v.shape != (n,):
            raise PrhError(f"dataset {name!r}: label {k!r} has shape {v.shape}, expected ({n},)")
    if is_train is not None:
        is_train = np.asarray(is_train, dtype=np.bool_)
        if is_train.shape != (n,):
            raise PrhError(f"dataset {name!r}: is_train has shape {is_train.shape}, expected ({n},)")
    meta = dict(meta or {})
    known = known or {}
    meta["labels_digest"] = known.get("labels_digest") or labels_digest(labels, is_train)
    return Dataset(
        name=name,
        images=images,
        texts=texts,
        labels=labels,
        is_train=is_train,
        image_digest=(known.get("image_digest") or image_digest(images)) if images is not None else None,
        text_digest=(known.get("text_digest") or text_digest(texts)) if texts is not None else None,
        meta=meta,
    )


# ---------------------------------------------------------------- spec helpers (shared by loaders)


def field_name(name: str, key: str) -> str:
    """The config path of a dataset field, e.g. ``datasets.fmnist.path``."""
    return f"datasets.{name}.{key}"


def check_keys(name: str, spec: dict, allowed: frozenset[str] | set[str]) -> None:
    """Raise PrhError naming the first spec key the source does not know."""
    valid = set(allowed) | COMMON_KEYS
    for key in spec:
        if key not in valid:
            known = ", ".join(sorted(valid))
            raise PrhError(f"{field_name(name, key)}: unknown field for source {spec.get('source')!r} (valid: {known})")


def spec_int(name: str, spec: dict, key: str, default: int | None, lo: int = 0, hi: int | None = None) -> int | None:
    """An integer spec field in [lo, hi], or default when absent (None stays None)."""
    v = spec.get(key, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise PrhError(f"{field_name(name, key)}: expected an integer, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        raise PrhError(f"{field_name(name, key)}: {v} out of range [{lo}, {'inf' if hi is None else hi}]")
    return int(v)


def spec_float(name: str, spec: dict, key: str, default: float, lo: float, hi: float) -> float:
    """A float spec field in the open-closed range (lo, hi)."""
    v = spec.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo < v < hi:
        raise PrhError(f"{field_name(name, key)}: expected a number in ({lo}, {hi}), got {v!r}")
    return float(v)


def spec_choice(name: str, spec: dict, key: str, default: Any, choices: tuple | list) -> Any:
    """A spec field restricted to a fixed set of choices."""
    v = spec.get(key, default)
    if v not in choices:
        raise PrhError(f"{field_name(name, key)}: {v!r} is not one of {', '.join(map(str, choices))}")
    return v


def rng_for(seed: int, stream: str) -> np.random.Generator:
    """An independent generator per (seed, purpose) so that e.g. the probe split never shifts the sample."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode())])


def subsample(n_total: int, n: int | None, seed: int, strata: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of n of n_total items: uniform, or balanced over strata (sizes differ by <= 1 where possible)."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    perm = rng_for(seed, "subsample").permutation(n_total)
    if strata is None:
        return np.sort(perm[:n])
    s = np.asarray(strata)[perm]
    rank = np.empty(n_total, dtype=np.int64)  # rank of each permuted item within its stratum
    for value in np.unique(s):
        where = np.flatnonzero(s == value)
        rank[where] = np.arange(where.size)
    order = np.lexsort((np.arange(n_total), rank))  # round robin over strata, permuted order within
    return np.sort(perm[order[:n]])


def probe_split(n: int, seed: int, test_fraction: float, strata: np.ndarray | None = None) -> np.ndarray:
    """(n,) bool is_train: a seeded split with round(test_fraction * size) test items per stratum."""
    rng = rng_for(seed, "probe-split")
    strata = np.zeros(n, dtype=np.int64) if strata is None else np.asarray(strata)
    is_train = np.ones(n, dtype=np.bool_)
    for value in np.unique(strata):
        where = np.flatnonzero(strata == value)
        n_test = int(round(test_fraction * where.size))
        is_train[rng.permutation(where)[:n_test]] = False
    return is_train


# ---------------------------------------------------------------- dispatch


def _loader(source: str) -> Callable[[str, dict], Dataset]:
    """The loader function registered for a source."""
    module, func = SOURCES[source].split(":")
    return getattr(importlib.import_module(module), func)


def load_dataset(name: str, spec: dict) -> Dataset:
    """Materialise the dataset ``datasets.<name>`` of the config from its spec (dispatch on spec["source"])."""
    if not isinstance(spec, dict):
        raise PrhError(f"datasets.{name}: expected a mapping with a 'source' field, got {type(spec).__name__}")
    source = spec.get("source")
    if source not in SOURCES:
        raise PrhError(f"{field_name(name, 'source')}: {source!r} is not one of {', '.join(SOURCES)}")
    return _loader(source)(name, spec)


# ---------------------------------------------------------------- saved datasets (.npz)


def save_dataset(ds: Dataset, path: str | os.PathLike) -> None:
    """Write ds to a .npz file atomically (temp file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "name": np.array(ds.name),
        "meta": np.array(json.dumps(ds.meta, sort_keys=True)),
        "image_digest": np.array(ds.image_digest or ""),
        "text_digest": np.array(ds.text_digest or ""),
    }
    if ds.images is not None:
        arrays["images"] = ds.images
    if ds.texts is not None:
        arrays["texts"] = np.array(ds.texts, dtype=np.str_).reshape(len(ds.texts))
    if ds.is_train is not None:
        arrays["is_train"] = ds.is_train
    for key, values in ds.labels.items():
        arrays[f"labels/{key}"] = values
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # uncompressed: every extraction job reads it, and zlib decoding cost more than the forward
        f.flush()
        os.fsync(f.fileno())


def load_saved(path: str | os.PathLike) -> Dataset:
    """Read a Dataset written by save_dataset; raises PrhError if the file is missing or its digests do not match."""
    path = Path(path)
    if not path.is_file():
        raise PrhError(f"{path}: saved dataset not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = dict((k, z[k]) for k in z.files)
    except (OSError, ValueError, KeyError) as e:
        raise PrhError(f"{path}: not a dataset .npz ({e})") from None
    texts = [str(t) for t in files["texts"]] if "texts" in files else None
    labels = {k[len("labels/") :]: v.astype(np.int64) for k, v in files.items() if k.startswith("labels/")}
    meta = json.loads(str(files["meta"]))
    stored = {"image_digest": str(files["image_digest"]), "text_digest": str(files["text_digest"]),
              "labels_digest": str(meta.get("labels_digest") or "")}  # fmt: skip
    build = functools.partial(make_dataset, str(files["name"]), images=files.get("images"), texts=texts, labels=labels,
                              is_train=files.get("is_train"), meta=meta)  # fmt: skip

    checked: list[Dataset] = []  # the dataset built while verifying, when this read verified it

    def verified() -> str:
        """The stored digests, once every one is recomputed from the arrays and found equal."""
        ds = build()
        checked.append(ds)
        for key in ("image_digest", "text_digest"):
            if (getattr(ds, key) or "") != stored[key]:
                raise PrhError(f"{path}: {key} does not match the stored content (corrupt or hand-edited file)")
        if stored["labels_digest"] and stored["labels_digest"] != ds.meta["labels_digest"]:
            raise PrhError(f"{path}: labels_digest does not match the stored labels (corrupt or hand-edited file)")
        return json.dumps(stored, sort_keys=True)

    # verified once per file state on this machine (the data job's receipt); later readers trust the stamp
    if stamp_memo(path, "dataset-digests", verified) != json.dumps(stored, sort_keys=True):
        verified()  # a memo of other digests for this stamp cannot come from this file: check it for real
    return checked[-1] if checked else build(known={k: v for k, v in stored.items() if v})
