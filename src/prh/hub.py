"""The Hugging Face hub cache, read without the network: where it lives, which commit a revision names there, which
files a snapshot holds and their content ids, and the offline switch every compute job throws.

The layout is huggingface_hub's::

    <cache>/<type>s--<org>--<name>/refs/<revision>              the commit sha a branch or tag names
    <cache>/<type>s--<org>--<name>/snapshots/<commit>/<path>    -> ../../blobs/<blob id>

A blob's name is the file's sha256 for LFS files (weights, parquet, tars) and its git blob sha1 for small files
(configs, tokenizers), so the content id of every file of a snapshot is read from its symlink without reading the file.
Hub models and datasets are resolved to a commit when the DAG is built (``Plan``: a sha revision as given, else the
cache's ``refs/``); ``prh prefetch`` fills the cache from the hub, and compute jobs never touch the network.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prh.errors import PrhError
from prh.io import file_sha256

RepoType = Literal["model", "dataset"]
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_BLOB_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# What a compute job sets before any Hugging Face library is imported: a missing file fails at once, never after a
# network time-out (huggingface_hub reads HF_HUB_OFFLINE once, at import)
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
PREFETCH_HINT = "run `prh prefetch --configfile <your config>` where the hub is reachable (see docs: the paper config)"


def cache_dir() -> Path:
    """The hub cache huggingface_hub uses: HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):  # the older name, still honoured by huggingface_hub
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(xdg).expanduser() / "huggingface" / "hub"


def go_offline() -> None:
    """Make this process (and its children) use the hub cache only; values already set are kept."""
    for var in OFFLINE_VARS:
        os.environ.setdefault(var, "1")


def is_offline() -> bool:
    """True when HF_HUB_OFFLINE is set to a true value (as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def repo_dir(repo_id: str, repo_type: RepoType = "model") -> Path:
    """``<cache>/<type>s--<org>--<name>``."""
    return cache_dir() / "--".join([f"{repo_type}s", *repo_id.split("/")])


def is_commit(revision: str | None) -> bool:
    """True when ``revision`` is a full 40-hex commit sha."""
    return bool(revision) and COMMIT_RE.match(str(revision)) is not None


class HubMissing(PrhError):
    """Something a hub repository's job needs is not in the hub cache: one line naming the config field, the
    repository and the prefetch step; ``what`` says what is missing."""

    def __init__(self, ref: HubRef, what: str) -> None:
        super().__init__(f"{ref.field}: {ref.repo_type} {ref.repo_id}@{ref.ref}: {what}; {PREFETCH_HINT}")
        self.what = what


@dataclass(frozen=True)
class HubRef:
    """One hub repository a config entry reads: its id and type, the revision asked for, the config field naming it."""

    repo_id: str
    repo_type: RepoType
    revision: str | None  # None: main
    field: str  # e.g. models.llama.id

    @property
    def ref(self) -> str:
        """The branch, tag or sha asked for (main when unset)."""
        return self.revision or "main"

    def cached_commit(self) -> str | None:
        """The commit this revision names: itself when a sha, else the cache's refs/<revision>; None when not cached."""
        if is_commit(self.revision):
            return str(self.revision)
        try:
            commit = (repo_dir(self.repo_id, self.repo_type) / "refs" / self.ref).read_text().strip()
        except OSError:
            return None
        return commit if is_commit(commit) else None

    def snapshot(self, commit: str | None) -> Path:
        """The snapshot folder of ``commit``; PrhError naming the field and the prefetch step when it is not cached."""
        if commit is None:
            raise self.missing(f"{self.ref} is not in the hub cache at {cache_dir()}")
        if not is_commit(commit):
            raise PrhError(f"{self.field}: {commit!r} is not a 40-hex commit sha")
        path = repo_dir(self.repo_id, self.repo_type) / "snapshots" / commit
        if not path.is_dir():
            raise self.missing(f"commit {commit[:12]} is not in the hub cache at {cache_dir()}")
        return path

    def missing(self, what: str) -> HubMissing:
        """The one line for something of this repository the cache lacks."""
        return HubMissing(self, what)

    def label(self, commit: str | None) -> str:
        """``org/name@<commit>`` (or @<revision> while unresolved)."""
        return f"{self.repo_id}@{commit or self.ref}"


def require_files(ref: HubRef, snapshot: Path, names: list[str]) -> None:
    """PrhError naming the first of ``names`` the snapshot lacks (a partial prefetch)."""
    for name in names:
        if not (snapshot / name).is_file():
            raise ref.missing(f"file {name} of commit {snapshot.name[:12]} is not in the cache")


@functools.lru_cache(maxsize=4096)
def _content_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, memoised by (path, size, mtime)."""
    return file_sha256(path)


def file_id(path: Path) -> str:
    """Content id of one snapshot file: its blob name (``sha256:`` for LFS files, ``git-sha1:`` for small ones), read
    from the symlink; the sha256 of its bytes where it is a plain file (a copied snapshot)."""
    if path.is_symlink():
        blob = Path(os.readlink(path)).name
        if _BLOB_SHA256.match(blob):
            return f"sha256:{blob}"
        if COMMIT_RE.match(blob):
            return f"git-sha1:{blob}"
    st = path.stat()
    return f"sha256:{_content_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)}"


def files_digest(snapshot: Path, names: list[str]) -> str:
    """sha256 (16 hex) of the canonical JSON of {name: content id} over ``names`` in a snapshot."""
    ids = {name: file_id(snapshot / name) for name in sorted(set(names))}
    return hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()[:16]


def present(snapshot: Path, patterns: tuple[str, ...]) -> list[str]:
    """Snapshot-relative paths of the files matching any glob pattern, sorted."""
    found = {p.relative_to(snapshot).as_posix() for pattern in patterns for p in snapshot.glob(pattern) if p.is_file()}
    return sorted(found)


def dataset_ref(name: str, spec: dict) -> HubRef | None:
    """The hub repository of an hf dataset spec, or None for another source or a local ``path``."""
    if spec.get("source") != "hf" or "path" in spec or not spec.get("id"):
        return None
    return HubRef(str(spec["id"]), "dataset", spec.get("revision"), f"datasets.{name}.id")


def model_ref(name: str, spec: dict) -> HubRef | None:
    """The hub repository a model spec loads its weights from (hf ids; pretrained timm ids, whose repository timm's
    pretrained config names: imports timm), or None for zoo, packaged, local and random-init models."""
    source = spec.get("source")
    if source == "hf" and spec.get("id") and not Path(str(spec["id"])).is_dir():
        return HubRef(str(spec["id"]), "model", spec.get("revision"), f"models.{name}.id")
    overlay = spec.get("pretrained_cfg_overlay") or {}
    if source == "timm" and spec.get("id") and spec.get("pretrained", True) and not overlay.get("file"):
        from prh.models.vision import timm_hub_ref

        return timm_hub_ref(name, spec)[0]
    return None
