"""An offline Hugging Face hub cache in the real layout, for tests: tiny random-weight models of the architecture
classes configs/paper.yaml uses, and small hub datasets of real images and text (prh's scenes of Fashion-MNIST items,
scikit-learn digits, WordNet glosses), written as huggingface_hub caches them:

    <cache>/<type>s--<org>--<name>/{blobs/<id>, snapshots/<commit>/<path> -> ../../blobs/<id>, refs/<revision>}

where a blob's id is the file's sha256 for LFS files and its git blob sha1 for the others.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

LFS_SUFFIXES = (".safetensors", ".bin", ".parquet", ".tar", ".model", ".pth", ".gguf", ".arrow")

# timm ids of configs/paper.yaml, one per architecture class, with kwargs that shrink them (the same kwargs go into
# the test config, so the checkpoint and the model built from it agree); ids whose entrypoints fix every size stay
# full-size but small enough.
TIMM_MODELS: dict[str, dict[str, Any]] = {
    "vit_base_patch16_224.augreg_in21k": {"depth": 2, "embed_dim": 32, "num_heads": 2},
    "vit_base_patch16_clip_224.laion2b": {"depth": 2, "embed_dim": 32, "num_heads": 2},
    "vit_base_patch16_224.mae": {"depth": 2, "embed_dim": 32, "num_heads": 2},
    "vit_base_patch14_reg4_dinov2.lvd142m": {"depth": 2, "embed_dim": 32, "num_heads": 2, "img_size": 112},
    "resnet18.a1_in1k": {"layers": [1, 1, 1, 1]},
    "convnext_tiny.fb_in1k": {"depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128]},
    "levit_128.fb_dist_in1k": {},
    "xcit_small_12_p16_224.fb_in1k": {"depth": 2, "embed_dim": 32, "num_heads": 2},
    "coat_lite_small.in1k": {"embed_dims": [16, 32, 64, 128], "serial_depths": [1, 1, 1, 1]},
    "poolformer_s12.sail_in1k": {},
}
TINY_LM = {"vocab_size": 512, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128}  # fmt: skip


def _lm_configs() -> dict[str, Callable[[], Any]]:
    """Hub id -> a tiny config of its real model type (the LLM families of configs/paper.yaml)."""
    import transformers as tf

    return {
        "bigscience/bloomz-560m": lambda: tf.BloomConfig(vocab_size=512, hidden_size=32, n_layer=2, n_head=2),
        "huggyllama/llama-7b": lambda: tf.LlamaConfig(**TINY_LM),
        "allenai/OLMo-7B-hf": lambda: tf.OlmoConfig(**TINY_LM),
        "google/gemma-2b": lambda: tf.GemmaConfig(**TINY_LM, head_dim=16),
        "mistralai/Mistral-7B-v0.1": lambda: tf.MistralConfig(**TINY_LM, sliding_window=64),
        "mistralai/Mixtral-8x7B-v0.1": lambda: tf.MixtralConfig(**TINY_LM, num_local_experts=4, num_experts_per_tok=2),
    }


# ----------------------------------------------------------------------------------------------- layout
def blob_id(name: str, data: bytes) -> str:
    """What the hub names a file's blob: its sha256 (LFS files), else its git blob sha1."""
    if name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def repo_path(cache: Path, repo_id: str, repo_type: str = "model") -> Path:
    return cache / "--".join([f"{repo_type}s", *repo_id.split("/")])


def write_snapshot(cache: Path, repo_id: str, files: dict[str, bytes], repo_type: str = "model",
                   ref: str | None = "main") -> str:  # fmt: skip
    """Write ``files`` as one commit of a cached repository (blobs, relative symlinks) and point ``ref`` at it."""
    repo = repo_path(cache, repo_id, repo_type)
    ids = {name: blob_id(name, data) for name, data in files.items()}
    commit = hashlib.sha1(repr((repo_id, sorted(ids.items()))).encode()).hexdigest()
    for name, data in files.items():
        blob = repo / "blobs" / ids[name]
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        move_ref(cache, repo_id, commit, repo_type, ref)
    return commit


def move_ref(cache: Path, repo_id: str, commit: str, repo_type: str = "model", ref: str = "main") -> None:
    """Point ``refs/<ref>`` of a cached repository at ``commit`` (what a later download of a moved branch does)."""
    path = repo_path(cache, repo_id, repo_type) / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(commit)


def dir_files(directory: Path) -> dict[str, bytes]:
    """Every file under a directory, by relative path."""
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def hub_env(cache: Path, work: Path) -> dict[str, str]:
    """The environment of a Snakemake run on the offline hub: the cache, offline, datasets' own cache in ``work``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return env | {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(work / ".hf-datasets")}


# ----------------------------------------------------------------------------------------------- models
def timm_files(model_id: str, kwargs: dict[str, Any], seed: int = 0) -> tuple[str, dict[str, bytes]]:
    """(hub repo, files) of a random-weight timm model as timm's hub loader reads it: the safetensors weight file of
    its pretrained config's choice, and a config.json."""
    import json

    import timm
    import torch
    from safetensors.torch import save

    from prh.models.vision import timm_weight_files

    cfg = timm.models.get_pretrained_cfg(model_id)
    torch.manual_seed(seed)
    model = timm.create_model(model_id, pretrained=False, **kwargs)
    weights = save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()})  # shared tensors apart
    filename = timm_weight_files(cfg.hf_hub_filename)[0]
    config = json.dumps({"architecture": model_id.split(".")[0], "pretrained_cfg": {"tag": model_id.split(".")[-1]}})
    return cfg.hf_hub_id, {filename: weights, "config.json": config.encode()}


def tiny_tokenizer(out: Path, corpus: list[str]) -> None:
    """A byte-level BPE tokenizer (512 tokens) trained on ``corpus``, saved as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.save_pretrained(out)


def lm_files(config: Any, tokenizer_dir: Path, seed: int = 0) -> dict[str, bytes]:
    """Files of a random-weight causal LM of ``config``'s model type, saved as on the hub, with the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        files = dir_files(Path(tmp))
    return files | dir_files(tokenizer_dir)


# --------------------------------------------------------------------------------------------- datasets
def _png(image: np.ndarray, fmt: str = "png") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def parquet(columns: dict[str, list], features: Any) -> bytes:
    """A parquet file written by ``datasets`` (its features in the schema metadata, images as PNG bytes)."""
    import datasets

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.parquet"
        datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
        return path.read_bytes()


def webdataset(images: np.ndarray, labels: np.ndarray) -> bytes:
    """A webdataset tar of ``<key>.webp`` / ``<key>.cls`` samples (the clip-benchmark layout)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i, (image, label) in enumerate(zip(images, labels)):
            for ext, data in (("webp", _png(image, "webp")), ("cls", str(int(label)).encode())):
                info = tarfile.TarInfo(f"s{i:05d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def image_caption_files(n: int, seed: int, text_feature: str) -> dict[str, bytes]:
    """A parquet split of prh scenes (real Fashion-MNIST items) with their 30-word captions: ``image`` plus
    ``text`` (a list of captions, as WIT) or ``description`` (one string, as DOCCI)."""
    import datasets
    from PIL import Image

    from prh.data import load_dataset

    ds = load_dataset("scenes", {"source": "scenes", "n": n, "seed": seed, "density": 30})
    images = [Image.fromarray(im) for im in ds.images]
    if text_feature == "text":
        columns = {"image": images, "text": [[t] for t in ds.texts]}
        features = datasets.Features({"image": datasets.Image(), "text": datasets.Sequence(datasets.Value("string"))})
    else:
        columns = {"image": images, "description": list(ds.texts)}
        features = datasets.Features({"image": datasets.Image(), "description": datasets.Value("string")})
    return {"data/train-00000-of-00001.parquet": parquet(columns, features)}


def labelled_splits(source: str, n: dict[str, int], seed: int) -> dict[str, bytes]:
    """Webdataset splits (``<split>/0.tar``) of real labelled images: fashion-mnist or digits, upscaled to RGB."""
    from prh.data import load_dataset

    out = {"classnames.txt": b"\n".join(str(i).encode() for i in range(10)) + b"\n"}
    for i, (split, count) in enumerate(n.items()):
        spec = {"source": source, "n": count, "seed": seed + i} | ({"split": "test"} if source == "fashion-mnist" else {})
        ds = load_dataset(split, spec)
        images = np.repeat(np.repeat(ds.images, 4, axis=1), 4, axis=2)
        out[f"{split}/0.tar"] = webdataset(images, ds.labels["class"])
    return out


def text_files(n_docs: int) -> dict[str, bytes]:
    """The refs/convert/parquet layout of a text corpus: WordNet glosses as documents."""
    import datasets

    from prh.data import load_dataset

    texts = load_dataset("t", {"source": "wordnet", "split": "heldout", "max_chars": 200 * n_docs}).texts
    docs = [" ".join(texts[i::n_docs]) for i in range(n_docs)]
    table = parquet({"text": docs}, datasets.Features({"text": datasets.Value("string")}))
    return {"plain_text/train/0000.parquet": table}


# ------------------------------------------------------------------------------------------------ a hub
# Hub datasets of tests/hub/config.yaml: repo -> (revision, files factory)
DATASETS: dict[str, tuple[str, Callable[[], dict[str, bytes]]]] = {
    "minhuh/prh": ("wit_1024", lambda: image_caption_files(48, 0, "text")),
    "google/docci": ("main", lambda: image_caption_files(48, 1, "description")),
    "Skylion007/openwebtext": ("refs/convert/parquet", lambda: text_files(16)),
    "haideraltahan/wds_places365": ("main", lambda: labelled_splits("fashion-mnist", {"validation": 48}, 2)),
    "clip-benchmark/wds_vtab-cifar100": ("main", lambda: labelled_splits("fashion-mnist", {"train": 80, "test": 40}, 3)),
    "clip-benchmark/wds_vtab-svhn": ("main", lambda: labelled_splits("digits", {"train": 80, "test": 40}, 4)),
}


def build_hub(cache: Path, timm_ids: list[str] | None = None, lm_ids: list[str] | None = None) -> dict[str, str]:
    """Write the tiny models (all architecture classes unless restricted) and the datasets into ``cache``: repo ->
    commit of its ``main`` (or its dataset revision)."""
    from prh.data import load_dataset

    commits = {}
    for model_id in timm_ids if timm_ids is not None else TIMM_MODELS:
        repo, files = timm_files(model_id, TIMM_MODELS[model_id])
        commits[repo] = write_snapshot(cache, repo, files)
    corpus = load_dataset("c", {"source": "wordnet", "split": "train", "max_chars": 200_000}).texts
    with tempfile.TemporaryDirectory() as tmp:
        tiny_tokenizer(Path(tmp), corpus)
        for repo, config in _lm_configs().items():
            if lm_ids is None or repo in lm_ids:
                commits[repo] = write_snapshot(cache, repo, lm_files(config(), Path(tmp)))
    for repo, (revision, files) in DATASETS.items():
        commits[repo] = write_snapshot(cache, repo, files(), "dataset", revision)
    return commits
