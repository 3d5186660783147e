"""configs/seeds/seedN.yaml: overlays that retrain every zoo model of configs/hypotheses.yaml at seed N and change
nothing else, so each figure reading of docs/evidence.md gets one value per zoo training seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from snakemake.utils import update_config

from prh.config import read_yaml, validate_config
from prh.pipeline import language_recipe, vision_recipe
from prh.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "configs" / "hypotheses.yaml"
SEEDS = (0, 1, 2)
# the figures whose readings the evidence page's spread column quotes (hypothesis-0..3: dynamics, capacity,
# multitask, simplicity bias)
EVIDENCE_FIGURES = {"convergence", "vision_language", "downstream", "colour", "caption_density", "locality",
                    "agreement", "scale_confound", "hypothesis-0", "hypothesis-1", "hypothesis-2", "hypothesis-3"}


def merged(seed: int) -> dict:
    """The config Snakemake runs for `--configfile configs/hypotheses.yaml configs/seeds/seed<seed>.yaml`: the same
    loader's output merged by Snakemake's own update_config, then validated as the workflow validates it."""
    cfg = read_yaml(BASE)
    update_config(cfg, read_yaml(ROOT / "configs" / "seeds" / f"seed{seed}.yaml"))
    return validate_config(cfg)


@pytest.fixture(scope="module")
def base() -> dict:
    return validate_config(read_yaml(BASE))


def inputs(plan: Plan, figure: str) -> str:
    """A figure's input files with the results folder taken out of their paths."""
    return json.dumps(plan.figures[figure].inputs, sort_keys=True).replace(plan.config["results"] + "/", "")


def recipe(spec: dict) -> dict:
    return vision_recipe(spec) if spec.get("modality") == "vision" else language_recipe(spec)


@pytest.mark.parametrize("seed", SEEDS)
def test_overlay_changes_only_the_zoo_seeds_and_the_results_folder(base: dict, seed: int) -> None:
    cfg = merged(seed)
    assert cfg["results"] == f"results-seeds-{seed}" != base["results"]
    same = {k for k in base if k not in ("models", "results", "report")}
    assert {k: cfg[k] for k in same} == {k: base[k] for k in same}
    assert {k: v for k, v in cfg["report"].items() if k != "title"} == {
        k: v for k, v in base["report"].items() if k != "title"}
    assert list(cfg["models"]) == list(base["models"])
    zoo = [m for m, s in base["models"].items() if s["source"] == "zoo"]
    assert len(zoo) == 45
    for name, spec in base["models"].items():
        new = cfg["models"][name]
        if name not in zoo:
            assert new == spec, name
            continue
        # multitask models come in pairs of independent runs (seeds 0 and 1): seed N's pair trains at 2N and 2N + 1
        want = 2 * seed + spec["seed"] if spec.get("group") == "multitask" else seed
        assert new.get("seed", 0) == want, name
        assert {k: v for k, v in new.items() if k != "seed"} == {k: v for k, v in spec.items() if k != "seed"}, name
        assert recipe(new).get("seed", 0) == want  # the seed reaches the training recipe (its checkpoint's hash)


@pytest.mark.parametrize("seed", SEEDS)
def test_every_evidence_figure_is_drawn_from_the_same_experiments(base: dict, seed: int) -> None:
    plan, plan0 = Plan(merged(seed)), Plan(base)
    assert EVIDENCE_FIGURES <= set(plan.figures)
    for name in EVIDENCE_FIGURES:
        assert plan.figures[name].params == plan0.figures[name].params, name
        assert inputs(plan, name) == inputs(plan0, name), name
    for exp in base["alignment"]["experiments"]:
        assert plan.experiment_models(exp) == plan0.experiment_models(exp), exp


def test_the_seeds_train_different_models() -> None:
    """Every zoo model gets three different recipes over the three seeds, and the multitask pairs six seeds."""
    cfgs = [merged(s) for s in SEEDS]
    for name, spec in cfgs[0]["models"].items():
        if spec["source"] == "zoo":
            assert len({str(recipe(c["models"][name])) for c in cfgs}) == 3, name
    mt = {c["models"][m].get("seed", 0) for c in cfgs for m in c["models"] if m.startswith("mt1-")}
    assert mt == {0, 1, 2, 3, 4, 5}
