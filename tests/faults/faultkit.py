"""Shared helpers of the fault-injection suite: a tiny zoo ViT, a tiny image dataset, killable extraction children.

Kept free of pytest so multiprocessing children can import it.
"""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

VIT_KW = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}
TINY_DATA = {"source": "fashion-mnist", "split": "test", "n": 32, "seed": 0}
PARAMS: dict[str, Any] = {"pooling": "auto", "layers": "all", "dtype": "float32", "store_dtype": "float32"}
BATCH = 8  # 24 images -> 3 batches
N_IMAGES = 24
VOLATILE_ATTRS = {"created", "wall_s", "total_wall_s"}  # time-dependent attrs; everything else must match bytewise
PRELOAD = ["numpy", "torch", "timm", "zarr", "safetensors.torch", "prh.store", "prh.extract", "prh.extract.vision",
           "prh.models", "prh.models.vision", "prh.data"]  # fmt: skip
PAUSE_S = 120.0  # a paused child sleeps this long; the parent kills it long before
RECIPE = {"arch": "vit_tiny_patch16_224", "arch_kwargs": VIT_KW, "objective": "random", "steps": 0, "batch_size": 8,
          "dataset": TINY_DATA, "eval_dataset": TINY_DATA}  # fmt: skip


def make_checkpoint(out: Path) -> Path:
    """A random-init (objective random, 0 steps) tiny ViT written by the zoo: model.safetensors + config.json."""
    from prh.zoo.vision import train_vision

    recipe = {"arch": "vit_tiny_patch16_224", "arch_kwargs": VIT_KW, "objective": "random", "steps": 0,
              "batch_size": 8, "dataset": TINY_DATA, "eval_dataset": TINY_DATA}  # fmt: skip
    return train_vision(recipe, out, name="fault-vit")


def zoo_spec(ckpt: Path) -> dict:
    """Model spec of the zoo checkpoint."""
    return {"source": "zoo", "modality": "vision", "checkpoint": str(ckpt)}


def make_images(name: str = "imgs", n: int = N_IMAGES, seed: int = 0):
    """n random-but-fixed 32x32 uint8 RGB images as a prh Dataset."""
    from prh.data import Dataset, image_digest

    imgs = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return Dataset(name, imgs, None, image_digest=image_digest(imgs))


def run_extract(store_root: Path, ckpt: Path, dataset, params: dict | None = None) -> tuple[str, bool]:
    """An uninterrupted extraction through the library entry point (in this process)."""
    from prh.extract import extract_to_store
    from prh.models import load_model, weights_digest
    from prh.store import FeatureStore

    spec = zoo_spec(ckpt)
    return extract_to_store(
        FeatureStore(store_root), "vit", spec, dataset, params or PARAMS, weights_digest=weights_digest("vit", spec),
        load_model_fn=load_model, batch_size=BATCH, progress=False,
    )  # fmt: skip


def expected_key(ckpt: Path, dataset, params: dict | None = None) -> str:
    """The store key an extraction of the tiny ViT on ``dataset`` commits under."""
    from prh.extract import normalize_params
    from prh.models import weights_digest
    from prh.store import make_request, request_key

    p = normalize_params(params or PARAMS, "vision")
    req = make_request("vit", weights_digest("vit", zoo_spec(ckpt)), dataset.name, "image", dataset.digest("image"), p)
    return request_key(req)


def fingerprint(entry_dir: Path) -> dict:
    """An entry's manifest checksums, with the root zarr.json replaced by its attrs minus time-dependent fields."""
    manifest = json.loads((entry_dir / "manifest.json").read_text())
    out = {rel: meta["sha256"] for rel, meta in manifest["files"].items() if rel != "zarr.json"}
    attrs = json.loads((entry_dir / "zarr.json").read_text())["attributes"]
    out["zarr.json:attrs"] = {k: v for k, v in attrs.items() if k not in VOLATILE_ATTRS}
    return out


class Tokenizer:
    """Stands in for a tokenizer: ``save_pretrained`` writes one file, as a real one writes several."""

    def save_pretrained(self, path: Path) -> None:
        (Path(path) / "tokenizer_config.json").write_text('{"model_max_length": 64}')


def tiny_llama(seed: int = 0) -> Any:
    """A one-layer random-init Llama (the architecture of SmolLM2's converted cache), a few KB of weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))  # fmt: skip


def flip(path: Path, at: float = 0.5) -> None:
    """Flip every bit of one byte of ``path`` (at fraction ``at`` of its length): same size, other content."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the ``prh`` CLI in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "prh.cli", *args], check=False, capture_output=True, text=True, cwd=cwd, timeout=120)


# ------------------------------------------------------------------ killable extraction child


def child_extract(store_root: str, ckpt: str, dataset, pause_at: str | None, conn, gate: tuple[str, str] | None = None) -> None:
    """Extract into the store, reporting each phase on ``conn``; sleep at phase ``pause_at`` so the parent can kill us.

    With ``gate = (phase, path)`` the child waits at ``phase`` until ``path`` exists (lines up concurrent commits).

    Hooks are installed by monkeypatching inside this child only; library behaviour for users is unchanged.
    """
    import threading

    import torch
    import tqdm

    torch.set_num_threads(1)
    tqdm.tqdm.set_lock(threading.RLock())  # not tqdm's multiprocessing lock: a killed child could not release it
    import prh.models.vision as mv
    import prh.store as ps
    from prh.extract import extract_to_store
    from prh.models import load_model, weights_digest

    def report(phase: str) -> None:
        conn.send(phase)
        if phase == pause_at:
            time.sleep(PAUSE_S)
        if gate is not None and phase == gate[0]:
            deadline = time.monotonic() + PAUSE_S
            while not os.path.exists(gate[1]) and time.monotonic() < deadline:
                time.sleep(0.002)

    loading = [False]  # weights_digest reads the checkpoint config too, before the load proper
    real_read, real_sha = mv.read_checkpoint_config, mv.file_sha256
    mv.read_checkpoint_config = lambda *a, **k: (report("load-start" if loading[0] else "digest"), real_read(*a, **k))[1]
    mv.file_sha256 = lambda *a, **k: (loading[0] and report("load-mid"), real_sha(*a, **k))[1]  # module built

    def load_fn(*a, **k):
        loading[0] = True
        model = load_model(*a, **k)
        loading[0] = False
        real_pre, batch = model.preprocess, [0]

        def preprocess(images):
            report(f"batch-{batch[0]}")
            batch[0] += 1
            return real_pre(images)

        model.preprocess = preprocess
        return model

    real_write, real_versions = ps.EntryWriter.write, ps._library_versions
    ps.EntryWriter.write = lambda self, f: (report("write-start"), real_write(self, f))[1]
    ps._library_versions = lambda: (report("write-mid"), real_versions())[1]  # arrays written, attrs not yet
    real_manifest = ps.FeatureStore._write_manifest
    ps.FeatureStore._write_manifest = lambda self, d, key: (real_manifest(self, d, key), report("manifest-written"))[0]
    real_rename = os.rename

    def rename(src, dst, *a, **k):
        hooked = "/.tmp/" in str(src) and "/entries/" in str(dst)
        if hooked:
            report("rename-before")
        real_rename(src, dst, *a, **k)
        if hooked:
            report("rename-after")

    os.rename = rename
    spec = zoo_spec(Path(ckpt))
    extract_to_store(ps.FeatureStore(store_root), "vit", spec, dataset, PARAMS, weights_digest=weights_digest("vit", spec),
                     load_model_fn=load_fn, batch_size=BATCH, progress=False)  # fmt: skip
    report("done")


@dataclass
class Trial:
    """Outcome of one kill trial."""

    label: str
    phases_seen: list[str]
    killed: bool
    exitcode: int | None
    seconds: float


def context() -> Any:
    """A forkserver context that imports torch/timm/zarr/prh once, so each child starts in well under a second."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def run_trial(ctx, store_root: Path, ckpt: Path, dataset, *, pause_at: str | None = None,
              kill_after: float | None = None, label: str = "") -> Trial:  # fmt: skip
    """Start a child; SIGKILL it when it reaches ``pause_at`` or ``kill_after`` seconds after start (if still alive)."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=child_extract, args=(str(store_root), str(ckpt), dataset, pause_at, send), daemon=True)
    t0 = time.perf_counter()
    proc.start()
    send.close()
    seen: list[str] = []
    deadline = t0 + 90.0
    killed = False
    while time.perf_counter() < deadline:
        if kill_after is not None and time.perf_counter() - t0 >= kill_after:
            break
        wait = 0.05 if kill_after is None else max(0.0, min(0.05, kill_after - (time.perf_counter() - t0)))
        if recv.poll(wait):
            try:
                seen.append(recv.recv())
            except EOFError:
                break
            if pause_at is not None and seen[-1] == pause_at:
                break
        elif not proc.is_alive() and not recv.poll():
            break
    if proc.is_alive():
        try:
            os.kill(proc.pid, 9)
            killed = True
        except ProcessLookupError:  # it ended by itself between the liveness check and the kill
            pass
    proc.join(30)
    while recv.poll():
        try:
            seen.append(recv.recv())
        except EOFError:
            break
    recv.close()
    return Trial(label, seen, killed, proc.exitcode, time.perf_counter() - t0)


def fail_zarr_write(monkeypatch: Any, nth: int = 3) -> None:
    """Make the ``nth`` file zarr writes (chunk or metadata) fail with ENOSPC, as a full disk would."""
    import zarr.storage._local as local

    real, calls = local._put, [0]

    def put(*a: Any, **k: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **k)

    monkeypatch.setattr(local, "_put", put)
