"""Hostile and careless files through prh's real readers and writers (issue 30, case 8): a "billion laughs" config,
corrupt and bomb-like IDX files, a figure sidecar that names another PNG, free-text labels with '$', CSV cells that
a spreadsheet would run, timm arguments that load other weights, and benchmarks/gpu.sh's temp dirs. Each is one
line naming the file or field, or harmless output; never a hang, a traceback or someone else's bytes."""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from faultkit import VIT_KW

from prh.errors import PrhError

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ YAML aliases


def _laughs(levels: int = 9) -> str:
    """A config whose one list value expands to 9^levels strings through nested YAML aliases (9^9 = 387 million)."""
    value = "[lol, lol, lol, lol, lol, lol, lol, lol, lol]"
    for i in range(1, levels + 1):
        value = f"[&a{i} {value}" + f", *a{i}" * 8 + "]"
    return textwrap.dedent(f"""
        datasets:
          d: {{source: digits, n: 50}}
        models:
          m:
            source: zoo
            modality: vision
            arch: vit_tiny_patch16_224
            objective: random
            steps: 0
            arch_kwargs:
              img_size: {value}
    """)


def _prh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prh.cli", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.parametrize("document, needle", [(_laughs(), "expand to more than 100,000 values"),
                                              ("datasets: {}\nmodels: {}\nx: &l [1, *l]\n", "recursive YAML alias")])
def test_alias_bombs_fail_in_one_line_quickly(tmp_path: Path, document: str, needle: str) -> None:
    """It used to hang in validation (canonical JSON expands every alias) or print a RecursionError traceback."""
    cfg = tmp_path / "laughs.yaml"
    cfg.write_text(document)
    res = _prh("--config", str(cfg), "data", "ls", timeout=60)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and needle in lines[0] and str(cfg) in lines[0], res.stderr


def test_validate_config_refuses_a_bomb_that_snakemake_loaded(tmp_path: Path) -> None:
    """Snakemake loads the config itself (aliases shared) and hands the dict to validate_config."""
    script = textwrap.dedent(f"""
        import yaml
        from prh.config import ConfigError, validate_config
        try:
            validate_config(yaml.safe_load({_laughs()!r}))
        except ConfigError as e:
            print(e)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert res.stdout.startswith("config error: YAML aliases expand"), res.stdout + res.stderr


# ------------------------------------------------------------------ Fashion-MNIST IDX files


def _idx(dims: tuple[int, ...], data: bytes) -> bytes:
    return b"\x00\x00\x08" + bytes([len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + data


LABELS = _idx((10,), bytes(range(10)))
IMAGES = _idx((10, 28, 28), np.random.default_rng(0).bytes(7840))  # random pixels: gzip cannot shrink them


def _bomb(path: Path) -> None:
    """A gzip file of a 10-image IDX header followed by 256 MiB of zeros (256 KiB on disk)."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(IMAGES)
        for _ in range(64):
            f.write(bytes(1 << 22))


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


HOSTILE_IDX = {  # name -> (images file content, then what is done to the file, what the one-line error says)
    "gzip bomb: 256 MiB behind a 10-image header": (None, _bomb, "more bytes than its header"),
    "header claims more than the cap": (_idx((100_000, 1000, 1000), bytes(16)), None, "more than the cap"),
    "truncated gzip stream": (IMAGES, _cut, "unreadable IDX file (EOFError"),
    "corrupt gzip data (CRC)": (IMAGES, _flip, "unreadable IDX file (BadGzipFile"),
    "dims cut short": (b"\x00\x00\x08\x03" + (10).to_bytes(4, "big"), None, "ends early"),
}


def _load(folder: Path):
    from prh.data import load_dataset

    return load_dataset("fm", {"source": "fashion-mnist", "path": str(folder), "split": "test"})


@pytest.mark.parametrize("case", sorted(HOSTILE_IDX))
def test_hostile_idx_files_are_one_line_errors_within_bounded_memory(tmp_path: Path, case: str) -> None:
    """They raised EOFError / BadGzipFile / struct.error tracebacks, and a gzip bomb was decompressed whole."""
    content, damage, needle = HOSTILE_IDX[case]
    folder = tmp_path / "fm"
    folder.mkdir()
    images = folder / "t10k-images-idx3-ubyte.gz"
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(LABELS))
    if content is not None:
        images.write_bytes(gzip.compress(content, 1))
    if damage is not None:
        damage(images)
    tracemalloc.start()
    try:
        with pytest.raises(PrhError) as err:
            _load(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert "\n" not in msg and "t10k-images-idx3-ubyte" in msg and needle in msg, msg
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated reading a {case}"  # never the bomb's 256 MiB


def test_sound_idx_files_still_load(tmp_path: Path) -> None:
    (tmp_path / "fm").mkdir()
    for stem, raw in (("t10k-images-idx3-ubyte", IMAGES), ("t10k-labels-idx1-ubyte", LABELS)):
        (tmp_path / "fm" / stem).write_bytes(raw)  # raw IDX, not gzip
    ds = _load(tmp_path / "fm")
    assert ds.images.shape == (10, 28, 28, 3) and ds.labels["class"].tolist() == list(range(10))
    assert np.array_equal(ds.images[..., 0].ravel(), np.frombuffer(IMAGES[16:], np.uint8))


# ------------------------------------------------------------------ the report embeds only a figure's own PNG


def _figure(out: Path, label: str = "a", data: pd.DataFrame | None = None):
    from prh.figures._common import save, set_style

    set_style()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1], label=label)
    ax.set_title(label)
    ax.legend()
    return save(fig, data if data is not None else pd.DataFrame({"x": [0, 1]}), out, label, "caption", "one\ntwo")


def test_report_embeds_the_png_of_the_figure_stem_not_the_sidecars_claim(tmp_path: Path) -> None:
    import json

    from prh.report import Section, build_report

    res = _figure(tmp_path / "fig" / "a")
    secret = _figure(tmp_path / "elsewhere" / "secret", label="secret").png
    side = res.png.with_suffix(".json")
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "png": str(secret), "svg": "/etc/passwd", "csv": "/etc/passwd"}))
    html = build_report([Section.from_figure(tmp_path / "fig" / "a")], {}, {}, [], tmp_path / "report.html").read_text()
    assert base64.b64encode(res.png.read_bytes()).decode() in html
    assert base64.b64encode(secret.read_bytes()).decode() not in html


# ------------------------------------------------------------------ labels and CSV cells


def test_dollar_signs_in_labels_are_drawn_as_written(tmp_path: Path) -> None:
    """A free-text label (a model's objective or family, a claim) with '$...$' is not parsed as mathtext: it used to
    crash the figure (an unknown command) or silently typeset it."""
    from prh.figures.vision import fig_umap

    models = ["a", "b", "c", "d", "e"]
    rng = np.random.default_rng(0)
    align = pd.DataFrame([{"model_x": x, "model_y": y, "dataset": "d", "metric": "mutual_knn", "params": '{"k": 10}',
                           "n": 100, "score": float(rng.uniform(0.1, 0.6))}
                          for i, x in enumerate(models) for y in models[i + 1:]])  # fmt: skip
    solved = pd.DataFrame({"model": models, "frac_solved": [0.1, 0.3, 0.5, 0.7, 0.9]})
    objectives = [r"$\notacommand{x}$", "=1+2", "cost $5 or $6", r"$\frac{1}$", "mae"]
    meta = pd.DataFrame({"model": models, "modality": "vision", "family": "vit", "objective": objectives,
                         "width": 192, "n_params": 1e6})  # fmt: skip
    res = fig_umap(align, solved, meta, tmp_path / "umap")
    assert plt.imread(res.png).shape[0] > 100
    assert r"$\notacommand{x}$" in res.svg.read_text().replace("&#36;", "$")  # the text itself, not typeset
    table = pd.read_csv(res.csv)
    assert set(table["objective"]) == {r"$\notacommand{x}$", "'=1+2", "cost $5 or $6", r"$\frac{1}$", "mae"}


def test_csv_cells_a_spreadsheet_would_run_are_prefixed_and_numbers_stay_numbers(tmp_path: Path) -> None:
    from prh.io import write_csv_atomic

    cells = ['=HYPERLINK("http://x","y")', "+SUM(A1)", "-2+3", "@cmd", "\tx", "-0.5", "+1e3", "plain", "-"]
    table = pd.DataFrame({"text": cells, "score": np.linspace(-1.5, 2.0, len(cells)), "n": range(-4, 5)})
    write_csv_atomic(tmp_path / "t.csv", table)
    back = pd.read_csv(tmp_path / "t.csv", keep_default_na=False, dtype={"text": str})
    assert back["text"].tolist() == ["'" + c if i in (0, 1, 2, 3, 4, 8) else c for i, c in enumerate(cells)]
    assert np.array_equal(back["score"], table["score"]) and back["n"].tolist() == list(range(-4, 5))


# ------------------------------------------------------------------ timm arguments that would load other weights


@pytest.mark.parametrize("key", ["checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "pretrained"])
def test_arch_kwargs_that_load_other_weights_are_refused(tmp_path: Path, key: str) -> None:
    """A zoo checkpoint's arch_kwargs (and a timm spec's kwargs) reach timm.create_model: `checkpoint_path` there
    loaded weights that are in no digest, so features of other weights were stored under this model's key."""
    import torch
    from safetensors.torch import save_file

    from prh.models.vision import create_timm_model

    other = create_timm_model("vit_tiny_patch16_224", dict(VIT_KW), num_classes=0)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, tmp_path / "other.safetensors")
    value = {"checkpoint_path": str(tmp_path / "other.safetensors"), "cache_dir": str(tmp_path),
             "pretrained": True}.get(key, {"file": str(tmp_path / "other.safetensors")})  # fmt: skip
    torch.manual_seed(0)
    with pytest.raises(PrhError, match=f"models.z.arch_kwargs: '{key}' not an architecture argument"):
        create_timm_model("vit_tiny_patch16_224", {**VIT_KW, key: value}, num_classes=0, name="z")
    with pytest.raises(PrhError, match=f"models.t.arch_kwargs: '{key}'"):
        create_timm_model("vit_tiny_patch16_224", {**VIT_KW, key: value}, name="t", field="id")


# ------------------------------------------------------------------ benchmarks/gpu.sh temp dirs

FAKE_PYTHON = textwrap.dedent("""\
    #!/usr/bin/env bash
    # Stands in for python3 on the GPU machine: logs each call, plays the part of pip, writes no file of prh's.
    log=$FAKE_LOG
    case "$1 $2" in
      "-c import"*) exit 1 ;;  # "prh's dependencies are missing": gpu.sh installs .whl into a temp site dir
      "-m pip")
        for a in "$@"; do [ "$prev" = --target ] && stat -c "site %n %a" "$a" >> "$log"; prev=$a; done ;;
      *) for a in "$@"; do [ "$prev" = --out ] && stat -c "work %n %a" "$(dirname "$a")" >> "$log"; prev=$a; done
         echo "pythonpath $PYTHONPATH" >> "$log" ;;
    esac
    exit 0
""")


def test_gpu_sh_uses_fresh_private_temp_dirs(tmp_path: Path) -> None:
    """gpu.sh used fixed /tmp/site (on PYTHONPATH: anyone on the machine could plant modules there) and /tmp/prh-gpu
    (removed with rm -rf). Two runs now use two fresh mode-0700 dirs from mktemp, and remove the site dir after."""
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    runs = []
    for i in range(2):
        log = tmp_path / f"log{i}"
        env = {**os.environ, "GPU_SH_PYTHON": str(fake), "GPU_SH_DEVICE": "cpu", "GPU_SH_QUICK": "1", "FAKE_LOG": str(log),
               "TMPDIR": str(tmpdir)}  # fmt: skip
        env.pop("GPU_SH_WORK", None)
        res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], capture_output=True, text=True, env=env,
                             timeout=120, check=False)  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        lines = log.read_text().splitlines()
        site = {ln.split()[1]: ln.split()[2] for ln in lines if ln.startswith("site ")}
        work = {ln.split()[1]: ln.split()[2] for ln in lines if ln.startswith("work ")}
        paths = {ln.split(" ", 1)[1] for ln in lines if ln.startswith("pythonpath ")}
        assert len(site) == 1 and len(work) == 1, lines
        [(site_dir, site_mode)], [(work_dir, work_mode)] = site.items(), work.items()
        assert site_mode == "700" and work_mode == "700", lines
        assert Path(site_dir).parent == tmpdir and Path(work_dir).parent == tmpdir
        assert paths == {f"{REPO}/src:{site_dir}"} and not Path(site_dir).exists()  # removed when gpu.sh exits
        runs.append((site_dir, work_dir))
    assert runs[0][0] != runs[1][0] and runs[0][1] != runs[1][1]
