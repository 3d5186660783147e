"""prh.data: real Fashion-MNIST / digits / WordNet / pydoc loaders, digests, npz round trip, hf loader offline."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from prh.data import Dataset, load_dataset, load_saved, make_dataset, save_dataset
from prh.data.fashion_mnist import COARSE_NAMES, DEFAULT_PATH, read_idx
from prh.errors import PrhError

FMNIST = Path(DEFAULT_PATH)
needs_fmnist = pytest.mark.skipif(not FMNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
needs_wordnet = pytest.mark.skipif(
    not Path("/usr/share/wordnet/data.noun").is_file(), reason="wordnet-base not installed"
)


def fmnist(**kw) -> Dataset:
    """Load Fashion-MNIST with spec overrides."""
    return load_dataset("fm", {"source": "fashion-mnist", **kw})


# ---------------------------------------------------------------- Fashion-MNIST


@needs_fmnist
def test_fmnist_all_is_70k_rgb_28x28_with_official_split():
    ds = fmnist(split="all")
    assert ds.images.shape == (70_000, 28, 28, 3) and ds.images.dtype == np.uint8
    assert (ds.images[..., 0] == ds.images[..., 2]).all()  # grayscale replicated into RGB
    assert ds.is_train.sum() == 60_000 and not ds.is_train[60_000:].any()
    assert ds.images.max() == 255 and ds.images.min() == 0


@needs_fmnist
def test_fmnist_test_split_is_balanced_and_matches_raw_idx():
    ds = fmnist(split="test")
    assert ds.n == 10_000
    assert np.bincount(ds.labels["class"], minlength=10).tolist() == [1000] * 10
    assert ds.labels["class"].min() == 0 and ds.labels["class"].max() == 9
    # independent parse of the raw gzip: 16-byte header, then pixels
    raw = gzip.decompress((FMNIST / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert int.from_bytes(raw[4:8], "big") == 10_000
    assert np.array_equal(np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[1234], ds.images[1234, :, :, 1])
    # coarse grouping: sneakers (7) and ankle boots (9) are footwear, trousers (1) are bottoms
    coarse = ds.labels["coarse"]
    assert set(coarse[ds.labels["class"] == 7]) == {COARSE_NAMES.index("footwear")}
    assert set(coarse[ds.labels["class"] == 9]) == {COARSE_NAMES.index("footwear")}
    assert set(coarse[ds.labels["class"] == 1]) == {COARSE_NAMES.index("bottom")}
    # random probe split holds out 30% of each class
    assert np.bincount(ds.labels["class"][~ds.is_train]).tolist() == [300] * 10


@needs_fmnist
def test_fmnist_subsample_digest_depends_on_seed_only():
    a, b, c = fmnist(n=500, seed=1), fmnist(n=500, seed=1), fmnist(n=500, seed=2)
    assert a.image_digest == b.image_digest and a.meta["labels_digest"] == b.meta["labels_digest"]
    assert a.image_digest != c.image_digest
    assert np.bincount(a.labels["class"]).tolist() == [50] * 10  # stratified
    assert a.image_digest == hashlib.sha256(b"images(500, 28, 28, 3)|u1|" + a.images.tobytes()).hexdigest()
    r = fmnist(n=500, seed=1, sample="random")
    assert r.image_digest != a.image_digest and np.bincount(r.labels["class"]).tolist() != [50] * 10


@needs_fmnist
def test_fmnist_reads_raw_idx_and_rejects_bad_files(tmp_path):
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / stem).write_bytes(gzip.decompress((FMNIST / f"{stem}.gz").read_bytes()))
    assert fmnist(path=str(tmp_path)).image_digest == fmnist().image_digest
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(PrhError, match="not an unsigned-byte IDX"):
        read_idx(bad)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (10_000).to_bytes(4, "big") + b"\x00" * 10)
    with pytest.raises(PrhError, match="truncated"):
        fmnist(path=str(tmp_path))


def test_missing_path_names_field_and_package(tmp_path):
    with pytest.raises(
        PrhError, match=r"datasets\.fm\.path: .*nope.* \(install the Debian package dataset-fashion-mnist\)"
    ):
        fmnist(path=str(tmp_path / "nope"))
    with pytest.raises(
        PrhError, match=r"datasets\.wn\.path: .*data\.noun not found \(install the Debian package wordnet-base\)"
    ):
        load_dataset("wn", {"source": "wordnet", "path": str(tmp_path)})


def test_spec_mistakes_name_the_field():
    with pytest.raises(PrhError, match=r"datasets\.x\.source: 'mnist' is not one of fashion-mnist, digits, scenes"):
        load_dataset("x", {"source": "mnist"})
    with pytest.raises(PrhError, match=r"datasets\.x\.splt: unknown field"):
        load_dataset("x", {"source": "digits", "splt": "test"})
    with pytest.raises(PrhError, match=r"datasets\.x\.split: 'val' is not one of train, test, all"):
        load_dataset("x", {"source": "fashion-mnist", "split": "val"})
    with pytest.raises(PrhError, match=r"datasets\.x\.n: 5000 out of range \[1, 1797\]"):
        load_dataset("x", {"source": "digits", "n": 5000})


# ---------------------------------------------------------------- digits


def test_digits_are_scaled_sklearn_digits_with_labels():
    from sklearn.datasets import load_digits

    ref = load_digits()
    ds = load_dataset("d", {"source": "digits"})
    assert ds.images.shape == (1797, 8, 8, 3) and ds.images.dtype == np.uint8
    assert np.array_equal(ds.images[:, :, :, 0], np.round(ref.images * 255 / 16).astype(np.uint8))
    assert np.array_equal(ds.labels["class"], ref.target)
    assert np.array_equal(ds.labels["parity"], ref.target % 2)
    assert ds.labels["loop"][ref.target == 8].all() and not ds.labels["loop"][ref.target == 1].any()
    big = load_dataset("d", {"source": "digits", "size": 32, "n": 100, "seed": 3})
    small = load_dataset("d", {"source": "digits", "n": 100, "seed": 3})
    assert big.images.shape == (100, 32, 32, 3)
    assert np.array_equal(big.images[:, ::4, ::4], small.images)  # nearest upsampling: 4x4 blocks
    assert 0.25 < (~big.is_train).mean() < 0.35


# ---------------------------------------------------------------- text corpora


@needs_wordnet
def test_wordnet_corpus_split_is_fixed_disjoint_and_millions_of_chars():
    train = load_dataset("wn", {"source": "wordnet", "split": "train"})
    held = load_dataset("wn", {"source": "wordnet", "split": "heldout"})
    n_chars = sum(map(len, train.texts)) + sum(map(len, held.texts))
    assert 8_000_000 < n_chars < 10_000_000 and train.images is None
    assert set(train.meta["offsets"]).isdisjoint(held.meta["offsets"])
    assert len(train.meta["offsets"]) + len(held.meta["offsets"]) == 117_659  # synset lines in wordnet-base 3.0
    assert 0.08 < held.n / (train.n + held.n) < 0.12
    assert not any("Princeton" in t for t in held.texts[:1000])  # license header skipped
    assert "that which is perceived or known or inferred" in train.texts[0] or "entity" in held.texts[0]
    assert all("  " not in t and t == t.strip() for t in held.texts)
    sub = load_dataset("wn", {"source": "wordnet", "split": "heldout", "max_chars": 50_000, "seed": 1})
    assert 45_000 < sum(map(len, sub.texts)) + sub.n - 1 <= 50_000
    assert set(sub.meta["offsets"]) <= set(held.meta["offsets"])


@needs_wordnet
def test_wordnet_glosses_strip_examples_and_corpus_text_joins():
    from prh.data.text import corpus_text, wordnet_glosses

    pairs = dict(wordnet_glosses())
    assert pairs["entity"].startswith("that which is perceived")
    assert pairs["stare"] == "fixate one's eyes"  # '; "The ancestor ... is staring down menacingly"' removed
    assert not any('"' in d for d in pairs.values())
    text = corpus_text({"source": "wordnet", "split": "heldout", "n_docs": 200, "seed": 0})
    assert text.count("\n") == 199


def test_pydoc_documents_are_bounded_and_cover_topics():
    from pydoc_data.topics import topics

    ds = load_dataset("py", {"source": "pydoc", "doc_chars": 1000})
    assert ds.images is None and ds.n > 300
    assert max(map(len, ds.texts)) <= 1000 or all(" " not in t for t in ds.texts if len(t) > 1000)
    words = sum(len(t.split()) for t in ds.texts)
    assert words == sum(len(v.split()) for v in topics.values())  # nothing lost, nothing added
    assert load_dataset("py", {"source": "pydoc", "n_docs": 10, "seed": 1}).n == 10


# ---------------------------------------------------------------- saved datasets


def test_npz_round_trip_is_exact_and_atomic(tmp_path):
    ds = load_dataset("d", {"source": "digits", "n": 60})
    texts = ["a caption", "ünïcode ✓", "", "  leading space"] + [f"t{i}" for i in range(56)]
    ds = make_dataset(
        "mixed",
        images=ds.images,
        texts=texts,
        labels=ds.labels,
        is_train=ds.is_train,
        meta={"source": "test", "x": [1, 2]},
    )
    path = tmp_path / "sub" / "mixed.npz"
    save_dataset(ds, path)
    assert [p.name for p in path.parent.iterdir()] == ["mixed.npz"]  # no temp file left behind
    back = load_saved(path)
    assert back.image_digest == ds.image_digest and back.text_digest == ds.text_digest
    assert back.texts == texts and back.meta == ds.meta and back.name == "mixed"
    assert np.array_equal(back.is_train, ds.is_train) and back.labels.keys() == ds.labels.keys()
    assert all(back.labels[k].dtype == np.int64 and np.array_equal(back.labels[k], ds.labels[k]) for k in ds.labels)
    with np.load(path) as z:  # readable without prh
        assert z["texts"].tolist() == texts and json.loads(str(z["meta"]))["x"] == [1, 2]


def test_load_saved_rejects_tampered_and_missing_files(tmp_path):
    ds = load_dataset("d", {"source": "digits", "n": 20})
    path = tmp_path / "d.npz"
    save_dataset(ds, path)
    with np.load(path) as z:
        arrays = dict(z)
    arrays["images"] = arrays["images"].copy()
    arrays["images"][0, 0, 0, 0] ^= 1
    np.savez(path, **arrays)
    with pytest.raises(PrhError, match="image_digest does not match"):
        load_saved(path)
    arrays["images"][0, 0, 0, 0] ^= 1  # content restored, labels changed
    arrays["labels/class"] = (arrays["labels/class"] + 1) % 10
    np.savez(path, **arrays)
    with pytest.raises(PrhError, match="labels_digest does not match"):
        load_saved(path)
    with pytest.raises(PrhError, match="not found"):
        load_saved(tmp_path / "none.npz")


def test_digests_ignore_labels_but_not_content():
    img = np.zeros((2, 4, 4, 3), np.uint8)
    a = make_dataset("a", images=img, texts=["x", "y"], labels={"c": np.array([0, 1])})
    b = make_dataset("b", images=img, texts=["x", "y"], labels={"c": np.array([1, 1])})
    assert a.image_digest == b.image_digest and a.text_digest == b.text_digest
    assert a.meta["labels_digest"] != b.meta["labels_digest"]
    assert make_dataset("c", images=img.reshape(2, 2, 8, 3)).image_digest != a.image_digest  # shape counts
    assert make_dataset("d", texts=["xy", ""]).text_digest != a.text_digest  # boundaries count
    with pytest.raises(PrhError, match="no image data"):
        make_dataset("t", texts=["x"]).digest("image")


# ---------------------------------------------------------------- hf loader, offline with a local fixture


def test_hf_loader_reads_a_save_to_disk_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # read at import: set before importing datasets
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = pytest.importorskip("datasets")
    from PIL import Image

    monkeypatch.setattr(hf.config, "HF_DATASETS_OFFLINE", True)  # in case another test imported it first
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 4:36] = (200, 10, 10)  # the centre square (columns 10-30) is red with a margin for bicubic
    gray = np.full((30, 30), 77, np.uint8)
    table = hf.Dataset.from_dict(
        {
            "image": [Image.fromarray(wide), Image.fromarray(gray)],
            "text": ["a red square", "a gray one"],
            "place": ["beach", "attic"],
        },
        features=hf.Features({"image": hf.Image(), "text": hf.Value("string"), "place": hf.Value("string")}),
    )
    table.save_to_disk(str(tmp_path / "wit"))
    spec = {
        "source": "hf",
        "path": str(tmp_path / "wit"),
        "image_column": "image",
        "text_column": "text",
        "label_columns": "place",
        "size": 16,
    }
    ds = load_dataset("wit", spec)
    assert ds.images.shape == (2, 16, 16, 3) and ds.images.dtype == np.uint8
    assert (ds.images[0] == (200, 10, 10)).all() and (ds.images[1] == 77).all()
    assert ds.texts == ["a red square", "a gray one"]
    assert ds.labels["place"].tolist() == [1, 0] and ds.meta["label_names"]["place"] == ["attic", "beach"]
    assert load_dataset("wit", spec | {"n": 1}).n == 1
    with pytest.raises(PrhError, match=r"datasets\.wit\.text_column: column 'caption' not in image, text, place"):
        load_dataset("wit", spec | {"text_column": "caption"})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(PrhError, match=r"datasets\.wit\.id: dataset minhuh/prh@wit_1024: wit_1024 is not in the hub cache"):
        load_dataset("wit", {"source": "hf", "id": "minhuh/prh", "revision": "wit_1024", "image_column": "image"})


def test_hf_without_datasets_package_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets":
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(PrhError, match=r"datasets\.w\.source: .*pip install prh\[hub\]"):
        load_dataset("w", {"source": "hf", "path": "/x", "image_column": "image"})
