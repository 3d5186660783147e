"""The job plan a validated config implies, declared once: every result path (`Paths`), every job list, and every
figure with the files it reads and the only config values it reads (`FIGURES`, `Plan.figures`).

Rules (through rules/common.smk), the pipeline, the CLI and the report take paths and figure inputs from here.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from prh.config import CACHED_PACKAGES, experiment_datasets, model_modality, select_models
from prh.devices import Estimate, estimate
from prh.figure_specs import FIGURES, REPORT_TABLES, FigureSpec  # noqa: F401 (re-exported: prh.plan.FIGURES)
from prh.hub import HubRef, dataset_ref, model_ref
from prh.hub import cache_dir as hub_cache_dir

PROBE_TABLES = ("accuracy", "solved", "tasks_solved")
COLOUR_TABLES = ("alignment", "layout")
TTS_TABLES = ("curves", "fits", "summary")  # the test-time-scaling stage's tables per dataset (prh.tts.score_job)  # the colour stage's rho / p-value per source, and 2-D layouts per source
FIGURE_FILES = ("png", "svg", "csv", "json")  # what one figure job writes (the JSON holds caption and reading)


@dataclass(frozen=True)
class Paths:
    """Every file under the results root. A wildcard such as ``"{model}"`` as a name gives the rule's pattern."""

    root: str

    def data(self, dataset: str) -> str:
        return f"{self.root}/data/{dataset}.npz"

    def zoo(self, model: str) -> str:
        return f"{self.root}/zoo/{model}.json"

    def prepared(self, model: str) -> str:
        """A packaged model's weights-cache receipt (prepare_model)."""
        return f"{self.root}/prepared/{model}.json"

    def receipt(self, dataset: str, model: str) -> str:
        return f"{self.root}/features/{dataset}/{model}.json"

    def alignment(self, experiment: str) -> str:
        return f"{self.root}/alignment/{experiment}.csv"

    def matrices(self, experiment: str) -> str:
        return f"{self.root}/alignment/{experiment}.zarr"

    def probe(self, model: str) -> str:
        return f"{self.root}/probes/models/{model}.csv"

    def probe_table(self, table: str) -> str:
        """One of PROBE_TABLES."""
        return f"{self.root}/probes/{table}.csv"

    def lm(self, model: str) -> str:
        return f"{self.root}/lm/{model}.json"

    def lm_table(self) -> str:
        return f"{self.root}/lm/scores.csv"

    def models_table(self) -> str:
        return f"{self.root}/models.csv"

    def benchmark(self, rule: str, *names: str) -> str:
        """A job's Snakemake benchmark (wall s, cpu_time, max_rss, ...: benchmarks/dag_cost.py sums them)."""
        return f"{self.root}/benchmarks/{rule}/{'/'.join(names)}.tsv"

    def colour(self, table: str) -> str:
        """One of COLOUR_TABLES of the colour experiment."""
        return f"{self.root}/colour/{table}.csv"

    def figure(self, figure: str, ext: str = "png") -> str:
        """One of a figure's FIGURE_FILES."""
        return f"{self.root}/figures/{figure}.{ext}"

    def report(self) -> str:
        return f"{self.root}/report.html"

    def tts_features(self, dataset: str, model: str, axis: str) -> str:
        """Receipt of one model's test-time-scaling entries on one axis (prh.tts.AXES)."""
        return f"{self.root}/tts/{dataset}/features/{axis}/{model}.json"

    def tts_table(self, dataset: str, table: str) -> str:
        """One of TTS_TABLES of the test-time-scaling stage on one dataset."""
        return f"{self.root}/tts/{dataset}/{table}.{'json' if table == 'summary' else 'csv'}"

    def tts_figure(self, dataset: str, ext: str = "png") -> str:
        return f"{self.root}/tts/{dataset}/tts.{ext}"

    def existing_feature_receipts(self, model: str) -> list[Path]:
        """One model's extraction receipts on disk now, on whichever datasets."""
        on_disk = Paths(glob.escape(self.root))
        return [Path(p) for p in sorted(glob.glob(on_disk.receipt("*", glob.escape(model))))]

    def existing_receipts(self) -> list[Path]:
        """Extraction, zoo, weights-cache and test-time-scaling receipts on disk now, whichever config wrote them
        (`prh store gc / rm`)."""
        on_disk = Paths(glob.escape(self.root))
        patterns = (on_disk.receipt("*", "*"), on_disk.zoo("*"), on_disk.prepared("*"), on_disk.tts_features("*", "*", "*"))
        return [Path(p) for pattern in patterns for p in sorted(glob.glob(pattern))]


HEATMAP = "heatmap"  # figures heatmap-0, heatmap-1, ...: one per report.heatmaps entry [experiment, model_x, model_y]
HYPOTHESIS = "hypothesis"  # figures hypothesis-0, -1, ...: one per report.hypotheses entry
DEFAULT_DENSITY = 30  # caption words of a dataset that sets none (the scenes default)


def model_shape(spec: dict) -> dict[str, int | None]:
    """Depth (blocks) and width of a zoo model spec, from its arch_kwargs (depth / num_blocks / depths / layers) and
    width (embed_dim / hidden); None where the spec does not say."""
    kw = spec.get("arch_kwargs", {})
    depth = kw.get("depth", kw.get("num_blocks", sum(kw["depths"]) if "depths" in kw else spec.get("layers")))
    width = spec.get("width", kw.get("embed_dim", spec.get("hidden")))
    return {"depth": None if depth is None else int(depth), "width": None if width is None else int(width)}


@dataclass(frozen=True)
class Figure:
    """One figure job: its named input files and the config values it reads (its only params)."""

    name: str
    inputs: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """Paths, job lists and figures derived from a validated config."""

    config: dict

    @cached_property
    def paths(self) -> Paths:
        return Paths(self.config["results"])

    def zoo_cache(self) -> str:
        """Where trained zoo checkpoints live: inside the feature store."""
        from prh.store import ZOO_DIR

        return f"{self.config['store']}/{ZOO_DIR}"

    # -- models --------------------------------------------------------------------------------
    def modality(self, model: str) -> str:
        return model_modality(model, self.config["models"][model])

    def model_spec(self, model: str) -> dict:
        """A model's spec as its jobs get it: a hub model's with ``commit``, the commit its revision names in the hub
        cache now (absent until `prh prefetch` fills the cache), so a moved ``refs/main`` reruns exactly its jobs."""
        return self._with_commit(self.config["models"][model], self.hub_commits.get(f"models.{model}"))

    def dataset_spec(self, dataset: str) -> dict:
        """A dataset's spec as its job gets it: a hub dataset's with the ``commit`` its revision names in the cache."""
        return self._with_commit(self.config["datasets"][dataset], self.hub_commits.get(f"datasets.{dataset}"))

    @staticmethod
    def _with_commit(spec: dict, commit: str | None) -> dict:
        return {**spec, "commit": commit} if commit is not None else spec

    @cached_property
    def hub_refs(self) -> dict[str, HubRef]:
        """'models.<name>' / 'datasets.<name>' -> the hub repository of every hub entry of the config."""
        refs = {f"models.{m}": model_ref(m, s) for m, s in self.config["models"].items()}
        refs |= {f"datasets.{d}": dataset_ref(d, s) for d, s in self.config["datasets"].items()}
        return {k: r for k, r in refs.items() if r is not None}

    @cached_property
    def hub_commits(self) -> dict[str, str | None]:
        """Each hub entry's commit in the hub cache now (None: not cached), read once per Snakemake start."""
        return {k: r.cached_commit() for k, r in self.hub_refs.items()}

    def uncached_hub_entries(self) -> list[str]:
        """The hub entries whose revision the hub cache does not resolve (prh prefetch has not fetched them)."""
        return [k for k, commit in self.hub_commits.items() if commit is None]

    def hub_warning(self) -> str:
        """One paragraph for a run whose hub entries are not all in the cache."""
        missing = self.uncached_hub_entries()
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        return (f"prh: {len(missing)} of {len(self.hub_refs)} hub models and datasets are not in the hub cache at "
                f"{hub_cache_dir()} ({shown}); their jobs stop until `prh prefetch --configfile <this config>` has "
                "fetched them where the hub is reachable")  # fmt: skip

    def model_receipt(self, model: str) -> list[str]:
        """What a job loading the model waits for: its zoo training receipt, its weights-cache receipt (packaged
        models in CACHED_PACKAGES), or nothing (models that load straight from their files)."""
        spec = self.config["models"][model]
        if spec["source"] == "zoo":
            return [self.paths.zoo(model)]
        return [self.paths.prepared(model)] if spec.get("package") in CACHED_PACKAGES else []

    def extraction_params(self, model: str) -> dict:
        """Extraction parameters for one model (these enter the store key)."""
        ex = self.config["extraction"]
        spec = self.config["models"][model]
        common = {"dtype": spec.get("dtype", ex["dtype"]), "store_dtype": ex["store_dtype"]}
        if self.modality(model) == "vision":
            params = {"pooling": ex["vision_pooling"], **common}
            return {**params, "input_size": spec["input_size"]} if "input_size" in spec else params
        return {"pooling": ex["language_pooling"], **common, "max_tokens": ex["max_tokens"],
                "prompt_template": ex["prompt_template"]}  # fmt: skip

    def batch_size(self, model: str) -> int:
        return int(self.config["models"][model].get("batch_size", self.config["extraction"]["batch_size"]))

    def n_params(self, model: str) -> float:
        return float(self.config["models"][model].get("n_params", 1e8))

    def estimate(self, model: str) -> Estimate:
        """GPU count, GPU and host memory of a job running the model (prh.devices.estimate)."""
        spec, cfg = self.config["models"][model], self.config
        return estimate(self.n_params(model), self.extraction_params(model)["dtype"], cfg["gpus"],
                        cfg["gpu_memory_gb"], cfg["offload"], bool(spec.get("load_in_4bit")))  # fmt: skip

    def gpus(self, model: str) -> int:
        """GPUs a job running the model requests (resources gpu; SLURM --gpus): 0 when the config has none."""
        return self.estimate(model).gpus

    def gpu_mem_mb(self, model: str) -> int:
        """Estimated GPU memory in MB over the job's GPUs (0 on the CPU)."""
        return int(self.estimate(model).gpu_gb * 1000)

    def mem_mb(self, model: str) -> int:
        """Job host memory in MB (prh.devices.estimate)."""
        return int(self.estimate(model).host_gb * 1000)

    def gpu_settings(self) -> dict:
        """What a GPU job needs to place a model: slots, per-GPU memory, offload and the slot wait."""
        cfg = self.config
        folder = cfg["offload_folder"] or f"{cfg['store']}/.offload"
        return {"slots": cfg["gpus"], "memory_gb": cfg["gpu_memory_gb"], "offload": cfg["offload"],
                "offload_folder": folder, "wait_s": cfg["gpu_wait_s"]}  # fmt: skip

    def dataset_resources(self, dataset: str) -> dict[str, int]:
        """A dataset job's mem_mb and runtime (min): a hub split (source hf: arrow tables and decoded images, read
        from the hub cache on a shared filesystem) gets 16 GB and 2 h, a generated or packaged one 4 GB and 30 min."""
        hub = self.config["datasets"][dataset]["source"] == "hf"
        return {"mem_mb": 16000 if hub else 4000, "runtime": 120 if hub else 30}

    def runtime_min(self, model: str) -> int:
        """Job wall-time limit in minutes: 30 plus 10 per billion parameters."""
        return int(30 + 10 * self.n_params(model) / 1e9)

    # -- jobs ----------------------------------------------------------------------------------
    def experiment_models(self, name: str) -> tuple[list[str], list[str]]:
        exp = self.config["alignment"]["experiments"][name]
        field = f"alignment.experiments.{name}"
        return select_models(self.config, exp["x"], f"{field}.x"), select_models(self.config, exp["y"], f"{field}.y")

    def image_source(self, dataset: str) -> str:
        """The dataset whose receipt holds images identical to this one's (scenes differing only in their captions):
        the smallest such name, so the choice does not depend on the order of the config file."""

        def ident(spec: dict) -> dict:
            return {k: v for k, v in spec.items() if k not in ("density", "captions", "caption_items")}

        same = [n for n, s in self.config["datasets"].items() if ident(s) == ident(self.config["datasets"][dataset])]
        return min(same)

    def feature_dataset(self, dataset: str, model: str) -> str:
        """Which dataset's receipt holds a model's features: vision models share identical images."""
        return self.image_source(dataset) if self.modality(model) == "vision" else dataset

    def experiment_extractions(self, name: str) -> dict[str, tuple[str, str]]:
        """'dataset/model' -> the (dataset, model) extraction holding its features, for every model and dataset."""
        xs, ys = self.experiment_models(name)
        datasets = experiment_datasets(self.config["alignment"]["experiments"][name])
        return {f"{d}/{m}": (self.feature_dataset(d, m), m) for d in datasets for m in dict.fromkeys(xs + ys)}

    def experiment_receipt_map(self, name: str) -> dict[str, str]:
        """'dataset/model' -> receipt path for every model and dataset of an experiment."""
        return {k: self.paths.receipt(d, m) for k, (d, m) in self.experiment_extractions(name).items()}

    def experiment_receipts(self, name: str) -> list[str]:
        return list(dict.fromkeys(self.experiment_receipt_map(name).values()))

    # -- scheduling ------------------------------------------------------------------------------
    def calibrated_experiments(self) -> list[str]:
        """Experiments with a permutation null: the long alignment jobs."""
        return [e for e, spec in self.config["alignment"]["experiments"].items() if spec.get("calibrate", True)]

    @cached_property
    def _critical_receipts(self) -> frozenset[str]:
        return frozenset(r for e in self.calibrated_experiments() for r in self.experiment_receipts(e))

    @cached_property
    def _critical_models(self) -> frozenset[str]:
        calibrated = [m for e in self.calibrated_experiments() for side in self.experiment_models(e) for m in side]
        return frozenset(calibrated + self.language_models())

    def priority(self, experiment: str | None = None, receipt: str | None = None, model: str | None = None) -> int:
        """Scheduling priority (Snakemake `priority`): 1 for the long jobs (calibrated experiments; language scoring,
        whose rule says so itself) and for the extractions and model preparations they wait for, else 0. The long
        jobs then start while the short extractions that only feed figures still run, instead of one long job
        keeping a single core busy at the end of a run."""
        if experiment is not None:
            return int(experiment in self.calibrated_experiments())
        if receipt is not None:
            return int(receipt in self._critical_receipts)
        return int(model in self._critical_models)

    def probe_models(self) -> list[str]:
        if not self.config["probes"]["tasks"]:
            return []
        return select_models(self.config, self.config["probes"]["models"], "probes.models", allow_empty=True)

    def probe_datasets(self) -> list[str]:
        return list(dict.fromkeys(t["dataset"] for t in self.config["probes"]["tasks"].values()))

    def probe_inputs(self, model: str) -> dict[str, list[str]]:
        """One model's probe job reads its features and the labels of every probe dataset (in the same order); the
        features of a dataset whose images another holds are read from that one's receipt."""
        datasets = self.probe_datasets()
        return {"receipts": [self.paths.receipt(self.feature_dataset(d, model), model) for d in datasets],
                "data": [self.paths.data(d) for d in datasets]}  # fmt: skip

    def language_models(self) -> list[str]:
        return select_models(self.config, self.config["language"]["models"], "language.models", allow_empty=True)

    def lm_inputs(self, model: str) -> dict[str, list[str]]:
        corpus = self.config["language"]["bpb_corpus"]
        return {"model": self.model_receipt(model), "corpus": [self.paths.data(corpus)] if corpus else []}

    def colour_models(self) -> list[str]:
        """The language models of the colour experiment (none when it is not configured)."""
        col = self.config["colour"]
        return [] if col["names"] is None else select_models(self.config, col["models"], "colour.models")

    def colour_inputs(self) -> dict[str, list[str]]:
        """The colour stage reads the colour-name dataset, the image datasets and each model's receipt on the names."""
        col = self.config["colour"]
        return {"names": [self.paths.data(col["names"])], "images": [self.paths.data(d) for d in col["images"]],
                "receipts": [self.paths.receipt(col["names"], m) for m in self.colour_models()]}  # fmt: skip

    def colour_params(self) -> dict:
        """The colour stage's settings (config colour) without the names of its inputs: levels, radius, min_share,
        layer, permutations, seed."""
        return {k: v for k, v in self.config["colour"].items() if k not in ("names", "images", "models")}

    def colour_tables(self) -> list[str]:
        return [self.paths.colour(t) for t in COLOUR_TABLES] if self.config["colour"]["names"] is not None else []

    def extractions(self) -> list[tuple[str, str]]:
        """Every (dataset, model) pair some stage reads from the store."""
        pairs = [dm for name in self.config["alignment"]["experiments"] for dm in self.experiment_extractions(name).values()]
        pairs += [(self.feature_dataset(d, model), model) for model in self.probe_models() for d in self.probe_datasets()]
        pairs += [(self.config["colour"]["names"], model) for model in self.colour_models()]
        return list(dict.fromkeys(pairs))

    def extraction_receipts(self) -> list[str]:
        return [self.paths.receipt(d, m) for d, m in self.extractions()]

    def model_receipts(self) -> list[str]:
        """One receipt per model with features: the model table reads each model's parameter count from it, so a
        change to another dataset does not rebuild the table (and every figure reading it)."""
        first: dict[str, str] = {}
        for d, m in self.extractions():
            first.setdefault(m, self.paths.receipt(d, m))
        return list(first.values())

    # -- test-time scaling (prh.tts) --------------------------------------------------------------
    def tts_models(self, modality: str) -> list[str]:
        """The stage's vision or language models (none when it is off)."""
        tts = self.config["tts"]
        return select_models(self.config, tts[modality], f"tts.{modality}") if tts["datasets"] else []

    def tts_receipts(self, dataset: str) -> list[str]:
        """What the stage's analysis of one dataset reads: views of every vision model (on the dataset holding its
        images), captions and prompted captions of every language model."""
        views = [self.paths.tts_features(self.image_source(dataset), m, "views") for m in self.tts_models("vision")]
        return views + [self.paths.tts_features(dataset, m, axis) for m in self.tts_models("language")
                        for axis in ("captions", "prompt")]  # fmt: skip

    def tts_params(self, model: str, axis: str) -> dict:
        """A model's extraction parameters on one axis: the workflow's, the prompt template on the prompt axis."""
        params = self.extraction_params(model)
        return {**params, "prompt_template": self.config["tts"]["prompt"]} if axis == "prompt" else params

    def tts_sizes(self, axis: str) -> list[int]:
        from prh.tts import axis_sizes

        return axis_sizes(axis, self.config["tts"]["captions"], self.config["tts"]["views"])

    def tts_settings(self) -> dict:
        """The analysis settings (prh.tts.SETTINGS): the stage's sizes, prompt and metric, alignment's calibration."""
        tts, al = self.config["tts"], self.config["alignment"]
        return {**{k: tts[k] for k in ("captions", "views", "prompt", "metric")},
                **{k: al[k] for k in ("q", "permutations", "bootstrap", "alpha", "seed")}}  # fmt: skip

    def tts_targets(self) -> list[str]:
        return [self.paths.tts_figure(d) for d in self.config["tts"]["datasets"]]

    # -- tables, figures and the report ---------------------------------------------------------
    def probe_tables(self) -> list[str]:
        return [self.paths.probe_table(t) for t in PROBE_TABLES] if self.probe_models() else []

    def tables(self) -> list[str]:
        """Every table of the run: alignment tables and matrices, probe tables, LM scores, the model table."""
        exps = self.config["alignment"]["experiments"]
        out = [self.paths.alignment(e) for e in exps] + [self.paths.matrices(e) for e in exps]
        return out + self.probe_tables() + self.colour_tables() + [self.paths.lm_table(), self.paths.models_table()]

    @cached_property
    def figures(self) -> dict[str, Figure]:
        """Every figure this config draws, in report order: the FIGURES whose experiment the report names (those
        reading probe results only when probes run), then one heatmap per report.heatmaps entry."""
        rep = self.config["report"]
        tables = {"lm": self.paths.lm_table(), "models": self.paths.models_table()}
        if self.probe_models():
            tables["solved"] = self.paths.probe_table("tasks_solved")
        tables |= {t: self.paths.alignment(rep[key]) for t, key in REPORT_TABLES.items() if rep[key] is not None}
        if self.colour_tables():
            tables["colour"], tables["colour_layout"] = self.colour_tables()
        out: dict[str, Figure] = {}
        for name, spec in FIGURES.items():
            if spec.report_key is None:  # a figure of its own stage's tables, drawn when the config runs that stage
                if all(t in tables for t in spec.tables):
                    out[name] = Figure(name, {t: tables[t] for t in spec.tables})
                continue
            exp = rep[spec.report_key]
            if exp is None:
                continue
            params = {p: self._figure_param(p, exp) for p in spec.params}
            if any(t not in tables for t in spec.required(params)):
                continue
            aligned = [self.paths.alignment(e) for e in ([exp] if isinstance(exp, str) else exp)]  # sweeps: a list
            read = [*spec.required(params), *(t for t in spec.optional if t in tables)]
            inputs = {"alignment": aligned[0] if len(aligned) == 1 else aligned, **{t: tables[t] for t in read}}
            out[name] = Figure(name, inputs, params)
        for i, (exp, mx, my) in enumerate(rep["heatmaps"]):
            label = ", ".join(experiment_datasets(self.config["alignment"]["experiments"][exp]))
            params = {"experiment": exp, "model_x": mx, "model_y": my, "dataset": label}
            out[f"{HEATMAP}-{i}"] = Figure(f"{HEATMAP}-{i}", {"matrices": self.paths.matrices(exp)}, params)
        for i, hyp in enumerate(rep["hypotheses"]):
            inputs = {"experiments": [self.paths.alignment(e) for e in hyp["experiments"]], "models": tables["models"]}
            if self.probe_models():
                inputs["accuracy"] = self.paths.probe_table("accuracy")
            out[f"{HYPOTHESIS}-{i}"] = Figure(f"{HYPOTHESIS}-{i}", inputs, self.hypothesis_params(hyp))
        return out

    def hypothesis_params(self, hyp: dict) -> dict[str, Any]:
        """What a hypothesis figure reads of the config: its name, claim and factor, each x model's factor value
        (None for n_params: the model table has it), whether it was trained (objective not random) and, for
        n_params, each model's depth and width (trained and random-init models of one shape are compared)."""
        from prh.config import HYPOTHESIS_FIELDS

        models = list(dict.fromkeys(m for e in hyp["experiments"] for m in self.experiment_models(e)[0]))
        specs = {m: self.config["models"][m] for m in models}
        key = HYPOTHESIS_FIELDS.get(hyp["vary"])
        values = {m: None if key is None else (len(s[key]) if key == "tasks" else s[key]) for m, s in specs.items()}
        out = {"name": hyp["name"], "claim": hyp.get("claim", ""), "vary": hyp["vary"], "values": values,
               "trained": {m: s.get("objective") != "random" for m, s in specs.items()}}  # fmt: skip
        shapes = {m: model_shape(s) for m, s in specs.items()}
        if hyp["vary"] == "n_params" and all(v["depth"] and v["width"] for v in shapes.values()):
            out["shapes"] = {m: [v["depth"], v["width"]] for m, v in shapes.items()}
        return out

    def _figure_param(self, param: str, experiment: str | list[str]) -> Any:
        """The value of one config param a figure reads (see FigureSpec)."""
        if param == "metric":
            return self.config["report"]["headline_metric"]
        if param == "reference":
            return self.config["report"]["downstream_reference"]
        if param == "density":
            datasets = experiment_datasets(self.config["alignment"]["experiments"][experiment])
            return {d: self.config["datasets"][d].get("density", DEFAULT_DENSITY) for d in datasets}
        if param == "shapes":
            return {m: model_shape(self.config["models"][m]) for m in self.experiment_models(experiment)[0]}
        if param == "calibration":
            exps = [self.config["alignment"]["experiments"][e] for e in ([experiment] if isinstance(experiment, str)
                                                                          else experiment)]  # fmt: skip
            limits = [e["calibrate_max_n"] for e in exps if e.get("calibrate", True)]
            return {"permutations": self.config["alignment"]["permutations"] if limits else None,
                    "calibrate_max_n": max(limits) if limits else None}  # fmt: skip
        raise KeyError(param)

    def report_inputs(self) -> dict[str, list[str]]:
        """What the report reads (figures with their readings, headline alignment tables, the solved matrix, the
        receipts whose keys it lists) and the tables it makes sure exist; nothing else under results/ enters it."""
        return {
            "figures": [self.paths.figure(f) for f in self.figures],
            "readings": [self.paths.figure(f, "json") for f in self.figures],
            "alignment": [self.paths.alignment(e) for e in self.config["alignment"]["experiments"]],
            "solved": [self.paths.probe_table("solved")] if self.probe_models() else [],
            "receipts": sorted(self.extraction_receipts()),
            "tables": self.tables(),
        }

    def targets(self) -> list[str]:
        """What `rule all` builds: the report, and the test-time-scaling figures when that stage is on."""
        return [self.paths.report(), *self.tts_targets()]
