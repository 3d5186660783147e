"""Hugging Face datasets (paper config; needs ``pip install prh[hub]``): a hub ``id`` read from the hub cache at its
resolved commit, or a local ``save_to_disk`` ``path``.

A hub dataset is read from exactly one snapshot of the cache (``prh.hub``; the Plan resolves ``revision`` to a commit,
``prh prefetch`` downloads it), never from the network: parquet, webdataset tars (``webp``/``cls``, ...) and the
other layouts ``datasets`` infers from a repository's files, or only the files matching ``data_files``
(e.g. one shard of the ``refs/convert/parquet`` branch). Rows are a seeded uniform sample, never the first n of
shards that may be sorted by class:

- one split: ``n`` of ``split`` (all when unset); the probe split holds out ``test_fraction`` of them;
- VTAB-1k style (``train_split`` set): ``n_train`` rows (default 1,000) of ``train_split`` are the probe's training
  set (``prh.probe`` picks C on a seeded 20% of them, i.e. 800 train + 200 validation, then refits on all 1,000) and
  ``n_test`` rows (default all) of ``test_split`` (default test) its test set.

Images are converted to RGB, resized so the shorter side is ``size`` (bicubic) and centre-cropped to (size, size).
Captions (``text_column``; the first of a list) are cut to their first ``density`` words when set (the caption
density experiment on long descriptions). Label columns hold ints (e.g. a ClassLabel) or strings (mapped to indices
in sorted order; names in meta).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from prh.data import Dataset, check_keys, field_name, make_dataset, probe_split, spec_float, spec_int, subsample
from prh.errors import PrhError
from prh.hub import dataset_ref

KEYS = frozenset(
    {
        "id", "path", "revision", "commit", "config", "split", "data_files", "image_column", "text_column",
        "label_columns", "n", "size", "seed", "test_fraction", "train_split", "n_train", "test_split", "n_test",
        "density",
    }
)  # fmt: skip
N_TRAIN = 1000  # VTAB-1k: 800 train + 200 validation


def import_datasets(name: str) -> Any:
    """The Hugging Face ``datasets`` module, or PrhError saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise PrhError(
            f"{field_name(name, 'source')}: 'hf' needs the Hugging Face datasets package: pip install prh[hub]"
        ) from None
    return datasets


def _one_line(e: BaseException) -> str:
    """An exception's type and first message line."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _from_disk(name: str, spec: dict, split: str) -> Any:
    """One split of a local ``save_to_disk`` folder (a Dataset, or a DatasetDict)."""
    hf = import_datasets(name)
    if not Path(spec["path"]).is_dir():
        raise PrhError(f"{field_name(name, 'path')}: {spec['path']} not found (a folder written by save_to_disk)")
    table = hf.load_from_disk(str(spec["path"]))
    if isinstance(table, hf.DatasetDict):
        if split not in table:
            raise PrhError(f"{field_name(name, 'split')}: {split!r} not in {spec['path']} (has {', '.join(table)})")
        table = table[split]
    return table


def data_file_patterns(spec: dict, split: str) -> list[str] | None:
    """The snapshot-relative globs ``data_files`` names for ``split`` (a glob, a list, or split -> globs), or None."""
    files = spec.get("data_files")
    if files is None:
        return None
    if isinstance(files, dict):
        files = files.get(split, [])
    return [files] if isinstance(files, str) else list(files)


def _builder(paths: list[str]) -> str:
    """The ``datasets`` packaged builder for a list of data files, by extension."""
    suffixes = {Path(p).suffix for p in paths}
    for suffix, builder in ((".parquet", "parquet"), (".tar", "webdataset"), (".arrow", "arrow"), (".jsonl", "json"),
                            (".json", "json"), (".csv", "csv"), (".txt", "text")):  # fmt: skip
        if suffixes == {suffix}:
            return builder
    raise PrhError(f"data files of mixed or unknown kinds: {sorted(suffixes)}")


def _from_cache(name: str, spec: dict, split: str) -> Any:
    """One split of a hub dataset, read from its resolved commit's snapshot in the hub cache."""
    hf = import_datasets(name)
    ref = dataset_ref(name, spec)
    assert ref is not None
    snapshot = ref.snapshot(spec.get("commit") or ref.cached_commit())
    patterns = data_file_patterns(spec, split)
    try:
        if patterns is None:  # the layout datasets infers from the repository's files (and its README configs)
            return hf.load_dataset(str(snapshot), spec.get("config"), split=split)
        paths = sorted({str(p) for pattern in patterns for p in snapshot.glob(pattern) if p.is_file()})
        if not paths:
            raise ref.missing(f"no file of commit {snapshot.name[:12]} matches data_files {patterns}")
        return hf.load_dataset(_builder(paths), data_files={split: paths}, split=split)
    except PrhError:
        raise
    except (ValueError, KeyError, FileNotFoundError) as e:  # an absent split or config, files not prefetched
        raise ref.missing(f"split {split!r} cannot be read from commit {snapshot.name[:12]} ({_one_line(e)})") from None


def open_split(name: str, spec: dict, split: str) -> Any:
    """The ``datasets.Dataset`` of one split: from the local ``path``, else from the hub cache."""
    if "path" in spec:
        return _from_disk(name, spec, split)
    if "id" not in spec:
        raise PrhError(f"{field_name(name, 'id')}: source 'hf' needs an id (hub dataset) or a path (save_to_disk folder)")
    return _from_cache(name, spec, split)


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


def first_words(text: str, words: int | None) -> str:
    """The first ``words`` whitespace-separated words of a text (all of it when None)."""
    return text if words is None else " ".join(text.split()[:words])


def encode_labels(values: list) -> tuple[np.ndarray, list[str] | None]:
    """Int labels as (n,) int64 (no names), or strings as indices into their sorted unique names."""
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64), None
    names = sorted({str(v) for v in values})
    index = {v: i for i, v in enumerate(names)}
    return np.array([index[str(v)] for v in values], dtype=np.int64), names


def _sample(name: str, spec: dict, table: Any, key: str, default: int | None) -> Any:
    """A seeded uniform sample of ``spec[key]`` rows (``default`` when unset; all when None), in table order."""
    n = spec_int(name, spec, key, default, lo=1)
    if n is not None and n > len(table):
        raise PrhError(f"{field_name(name, key)}: {n} rows asked, the split has {len(table)}")
    return table.select(subsample(len(table), n, spec_int(name, spec, "seed", 0)).tolist())


def _rows(name: str, spec: dict) -> tuple[list[Any], np.ndarray | None]:
    """The sampled tables (one, or VTAB-1k's train and test) and their probe split (None: drawn by probe_split)."""
    if "train_split" not in spec:
        return [_sample(name, spec, open_split(name, spec, spec.get("split", "train")), "n", None)], None
    train = _sample(name, spec, open_split(name, spec, spec["train_split"]), "n_train", N_TRAIN)
    test = _sample(name, spec, open_split(name, spec, spec.get("test_split", "test")), "n_test", None)
    return [train, test], np.concatenate([np.ones(len(train), bool), np.zeros(len(test), bool)])


def load(name: str, spec: dict) -> Dataset:
    """A hub or save_to_disk dataset as images (n, size, size, 3) uint8 and/or texts, labels and a probe split."""
    check_keys(name, spec, KEYS)
    size = spec_int(name, spec, "size", 224, lo=8, hi=4096)
    seed = spec_int(name, spec, "seed", 0)
    test_fraction = spec_float(name, spec, "test_fraction", 0.3, 0.0, 1.0)
    words = spec_int(name, spec, "density", None, lo=1)
    if "image_column" not in spec and "text_column" not in spec:
        raise PrhError(f"{field_name(name, 'image_column')}: source 'hf' needs an image_column and/or a text_column")
    tables, is_train = _rows(name, spec)
    n = sum(len(t) for t in tables)
    images = None
    if "image_column" in spec:
        images = np.stack([to_rgb_square(c, size) for t in tables for c in column(name, t, "image_column", spec["image_column"])])
    texts = None
    if "text_column" in spec:
        texts = [first_words(first_text(v), words) for t in tables for v in column(name, t, "text_column", spec["text_column"])]
    label_columns = spec.get("label_columns", [])
    label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    labels, label_names = {}, {}
    for col in label_columns:
        labels[col], names = encode_labels([v for t in tables for v in column(name, t, "label_columns", col)])
        feature = tables[0].features.get(col)
        names = list(feature.names) if hasattr(feature, "names") else names  # a ClassLabel's names
        if names is not None:
            label_names[col] = names
    resolved = {k: spec[k] for k in sorted(spec)} | {"n": n, "size": size, "seed": seed, "test_fraction": test_fraction}
    return make_dataset(
        name,
        images=images,
        texts=texts,
        labels=labels,
        is_train=is_train if is_train is not None else probe_split(n, seed, test_fraction),
        meta={
            "source": "hf",
            "spec": resolved,
            "label_names": label_names,
            "sampling": sampling_statement(spec),
            "fingerprint": [getattr(t, "_fingerprint", None) for t in tables],
        },
    )


def sampling_statement(spec: dict) -> str:
    """How a hub dataset's rows are drawn, in words (its meta and the report state it)."""
    seed = spec.get("seed", 0)
    if "train_split" in spec:
        n_test = spec.get("n_test")
        return (f"VTAB-1k: {spec.get('n_train', N_TRAIN)} rows of split {spec['train_split']} (the probe picks C on a "
                f"seeded 20% of them), {'all rows' if n_test is None else f'{n_test} rows'} of split "
                f"{spec.get('test_split', 'test')} as its test set; seeded uniform samples (seed {seed})")  # fmt: skip
    n = spec.get("n")
    return f"{'all rows' if n is None else f'{n} rows'} of split {spec.get('split', 'train')}, seeded uniform sample (seed {seed})"
