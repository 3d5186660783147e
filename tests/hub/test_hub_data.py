"""Hub datasets read from the hub cache: parquet, webdataset tars and one shard of refs/convert/parquet; seeded
uniform samples, VTAB-1k splits, caption density; the commit read is recorded; a missing split is one line."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from hubkit import labelled_splits, repo_path, write_snapshot
from PIL import Image

from prh.data import load_dataset
from prh.hub import HubMissing

pytestmark = pytest.mark.slow
WIT = {"source": "hf", "id": "minhuh/prh", "revision": "wit_1024", "image_column": "image", "text_column": "text",
       "size": 32}  # fmt: skip
VTAB = {"source": "hf", "id": "clip-benchmark/wds_vtab-svhn", "train_split": "train", "n_train": 50, "test_split": "test",
        "n_test": 30, "image_column": "webp", "label_columns": ["cls"], "size": 32}  # fmt: skip


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets-cache"))


def _tar_samples(path) -> list[tuple[np.ndarray, int]]:
    """(image, label) of every sample of a webdataset tar, read with tarfile and PIL (independently of datasets)."""
    out, members = [], {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            members.setdefault(m.name.rsplit(".", 1)[0], {})[m.name.rsplit(".", 1)[1]] = tar.extractfile(m).read()
    for key in sorted(members):
        image = np.asarray(Image.open(io.BytesIO(members[key]["webp"])).convert("RGB"))
        out.append((image, int(members[key]["cls"])))
    return out


def test_parquet_split_is_a_seeded_uniform_sample_with_its_commit(hub) -> None:
    """n rows of the WIT revision's parquet: a seeded uniform sample (not the first n), the same for the same seed,
    another for another seed; captions are the first of each list; the commit read is in the dataset's meta."""
    cache, commits = hub
    full = load_dataset("wit", WIT)
    assert full.n == 48 and full.images.shape == (48, 32, 32, 3) and all(isinstance(t, str) and t for t in full.texts)
    a, b, c = (load_dataset("wit", WIT | {"n": 12, "seed": s}) for s in (0, 0, 1))
    assert a.image_digest == b.image_digest and a.image_digest != c.image_digest
    picked = [full.texts.index(t) for t in a.texts]
    assert picked == sorted(picked) and picked != list(range(12))  # table order kept, not the first 12
    spec_commit = load_dataset("wit", WIT | {"commit": commits["minhuh/prh"]})
    assert spec_commit.meta["spec"]["commit"] == commits["minhuh/prh"] and spec_commit.text_digest == full.text_digest


def test_vtab_1k_train_and_test_rows_come_from_their_splits(hub) -> None:
    """train_split rows are the probe's training set, test_split rows its test set, each a seeded sample of its own
    split: every row equals a sample of that split's tar (read independently), labels included."""
    cache, commits = hub
    ds = load_dataset("vtab-svhn", VTAB)
    assert ds.n == 80 and ds.is_train.sum() == 50 and not ds.is_train[50:].any()
    snap = repo_path(cache, "clip-benchmark/wds_vtab-svhn", "dataset") / "snapshots" / commits["clip-benchmark/wds_vtab-svhn"]
    for split, rows in (("train", slice(0, 50)), ("test", slice(50, 80))):
        samples = _tar_samples(snap / split / "0.tar")
        from prh.data.hub import to_rgb_square

        expected = {to_rgb_square(im, 32).tobytes(): label for im, label in samples}
        for image, label in zip(ds.images[rows], ds.labels["cls"][rows]):
            assert expected[image.tobytes()] == label
    assert ds.meta["sampling"].startswith("VTAB-1k: 50 rows of split train (the probe picks C on a seeded 20% of them), "
                                          "30 rows of split test as its test set")


def test_one_parquet_shard_of_the_parquet_branch(hub) -> None:
    """refs/convert/parquet with data_files: the shard's documents, a seeded sample of them."""
    spec = {"source": "hf", "id": "Skylion007/openwebtext", "revision": "refs/convert/parquet",
            "data_files": "plain_text/train/0000.parquet", "split": "train", "text_column": "text"}  # fmt: skip
    assert load_dataset("owt", spec).n == 16 and load_dataset("owt", spec | {"n": 5}).n == 5
    with pytest.raises(HubMissing, match=r"no file of commit \w{12} matches data_files \['plain_text/train/9\*'\]"):
        load_dataset("owt", spec | {"data_files": "plain_text/train/9*"})


def test_caption_density_cuts_descriptions_to_their_first_words(hub) -> None:
    base = {"source": "hf", "id": "google/docci", "split": "train", "image_column": "image", "text_column": "description",
            "n": 10, "size": 32}  # fmt: skip
    full, cut = load_dataset("d", base), load_dataset("d", base | {"density": 5})
    assert full.image_digest == cut.image_digest
    assert all(c == " ".join(f.split()[:5]) and len(c.split()) == 5 for f, c in zip(full.texts, cut.texts))


def test_missing_split_or_revision_is_one_line(hub, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HubMissing, match=r"^datasets\.p\.id: dataset haideraltahan/wds_places365@main: split 'test' "
                       r"cannot be read from commit \w{12} .*; run `prh prefetch"):  # fmt: skip
        load_dataset("p", {"source": "hf", "id": "haideraltahan/wds_places365", "split": "test", "image_column": "webp"})
    with pytest.raises(HubMissing, match=r"^datasets\.w\.id: dataset minhuh/prh@wit_2048: wit_2048 is not in the hub"):
        load_dataset("w", WIT | {"revision": "wit_2048"})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    write_snapshot(tmp_path, "org/vtab", labelled_splits("digits", {"train": 20}, 0), "dataset")
    with pytest.raises(HubMissing, match=r"split 'test' cannot be read"):  # a partial prefetch: the test tars absent
        load_dataset("v", VTAB | {"id": "org/vtab", "n_train": 10, "n_test": 5})
