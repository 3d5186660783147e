"""Vision-language figures: alignment vs LM score (Fig. 3), downstream accuracy (Fig. 4), caption density (Fig. 9)."""

from __future__ import annotations

import os
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from prh.errors import PrhError
from prh.figures._common import (
    SEQUENTIAL,
    FigureResult,
    chance_level,
    context_text,
    fmt_p,
    fmt_r,
    note,
    pearson,
    place_labels,
    require,
    save,
    select_metric,
    set_style,
    spearman,
    spread,
)
from prh.figures.vision import _competence


def _lm_table(lm_scores: pd.DataFrame) -> pd.DataFrame:
    """LM score table indexed by model, with lm_score = 1 - bpb filled in where only bpb is given."""
    require(lm_scores, ["model"], "lm scores")
    t = lm_scores.drop_duplicates("model").set_index("model").copy()
    if "lm_score" not in t.columns:
        require(lm_scores, ["bpb"], "lm scores")
        t["lm_score"] = 1.0 - t["bpb"]
    return t


def orient(df: pd.DataFrame, is_lm: set[str], is_vision: set[str] | None = None) -> pd.DataFrame:
    """Rows with `vision` and `lm` columns, whichever side the language model was on (known LMs first, then known
    vision models; with `is_vision` given, a pair naming neither keeps model_x as the vision side)."""
    require(df, ["model_x", "model_y", "score"], "vision-language alignment")
    y_lm, x_lm = df["model_y"].isin(is_lm), df["model_x"].isin(is_lm)
    if is_vision is not None:
        unknown = ~(y_lm | x_lm)
        x_lm = x_lm | (unknown & df["model_y"].isin(is_vision) & ~df["model_x"].isin(is_vision))
        y_lm = y_lm | (unknown & ~x_lm)
    out = df.copy()
    out["vision"] = np.where(y_lm, df["model_x"], df["model_y"])
    out["lm"] = np.where(y_lm, df["model_y"], df["model_x"])
    return out[y_lm ^ x_lm].reset_index(drop=True)


def _vision_models(model_meta: pd.DataFrame | None) -> set[str]:
    """Names model_meta marks as vision models."""
    meta = _meta(model_meta)
    return set(meta.index[meta["modality"].astype(str) == "vision"]) if "modality" in meta.columns else set()


def _meta(model_meta: pd.DataFrame | None) -> pd.DataFrame:
    """Model meta indexed by model (empty when absent)."""
    if model_meta is None or "model" not in model_meta.columns:
        return pd.DataFrame()
    return model_meta.drop_duplicates("model").set_index("model")


def _first_col(meta: pd.DataFrame, cols: tuple[str, ...], models: pd.Series, default: object) -> pd.Series:
    """Per model, the first of `cols` present in meta (NaNs filled with `default`)."""
    for c in cols:
        if c in meta.columns:
            return models.map(meta[c]).fillna(default)
    return pd.Series(default, index=models.index)


def _language_models(model_meta: pd.DataFrame | None, lm: pd.DataFrame | None) -> set[str]:
    """Names of language models, from lm scores and/or model_meta's modality column."""
    names = set(lm.index) if lm is not None else set()
    meta = _meta(model_meta)
    if "modality" in meta.columns:
        names |= set(meta.index[meta["modality"].astype(str).str.startswith("lang")])
    return names


def fig_vision_language(
    align_vl: pd.DataFrame,
    lm_scores: pd.DataFrame,
    model_meta: pd.DataFrame,
    out: str | os.PathLike,
    *,
    metric: str | None = None,
    context: dict | None = None,
) -> FigureResult:
    """Fig. 3: alignment of each vision model to each LM vs the LM's language score, one panel per objective."""
    lm = _lm_table(lm_scores)
    lm = lm[np.isfinite(lm["lm_score"].astype(float))]  # encoders (no LM head) have no language score
    df, setting = select_metric(align_vl, metric, "vision-language alignment")
    d = orient(df, _language_models(model_meta, lm))
    d = d[d["lm"].isin(lm.index)].copy()
    if d.empty:
        raise PrhError("vision-language alignment table has no pair with a model from the lm scores table")
    meta = _meta(model_meta)
    d["lm_score"] = d["lm"].map(lm["lm_score"])
    d["panel"] = _first_col(meta, ("objective", "family"), d["vision"], "all").astype(str)
    d["size"] = _first_col(meta, ("width", "n_params"), d["vision"], np.nan).astype(float)
    table = d[["panel", "vision", "size", "lm", "lm_score", "score"] + (["chance"] if "chance" in d else [])]
    table = table.sort_values(["panel", "size", "vision", "lm_score"]).reset_index(drop=True)
    panels = list(dict.fromkeys(sorted(table["panel"])))
    set_style()
    ncol = min(len(panels), 3)
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 4.3 * nrow), sharey=True, squeeze=False)
    lms = lm.loc[lm.index.isin(table["lm"])].sort_values("lm_score")
    for ax, panel in zip(axes.flat, panels):
        _vl_panel(ax, table[table["panel"] == panel], panel, lms, chance_level(d[d["panel"] == panel]))
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"Alignment to vision model\n{setting}")
    title = "Vision-language alignment vs language modelling score"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.tight_layout()
    ctx = context_text(df, setting, context)
    caption = (f"Alignment of {table['vision'].nunique()} vision models with {len(lms)} language models against "
               f"language score 1 - bits-per-byte; one line per vision model (colour = width), one panel per "
               f"training objective; LM names on the top axis; dashed: chance. {ctx}.")
    return save(fig, table, out, title, caption, _vl_reading(table))


def _vl_panel(ax: plt.Axes, t: pd.DataFrame, panel: str, lms: pd.DataFrame, chance: float) -> None:
    """One objective: a line per vision model over LMs sorted by language score."""
    sizes = t.drop_duplicates("vision")[["vision", "size"]]
    cmap = plt.get_cmap(SEQUENTIAL)
    colors = cmap(np.linspace(0.1, 0.85, len(sizes))) if len(sizes) > 1 else [cmap(0.5)]
    for color, (vision, size) in zip(colors, sizes.itertuples(index=False)):
        g = t[t["vision"] == vision].sort_values("lm_score")
        label = f"{vision} ({size:g})" if np.isfinite(size) else str(vision)
        ax.plot(g["lm_score"], g["score"], marker="o", ms=4, lw=1.6, color=color, label=label)
    if np.isfinite(chance):
        ax.axhline(chance, ls="--", color="0.35", lw=1, label="chance")
    ax.set_title(panel, fontsize=10, pad=14 + 3.9 * max((len(str(m)) for m in lms.index), default=0))
    ax.set_xlabel("LM score (1 - bits per byte)")
    ax.legend(fontsize=7, loc="upper left", frameon=True, title="vision (width)", title_fontsize=7)
    _lm_names_on_top(ax, lms["lm_score"].to_numpy(), [str(m) for m in lms.index])


def _lm_names_on_top(ax: plt.Axes, xs: np.ndarray, names: list[str]) -> None:
    """LM names above the axes at their x, spread apart where they would collide, with thin leader lines."""
    ax.margins(x=0.06)
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi)
    label_x = spread(xs, 0.06 * (hi - lo))
    for x, lx, name in zip(xs, label_x, names):
        ax.annotate(name, xy=(x, 1.0), xycoords=("data", "axes fraction"), xytext=(lx, 1.06),
                    textcoords=("data", "axes fraction"), rotation=90, ha="center", va="bottom", fontsize=6.5,
                    color="0.25", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0, "shrinkB": 0})


def _vl_reading(t: pd.DataFrame) -> str:
    """Two lines: pooled rank correlation, and the per-vision-model trend."""
    rho, p = spearman(t["lm_score"], t["score"])
    line1 = (f"Pooled over {t['vision'].nunique()} vision x {t['lm'].nunique()} language models, Spearman "
             f"rho(LM score, alignment) = {fmt_r(rho)} (p = {fmt_p(p)}).")
    per = {v: spearman(g["lm_score"], g["score"])[0] for v, g in t.groupby("vision")}
    vals = np.array([r for r in per.values() if np.isfinite(r)])
    if len(vals):
        line2 = (f"Per vision model, median rho = {np.median(vals):.3f}; {int((vals > 0).sum())} of {len(vals)} "
                 f"models align more with better language models.")
    else:
        line2 = "Too few language models per vision model for a per-model trend."
    return f"{line1}\n{line2}"


TRAINED_HERE = "zoo"  # models.csv source of the models the workflow trains itself; every other source is pretrained
REFERENCE_FIELD = "report.downstream_reference"


def pick_reference(vision: list[str], frac: pd.Series, model_meta: pd.DataFrame | None) -> tuple[str, str]:
    """(reference, the rule that picked it): of the `vision` models with probe results, the pretrained (source not
    zoo) one solving the largest fraction of probe tasks, ties broken by name; any of them when none is pretrained."""
    solved = frac.reindex(sorted(set(vision))).dropna()
    if solved.empty:
        raise PrhError(f"{REFERENCE_FIELD} is null and no vision model of the alignment table has probe results to "
                       f"pick the reference by; name one")
    meta = _meta(model_meta)
    source = meta["source"] if "source" in meta.columns else pd.Series(dtype=str)
    pretrained = [m for m in solved.index if source.get(m, TRAINED_HERE) != TRAINED_HERE]
    pool = solved[pretrained] if pretrained else solved
    best = pool[np.isclose(pool, pool.max())]
    kind = "pretrained vision model" if pretrained else "vision model (none is pretrained)"
    ties = f", tied with {', '.join(best.index[1:])}, first by name" if len(best) > 1 else ""
    return str(best.index[0]), (f"{REFERENCE_FIELD} is null: the {kind} solving the largest fraction of probe "
                                f"tasks ({best.iloc[0]:.0%}{ties})")


def fig_downstream(
    align_vl: pd.DataFrame,
    lm_scores: pd.DataFrame,
    out: str | os.PathLike,
    reference_model: str | None = None,
    *,
    tasks_solved: pd.DataFrame | None = None,
    model_meta: pd.DataFrame | None = None,
    metric: str | None = None,
    context: dict | None = None,
) -> FigureResult:
    """Fig. 4: each LM's alignment to the reference vision model vs its downstream accuracy (`acc_*` columns).

    The reference is `reference_model` (report.downstream_reference), else picked by `pick_reference` from
    `tasks_solved`; the caption names it and the rule."""
    lm = _lm_table(lm_scores)
    df, setting = select_metric(align_vl, metric, "vision-language alignment")
    d = orient(df, _language_models(model_meta, lm))
    d = d[d["lm"].isin(lm.index)]
    if d.empty:
        raise PrhError("vision-language alignment table has no pair with a model from the lm scores table")
    if reference_model is not None:
        ref, rule = reference_model, f"named in {REFERENCE_FIELD}"
    elif tasks_solved is not None:
        ref, rule = pick_reference(list(d["vision"]), _competence(tasks_solved), model_meta)
    else:
        raise PrhError(f"{REFERENCE_FIELD} is null and there are no probe results to pick the reference by")
    if ref not in set(d["vision"]):
        raise PrhError(f"{REFERENCE_FIELD} {ref!r} is not a vision model of the alignment table")
    r = d[d["vision"] == ref].groupby("lm")["score"].mean()
    tasks = [c for c in lm.columns if c.startswith("acc_")]
    table = _downstream_table(lm.loc[r.index], r, tasks).assign(reference=ref)
    set_style()
    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(4.8 * max(len(tasks), 1) + 1.2, 4.4),
                             sharey=True, squeeze=False)
    if not tasks:
        note(axes[0, 0], "no downstream accuracy columns (acc_*) in the LM scores table")
    for ax, task in zip(axes.flat, tasks):
        _downstream_panel(ax, table, task)
    axes[0, 0].set_ylabel(f"Alignment to {ref} (reference)\n{setting}")
    if tasks:
        _downstream_legends(fig, axes, table)
    for ax, task in zip(axes.flat, tasks):
        _label_lms(ax, table, task)
    title = f"Alignment to {ref} vs downstream performance"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    ctx = context_text(d[d["vision"] == ref], setting, context)
    caption = (f"Each point is a language model: x = accuracy on a downstream task, y = alignment to the "
               f"reference vision model {ref}; size = parameters, colour = bits-per-byte rank (1 = best). "
               f"Reference: {ref}, {rule}. {ctx}.")
    return save(fig, table, out, title, caption, _downstream_reading(table, tasks, ref))


def _downstream_table(lm: pd.DataFrame, align: pd.Series, tasks: list[str]) -> pd.DataFrame:
    """Per LM: alignment to the reference, n_params, bpb, its rank, and the downstream accuracies."""
    t = pd.DataFrame({"lm": align.index, "alignment": align.to_numpy()})
    for col in ["n_params", "bpb", "lm_score", *tasks]:
        t[col] = t["lm"].map(lm[col]) if col in lm.columns else np.nan
    t["bpb_rank"] = t["bpb"].rank(method="min") if t["bpb"].notna().any() else t["lm_score"].rank(ascending=False)
    return t


def _point_sizes(n_params: pd.Series) -> np.ndarray:
    """Marker areas 40..320 on a log scale of parameter count (constant when unknown)."""
    v = np.log10(n_params.astype(float).to_numpy())
    if not np.isfinite(v).any() or np.nanmax(v) == np.nanmin(v):
        return np.full(len(v), 90.0)
    return np.nan_to_num(40 + 280 * (v - np.nanmin(v)) / (np.nanmax(v) - np.nanmin(v)), nan=40.0)


def _downstream_panel(ax: plt.Axes, t: pd.DataFrame, task: str) -> None:
    """One task: scatter of accuracy vs alignment, LM names beside the points."""
    ok = t[task].notna()
    ax.scatter(t.loc[ok, task], t.loc[ok, "alignment"], s=_point_sizes(t["n_params"])[ok.to_numpy()],
               c=t.loc[ok, "bpb_rank"], cmap=SEQUENTIAL + "_r", vmin=1, vmax=max(t["bpb_rank"].max(), 2),
               edgecolor="0.2", linewidth=0.6, zorder=3)
    ax.margins(0.15)
    if ok.sum() == 0:
        note(ax, f"no {task} values")
    ax.set_xlabel(f"{task.removeprefix('acc_')} accuracy")
    ax.set_title(task.removeprefix("acc_"), fontsize=10)


def _label_lms(ax: plt.Axes, t: pd.DataFrame, task: str) -> None:
    """LM names beside their points, placed to avoid markers and each other."""
    ok = t[task].notna().to_numpy()
    if ok.any():
        place_labels(ax, t.loc[ok, task].to_numpy(), t.loc[ok, "alignment"].to_numpy(),
                     [str(m) for m in t.loc[ok, "lm"]], fontsize=6.5,
                     radius=np.sqrt(_point_sizes(t["n_params"])[ok]) / 2)


def _downstream_legends(fig: plt.Figure, axes: np.ndarray, t: pd.DataFrame) -> None:
    """Colour bar for bpb rank and a size key for parameter count."""
    sm = plt.cm.ScalarMappable(cmap=SEQUENTIAL + "_r", norm=plt.Normalize(1, max(t["bpb_rank"].max(), 2)))
    fig.colorbar(sm, ax=list(axes.flat), pad=0.02, fraction=0.04).set_label("bits-per-byte rank (1 = best)")
    n = t["n_params"].astype(float)
    if n.notna().sum() >= 2:
        sizes = _point_sizes(n)
        picks = [int(np.nanargmin(n)), int(np.nanargmax(n))]
        handles = [Line2D([], [], ls="", marker="o", ms=np.sqrt(sizes[i]), mfc="0.7", mec="0.2",
                          label=f"{_human(n.iloc[i])} params") for i in picks]
        axes[0, -1].legend(handles=handles, loc="lower right", fontsize=7, frameon=True, labelspacing=1.2)


def _human(n: float) -> str:
    """1.3e10 -> '13B', 5.6e8 -> '560M'."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _downstream_reading(t: pd.DataFrame, tasks: list[str], ref: str) -> str:
    """Two lines: Spearman and Pearson correlation of accuracy with alignment, per task."""
    if not tasks:
        return f"Reference vision model {ref}; no downstream accuracy columns to correlate.\n-"
    sp = "; ".join(f"{c.removeprefix('acc_')}: rho = {fmt_r(spearman(t[c], t['alignment'])[0])}" for c in tasks)
    pe = "; ".join(f"{c.removeprefix('acc_')}: r = {fmt_r(pearson(t[c], t['alignment'])[0])}" for c in tasks)
    return (f"Alignment to {ref} vs accuracy over {len(t)} LMs, Spearman {sp}.\n"
            f"Pearson (linearity) {pe}.")


def _densities(df: pd.DataFrame) -> pd.Series:
    """Caption density per row: the `density` column, else the trailing number of the dataset name."""
    if "density" in df.columns:
        return df["density"].astype(float)
    require(df, ["dataset"], "caption-density alignment")
    num = df["dataset"].astype(str).map(lambda s: re.search(r"(\d+)\D*$", s))
    if num.isna().any():
        bad = df["dataset"][num.isna()].iloc[0]
        raise PrhError(f"caption-density table needs a `density` column (dataset {bad!r} has no trailing number)")
    return num.map(lambda m: float(m.group(1)))


def fig_caption_density(
    align_density: pd.DataFrame,
    model_meta: pd.DataFrame,
    out: str | os.PathLike,
    *,
    metric: str | None = None,
    group_by: str = "objective",
    context: dict | None = None,
) -> FigureResult:
    """Fig. 9: mean vision-language alignment vs words per caption, one line per vision family, band = std over LMs.

    Families are model_meta's `group_by` column (the paper's families are training recipes: objective), falling
    back to `family`.
    """
    df, setting = select_metric(align_density, metric, "caption-density alignment")
    d = orient(df, _language_models(model_meta, None), _vision_models(model_meta))
    if d.empty:
        raise PrhError("caption-density table has no vision-language pair")
    d["density"] = _densities(d)
    d["group"] = _first_col(_meta(model_meta), (group_by, "family"), d["vision"], "all").astype(str)
    per_lm = d.groupby(["group", "density", "lm"], as_index=False)["score"].mean()
    table = per_lm.groupby(["group", "density"], as_index=False)["score"].agg(
        mean="mean", std=lambda s: s.std(ddof=1) if len(s) > 1 else 0.0, n_lms="count")
    set_style()
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    for color, (grp, g) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4, table.groupby("group")):
        ax.plot(g["density"], g["mean"], marker="o", color=color, lw=1.8, label=grp)
        ax.fill_between(g["density"], g["mean"] - g["std"], g["mean"] + g["std"], color=color, alpha=0.12, lw=0)
    chance = chance_level(d)
    if np.isfinite(chance):
        ax.axhline(chance, ls="--", color="0.35", lw=1, label="chance")
    ax.set_xticks(sorted(table["density"].unique()))
    ax.set_xlabel("Caption density (words per caption)")
    ax.set_ylabel(f"Mean alignment\n{setting}")
    ax.legend(title="vision family", fontsize=8, title_fontsize=8, frameon=False, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    title = "Vision-language alignment vs caption density"
    ax.set_title(title, fontsize=11)
    ctx = context_text(df.drop(columns="dataset", errors="ignore"), setting, context)
    caption = (f"Mean alignment between vision families and {d['lm'].nunique()} language models on the same images "
               f"captioned at each density; band = std over language models; dashed: chance. {ctx}.")
    return save(fig, table, out, title, caption, _density_reading(d, table))


def _density_reading(d: pd.DataFrame, table: pd.DataFrame) -> str:
    """Two lines: pooled rank correlation of density with alignment, and the per-family change."""
    rho, p = spearman(d["density"], d["score"])
    line1 = (f"Over {len(d)} (vision, language, density) scores, Spearman rho(density, alignment) = {fmt_r(rho)} "
             f"(p = {fmt_p(p)}).")
    parts = []
    for grp, g in table.groupby("group"):
        g = g.sort_values("density")
        parts.append(f"{grp} {g['mean'].iloc[0]:.3f} -> {g['mean'].iloc[-1]:.3f}")
    lo, hi = table["density"].min(), table["density"].max()
    return f"{line1}\nMean alignment from {lo:g} to {hi:g} words: " + "; ".join(parts) + "."
