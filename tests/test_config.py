"""Config validation: defaults, cross-references, and one-line errors from the real workflow for malformed configs."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prh.config import ConfigError, load_config, read_yaml, validate_config
from prh.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


@pytest.fixture(scope="module")
def default() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_validates_and_gets_defaults(default):
    cfg = validate_config(default)
    assert cfg["extraction"]["store_dtype"] == "float32"  # filled from the schema
    assert cfg["alignment"]["experiments"]["vision-vision"]["calibrate"] is True
    assert default.get("extraction", {}).get("store_dtype") is None  # input not mutated


SHIPPED = ["config.yaml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", SHIPPED)
def test_every_shipped_config_validates(path):
    assert load_config(ROOT / path)["models"]


def test_a_zoo_model_name_is_one_recipe_across_the_shipped_configs():
    """Configs sharing the store share zoo checkpoints by name and recipe (e.g. configs/scale.yaml's sweep models)."""
    seen: dict[str, tuple[str, dict]] = {}
    for path in SHIPPED:
        for name, spec in read_yaml(ROOT / path).get("models", {}).items():
            if spec.get("source") == "zoo":
                first = seen.setdefault(name, (path, spec))
                assert first[1] == spec, f"zoo model {name!r}: {path} and {first[0]} give different recipes"
    assert {"vit-s-sup", "resnet-s-sup", "convnext-s-sup"} <= set(seen)


def test_defaults_are_copies(default):
    """Filling defaults never shares the schema's default objects between configs."""
    first = validate_config({k: v for k, v in default.items() if k != "probes"})
    first["probes"]["tasks"]["t"] = {"dataset": "fmnist", "label": "class", "group": "natural"}
    assert validate_config({k: v for k, v in default.items() if k != "probes"})["probes"]["tasks"] == {}


def test_every_schema_field_has_a_description():
    schema = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())
    missing = []

    def walk(node, path):
        if isinstance(node, dict):
            props = node.get("properties", {})
            for key, sub in props.items():
                if "description" not in sub and "$ref" not in sub:
                    missing.append(f"{path}.{key}")
                walk(sub, f"{path}.{key}")
            if isinstance(node.get("additionalProperties"), dict):
                walk(node["additionalProperties"], f"{path}.*")

    walk(schema, "")
    assert missing == []


def test_plan_shares_vision_features_across_caption_densities(default):
    plan = Plan(validate_config(default))
    receipts = plan.experiment_receipt_map("caption-density")
    vision = {v for k, v in receipts.items() if k.endswith("/vit-m-sup")}
    language = {v for k, v in receipts.items() if k.endswith("/smollm2")}
    densities = len(default["alignment"]["experiments"]["caption-density"]["dataset"])
    assert len(vision) == 1 and len(language) == densities >= 3


def test_no_vision_model_extracts_the_same_images_twice(default):
    plan = Plan(validate_config(default))
    for model in plan.probe_models():
        sources = [plan.image_source(d) for d, m in plan.extractions() if m == model]
        assert len(sources) == len(set(sources)), model
    receipts = plan.probe_inputs("vit-m-sup")["receipts"]  # emoji-group reads emoji-names' twin, emoji-keywords
    assert plan.paths.receipt("emoji-keywords", "vit-m-sup") in receipts
    assert plan.paths.receipt("emoji-names", "vit-m-sup") not in receipts


def test_groups_keep_controls_out_of_the_modality_selectors(default):
    plan = Plan(validate_config(default))
    grid = [m for m, s in default["models"].items() if s.get("group") == "confound"]
    xs, ys = plan.experiment_models("scale-confound")
    assert len(grid) == 9 and sorted(xs) == sorted(grid) and ys == ["effnet-lite2", "vit-m-sup"]
    for name in ("vision-vision", "vision-language"):
        assert not set(grid) & set(plan.experiment_models(name)[0] + plan.experiment_models(name)[1])
    assert not set(grid) & set(plan.probe_models())
    shapes = plan.figures["scale_confound"].params["shapes"]
    assert {(s["depth"], s["width"]) for s in shapes.values()} == {(d, w) for d in (2, 4, 8) for w in (32, 64, 128)}


def test_model_shape_reads_each_family():
    from prh.plan import model_shape

    assert model_shape({"width": 64, "arch_kwargs": {"depth": 4, "embed_dim": 64}}) == {"depth": 4, "width": 64}
    assert model_shape({"width": 16, "arch_kwargs": {"dims": [16, 32], "depths": [1, 2]}}) == {"depth": 3, "width": 16}
    assert model_shape({"arch_kwargs": {"num_blocks": 4, "embed_dim": 64}}) == {"depth": 4, "width": 64}
    assert model_shape({"hidden": 32, "layers": 2}) == {"depth": 2, "width": 32}
    assert model_shape({"source": "packaged"}) == {"depth": None, "width": None}


def _mutate(cfg: dict, case: str) -> dict:
    cfg = copy.deepcopy(cfg)
    exps = cfg["alignment"]["experiments"]
    if case == "missing_section":
        del cfg["models"]
    elif case == "wrong_type":
        cfg["alignment"]["permutations"] = "many"
    elif case == "unknown_key":
        cfg["extraction"]["poolingg"] = "mean"
    elif case == "zero_k":
        exps["vision-vision"]["metrics"][0]["k"] = 0
    elif case == "k_too_large":
        exps["vision-vision"]["metrics"][0]["k"] = 1000
    elif case == "unknown_metric":
        exps["vision-vision"]["metrics"][0]["name"] = "mutual_kmm"
    elif case == "slash_name":
        cfg["models"]["vit/s"] = cfg["models"].pop("vit-m-sup")
    elif case == "undefined_dataset":
        exps["vision-vision"]["dataset"] = "places365"
    elif case == "duplicate_metric":
        exps["vision-vision"]["metrics"].append(dict(exps["vision-vision"]["metrics"][0]))
    elif case == "empty_models":
        exps["vision-vision"]["x"] = []
    elif case == "unreadable_path":
        cfg["datasets"]["fmnist"]["path"] = "/nonexistent/fashion-mnist"
    elif case == "unknown_arch":
        cfg["models"]["resnet-s-sup"]["arch"] = "resnet999"
    elif case == "no_package":
        del cfg["models"]["minilm"]["package"]
    elif case == "zoo_no_modality":
        del cfg["models"]["lm-tiny"]["modality"]
    elif case == "zoo_vision_no_arch":
        del cfg["models"]["vit-m-sup"]["arch"]
    elif case == "empty_group":
        exps["scale-confound"]["x"] = "vision:nosuchgroup"
    elif case == "bad_selector":
        exps["scale-confound"]["x"] = "visual:confound"
    elif case == "reference_is_language":
        cfg["report"]["downstream_reference"] = "smollm2"
    elif case == "reference_outside_experiment":
        cfg["report"]["downstream_reference"] = "rand-vit-d2-w32"  # a vision model, but of the confound group
    elif case == "reference_without_figure":
        cfg["report"]["downstream_reference"] = "effnet-lite2"
        cfg["report"]["vision_language"] = None
    elif case == "undefined_agreement_vision":
        cfg["report"]["agreement_vision"] = "vision-vision-metrics"
    return cfg


CASES = {
    "missing_section": "models: is required",
    "wrong_type": "alignment.permutations:",
    "unknown_key": "extraction.poolingg: unknown key",
    "zero_k": "alignment.experiments.vision-vision.metrics.0.k:",
    "k_too_large": "alignment.experiments.vision-vision.metrics.0.k: must satisfy 1 <= k <= n - 1 = 999, got 1000 (dataset",
    "unknown_metric": "alignment.experiments.vision-vision.metrics.0.name:",
    "slash_name": "models: 'vit/s' is not a valid name",
    "undefined_dataset": "alignment.experiments.vision-vision.dataset: dataset 'places365' is not defined",
    "duplicate_metric": "alignment.experiments.vision-vision.metrics.1: duplicates",
    "empty_models": "alignment.experiments.vision-vision.x:",
    "unreadable_path": "datasets.fmnist.path: /nonexistent/fashion-mnist is not readable",
    "unknown_arch": "models.resnet-s-sup.arch: 'resnet999' is not a known timm architecture",
    "no_package": "models.minilm.package: is required for packaged models",
    "zoo_no_modality": "models.lm-tiny.modality: is required for zoo models (vision or language)",
    "zoo_vision_no_arch": "models.vit-m-sup.arch: is required for zoo vision models",
    "empty_group": "alignment.experiments.scale-confound.x: selects no model ('vision:nosuchgroup')",
    "bad_selector": "alignment.experiments.scale-confound.x:",
    "reference_is_language": "report.downstream_reference: 'smollm2' is not a vision model of experiment "
                             "'vision-language' (vit-m-sup, vit-s-mae,",
    "reference_outside_experiment": "report.downstream_reference: 'rand-vit-d2-w32' is not a vision model of "
                                    "experiment 'vision-language'",
    "reference_without_figure": "report.downstream_reference: names 'effnet-lite2', but report.vision_language is null",
    "undefined_agreement_vision": "report.agreement_vision: experiment 'vision-vision-metrics' is not defined",
}


def test_downstream_reference_accepts_a_vision_model_of_the_experiment(default):
    cfg = copy.deepcopy(default)
    cfg["report"]["downstream_reference"] = "effnet-lite2"
    assert validate_config(cfg)["report"]["downstream_reference"] == "effnet-lite2"
    assert validate_config(default)["report"]["downstream_reference"] is None  # the schema default


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_config_names_the_field(default, case):
    with pytest.raises(ConfigError) as info:
        validate_config(_mutate(default, case))
    message = str(info.value)
    assert message.startswith("config error: ")
    assert CASES[case] in message
    assert "\n" not in message


def test_duplicate_yaml_key_is_refused(tmp_path):
    text = (ROOT / "config.yaml").read_text()
    line = next(l for l in text.splitlines() if l.startswith("  minilm:"))
    (tmp_path / "c.yaml").write_text(text.replace(line, line + "\n" + line))
    with pytest.raises(ConfigError, match=r"config error: minilm: duplicate key at line \d+"):
        load_config(tmp_path / "c.yaml")


def test_zoo_architectures_are_timms_and_validation_needs_no_timm(default):
    """The zoo's architectures are in timm's registry; validating the default config does not import timm."""
    import timm

    import prh.zoo.vision as zv
    from prh.config import ZOO_ARCHS

    assert ZOO_ARCHS == {zv.VIT, zv.RESNET, zv.CONVNEXT, zv.MIXER} and all(timm.is_model(a) for a in ZOO_ARCHS)
    code = f"import sys, yaml; from prh.config import validate_config; validate_config(yaml.safe_load(open({str(ROOT / 'config.yaml')!r}))); print('timm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_yaml_merge_keys_override_but_duplicates_are_refused(tmp_path):
    """`<<: *anchor` merges a model's fields (the hypotheses config's model families), an explicit key overrides a
    merged one, and a key written twice is still refused."""
    (tmp_path / "m.yaml").write_text("a: &x {p: 1, q: 2}\nb: {<<: *x, q: 3}\n")
    assert read_yaml(tmp_path / "m.yaml")["b"] == {"p": 1, "q": 3}
    (tmp_path / "d.yaml").write_text("a: &x {p: 1}\nb: {<<: *x, q: 3, q: 4}\n")
    with pytest.raises(ConfigError, match="q: duplicate key"):
        read_yaml(tmp_path / "d.yaml")


def test_hypotheses_config_wires_one_figure_per_hypothesis():
    """configs/hypotheses.yaml: four hypothesis figures, each reading its experiments' tables and each x model's
    factor value from the config; capacity lists trained models and their random-init controls (selector lists)."""
    cfg = load_config(ROOT / "configs" / "hypotheses.yaml")
    plan = Plan(cfg)
    figs = {f.params["vary"]: f for name, f in plan.figures.items() if name.startswith("hypothesis-")}
    assert set(figs) == {"step", "n_params", "tasks", "weight_decay"}
    assert figs["step"].params["values"] == {f"dyn-s{s}": s for s in (0, 10, 30, 100, 300)}
    assert figs["tasks"].params["values"] == {f"mt{t}-s{s}": t for t in (1, 2, 4, 8) for s in (0, 1)}
    assert figs["weight_decay"].params["values"] == {"wd-0": 0.0, "wd-0.05": 0.05, "wd-0.5": 0.5, "wd-2": 2.0, "wd-8": 8.0}
    trained, shapes = figs["n_params"].params["trained"], figs["n_params"].params["shapes"]
    assert sum(trained.values()) == 9 and sum(not t for t in trained.values()) == 9
    assert shapes["cap-d8-w64"] == shapes["rand-vit-d8-w64"] == [8, 64] and "shapes" not in figs["step"].params
    assert figs["step"].inputs["experiments"] == [plan.paths.alignment("dynamics-language"), plan.paths.alignment("dynamics-vision")]
    assert "accuracy" in figs["step"].inputs and set(figs["step"].params["values"]) <= set(plan.probe_models())
    bad = copy.deepcopy(cfg)
    del bad["models"]["wd-2"]["weight_decay"]
    with pytest.raises(ConfigError, match=r"models\.wd-2\.weight_decay: needed by report\.hypotheses\.3"):
        validate_config(bad)


def _workflow_copy(tmp_path: Path) -> Path:
    for name in ("Snakefile", "rules", "workflow", "schemas"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize(
    "case", ["missing_section", "wrong_type", "unknown_key", "zero_k", "unknown_metric", "slash_name",
             "undefined_dataset", "duplicate_metric", "empty_models", "unreadable_path", "duplicate_yaml_key"],
)  # fmt: skip
def test_snakemake_stops_with_one_line_and_writes_nothing(default, tmp_path, case):
    work = _workflow_copy(tmp_path)
    if case == "duplicate_yaml_key":
        text = (ROOT / "config.yaml").read_text()
        line = next(l for l in text.splitlines() if l.startswith("  smollm2:"))
        (work / "config.yaml").write_text(text.replace(line, line + "\n" + line))
        expected = "config error: smollm2: duplicate key"
    else:
        (work / "config.yaml").write_text(yaml.safe_dump(_mutate(default, case)))
        expected = "config error: " + CASES[case]
    proc = subprocess.run([str(SNAKEMAKE), "-n", "--cores", "1"], cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]
    assert lines == [next(l for l in lines if l.startswith("config error:"))]
    assert expected in lines[0]
    assert not (work / "features").exists() and not (work / "results").exists()
