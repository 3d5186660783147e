"""The paper config's path end to end on an offline hub: tests/hub/config.yaml (configs/paper.yaml reduced: the same
stages and hub sources, tiny random-weight models of its architecture classes) through Snakemake with
HF_HUB_OFFLINE=1 and a hub cache in the real layout; then refs/main of one model moves and exactly its jobs rerun;
a gated model absent from the cache stops in one line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hubkit import _lm_configs, hub_env, lm_files, repo_path, tiny_tokenizer, write_snapshot

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MOVED = "huggyllama/llama-7b"  # the repository whose refs/main moves
MOVED_MODEL = "huggyllama--llama-7b"


def snakemake(work: Path, cache: Path, *args: str, config: str = "config.yaml") -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "--cores", "2", "--configfile", config, "--rerun-incomplete", *args]
    return subprocess.run(cmd, cwd=work, env=hub_env(cache, work), capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def hub_run(hub_build, copy_workflow, tmp_path_factory) -> tuple[Path, Path, float]:
    """(work dir, its private copy of the hub cache, wall seconds): the reduced paper config run to completion."""
    work = copy_workflow(tmp_path_factory.mktemp("hub-workflow"))
    shutil.copy(ROOT / "tests" / "hub" / "config.yaml", work / "config.yaml")
    cache = work / "hub-cache"
    shutil.copytree(hub_build[0], cache, symlinks=True)  # this module moves a ref: the session's cache stays put
    start = time.monotonic()
    proc = snakemake(work, cache)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return work, cache, time.monotonic() - start


def _commit(cache: Path, repo: str, repo_type: str = "model", ref: str = "main") -> str:
    return (repo_path(cache, repo, repo_type) / "refs" / ref).read_text()


def test_every_stage_runs_offline_and_entries_name_their_commits(hub_run) -> None:
    work, cache, _ = hub_run
    from prh.store import FeatureStore, read_receipt

    results = work / "results"
    html = (results / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert "VTAB-1k: 60 rows of split train (the probe picks C on a seeded 20% of them), 32 rows of split test" in html
    assert f"<td>huggyllama/llama-7b</td><td>main</td><td>{_commit(cache, MOVED)}</td>" in html
    assert f"minhuh/prh@{_commit(cache, 'minhuh/prh', 'dataset', 'wit_1024')[:12]}" in html
    for fig in ("convergence", "umap", "vision_language", "downstream", "caption_density", "locality", "agreement",
                "heatmap-0"):  # fmt: skip
        assert (results / "figures" / f"{fig}.png").stat().st_size > 10_000
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    for receipt_path in (results / "features").rglob("*.json"):
        model = receipt_path.stem
        digest = read_receipt(receipt_path)["request"]["model"]["weights_digest"]
        spec = cfg["models"][model]
        repo = spec["id"] if spec["source"] == "hf" else f"timm/{spec['id']}"
        assert f"{repo}@{_commit(cache, repo)}:" in digest, (model, digest)
    assert FeatureStore(work / "features").verify() == []
    vv = pd.read_csv(results / "alignment" / "vision-vision.csv")
    assert len(vv) == 6 and vv["score"].between(0, 1).all() and vv["p_value"].between(0, 1).all()
    lm = pd.read_csv(results / "lm" / "scores.csv")
    assert len(lm) == 3 and np.isfinite(lm["bpb"]).all() and (lm["bpb"] > 0).all()
    acc = pd.read_csv(results / "probes" / "accuracy.csv")
    assert len(acc) == 6 and (acc["n_train"] == 60).all() and (acc["n_test"] == 32).all()
    density = pd.read_csv(results / "alignment" / "caption-density.csv")
    assert set(density["dataset"]) == {"docci-w5", "docci-w30"} and len(density) == 2 * 3 * 3
    data = json.loads(subprocess.run([sys.executable, "-c", "import numpy as np, json; z = np.load("
                                      f"'{results / 'data' / 'wit.npz'}'); print(str(z['meta']))"],
                                     capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert data["spec"]["commit"] == _commit(cache, "minhuh/prh", "dataset", "wit_1024")


def _planned(stdout: str) -> tuple[dict[str, int], list[str]]:
    """A dry run's job counts per rule and the models of its extract jobs."""
    block = stdout.split("Job stats:")[-1] if "Job stats:" in stdout else ""
    counts = {r: int(c) for r, c in re.findall(r"^(\w+)\s+(\d+)$", block, re.M) if r != "total"}
    models = re.findall(r"rule extract:\n(?:    .*\n)*?    wildcards: dataset=[^,]+, model=(\S+)", stdout)
    return counts, models


def test_moved_ref_reruns_exactly_that_models_jobs(hub_run) -> None:
    """refs/main of one LM moves to a snapshot with other weights: the dry run plans that model's extractions (its 3
    datasets) and scoring, and only the fan-in jobs that read them; the rerun's entries name the new commit, the old
    entries stay in the store and verify; afterwards nothing is left to do."""
    work, cache, _ = hub_run
    from prh.store import FeatureStore, read_receipt

    old = _commit(cache, MOVED)
    with tempfile.TemporaryDirectory() as tok:
        from prh.data import load_dataset

        tiny_tokenizer(Path(tok), load_dataset("c", {"source": "wordnet", "split": "train", "max_chars": 50_000}).texts)
        new = write_snapshot(cache, MOVED, lm_files(_lm_configs()[MOVED](), Path(tok), seed=11))
    assert new != old
    dry = snakemake(work, cache, "-n")
    counts, models = _planned(dry.stdout)
    assert counts == {"extract": 3, "score_language_model": 1, "align": 4, "language_table": 1, "model_table": 1,
                      "figure": 10, "report": 1, "all": 1}, dry.stdout[-3000:]  # fmt: skip
    assert models == [MOVED_MODEL] * 3
    before = {p: read_receipt(p)["key"] for p in (work / "results" / "features").rglob(f"{MOVED_MODEL}.json")}
    proc = snakemake(work, cache)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    store = FeatureStore(work / "features")
    for path, old_key in before.items():
        receipt = read_receipt(path)
        assert receipt["key"] != old_key and f"{MOVED}@{new}:" in receipt["request"]["model"]["weights_digest"]
        assert store.has(old_key)
    assert store.verify() == []
    assert "Nothing to be done" in snakemake(work, cache, "-n").stdout


def test_gated_model_missing_from_the_cache_stops_in_one_line(hub_run) -> None:
    """A gated model nobody prefetched: the DAG says so before anything runs, and its job stops with one line naming
    the model field, the repository and `prh prefetch`, without a traceback."""
    work, cache, _ = hub_run
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["models"]["meta-llama--Meta-Llama-3-8B"] = {"source": "hf", "id": "meta-llama/Meta-Llama-3-8B", "causal": True}
    (work / "gated.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/features/wit/meta-llama--Meta-Llama-3-8B.json"
    proc = snakemake(work, cache, target, config="gated.yaml")
    assert proc.returncode != 0
    assert re.search(r"^prh: 1 of 14 hub models and datasets are not in the hub cache at .*\(models\.meta-llama--Meta-"
                     r"Llama-3-8B\); their jobs stop until `prh prefetch", proc.stderr, re.M)  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: models.meta-llama--Meta-Llama-3-8B.id: model meta-llama/Meta-Llama-3-8B@main: main is "
                      f"not in the hub cache at {cache}; run `prh prefetch --configfile <your config>` where the hub "
                      "is reachable (see docs: the paper config)"]  # fmt: skip
    log = (work / "logs" / "extract" / "wit" / "meta-llama--Meta-Llama-3-8B.log").read_text()
    assert "Traceback" not in log and log.strip() == errors[0]
