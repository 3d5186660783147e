"""``prh prefetch``: fill the hub cache with every hub model and dataset a config names, where the hub is reachable
(a login node), and write a lock file of the commits it resolved; compute jobs then read the cache only.

Per entry it downloads exactly the files the loaders read (prh.models, prh.data.hub): a language model's configs,
tokenizer files and preferred weight layout (safetensors over .bin; an index and its shards); a timm model's weight
file of timm's choice; a dataset's files of the splits the spec reads (or its ``data_files``). It prints one line per
entry (commit, files, size, or what is wrong and what to do: a gated repository's licence page and HF_TOKEN, a
missing repository, revision or split) and the total. Without the network (or with HF_HUB_OFFLINE=1) it only checks
the cache: each entry is ``cached`` or names what is missing, in one line.

The lock file (YAML) maps each entry to ``revision: <commit>``; passed after the config
(``snakemake --configfile configs/paper.yaml results-paper/hub-lock.yaml``) it pins every model and dataset to the
commits that were fetched.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from prh.config import DTYPE_BYTES, model_modality
from prh.errors import PrhError
from prh.hub import HubMissing, HubRef, cache_dir, is_offline

# Repositories that ask users to accept a licence before download (a hint when offline; online, the hub says so)
GATED_PREFIXES = ("meta-llama/", "google/gemma", "mistralai/")
_SMALL_DATASET_FILES = ("README.md", "*.txt", "dataset_infos.json", "*.yaml")


@dataclass
class Outcome:
    """What prefetch did or found for one config entry."""

    field: str  # models.<name> / datasets.<name>
    ref: HubRef
    status: str  # fetched | cached | missing | gated | error
    commit: str | None = None
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    message: str = ""

    def line(self) -> str:
        """One line: entry, repository, status and size or the reason."""
        where = f"{self.ref.repo_type} {self.ref.repo_id}@{self.ref.ref}"
        if self.status in ("fetched", "cached"):
            return (f"{self.field}: {where} -> {self.commit} {self.status}: {len(self.files)} files, "
                    f"{human_bytes(self.bytes)}")  # fmt: skip
        return f"{self.field}: {where}: {self.message}"


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (decimal units)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def hub_entries(cfg: dict) -> dict[str, HubRef]:
    """'models.<name>' / 'datasets.<name>' -> hub repository, for every hub entry of a validated config."""
    from prh.plan import Plan

    return Plan(cfg).hub_refs


# ---------------------------------------------------------------------------------- files an entry needs
def _hf_model_files(paths: list[str], read_json: Callable[[str], dict]) -> list[str]:
    """A language model's configs, tokenizer files and preferred weight layout among a repository's files."""
    from prh.models.language import HF_CONFIG_FILES, HF_TOKENIZER_FILES, HF_WEIGHT_LAYOUTS

    have = set(paths)
    out = [f for f in (*HF_CONFIG_FILES, *HF_TOKENIZER_FILES) if f in have]
    for first, shard_ext in HF_WEIGHT_LAYOUTS:
        if first in have:
            shards = sorted(set(read_json(first)["weight_map"].values())) if shard_ext else []
            return out + [first, *shards]
    raise PrhError("no weights (model.safetensors[.index.json] or pytorch_model.bin[.index.json]) in the repository")


def _timm_files(name: str, spec: dict, paths: list[str]) -> list[str]:
    """The weight file timm reads (its first preference the repository has) and the config."""
    from prh.models.vision import timm_hub_ref

    candidates = timm_hub_ref(name, spec)[1]
    found = [f for f in candidates if f in paths]
    if not found:
        raise PrhError(f"none of {', '.join(candidates)} in the repository")
    return [found[0]] + (["config.json"] if "config.json" in paths else [])


def dataset_splits(spec: dict) -> list[str]:
    """The splits a hub dataset spec reads."""
    if "train_split" in spec:
        return [spec["train_split"], spec.get("test_split", "test")]
    return [spec.get("split", "train")]


def _dataset_files(spec: dict, paths: list[str]) -> list[str]:
    """A dataset's files: its ``data_files`` globs, else the data files of the splits it reads, plus small metadata."""
    from prh.data.hub import data_file_patterns

    small = [p for p in paths if any(fnmatch.fnmatch(p, pattern) for pattern in _SMALL_DATASET_FILES)]
    chosen: list[str] = []
    for split in dataset_splits(spec):
        patterns = data_file_patterns(spec, split)
        if patterns is not None:
            hits = [p for p in paths if any(fnmatch.fnmatch(p, pattern) for pattern in patterns)]
        else:  # the split's name as a path component or file-name token, as datasets infers splits
            token = re.compile(rf"(^|[/_.-]){re.escape(split)}([/_.-]|$)")
            hits = [p for p in paths if token.search(p) and p not in small]
        if not hits:
            raise PrhError(f"split {split!r}: no data file in the repository (files: {', '.join(paths[:8])}...)")
        chosen += hits
    return sorted(set(chosen + small))


def needed_files(entry: str, cfg: dict, paths: list[str], read_json: Callable[[str], dict]) -> list[str]:
    """The repository files one config entry needs."""
    kind, _, name = entry.partition(".")
    if kind == "datasets":
        return _dataset_files(cfg["datasets"][name], paths)
    spec = cfg["models"][name]
    return _timm_files(name, spec, paths) if spec["source"] == "timm" else _hf_model_files(paths, read_json)


# ------------------------------------------------------------------------------------------ the cache check
def check_cached(entry: str, cfg: dict, ref: HubRef) -> tuple[str, list[str]]:
    """(commit, files) of an entry the cache holds completely (what its job will read); PrhError otherwise."""
    kind, _, name = entry.partition(".")
    commit = ref.cached_commit()
    snapshot = ref.snapshot(commit)
    if kind == "datasets":
        paths = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
        return str(commit), _dataset_files(cfg["datasets"][name], paths)
    spec = {**cfg["models"][name], "commit": commit}
    if spec["source"] == "timm":
        from prh.models.vision import timm_hub_weights

        return str(commit), [timm_hub_weights(name, spec)[2]]
    from prh.models.language import HF_TOKENIZER_FILES, hf_weight_files

    files = hf_weight_files(ref, snapshot)
    return str(commit), files + [f for f in HF_TOKENIZER_FILES if (snapshot / f).is_file()]


def _size(snapshot: Path, files: list[str]) -> int:
    return sum((snapshot / f).stat().st_size for f in files if (snapshot / f).is_file())


def _gated_hint(ref: HubRef) -> str:
    if ref.repo_id.startswith(GATED_PREFIXES):
        return (f"; gated on the hub: accept its licence at https://huggingface.co/{ref.repo_id} and set HF_TOKEN "
                "(or `hf auth login`) before prefetching")  # fmt: skip
    return ""


def estimate_bytes(entry: str, cfg: dict) -> int | None:
    """A model's weights at its dtype from its configured n_params (None for datasets or without n_params)."""
    kind, _, name = entry.partition(".")
    if kind != "models" or "n_params" not in cfg["models"][name]:
        return None
    spec = cfg["models"][name]
    dtype = spec.get("dtype", "float32" if model_modality(name, spec) == "vision" else "bfloat16")
    return int(float(spec["n_params"]) * DTYPE_BYTES[dtype])


# ---------------------------------------------------------------------------------------------- fetching
class HubUnreachable(Exception):
    """The hub did not answer (no network, or HF_HUB_OFFLINE=1): prefetch checks the cache instead."""


def fetch_entry(entry: str, cfg: dict, ref: HubRef, token: str | None = None) -> Outcome:
    """Download an entry's files at its revision into the hub cache (huggingface_hub), resolving the commit; raises
    HubUnreachable when the hub does not answer."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(token=token)
    try:
        info = api.repo_info(ref.repo_id, repo_type=ref.repo_type, revision=ref.ref, files_metadata=True)
        sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}

        def read_json(path: str) -> dict:
            local = hf_hub_download(ref.repo_id, path, repo_type=ref.repo_type, revision=info.sha, token=token)
            return json.loads(Path(local).read_text())

        files = needed_files(entry, cfg, sorted(sizes), read_json)
        folder = snapshot_download(ref.repo_id, repo_type=ref.repo_type, revision=ref.ref, allow_patterns=files,
                                   token=token)  # fmt: skip
    except GatedRepoError:
        return Outcome(entry, ref, "gated", message=f"gated: accept its licence at https://huggingface.co/"
                       f"{ref.repo_id}, then set HF_TOKEN (or `hf auth login`) and rerun prefetch")  # fmt: skip
    except RevisionNotFoundError:
        return Outcome(entry, ref, "missing", message=f"no revision {ref.ref!r} on the hub (fix {ref.field}'s revision)")
    except RepositoryNotFoundError:
        return Outcome(entry, ref, "missing", message=f"no such repository on the hub, or private (check {ref.field}; "
                       "for a private one set HF_TOKEN)")  # fmt: skip
    except (PrhError, HfHubHTTPError) as e:
        return Outcome(entry, ref, "error", message=str(e).splitlines()[0])
    except Exception as e:  # noqa: BLE001 - no answer at all: offline mode, DNS, connection refused, time-out
        raise HubUnreachable(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    return Outcome(entry, ref, "fetched", Path(folder).name, files, sum(sizes.get(f, 0) for f in files))


def prefetch(cfg: dict, lock_path: str | Path | None = None, online: bool = True, token: str | None = None,
             echo: Callable[[str], None] = print) -> list[Outcome]:  # fmt: skip
    """Fetch (``online`` and the hub answers) or check every hub entry of a validated config; print a line each and
    the totals; write the lock file of the commits the cache now holds. Returns the outcomes."""
    entries = hub_entries(cfg)
    online = online and not is_offline()
    echo(f"prefetch: {len(entries)} hub entries; hub cache {cache_dir()}")
    outcomes = []
    for entry, ref in entries.items():
        outcome = None
        if online:
            try:
                outcome = fetch_entry(entry, cfg, ref, token)
            except HubUnreachable as e:
                echo(f"prefetch: the hub does not answer ({e}); checking the cache only")
                online = False
        if outcome is None or outcome.status == "fetched":
            outcome = _cached_outcome(entry, cfg, ref, fetched=outcome is not None)
        echo(outcome.line())
        outcomes.append(outcome)
    _summary(cfg, outcomes, echo)
    if lock_path is not None:
        write_lock(lock_path, cfg, outcomes)
        echo(f"prefetch: lock file {lock_path} (pin the run with: --configfile <config> {lock_path})")
    return outcomes


def _cached_outcome(entry: str, cfg: dict, ref: HubRef, fetched: bool) -> Outcome:
    """The cache's view of an entry after fetching it (or instead of fetching it)."""
    try:
        commit, files = check_cached(entry, cfg, ref)
    except HubMissing as e:
        return Outcome(entry, ref, "missing", message=f"{e.what}{_gated_hint(ref)}")
    except PrhError as e:
        return Outcome(entry, ref, "error", message=str(e))
    snapshot = ref.snapshot(commit)
    return Outcome(entry, ref, "fetched" if fetched else "cached", commit, files, _size(snapshot, files))


def _summary(cfg: dict, outcomes: list[Outcome], echo: Callable[[str], None]) -> None:
    """Totals: bytes held, entries missing, and the configured weights' estimate for the missing models."""
    held = sum(o.bytes for o in outcomes if o.status in ("fetched", "cached"))
    bad = [o for o in outcomes if o.status not in ("fetched", "cached")]
    estimate = sum(estimate_bytes(o.field, cfg) or 0 for o in bad)
    echo(f"prefetch: {len(outcomes) - len(bad)} of {len(outcomes)} entries in the cache ({human_bytes(held)}); "
         f"{len(bad)} missing (models among them: about {human_bytes(estimate)} of weights by n_params, datasets "
         "not estimated)")  # fmt: skip


def write_lock(path: str | Path, cfg: dict, outcomes: list[Outcome]) -> None:
    """A config overlay pinning every entry the cache holds to its commit (``revision: <sha>``)."""
    from prh.io import write_bytes_atomic

    lock: dict[str, Any] = {}
    for o in outcomes:
        if o.commit is None:
            continue
        kind, _, name = o.field.partition(".")
        lock.setdefault(kind, {})[name] = {"revision": o.commit}
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    header = (f"# Hub commits fetched by `prh prefetch` on {stamp}, from {cache_dir()}.\n"
              "# Pin a run to them: snakemake --configfile <config> <this file>\n")  # fmt: skip
    write_bytes_atomic(path, (header + yaml.safe_dump(lock, sort_keys=True)).encode())


def prefetch_configs(configfiles: list[str], lock_path: str | None, online: bool = True) -> int:
    """The CLI: merge config files (as Snakemake does), prefetch, return 1 when an entry is still missing."""
    from prh.config import deep_merge, read_yaml, validate_config

    merged: dict = {}
    for path in configfiles:
        merged = deep_merge(merged, read_yaml(path))
    cfg = validate_config(merged)
    lock = lock_path if lock_path is not None else str(Path(cfg["results"]) / "hub-lock.yaml")
    outcomes = prefetch(cfg, lock, online=online)
    return int(any(o.status not in ("fetched", "cached") for o in outcomes))

