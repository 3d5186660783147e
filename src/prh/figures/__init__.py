"""Figures of the paper from prh's tables: each writes PNG, SVG, the plotted numbers as CSV and a JSON sidecar.

Every ``fig_*`` function takes pandas tables (formats in docs/internals.md) and an output stem, uses one seaborn
style (`set_style`), states n, k, metric and dataset in its caption, draws the chance level where it applies,
and returns a `FigureResult` whose ``reading`` is two lines computed from the data.
"""

from prh.figures._common import FigureResult, load_result, set_style
from prh.figures.calibration import fig_calibration_survival, fig_scale_confound
from prh.figures.colour import fig_colour
from prh.figures.hypotheses import fig_hypothesis
from prh.figures.language import fig_caption_density, fig_downstream, fig_vision_language
from prh.figures.metrics import fig_locality, fig_metric_agreement
from prh.figures.pretrained import fig_pretrained
from prh.figures.scale import fig_sample_size
from prh.figures.vision import fig_convergence, fig_layer_heatmap, fig_umap

__all__ = [
    "FigureResult",
    "fig_calibration_survival",
    "fig_caption_density",
    "fig_colour",
    "fig_convergence",
    "fig_downstream",
    "fig_hypothesis",
    "fig_layer_heatmap",
    "fig_locality",
    "fig_metric_agreement",
    "fig_pretrained",
    "fig_scale_confound",
    "fig_sample_size",
    "fig_umap",
    "fig_vision_language",
    "load_result",
    "set_style",
]
