"""Test-time scaling figure (issue 35): calibrated alignment vs captions and vs views per pair, with the saturating
law; many-to-many vs one-to-one mutual kNN; the prompt's effect in the reading."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from prh.figures._common import FigureResult, fmt_p, require, save, set_style
from prh.tts import saturating


def _curve_panel(ax: plt.Axes, curves: pd.DataFrame, fit_table: pd.DataFrame, axis: str, label: str) -> None:
    """Calibrated score vs size per pair (bootstrap interval bars) and its fitted law (dashed)."""
    part = curves[curves["axis"] == axis]
    fitted = fit_table[(fit_table["axis"] == axis) & (fit_table["measure"] == "calibrated")]
    sizes = np.sort(part["size"].unique())
    grid = np.linspace(sizes.min(), sizes.max(), 100)
    groups = list(part.groupby(["model_x", "model_y"], sort=False))
    for i, ((x, y), g) in enumerate(groups):
        g = g.sort_values("size")
        colour = f"C{i % 10}"
        err = np.vstack([g["calibrated"] - g["calibrated_low"], g["calibrated_high"] - g["calibrated"]]).clip(0)
        dodge = 2 ** (0.12 * (i - (len(groups) - 1) / 2) / max(len(groups) - 1, 1))  # pairs side by side (log x)
        ax.errorbar(g["size"] * dodge, g["calibrated"], yerr=err, fmt="o", ms=4, capsize=2, color=colour, lw=1,
                    label=f"{x} / {y}")  # fmt: skip
        f = fitted[(fitted["model_x"] == x) & (fitted["model_y"] == y)]
        if len(f) and np.isfinite(f["a"].iloc[0]):
            ax.plot(grid, saturating(grid, *f[["a", "b", "k"]].iloc[0]), "--", color=colour, lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(int(s)) for s in sizes])
    ax.set_xlabel(label)
    ax.set_ylabel("calibrated alignment")


def _pooled(fit_table: pd.DataFrame, axis: str, measure: str = "score") -> pd.Series:
    """The pooled (mean over pairs) fit row of one axis."""
    f = fit_table[(fit_table["axis"] == axis) & (fit_table["model_x"] == "pooled") & (fit_table["measure"] == measure)]
    return f.iloc[0]


def draw_tts(curves: pd.DataFrame, fit_table: pd.DataFrame, summary: dict, out: str | os.PathLike) -> FigureResult:
    """Three panels: alignment vs captions, vs views, and many-to-many vs one-to-one per pair."""
    require(curves, ["axis", "size", "model_x", "model_y", "calibrated", "calibrated_low", "calibrated_high"], "tts curves")
    set_style()
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2))
    _curve_panel(axes[0], curves, fit_table, "captions", "captions averaged per item (c)")
    _curve_panel(axes[1], curves, fit_table, "views", "augmented views averaged per image (v)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.36, 0.0), ncol=3, fontsize=9, frameon=False)
    m2m = pd.DataFrame(summary["many_to_many"])
    C, V, first = summary["captions"][-1], summary["views"][-1], summary["captions"][0]
    labels = [f"{x}\n{y}" for x, y in zip(m2m["model_x"], m2m["model_y"])]
    pos = np.arange(len(m2m))
    bars = [("one_to_one_first", f"one-to-one, c = {first}"), ("one_to_one_mean", f"one-to-one, mean of {C}"),
            ("many_to_many", f"many-to-many, {C} captions (bars: bootstrap interval)")]  # fmt: skip
    for j, (col, name) in enumerate(bars):
        yerr = None
        if col == "many_to_many":
            yerr = np.vstack([m2m[f"{col}_score"] - m2m[f"{col}_ci_low"], m2m[f"{col}_ci_high"] - m2m[f"{col}_score"]]).clip(0)
        axes[2].bar(pos + (j - 1) * 0.27, m2m[f"{col}_score"], width=0.27, label=name, yerr=yerr, capsize=2)
    axes[2].set_xticks(pos, labels, fontsize=7)
    axes[2].set_ylabel("mutual kNN (raw, max over layer pairs)")
    axes[2].legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    c_fit, v_fit = _pooled(fit_table, "captions"), _pooled(fit_table, "views")
    cal = _pooled(fit_table, "captions", "calibrated")
    axes[0].set_title(f"captions: pooled fit R2 = {c_fit['r2']:.3f}")
    axes[1].set_title(f"views: pooled fit R2 = {v_fit['r2']:.3f}")
    axes[2].set_title("many-to-many vs one-to-one")
    title = "Test-time scaling of alignment: more captions, more views, prompts"
    caption = (f"{summary['metric']['name']} (k={summary['metric'].get('k', 10)}) on n={summary['n']} scenes, max over "
               f"layer pairs; points: calibrated score, bars: its bootstrap interval; dashed: a - b x^-k fitted per "
               f"pair. Prompt: {summary['prompt']!r}.")  # fmt: skip
    prompt = "; ".join(f"at c = {c} by {e['delta']:+.4f} (p = {fmt_p(e['p_value'])})"
                       for c, e in summary["prompt_effect"].items())  # fmt: skip
    reading = (
        f"Averaging {first} -> {C} captions moves mutual kNN by {c_fit['gain']:+.3f} "
        f"({100 * c_fit['relative_gain']:+.0f}%, pooled over pairs; calibrated {cal['gain']:+.3f}; paired permutation "
        f"p = {fmt_p(summary['captions_gain_p_value'])}) and {summary['views'][0]} -> {V} views by {v_fit['gain']:+.3f} "
        f"({100 * v_fit['relative_gain']:+.0f}%, p = {fmt_p(summary['views_gain_p_value'])}); pair rankings at "
        f"c={first} and c={C}: Spearman {summary['ranking_spearman_c1_cC']:.2f}.\n"
        f"The prompt changes mutual kNN {prompt}; many-to-many averages {m2m['many_to_many_score'].mean():.3f} "
        f"(calibrated {m2m['many_to_many_calibrated'].mean():.3f}, {int((m2m['many_to_many_p_value'] <= 0.05).sum())} of "
        f"{len(m2m)} pairs p <= 0.05) vs one-to-one {m2m['one_to_one_first_score'].mean():.3f} (c = {first}) and "
        f"{m2m['one_to_one_mean_score'].mean():.3f} (mean of {C})."
    )  # fmt: skip
    fig.suptitle(title, fontweight="bold")
    return save(fig, curves, out, title, caption, reading, extra={"fits": fit_table, "many_to_many": m2m})
