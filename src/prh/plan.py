"""The job plan a validated config implies: which (model, dataset) extractions, tables and figures exist, and where."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prh.config import DTYPE_BYTES, experiment_datasets, model_modality, select_models

FIGURES_FOR = {
    "vision_vision": ("convergence", "umap"),
    "vision_language": ("vision_language", "downstream"),
    "caption_density": ("caption_density",),
    "locality": ("locality",),
    "agreement": ("agreement",),
}


@dataclass
class Plan:
    """Paths and job lists derived from a validated config."""

    config: dict

    @property
    def root(self) -> str:
        return self.config["results"]

    # -- paths ---------------------------------------------------------------------------------
    def data_path(self, dataset: str) -> str:
        return f"{self.root}/data/{dataset}.npz"

    def zoo_path(self, model: str) -> str:
        return f"{self.root}/zoo/{model}.json"

    def receipt_path(self, dataset: str, model: str) -> str:
        return f"{self.root}/features/{dataset}/{model}.json"

    def alignment_path(self, experiment: str) -> str:
        return f"{self.root}/alignment/{experiment}.csv"

    def matrices_path(self, experiment: str) -> str:
        return f"{self.root}/alignment/{experiment}.zarr"

    def figure_path(self, figure: str) -> str:
        return f"{self.root}/figures/{figure}.png"

    # -- models --------------------------------------------------------------------------------
    def modality(self, model: str) -> str:
        return model_modality(model, self.config["models"][model])

    def zoo_models(self) -> list[str]:
        return [m for m, s in self.config["models"].items() if s["source"] == "zoo"]

    def zoo_receipt(self, model: str) -> list[str]:
        return [self.zoo_path(model)] if self.config["models"][model]["source"] == "zoo" else []

    def extraction_params(self, model: str) -> dict:
        """Extraction parameters for one model (these enter the store key)."""
        ex = self.config["extraction"]
        spec = self.config["models"][model]
        if self.modality(model) == "vision":
            return {"pooling": ex["vision_pooling"], "dtype": spec.get("dtype", ex["dtype"])}
        return {
            "pooling": ex["language_pooling"],
            "dtype": spec.get("dtype", ex["dtype"]),
            "max_tokens": ex["max_tokens"],
            "prompt_template": ex["prompt_template"],
        }

    def batch_size(self, model: str) -> int:
        return int(self.config["models"][model].get("batch_size", self.config["extraction"]["batch_size"]))

    def n_params(self, model: str) -> float:
        return float(self.config["models"][model].get("n_params", 1e8))

    def mem_mb(self, model: str) -> int:
        """Job memory: weights at their dtype, three times over, plus 4 GB of headroom."""
        dtype = self.extraction_params(model)["dtype"]
        return int(self.n_params(model) * DTYPE_BYTES[dtype] * 3 / 1e6) + 4000

    def runtime_min(self, model: str) -> int:
        """Job wall-time limit in minutes: 30 plus 10 per billion parameters."""
        return int(30 + 10 * self.n_params(model) / 1e9)

    # -- jobs ----------------------------------------------------------------------------------
    def experiment_models(self, name: str) -> tuple[list[str], list[str]]:
        exp = self.config["alignment"]["experiments"][name]
        field = f"alignment.experiments.{name}"
        return select_models(self.config, exp["x"], f"{field}.x"), select_models(self.config, exp["y"], f"{field}.y")

    def image_source(self, dataset: str) -> str:
        """The dataset whose receipt holds images identical to this one's (scenes differing only in caption density):
        the smallest such name, so the choice does not depend on the order of the config file."""
        def ident(spec: dict) -> dict:
            return {k: v for k, v in spec.items() if k != "density"}

        same = [n for n, s in self.config["datasets"].items() if ident(s) == ident(self.config["datasets"][dataset])]
        return min(same)

    def feature_dataset(self, dataset: str, model: str) -> str:
        """Which dataset's receipt holds a model's features: vision models share identical images."""
        return self.image_source(dataset) if self.modality(model) == "vision" else dataset

    def experiment_receipt_map(self, name: str) -> dict[str, str]:
        """'dataset/model' -> receipt path for every model and dataset of an experiment."""
        xs, ys = self.experiment_models(name)
        datasets = experiment_datasets(self.config["alignment"]["experiments"][name])
        models = list(dict.fromkeys(xs + ys))
        return {f"{d}/{m}": self.receipt_path(self.feature_dataset(d, m), m) for d in datasets for m in models}

    def experiment_receipts(self, name: str) -> list[str]:
        return list(dict.fromkeys(self.experiment_receipt_map(name).values()))

    def probe_models(self) -> list[str]:
        if not self.config["probes"]["tasks"]:
            return []
        return select_models(self.config, self.config["probes"]["models"], "probes.models", allow_empty=True)

    def probe_datasets(self) -> list[str]:
        return list(dict.fromkeys(t["dataset"] for t in self.config["probes"]["tasks"].values()))

    def probe_receipts(self, model: str) -> list[str]:
        return [self.receipt_path(d, model) for d in self.probe_datasets()]

    def language_models(self) -> list[str]:
        return select_models(self.config, self.config["language"]["models"], "language.models", allow_empty=True)

    def lm_inputs(self, model: str) -> dict[str, list[str]]:
        corpus = self.config["language"]["bpb_corpus"]
        return {"zoo": self.zoo_receipt(model), "corpus": [self.data_path(corpus)] if corpus else []}

    def extractions(self) -> list[tuple[str, str]]:
        """Every (dataset, model) pair some stage reads from the store."""
        pairs: list[tuple[str, str]] = []
        for name in self.config["alignment"]["experiments"]:
            for path in self.experiment_receipts(name):
                parts = Path(path).parts
                pairs.append((parts[-2], Path(parts[-1]).stem))
        for model in self.probe_models():
            pairs += [(d, model) for d in self.probe_datasets()]
        return list(dict.fromkeys(pairs))

    # -- figures -------------------------------------------------------------------------------
    def figures(self) -> list[str]:
        rep = self.config["report"]
        out: list[str] = []
        for key, names in FIGURES_FOR.items():
            if rep[key] is None:
                continue
            for fig in names:
                if fig in ("convergence", "umap") and not self.probe_models():
                    continue
                out.append(fig)
        out += [f"heatmap-{i}" for i in range(len(rep["heatmaps"]))]
        return out

    def figure_inputs(self, figure: str) -> dict[str, str]:
        """Named inputs of one figure job."""
        rep = self.config["report"]
        models = f"{self.root}/models.csv"
        lm = f"{self.root}/lm/scores.csv"
        if figure.startswith("heatmap-"):
            exp = rep["heatmaps"][int(figure.split("-", 1)[1])][0]
            return {"matrices": self.matrices_path(exp), "alignment": self.alignment_path(exp)}
        if figure in ("convergence", "umap"):
            return {
                "alignment": self.alignment_path(rep["vision_vision"]),
                "solved": f"{self.root}/probes/tasks_solved.csv",
                "models": models,
            }
        if figure in ("vision_language", "downstream"):
            return {"alignment": self.alignment_path(rep["vision_language"]), "lm": lm, "models": models}
        if figure == "caption_density":
            return {"alignment": self.alignment_path(rep["caption_density"]), "models": models}
        if figure == "locality":
            return {"alignment": self.alignment_path(rep["locality"]), "lm": lm}
        if figure == "agreement":
            return {"alignment": self.alignment_path(rep["agreement"])}
        raise KeyError(figure)

    def tables(self) -> list[str]:
        out = [self.alignment_path(e) for e in self.config["alignment"]["experiments"]]
        out += [self.matrices_path(e) for e in self.config["alignment"]["experiments"]]
        if self.probe_models():
            out += [f"{self.root}/probes/{t}.csv" for t in ("accuracy", "solved", "tasks_solved")]
        out += [f"{self.root}/lm/scores.csv", f"{self.root}/models.csv"]
        return out

    def targets(self) -> list[str]:
        """What `rule all` builds."""
        return [f"{self.root}/report.html"]
