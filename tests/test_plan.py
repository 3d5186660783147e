"""The plan's registries: result paths declared once, figures with their inputs and only the params they read, a report
built from declared inputs only."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from prh.config import validate_config
from prh.plan import FIGURES, HEATMAP, HYPOTHESIS, Paths, Plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def config() -> dict:
    return validate_config(yaml.safe_load((ROOT / "config.yaml").read_text()))


def test_paths_give_rule_patterns_and_files() -> None:
    paths = Paths("res")
    assert paths.receipt("{dataset}", "{model}") == "res/features/{dataset}/{model}.json"
    assert paths.receipt("fmnist", "vit") == "res/features/fmnist/vit.json"
    assert paths.figure("umap", "json") == "res/figures/umap.json"


def test_existing_receipts_are_the_ones_on_disk(tmp_path: Path) -> None:
    paths = Paths(str(tmp_path / "r[1]"))  # glob characters in the root are taken literally
    for p in (paths.receipt("d", "m"), paths.receipt("e", "m2"), paths.zoo("z"), paths.prepared("p"),
              paths.alignment("e")):  # fmt: skip
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_text("{}")
    assert paths.existing_receipts() == [Path(paths.receipt("d", "m")), Path(paths.receipt("e", "m2")),
                                         Path(paths.zoo("z")), Path(paths.prepared("p"))]  # fmt: skip
    assert paths.existing_feature_receipts("m") == [Path(paths.receipt("d", "m"))]


def test_jobs_loading_a_model_wait_for_its_weights(config: dict) -> None:
    """Zoo models wait for their training, packaged models with a one-time weights cache for their prepare job, the
    rest for nothing; every cached package is one the language loader builds a cache for."""
    from prh.config import CACHED_PACKAGES
    from prh.models.language import _PACKAGES

    assert CACHED_PACKAGES == {p for p, info in _PACKAGES.items() if info["kind"] != "encoder"}
    plan = Plan(config)
    assert plan.model_receipt("vit-m-sup") == [plan.paths.zoo("vit-m-sup")]
    assert plan.model_receipt("smollm2") == [plan.paths.prepared("smollm2")]
    assert plan.model_receipt("mpnet") == [plan.paths.prepared("mpnet")]
    assert plan.model_receipt("minilm") == [] and plan.model_receipt("effnet-lite0") == []
    assert plan.lm_inputs("smollm2")["model"] == [plan.paths.prepared("smollm2")]


def test_every_declared_figure_has_a_drawer(config: dict) -> None:
    from prh.pipeline import _drawers

    assert set(_drawers()) == set(FIGURES) | {HEATMAP, HYPOTHESIS}
    figures = Plan(config).figures
    drawn = [f for f, spec in FIGURES.items() if spec.report_key and config["report"][spec.report_key]]
    # the default config draws every figure but the sweep's and the colour experiment's (configs/hypotheses.yaml)
    assert drawn == [f for f in FIGURES if f not in ("sample_size", "colour")] and config["colour"]["names"] is None
    assert list(figures)[: len(drawn) + 1] == [*drawn, "heatmap-0"]
    for fig in figures.values():
        assert all(p.startswith(config["results"] + "/") for p in fig.inputs.values())


def test_figure_params_are_only_what_it_reads(config: dict) -> None:
    before = Plan(config).figures
    other = copy.deepcopy(config)
    other["datasets"]["fmnist"]["n"] = 500  # not a caption-density dataset
    other["datasets"]["scenes-w5"]["density"] = 10
    other["report"]["title"] = "another title"
    after = Plan(other).figures
    changed = {name for name in before if before[name].params != after[name].params}
    assert changed == {"caption_density"}
    assert after["caption_density"].params["density"]["scenes-w5"] == 10
    assert before["locality"].params == {} and before["agreement"].params == {}
    assert before["heatmap-0"].params["experiment"] == config["report"]["heatmaps"][0][0]


def test_figures_reading_probes_need_probes(config: dict) -> None:
    cfg = copy.deepcopy(config)
    cfg["probes"]["tasks"] = {}
    names = set(Plan(cfg).figures)
    assert not names & {n for n, f in FIGURES.items() if "solved" in f.tables} and "vision_language" in names
    assert Plan(cfg).report_inputs()["solved"] == []
    assert "downstream" not in names  # its null reference is picked by probe tasks solved
    cfg["report"]["downstream_reference"] = "effnet-lite2"
    named = Plan(cfg).figures["downstream"]
    assert named.params["reference"] == "effnet-lite2" and "solved" not in named.inputs


def test_optional_tables_are_read_when_the_config_produces_them(config: dict) -> None:
    plan = Plan(config)
    assert plan.figures["downstream"].inputs["solved"] == plan.paths.probe_table("tasks_solved")
    assert plan.figures["downstream"].params["reference"] is None
    named = copy.deepcopy(config)
    named["report"]["downstream_reference"] = "effnet-lite2"
    assert "solved" not in Plan(named).figures["downstream"].inputs  # a named reference needs no probe results
    assert "av" not in plan.figures["agreement"].inputs  # no report.agreement_vision in the default
    cfg = copy.deepcopy(config)
    cfg["report"]["agreement_vision"] = "vision-vision"
    agreement = Plan(cfg).figures["agreement"]
    assert agreement.inputs["av"] == plan.paths.alignment("vision-vision")
    assert agreement.inputs["alignment"] == plan.paths.alignment(config["report"]["agreement"])


def test_rules_build_no_result_path_themselves() -> None:
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        text = smk.read_text()
        assert not re.search(r"\{R\}|results/|\.csv\"|\.json\"|\.npz\"", text), smk.name


def test_report_reads_declared_inputs_only(tmp_path: Path, config: dict) -> None:
    """A table an earlier config left under results/ does not enter the report; the declared ones do."""
    from prh.pipeline import build_report

    cols = {"model_x": ["a"], "model_y": ["b"], "dataset": ["d"], "metric": ["mutual_knn"], "params": ['{"k": 10}'],
            "n": [10], "score": [0.5]}  # fmt: skip
    declared, stale = tmp_path / "alignment" / "now.csv", tmp_path / "alignment" / "stale-experiment.csv"
    declared.parent.mkdir()
    pd.DataFrame(cols).to_csv(declared, index=False)
    pd.DataFrame({**cols, "model_x": ["zzz-stale-model"]}).to_csv(stale, index=False)
    receipt = tmp_path / "features" / "d" / "a.json"
    receipt.parent.mkdir(parents=True)
    receipt.write_text(json.dumps({"key": "f" * 64, "request": {"model": {"id": "a"}, "dataset": {"id": "d"}}}))
    inputs = {"figures": [], "readings": [], "alignment": [str(declared)], "solved": [], "receipts": [str(receipt)],
              "tables": []}  # fmt: skip
    out = tmp_path / "report.html"
    build_report(config, inputs, str(out))
    html = out.read_text()
    assert "now: " in html and "stale-experiment" not in html and "zzz-stale-model" not in html
    assert "f" * 12 in html


def test_model_table_reads_one_receipt_per_model(config: dict) -> None:
    plan = Plan(config)
    receipts = plan.model_receipts()
    models = [Path(p).stem for p in receipts]
    assert len(models) == len(set(models)) and set(receipts) <= set(plan.extraction_receipts())
    assert set(models) == {m for _, m in plan.extractions()}


def test_long_jobs_and_what_they_wait_for_come_first(config: dict) -> None:
    """Calibrated experiments, and the extractions they read, get priority 1; extractions that feed only uncalibrated
    experiments or probes get 0 (so the long alignments do not start last)."""
    plan = Plan(config)
    assert set(plan.calibrated_experiments()) == {"vision-vision", "vision-language", "scale-confound"}
    assert plan.priority(experiment="vision-vision") == 1 and plan.priority(experiment="locality") == 0
    assert plan.priority(receipt=plan.paths.receipt("fmnist", "vit-m-sup")) == 1
    assert plan.priority(receipt=plan.paths.receipt("scenes", "smollm2")) == 1
    assert plan.priority(receipt=plan.paths.receipt("emoji-keywords", "smollm2")) == 0
    assert plan.priority(receipt=plan.paths.receipt("probe-digits", "vit-m-sup")) == 0
    assert plan.priority(model="smollm2") == 1
