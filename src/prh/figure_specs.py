"""The report's figure registry (`FIGURES`) and the extra alignment tables a figure may read (`REPORT_TABLES`): a base
module that both prh.config (report keys to check) and prh.plan (paths and jobs) import, so imports run one way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FigureSpec:
    """A figure of the report: the report key naming the experiment it draws (None: it draws no alignment
    experiment, only its own stage's tables), the tables it reads beside that experiment's alignment table (solved,
    lm, models, a REPORT_TABLES key, or colour / colour_layout: the colour stage's tables), the tables it also reads
    when the config produces them (`optional`: drawn without them), and the config values it reads (metric:
    report.headline_metric; reference: report.downstream_reference; density: caption density of each of its
    datasets; shapes: depth and width of each x model; calibration: permutations and calibrate_max_n of a sweep). A
    figure whose `tables` the config does not produce is not drawn."""

    report_key: str | None
    tables: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    def required(self, params: dict[str, Any]) -> tuple[str, ...]:
        """The tables it reads and cannot be drawn without: `tables`, plus solved when it picks its reference itself
        (report.downstream_reference null)."""
        return self.tables + (("solved",) if "reference" in params and params["reference"] is None else ())


# Alignment tables a figure may read beside its own experiment's: table name -> the report key naming the experiment
REPORT_TABLES = {"vl": "vision_language", "vv": "vision_vision", "av": "agreement_vision"}
FIGURES: dict[str, FigureSpec] = {
    "convergence": FigureSpec("vision_vision", ("solved", "models"), ("metric",)),
    "umap": FigureSpec("vision_vision", ("solved", "models"), ("metric",)),
    "vision_language": FigureSpec("vision_language", ("lm", "models"), ("metric",)),
    "downstream": FigureSpec("vision_language", ("lm", "models"), ("metric", "reference")),
    "caption_density": FigureSpec("caption_density", ("models",), ("metric", "density")),
    "locality": FigureSpec("locality", ("lm", "models")),
    "agreement": FigureSpec("agreement", ("models",), (), ("av",)),
    "calibration": FigureSpec("vision_vision", ("solved", "lm", "vl", "models")),
    "scale_confound": FigureSpec("scale_confound", ("models",), ("shapes",)),
    "pretrained": FigureSpec("vision_language", ("vv", "solved", "models"), ("metric",)),
    "sample_size": FigureSpec("sample_size", (), ("calibration",)),
    "colour": FigureSpec(None, ("colour", "colour_layout")),
}
