"""Figures about calibration (Groger, Wen, Brbic, ICML 2026): which headline trends survive it, and the scale
confound of raw max-over-layer-pairs scores (random-init models of growing depth and width)."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from prh.errors import PrhError
from prh.figures._common import (
    FigureResult,
    context_text,
    fmt_p,
    fmt_r,
    note,
    params_label,
    require,
    save,
    set_style,
    spearman,
)
from prh.figures.language import _language_models, _lm_table, orient
from prh.figures.vision import _competence

TRENDS = ("Fig. 2: alignment vs competence", "Fig. 3: alignment vs 1 - bpb")
CALIBRATED = ["score", "calibrated", "effect"]  # the three versions of each score that are correlated
ALPHA = 0.05


def calibrated_settings(align: pd.DataFrame, table: str) -> dict[str, pd.DataFrame]:
    """Rows of each (metric, params) setting that carries a calibration, by setting label, in table order."""
    require(align, ["model_x", "model_y", "metric", "score", "calibrated", "effect"], table)
    df = align[align["calibrated"].notna()].copy()
    params = df["params"] if "params" in df.columns else pd.Series("{}", index=df.index)
    df["setting"] = [params_label(m, p) for m, p in zip(df["metric"], params)]
    return {s: g for s, g in df.groupby("setting", sort=False)}


def trend_row(trend: str, setting: str, x: pd.Series, values: pd.DataFrame) -> dict:
    """Spearman rho and p of x against the raw, calibrated and effect scores of one setting."""
    row: dict = {"trend": trend, "metric": setting, "n": int(len(values))}
    for col in CALIBRATED:
        row[f"rho_{col}"], row[f"p_{col}"] = spearman(x, values[col])
    row["n_calibrated_zero"] = int((values["calibrated"] == 0).sum())
    row["survives"] = bool(row["p_calibrated"] < ALPHA and np.sign(row["rho_calibrated"]) == np.sign(row["rho_score"]))
    return row


def survival_table(align_vv: pd.DataFrame, tasks_solved: pd.DataFrame, align_vl: pd.DataFrame, lm_scores: pd.DataFrame,
                   model_meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per headline trend and calibrated metric: Spearman rho (p) on raw, calibrated and effect scores.

    Fig. 2: over unordered vision-model pairs, the smaller fraction of probe tasks solved of the pair against the
    pair's alignment (the convergence figure's reading). Fig. 3: over (vision, language) pairs of language models
    with a language score, 1 - bits-per-byte against the alignment (the vision-language figure's reading).
    """
    frac = _competence(tasks_solved)
    rows = []
    for setting, g in calibrated_settings(align_vv, "vision-vision alignment").items():
        g = g[g["model_x"].isin(frac.index) & g["model_y"].isin(frac.index) & (g["model_x"] != g["model_y"])]
        a, b = np.minimum(g["model_x"], g["model_y"]), np.maximum(g["model_x"], g["model_y"])
        pairs = g.assign(a=a, b=b).groupby(["a", "b"], as_index=False)[CALIBRATED].mean()
        x = np.minimum(pairs["a"].map(frac), pairs["b"].map(frac))
        rows.append(trend_row(TRENDS[0], setting, x, pairs))
    lm = _lm_table(lm_scores)
    lm = lm[np.isfinite(lm["lm_score"].astype(float))]
    for setting, g in calibrated_settings(align_vl, "vision-language alignment").items():
        d = orient(g, _language_models(model_meta, lm))
        d = d[d["lm"].isin(lm.index)]
        rows.append(trend_row(TRENDS[1], setting, d["lm"].map(lm["lm_score"]).astype(float), d))
    if not rows:
        raise PrhError("calibration figure: neither alignment table has calibrated rows (calibrate: false?)")
    return pd.DataFrame(rows)


def fig_calibration_survival(align_vv: pd.DataFrame, tasks_solved: pd.DataFrame, align_vl: pd.DataFrame,
                             lm_scores: pd.DataFrame, out: str | os.PathLike, *,
                             model_meta: pd.DataFrame | None = None) -> FigureResult:  # fmt: skip
    """What survives calibration: per headline trend, Spearman rho on raw vs calibrated scores, per metric."""
    table = survival_table(align_vv, tasks_solved, align_vl, lm_scores, model_meta)
    set_style()
    settings = max(1, int(table.groupby("trend").size().max()) if len(table) else 1)
    width = max(5.2, 0.75 * settings + 1.5)  # a metric setting's three bars and its label need ~0.75 in
    fig, axes = plt.subplots(1, len(TRENDS), figsize=(width * len(TRENDS), 4.2 + (1.0 if settings > 4 else 0.0)),
                             sharey=True, squeeze=False)  # fmt: skip
    colors = {"score": "0.55", "calibrated": "#1b7837", "effect": "#762a83"}
    for ax, trend in zip(axes[0], TRENDS):
        t = table[table["trend"] == trend].reset_index(drop=True)
        if t.empty:
            note(ax, f"{trend}: no calibrated rows")
            continue
        x = np.arange(len(t))
        for i, col in enumerate(CALIBRATED):
            bars = ax.bar(x + (i - 1) * 0.27, t[f"rho_{col}"].fillna(0), width=0.27, color=colors[col],
                          label={"score": "raw", "calibrated": "calibrated", "effect": "effect"}[col])
            for bar, p in zip(bars, t[f"p_{col}"]):
                if np.isfinite(p) and p < ALPHA:
                    h = bar.get_height()
                    ax.text(bar.get_x() + bar.get_width() / 2, h + (0.02 if h >= 0 else -0.08), "*", ha="center")
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xticks(x, [f"{m}\nn={n}" for m, n in zip(t["metric"], t["n"])], fontsize=8,
                      rotation=35 if len(t) > 4 else 0, ha="right" if len(t) > 4 else "center")  # fmt: skip
        ax.set_title(trend, fontsize=10)
    axes[0, 0].set_ylabel("Spearman rho of the trend")
    axes[0, 0].set_ylim(-1.05, 1.1)
    axes[0, 0].legend(loc="lower left", fontsize=8, frameon=True)
    title = "What survives calibration"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.tight_layout()
    ctx = context_text(align_vv, None, None)
    caption = ("Spearman rho of each headline trend on raw max-over-layer-pairs scores, on calibrated scores "
               "(clamp((score - tau) / (1 - tau), 0, 1), tau the 95% quantile of the permutation null of the max) "
               "and on the effect (score - null mean) / (1 - null mean); * p < 0.05. Fig. 2: vision-model pairs, "
               "the pair's smaller fraction of probe tasks solved; Fig. 3: (vision, language) pairs, the LM's "
               f"1 - bits-per-byte. A trend survives when its calibrated rho keeps its sign with p < 0.05. {ctx}.")
    return save(fig, table, out, title, caption, survival_reading(table))


def survival_reading(table: pd.DataFrame) -> str:
    """One line per trend: raw -> calibrated rho (p) per metric, and which survive."""
    lines = []
    for trend in TRENDS:
        t = table[table["trend"] == trend]
        if t.empty:
            lines.append(f"{trend}: no calibrated metric.")
            continue
        parts = [f"{r.metric} rho {fmt_r(r.rho_score)} (p = {fmt_p(r.p_score)}) -> calibrated {fmt_r(r.rho_calibrated)} "
                 f"(p = {fmt_p(r.p_calibrated)}, {r.n_calibrated_zero}/{r.n} at 0)" for r in t.itertuples()]
        kept = [r.metric for r in t.itertuples() if r.survives]
        lines.append(f"{trend}: " + "; ".join(parts) + f". Survives: {', '.join(kept) if kept else 'none'}.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- scale confound


def shape_slopes(d: pd.DataFrame, col: str) -> dict[str, float]:
    """OLS of ``col`` on log2(depth) and log2(width) with an intercept -> slopes per doubling, their SEs and p."""
    ok = d[col].notna()
    y = d.loc[ok, col].to_numpy(float)
    design = np.column_stack([np.ones(ok.sum()), np.log2(d.loc[ok, "depth"].astype(float)), np.log2(d.loc[ok, "width"].astype(float))])
    dof = len(y) - design.shape[1]
    out = {f"{w}_{k}": float("nan") for w in ("depth", "width") for k in ("slope", "se", "p")}
    if dof < 1 or np.linalg.matrix_rank(design) < design.shape[1]:
        return out
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    cov = (resid @ resid / dof) * np.linalg.inv(design.T @ design)
    for i, w in ((1, "depth"), (2, "width")):
        se = float(np.sqrt(cov[i, i]))
        p = float(2 * stats.t.sf(abs(beta[i]) / se, dof)) if se > 0 else float("nan")  # an exact fit has no p
        out.update({f"{w}_slope": float(beta[i]), f"{w}_se": se, f"{w}_p": p})
    return out


def confound_table(align: pd.DataFrame, shapes: dict[str, dict]) -> pd.DataFrame:
    """Per metric setting and grid model: depth, width, and the raw / calibrated score averaged over references."""
    require(align, ["model_x", "model_y", "metric", "score", "calibrated"], "scale-confound alignment")
    df = align[align["model_x"].isin(shapes)].copy()
    params = df["params"] if "params" in df.columns else pd.Series("{}", index=df.index)
    df["setting"] = [params_label(m, p) for m, p in zip(df["metric"], params)]
    df["depth"] = df["model_x"].map(lambda m: shapes[m]["depth"])
    df["width"] = df["model_x"].map(lambda m: shapes[m]["width"])
    if df[["depth", "width"]].isna().any().any():
        bad = df.loc[df[["depth", "width"]].isna().any(axis=1), "model_x"].iloc[0]
        raise PrhError(f"scale-confound: model {bad!r} has no depth or width (zoo arch_kwargs depth, width)")
    keys = ["setting", "model_x", "depth", "width"]
    return df.groupby(keys, as_index=False, sort=False)[["score", "calibrated", "null_mean"]].mean()


def fig_scale_confound(align: pd.DataFrame, shapes: dict[str, dict], out: str | os.PathLike) -> FigureResult:
    """Raw and calibrated max-over-layer-pairs scores of random-init models vs depth (lines: width), per metric."""
    table = confound_table(align, shapes)
    settings = list(dict.fromkeys(table["setting"]))
    set_style()
    fig, axes = plt.subplots(len(settings), 2, figsize=(9.6, 3.6 * len(settings)), squeeze=False)
    widths = sorted(table["width"].unique())
    cmap = plt.get_cmap("viridis")
    slopes = []
    for row, setting in zip(axes, settings):
        t = table[table["setting"] == setting]
        for ax, col, label in ((row[0], "score", "raw max over layer pairs"), (row[1], "calibrated", "calibrated")):
            for i, w in enumerate(widths):
                s = t[t["width"] == w].sort_values("depth")
                ax.plot(s["depth"], s[col], "o-", color=cmap(0.15 + 0.7 * i / max(1, len(widths) - 1)), label=f"width {w}")
            if col == "score":
                nm = t.sort_values("depth").groupby("depth")["null_mean"].mean()
                ax.plot(nm.index, nm.to_numpy(), ":", color="0.4", label="null mean of the max")
            ax.set_xscale("log", base=2)
            ax.set_xticks(sorted(t["depth"].unique()), [str(d) for d in sorted(t["depth"].unique())])
            ax.set_xlabel("depth (blocks)")
            ax.set_ylabel(f"{setting}\n{label}")
            fit = shape_slopes(t, col)
            slopes.append({"metric": setting, "value": col, **fit})
            ax.set_title(f"{label}\n{fit['depth_slope']:+.4f} per doubling of depth, {fit['width_slope']:+.4f} of width",
                         fontsize=8.5)
        row[0].legend(fontsize=7, frameon=True)
    title = "The scale confound: random-init models"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.tight_layout()
    n_models = table["model_x"].nunique()
    caption = (f"{n_models} random-init models of one family (untrained, each with its own seed-determined weights) "
               f"against fixed references, score averaged over references; left: the raw maximum over all layer "
               f"pairs, with the mean of its permutation null (dotted); right: calibrated against that null. "
               f"Titles: OLS slopes per doubling of depth and of width (both in one fit). "
               f"{context_text(align, None, None)}.")
    fits = pd.DataFrame(slopes)
    return save(fig, table, out, title, caption, confound_reading(fits, table), extra={"slopes": fits})


def confound_reading(fits: pd.DataFrame, table: pd.DataFrame) -> str:
    """Two lines: raw slopes (with p) and calibrated slopes, per metric."""
    lines = []
    for value, what in (("score", "Raw"), ("calibrated", "Calibrated")):
        parts = []
        for r in fits[fits["value"] == value].itertuples():
            parts.append(f"{r.metric}: {r.depth_slope:+.4f} per doubling of depth (p = {fmt_p(r.depth_p)}), "
                         f"{r.width_slope:+.4f} per doubling of width (p = {fmt_p(r.width_p)})")
        extra = ""
        if value == "calibrated":
            extra = f"; {int((table['calibrated'] > 0).sum())} of {len(table)} (model, metric) means above 0"
        lines.append(f"{what}: " + "; ".join(parts) + extra + ".")
    return "\n".join(lines)
