"""Colour figure (the paper's Fig. 8): 2-D layouts of the same colours from CIELAB, from pixel co-occurrence PMI and
from each language model's features of the colour names, each point drawn in its own colour."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from prh.errors import PrhError
from prh.figures._common import FigureResult, fmt_p, fmt_r, require, save, set_style

ALIGNMENT_COLUMNS = ["source", "kind", "layer", "chosen", "rho", "p_value", "permutations", "n_colours", "levels",
                     "radius", "min_share"]  # fmt: skip
LAYOUT_COLUMNS = ["source", "name", "hex", "x", "y"]


def chosen_rows(alignment: pd.DataFrame) -> pd.DataFrame:
    """One row per compared source (pixels, each language model at its fixed layer), indexed by source."""
    require(alignment, ALIGNMENT_COLUMNS, "colour alignment")
    rows = alignment[alignment["chosen"].astype(bool)]
    if rows["source"].duplicated().any():
        raise PrhError("colour alignment table has more than one chosen row for a source")
    return rows.set_index("source")


def panel_title(source: str, row: pd.Series | None) -> str:
    """'CIELAB (reference)', or the source with its rho and p-value (and its layer for a language model)."""
    if row is None:
        return "CIELAB (reference)"
    what = "pixel co-occurrence" if row["kind"] == "pixels" else f"{source}, {row['layer']}"
    return f"{what}\nrho = {fmt_r(row['rho'], '.2f')}, p = {fmt_p(row['p_value'])}"


def colour_reading(alignment: pd.DataFrame) -> str:
    """Two lines: the pixel rho and p; the language models' rho at their fixed layer and how many pass p < 0.05."""
    rows = chosen_rows(alignment)
    px = rows[rows["kind"] == "pixels"]
    lm = rows[rows["kind"] == "language"]
    base = rows[rows["kind"] == "baseline"]
    line1 = (f"Pixel co-occurrence PMI vs CIELAB over {int(rows['n_colours'].iloc[0])} colours: Spearman rho = "
             f"{px['rho'].iloc[0]:.2f} (Mantel p = {fmt_p(px['p_value'].iloc[0])})" if len(px) else
             "No pixel comparison")  # fmt: skip
    line1 += f"; plain sRGB distance, for scale: rho = {fmt_r(base['rho'].iloc[0], '.2f')}." if len(base) else "."
    if lm.empty:
        return f"{line1}\nNo language model compared."
    best = lm["rho"].idxmax()
    every = alignment[alignment["kind"] == "language"]
    line2 = (f"Language models at their fixed layer: rho {lm['rho'].min():.2f} to {lm['rho'].max():.2f} (highest "
             f"{best}, {lm.loc[best, 'rho']:.2f}); {int((lm['p_value'] < 0.05).sum())} of {len(lm)} with p < 0.05. "
             f"Over all layers (descriptive, not tested) rho spans {every['rho'].min():.2f} to {every['rho'].max():.2f}.")
    return f"{line1}\n{line2}"


def fig_colour(alignment: pd.DataFrame, layout: pd.DataFrame, out: str | os.PathLike) -> FigureResult:
    """One panel per source (CIELAB, pixels, each language model): MDS layouts, Procrustes-aligned to CIELAB."""
    require(layout, LAYOUT_COLUMNS, "colour layout")
    rows = chosen_rows(alignment)
    sources = list(dict.fromkeys(layout["source"]))
    if "cielab" not in sources:
        raise PrhError("colour layout table has no cielab layout")
    nrows = int(np.ceil(len(sources) / 4))
    ncols = int(np.ceil(len(sources) / nrows))
    set_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols, 3.5 * nrows), squeeze=False)
    for ax, source in zip(axes.flat, sources):
        g = layout[layout["source"] == source]
        ax.scatter(g["x"], g["y"], c=list(g["hex"]), s=34, edgecolors="0.55", linewidths=0.4)
        ax.set_title(panel_title(source, rows.loc[source] if source in rows.index else None), fontsize=10)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(sources) :]:
        ax.set_visible(False)
    first = rows.iloc[0]
    fig.suptitle("Colour from co-occurrence: pixels and language vs CIELAB", fontweight="bold")
    fig.tight_layout()
    caption = (
        f"The paper's Fig. 8 offline. {int(first['n_colours'])} XKCD colours, one per cell of a {int(first['levels'])}^3 "
        f"RGB grid that holds at least {first['min_share']:.2%} of the image pixels (the name nearest the cell centre "
        f"in CIELAB). Each panel is a metric MDS layout of one distance matrix over the same colours, rotated and scaled "
        f"onto the CIELAB layout (orthogonal Procrustes, display only), every point in its own colour. CIELAB: CIE76 "
        f"colour difference. Pixel co-occurrence: max PMI - PMI of the colours' grid cells, pixel pairs within "
        f"{int(first['radius'])} px (Chebyshev) over the configured images. Language: cosine distance of each model's "
        f"mean-pooled features of the bare names at one layer fixed in advance (named in the title). rho: Spearman "
        f"correlation of the condensed distance matrix with CIELAB's (the paper shows the layouts and prints no "
        f"statistic); p: one-sided Mantel test of that rho, {int(first['permutations'])} joint row/column "
        f"permutations (the smallest p they can give is {1 / (int(first['permutations']) + 1):.3g}). For scale, the reading gives plain sRGB Euclidean distance's rho with CIELAB."
    )
    data = layout.merge(rows[["rho", "p_value", "layer"]], left_on="source", right_index=True, how="left")
    return save(fig, data, out, "Colour from co-occurrence (Fig. 8)", caption, colour_reading(alignment),
                extra={"stats": alignment})
