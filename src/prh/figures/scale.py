"""Sample-size figure: alignment as a function of the number of inputs n (a sweep over nested subsets)."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from prh.errors import PrhError
from prh.figures._common import (
    FigureResult,
    note,
    params_label,
    require,
    save,
    set_style,
)


def sample_size_table(align: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, model pair, n): score, calibrated and chance, one row each (setting = metric with params)."""
    require(align, ["model_x", "model_y", "metric", "n", "score"], "sample-size")
    df = align.copy()
    df["setting"] = [params_label(m, p) for m, p in zip(df["metric"], df.get("params", pd.Series("{}", index=df.index)))]
    df["pair"] = df["model_x"] + " vs " + df["model_y"]
    if "dataset" in df.columns and df["dataset"].nunique() > 1:
        df["pair"] += " (" + df["dataset"].astype(str) + ")"
    for col in ("calibrated", "chance"):
        if col not in df.columns:
            df[col] = np.nan
    cols = ["setting", "pair", "dataset", "n", "score", "calibrated", "chance"]
    return df.reindex(columns=cols).sort_values(["setting", "pair", "n"]).reset_index(drop=True)


def fig_sample_size(
    align: pd.DataFrame, out: str | os.PathLike, *, permutations: int | None = None, calibrate_max_n: int | None = None
) -> FigureResult:
    """Alignment (max over layer pairs) vs n per metric setting: raw scores on top, calibrated below, a line per pair."""
    table = sample_size_table(align)
    if table["n"].nunique() < 2:
        raise PrhError("sample-size table has fewer than two sample sizes; is the experiment a sweep (sizes)?")
    settings = list(dict.fromkeys(table["setting"]))
    pairs = list(dict.fromkeys(table["pair"]))
    cmap = plt.get_cmap("tab10")
    colours = {pair: cmap(i % 10) for i, pair in enumerate(pairs)}
    set_style()
    fig, axes = plt.subplots(2, len(settings), figsize=(3.6 * len(settings) + 1.0, 6.4), squeeze=False, sharex=True)
    for c, setting in enumerate(settings):
        block = table[table["setting"] == setting]
        for row, col in ((0, "score"), (1, "calibrated")):
            ax = axes[row, c]
            for pair, g in block.groupby("pair", sort=False):
                g = g[g[col].notna()]
                ax.plot(g["n"], g[col], marker="o", ms=3.5, lw=1.4, color=colours[pair], label=pair)
            if row == 0 and block["chance"].notna().any():
                ch = block.groupby("n", as_index=False)["chance"].mean()
                ax.plot(ch["n"], ch["chance"], ls="--", color="0.45", lw=1.1, label="chance level")
            cal_n = block.loc[block["calibrated"].notna(), "n"]
            if row == 1 and cal_n.empty:
                note(ax, "not calibrated at these n")
            elif row == 1 and cal_n.max() < block["n"].max():
                ax.axvspan(cal_n.max() * 1.2, block["n"].max() * 1.2, color="0.92", zorder=0)
                ax.text(0.98, 0.96, "not calibrated", transform=ax.transAxes, ha="right", va="top", fontsize=8, color="0.4")
            ax.set_xscale("log", base=2)
            ax.set_title(setting if row == 0 else "", fontsize=10)
            ax.set_ylabel(("raw score" if row == 0 else "calibrated") if c == 0 else "")
            if row == 1:
                ax.set_xlabel("samples n")
    legend = {}
    for ax in axes[0]:
        legend.update({label: h for h, label in zip(*ax.get_legend_handles_labels())})
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    title = "Alignment vs number of samples"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.tight_layout(rect=(0, 0.07 + 0.025 * ((len(labels) - 1) // 4), 1, 1))
    sizes = sorted(table["n"].unique())
    cal_n = table.loc[table["calibrated"].notna(), "n"]
    datasets = ", ".join(sorted(table["dataset"].dropna().astype(str).unique()))
    calib = (f"Calibrated = clamp((score - tau) / (1 - tau), 0, 1) against the permutation null of the max over layer "
             f"pairs ({permutations or 'K'} permutations of every y layer alike), computed with dense n x n states "
             f"for n <= {int(cal_n.max()) if len(cal_n) else calibrate_max_n or 'the calibration limit'} only; "
             f"larger n show raw scores alone." if len(cal_n) or calibrate_max_n else "No calibration was computed.")  # fmt: skip
    caption = (f"Alignment (maximum over all layer pairs, concatenation included) on nested random subsets of "
               f"{datasets}, n = {int(sizes[0])} to {int(sizes[-1])}; each subset is preprocessed on its own (clipping "
               f"quantile, l2 norms) and scored with the bounded-memory large-n engine (neighbour lists from row "
               f"blocks of the Gram, CKA from feature sums; equal to the dense engine where both run). One line per "
               f"model pair; dashed: chance level (k/(n-1) for mutual kNN, 0 for unbiased CKA). {calib}")
    return save(fig, table, out, title, caption, _reading(table))


def _reading(table: pd.DataFrame) -> str:
    """Two lines: how each setting's mean over model pairs moves from each pair's smallest n to its largest."""
    parts = []
    for setting, g in table.groupby("setting", sort=False):
        ends = g.sort_values("n").groupby("pair")["score"].agg(["first", "last"]).mean()
        parts.append(f"{setting} {ends['first']:.3f} -> {ends['last']:.3f}")
    lo, hi = int(table["n"].min()), int(table["n"].max())
    first = f"Mean over model pairs, smallest -> largest n of each (n = {lo} to {hi}): " + "; ".join(parts[:3]) + "."
    rest = "; ".join(parts[3:]) + "." if len(parts) > 3 else _calibrated_line(table)
    return f"{first}\n{rest}"


def _calibrated_line(table: pd.DataFrame) -> str:
    """Mean calibrated score at the smallest and largest calibrated n, or that none was calibrated."""
    cal = table[table["calibrated"].notna()]
    if cal.empty:
        return "No calibrated values (calibration off or every n above its limit)."
    lo, hi = cal["n"].min(), cal["n"].max()
    return (f"Calibrated mean over all settings and pairs: {cal.loc[cal['n'] == lo, 'calibrated'].mean():.3f} at "
            f"n = {int(lo)}, {cal.loc[cal['n'] == hi, 'calibrated'].mean():.3f} at n = {int(hi)}.")
