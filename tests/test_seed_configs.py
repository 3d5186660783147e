"""configs/seeds/: overlays that retrain the zoo models of config.yaml (seedN.yaml) and of configs/hypotheses.yaml
(seedN.yaml + seedN-hyp.yaml) at seed N and change nothing else, so each figure reading that docs/evidence.md quotes
gets one value per zoo training seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from snakemake.utils import update_config

from prh.config import read_yaml, validate_config
from prh.pipeline import language_recipe, vision_recipe
from prh.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
DEFAULT, HYP = "config.yaml", "configs/hypotheses.yaml"
# (base config, overlays after it, seed): the runs docs/evidence.md's spread column quotes
RUNS = [(DEFAULT, ["seed1"], 1), (DEFAULT, ["seed2"], 2), (HYP, ["seed0"], 0), (HYP, ["seed1", "seed1-hyp"], 1),
        (HYP, ["seed2", "seed2-hyp"], 2)]
# the figures whose readings the spread column quotes (hypothesis-0..3: dynamics, capacity, multitask, simplicity)
FIGURES = {DEFAULT: {"convergence", "vision_language", "downstream", "caption_density", "locality", "agreement",
                     "scale_confound"}}
FIGURES[HYP] = FIGURES[DEFAULT] | {"colour", "hypothesis-0", "hypothesis-1", "hypothesis-2", "hypothesis-3"}


def merged(base: str, overlays: list[str]) -> dict:
    """The config Snakemake runs for `--configfile <base> configs/seeds/<overlay>.yaml ...`: the files merged in order
    by Snakemake's own update_config, then validated as the workflow validates it."""
    cfg = read_yaml(ROOT / base)
    for name in overlays:
        update_config(cfg, read_yaml(ROOT / "configs" / "seeds" / f"{name}.yaml"))
    return validate_config(cfg)


def recipe(spec: dict) -> dict:
    return vision_recipe(spec) if spec.get("modality") == "vision" else language_recipe(spec)


def inputs(plan: Plan, figure: str) -> str:
    """A figure's input files with the results folder taken out of their paths."""
    return json.dumps(plan.figures[figure].inputs, sort_keys=True).replace(plan.config["results"] + "/", "")


@pytest.mark.parametrize(("base", "overlays", "seed"), RUNS)
def test_overlays_change_only_the_zoo_seeds_and_the_results_folder(base: str, overlays: list[str], seed: int) -> None:
    cfg, ref = merged(base, overlays), validate_config(read_yaml(ROOT / base))
    assert cfg["results"] == f"results-seeds-{seed}" != ref["results"]
    same = {k for k in ref if k not in ("models", "results", "report")}
    assert {k: cfg[k] for k in same} == {k: ref[k] for k in same}
    untitled = [{k: v for k, v in c["report"].items() if k != "title"} for c in (cfg, ref)]
    assert untitled[0] == untitled[1]
    assert list(cfg["models"]) == list(ref["models"])
    zoo = [m for m, s in ref["models"].items() if s["source"] == "zoo"]
    assert len(zoo) == (18 if base == DEFAULT else 45)
    for name, spec in ref["models"].items():
        new = cfg["models"][name]
        if name not in zoo:
            assert new == spec, name
            continue
        # multitask models come in pairs of independent runs (seeds 0 and 1): seed N's pair trains at 2N and 2N + 1
        want = 2 * seed + spec["seed"] if spec.get("group") == "multitask" else seed
        assert new.get("seed", 0) == want, name
        assert {k: v for k, v in new.items() if k != "seed"} == {k: v for k, v in spec.items() if k != "seed"}, name
        assert recipe(new).get("seed", 0) == want  # the seed reaches the training recipe (its checkpoint's hash)
    plan, plan0 = Plan(cfg), Plan(ref)
    assert FIGURES[base] <= set(plan.figures)
    for name in FIGURES[base]:  # each figure reads the same experiments, tables and config values as the base's
        assert plan.figures[name].params == plan0.figures[name].params, name
        assert inputs(plan, name) == inputs(plan0, name), name
    for exp in ref["alignment"]["experiments"]:
        assert plan.experiment_models(exp) == plan0.experiment_models(exp), exp


def test_the_seeds_train_different_models() -> None:
    """Every zoo model of the hypotheses' config gets three recipes over the three seeds, the multitask pairs six
    seeds; the default's part of a seed is the same with or without the hypotheses' overlay."""
    cfgs = [merged(base, overlays) for base, overlays, _ in RUNS if base == HYP]
    for name, spec in cfgs[0]["models"].items():
        if spec["source"] == "zoo":
            assert len({json.dumps(recipe(c["models"][name]), sort_keys=True) for c in cfgs}) == 3, name
    assert {c["models"][m].get("seed", 0) for c in cfgs for m in c["models"] if m.startswith("mt1-")} == set(range(6))
    for seed in (1, 2):
        default, hyp = merged(DEFAULT, [f"seed{seed}"]), merged(HYP, [f"seed{seed}", f"seed{seed}-hyp"])
        assert all(hyp["models"][m] == spec for m, spec in default["models"].items())
