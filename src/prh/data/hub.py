"""Hugging Face datasets (paper config only; needs ``pip install prh[hub]``): a hub ``id`` or a local ``path``.

``id`` (+ ``revision``, ``config``, ``split``) goes to ``datasets.load_dataset``, e.g. WIT as ``minhuh/prh``
revision ``wit_1024`` (image column ``image``, text column ``text``); ``path`` is a folder written by
``save_to_disk`` (a Dataset, or a DatasetDict from which ``split`` is taken). Images are converted to RGB,
resized so the shorter side is ``size`` (bicubic) and centre-cropped to (size, size). The first ``n`` rows are used.
Label columns hold ints (e.g. a ClassLabel) or strings (mapped to indices in sorted order; names in meta).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from prh.data import Dataset, check_keys, field_name, make_dataset, probe_split, spec_float, spec_int
from prh.errors import PrhError

KEYS = frozenset(
    {
        "id",
        "path",
        "revision",
        "config",
        "split",
        "image_column",
        "text_column",
        "label_columns",
        "n",
        "size",
        "seed",
        "test_fraction",
    }
)


def import_datasets(name: str) -> Any:
    """The Hugging Face ``datasets`` module, or PrhError saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise PrhError(
            f"{field_name(name, 'source')}: 'hf' needs the Hugging Face datasets package: pip install prh[hub]"
        ) from None
    return datasets


def open_table(name: str, spec: dict) -> Any:
    """The ``datasets.Dataset`` named by spec: local save_to_disk folder (``path``) or hub ``id``."""
    hf = import_datasets(name)
    split = spec.get("split", "train")
    if "path" in spec:
        from pathlib import Path

        if not Path(spec["path"]).is_dir():
            raise PrhError(f"{field_name(name, 'path')}: {spec['path']} not found (a folder written by save_to_disk)")
        table = hf.load_from_disk(str(spec["path"]))
        if isinstance(table, hf.DatasetDict):
            if split not in table:
                raise PrhError(f"{field_name(name, 'split')}: {split!r} not in {spec['path']} (has {', '.join(table)})")
            table = table[split]
        return table
    if "id" not in spec:
        raise PrhError(
            f"{field_name(name, 'id')}: source 'hf' needs an id (hub dataset) or a path (save_to_disk folder)"
        )
    try:
        return hf.load_dataset(spec["id"], spec.get("config"), revision=spec.get("revision"), split=split)
    except Exception as e:  # offline, unknown id or revision: one line for the user
        where = f"{spec['id']}@{spec.get('revision', 'main')} split {split}"
        why = str(e).splitlines()[0] if str(e) else ""
        raise PrhError(f"{field_name(name, 'id')}: cannot load {where} ({type(e).__name__}: {why})") from None


def to_rgb_square(image: Any, size: int) -> np.ndarray:
    """A PIL image or (H, W[, C]) array -> (size, size, 3) uint8: shorter side resized to size, centre crop."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def column(name: str, table: Any, key: str, col: str) -> list:
    """All values of a column, or PrhError naming the spec field and the columns that exist."""
    if col not in table.column_names:
        raise PrhError(f"{field_name(name, key)}: column {col!r} not in {', '.join(table.column_names)}")
    return list(table[col])


def first_text(value: Any) -> str:
    """A caption cell -> one string (the first of a list of captions)."""
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else ""
    return str(value)


def encode_labels(values: list) -> tuple[np.ndarray, list[str] | None]:
    """Int labels as (n,) int64 (no names), or strings as indices into their sorted unique names."""
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64), None
    names = sorted({str(v) for v in values})
    index = {v: i for i, v in enumerate(names)}
    return np.array([index[str(v)] for v in values], dtype=np.int64), names


def load(name: str, spec: dict) -> Dataset:
    """A hub or save_to_disk dataset as images (n, size, size, 3) uint8 and/or texts, labels and a probe split."""
    check_keys(name, spec, KEYS)
    size = spec_int(name, spec, "size", 224, lo=8, hi=4096)
    seed = spec_int(name, spec, "seed", 0)
    test_fraction = spec_float(name, spec, "test_fraction", 0.3, 0.0, 1.0)
    if "image_column" not in spec and "text_column" not in spec:
        raise PrhError(f"{field_name(name, 'image_column')}: source 'hf' needs an image_column and/or a text_column")
    table = open_table(name, spec)
    n = spec_int(name, spec, "n", None, lo=1, hi=len(table))
    if n is not None:
        table = table.select(range(n))
    images = None
    if "image_column" in spec:
        cells = column(name, table, "image_column", spec["image_column"])
        images = np.stack([to_rgb_square(c, size) for c in cells])  # type: ignore[arg-type]
    texts = (
        [first_text(v) for v in column(name, table, "text_column", spec["text_column"])]
        if "text_column" in spec
        else None
    )
    label_columns = spec.get("label_columns", [])
    label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    labels, label_names = {}, {}
    for col in label_columns:
        labels[col], names = encode_labels(column(name, table, "label_columns", col))
        feature = table.features.get(col)
        names = list(feature.names) if hasattr(feature, "names") else names  # a ClassLabel's names
        if names is not None:
            label_names[col] = names
    resolved = {k: spec[k] for k in sorted(spec)} | {
        "n": len(table),
        "size": size,
        "seed": seed,
        "test_fraction": test_fraction,
    }
    return make_dataset(
        name,
        images=images,
        texts=texts,
        labels=labels,
        is_train=probe_split(len(table), seed, test_fraction),  # type: ignore[arg-type]
        meta={
            "source": "hf",
            "spec": resolved,
            "label_names": label_names,
            "fingerprint": getattr(table, "_fingerprint", None),
        },
    )
