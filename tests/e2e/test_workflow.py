"""End to end: the real workflow on a reduced config, then staleness (nothing to do; a new model reruns only its jobs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def snakemake(work: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    """Run snakemake in ``work`` on its config.yaml."""
    cmd = [SNAKEMAKE, "--cores", "2", "--configfile", "config.yaml", "--rerun-incomplete", *args]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)


def planned_jobs(work: Path) -> dict[str, int]:
    """Rule -> job count of a dry run ({} when nothing is to be done)."""
    proc = snakemake(work, "-n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = {}
    block = proc.stdout.split("Job stats:")[-1] if "Job stats:" in proc.stdout else ""
    for rule, count in re.findall(r"^(\w+)\s+(\d+)$", block, re.M):
        if rule != "total":
            counts[rule] = int(count)
    return counts


@pytest.fixture(scope="module")
def run(e2e_run) -> Path:
    """The suite's local run of the reduced config (tests/conftest.py); tests here only read it or copy it."""
    return e2e_run


def test_report_and_tables_exist(run):
    html = (run / "results" / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="http' not in html
    for fig in ("convergence", "umap", "vision_language", "downstream", "caption_density", "locality", "agreement",
                "calibration", "scale_confound", "pretrained", "heatmap-0"):  # fmt: skip
        assert (run / "results" / "figures" / f"{fig}.png").stat().st_size > 10_000


def test_no_reading_prints_nan(run):
    """The reduced config leaves many statistics undefined (2 competence bins, 1 language model per trend): each
    reading says why instead of printing nan."""
    readings = {p.stem: json.loads(p.read_text())["reading"] for p in (run / "results" / "figures").glob("*.json")}
    assert len(readings) >= 11
    for name, text in readings.items():
        assert not re.search(r"\bnan\b", text, re.I), (name, text)
    assert "too few bins" in readings["convergence"]


VISION = ("vit-sup", "vit-random", "resnet-sup")  # the config's own; test_adding_a_model adds one (test order is random)


def test_alignment_tables_are_sane(run):
    vv = pd.read_csv(run / "results" / "alignment" / "vision-vision.csv")
    vv = vv[vv["model_x"].isin(VISION) & vv["model_y"].isin(VISION)]
    assert len(vv) == 6  # 3 vision models, each ordered pair (mutual kNN is symmetric and mirrored)
    assert vv["score"].between(0, 1).all() and (vv["score"] > vv["chance"]).all()
    assert np.allclose(vv["chance"], 5 / 199)
    assert (vv["ci_low"] <= vv["ci_high"]).all() and vv["p_value"].between(0, 1).all()
    assert vv["calibrated"].between(0, 1).all() and (vv["tau"] >= vv["null_mean"]).all()
    assert (vv["null_mean"] > vv["chance"]).all()  # the null of a max over layer pairs lies above one pair's chance
    agree = pd.read_csv(run / "results" / "alignment" / "agreement.csv")
    agree = agree[agree["model_x"].isin(VISION)]
    assert agree["metric"].nunique() == 8 and len(agree) == 9 * 3 * 2  # 9 metric entries x 3 vision x 2 LMs


def test_stored_features_match_their_receipts(run):
    from prh.store import FeatureStore, read_receipt

    store = FeatureStore(run / "features")
    assert store.verify() == []
    receipt = read_receipt(run / "results" / "features" / "scenes" / "lm-tiny.json")
    entry = store.open(receipt["key"])
    assert entry.n == 128 and entry.n_layers == 3  # embeddings + 2 blocks
    assert entry.side_names == []  # features only: no stage reads per-caption scores


def test_competence_tables(run):
    solved = pd.read_csv(run / "results" / "probes" / "tasks_solved.csv")
    assert set(solved["model"]) - {"mixer-sup"} == set(VISION)
    scores = pd.read_csv(run / "results" / "lm" / "scores.csv").set_index("model")
    assert scores.loc["lm-tiny", "bpb"] > 0 and np.isnan(scores.loc["minilm", "bpb"])
    assert 0 <= scores.loc["lm-tiny", "acc_gloss"] <= 1


def test_scorer_reproduces_the_alignment_table(run):
    from prh import Scorer
    from prh.store import FeatureStore, read_receipt

    store = FeatureStore(run / "features")
    mine = store.open(read_receipt(run / "results" / "features" / "fmnist" / "vit-sup.json")["key"]).layers()
    cal = yaml.safe_load((run / "config.yaml").read_text())["alignment"]
    scorer = Scorer("fmnist", ["resnet-sup", "vit-random"], store=str(run / "features"), results=str(run / "results"), k=5,
                    permutations=cal["permutations"], bootstrap=cal["bootstrap"])  # fmt: skip
    got = {s.reference: s for s in scorer.score(mine, name="vit-sup")}
    vv = pd.read_csv(run / "results" / "alignment" / "vision-vision.csv").set_index(["model_x", "model_y"])
    for ref in ("resnet-sup", "vit-random"):
        row = vv.loc[("vit-sup", ref)]
        assert got[ref].score == pytest.approx(row["score"], abs=1e-12)
        assert got[ref].reference_layer == row["layer_y"]
        for col in ("calibrated", "tau", "p_value", "null_mean", "effect", "ci_low", "ci_high"):  # same null, same numbers
            assert getattr(got[ref], col) == pytest.approx(row[col], abs=1e-12), col
    shuffled = [f[np.random.default_rng(0).permutation(len(f))] for f in mine]
    chance = 5 / 199
    assert all(s.score < chance + 0.03 for s in scorer.score(shuffled))
    assert scorer.prepare_calls == 2  # the two references were prepared once, not per call


def test_score_cli_prints_a_table(run):
    from prh.store import FeatureStore, read_receipt

    store = FeatureStore(run / "features")
    feats = np.stack([f[:, :16] for f in store.open(read_receipt(run / "results" / "features" / "fmnist" / "vit-sup.json")["key"]).layers()])
    np.save(run / "mine.npy", feats)
    prh = str(Path(sys.executable).with_name("prh"))
    proc = subprocess.run([prh, "--store", "features", "--results", "results", "score", "mine.npy", "--dataset", "fmnist",
                           "--against", "resnet-sup", "--k", "5"], cwd=run, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "resnet-sup" in proc.stdout and "calibrated" in proc.stdout
    bad = subprocess.run([prh, "score", "mine.npy", "--dataset", "fmnist", "--against", "nope"], cwd=run,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "'nope'" in bad.stderr


def test_rerun_has_nothing_to_do(run):
    assert planned_jobs(run) == {}


def test_adding_a_model_reruns_only_its_jobs(run, tmp_path):
    """On a copy of the finished run (mtimes and Snakemake's metadata kept), so the other tests see the original."""
    run = Path(shutil.copytree(run, tmp_path / "copy", symlinks=True))
    assert planned_jobs(run) == {}
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["models"]["mixer-sup"] = {"source": "zoo", "modality": "vision", "arch": "mixer_s16_224",
                                  "objective": "supervised", "width": 32, "steps": 20,
                                  "arch_kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "num_blocks": 2}}  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    jobs = planned_jobs(run)
    assert jobs["train_zoo_model"] == 1
    assert jobs["extract"] == 4  # fmnist, scenes, scenes-w30 (images shared with scenes-w5), digits
    assert "dataset" not in jobs and "score_language_model" not in jobs
    memo = run / "features" / "memo"
    before = {p: p.stat().st_mtime_ns for p in memo.rglob("*.npy")}
    proc = snakemake(run)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    after = {p: p.stat().st_mtime_ns for p in memo.rglob("*.npy")}
    assert all(after[p] == t for p, t in before.items())  # no old pair was recomputed
    # new pairs only: vision-vision 3 x (matrix + one calibration, which the mirrored row shares),
    # vision-language 2 x (matrix + calibration), agreement 9 metrics x 2 LMs, plus what no other experiment already
    # computed: caption density on scenes-w5 (2 LMs) and cknna k=63 (2 LMs); density on scenes-w30 and cknna k=5
    # are the agreement experiment's own pairs, shared through the memo
    assert len(after) - len(before) == 6 + 4 + 18 + 2 + 2
    vv = pd.read_csv(run / "results" / "alignment" / "vision-vision.csv")
    assert "mixer-sup" in set(vv["model_x"])
    assert planned_jobs(run) == {}
