"""Metric figures: locality of the trend in CKNNA's k (Fig. 10) and agreement between metrics (Fig. 12)."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from prh.errors import PrhError
from prh.figures._common import (
    FigureResult,
    _params_dict,
    context_text,
    fmt_p,
    fmt_r,
    note,
    params_label,
    pearson,
    require,
    save,
    set_style,
    spearman,
)

COMPETENCE_COLUMNS = ("lm_score", "competence")


def _k_column(df: pd.DataFrame) -> pd.Series:
    """k per row: the `k` column, else params['k']."""
    if "k" in df.columns:
        return df["k"].astype(int)
    require(df, ["params"], "locality")
    return df["params"].map(lambda p: int(_params_dict(p).get("k", -1)))


CKNNA_MAX = 1.0  # the cknna record's max_value
OUT_OF_RANGE_REASON = (
    "CKNNA's numerator masks both kernels with the mutual-neighbour mask M_K o M_L while each denominator term masks "
    "its own kernel with M_K or M_L alone, so Cauchy-Schwarz does not bound the ratio by 1; at large k on "
    "anisotropic features (large mean cosine) the nearly all-ones M_K flattens its masked kernel, whose HSIC_1 "
    "then falls below that of the sparser mutual-masked one (see prh.metrics.cka.cknna_pair)"
)


def in_range(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with score <= CKNNA_MAX (+1e-9), per-k count of the rows above it: columns k, n_excluded)."""
    bad = df["score"] > CKNNA_MAX + 1e-9
    counts = df[bad].groupby("k").size().rename("n_excluded").reset_index()
    return df[~bad], counts.astype({"n_excluded": int})


def _excluded_text(excluded: pd.DataFrame) -> str:
    """Caption sentence naming the excluded out-of-range rows per k and why ('' if none)."""
    if excluded.empty:
        return ""
    per_k = ", ".join(f"{int(r.n_excluded)} at k={int(r.k)}" for r in excluded.itertuples())
    return (f" Excluded as out of range (CKNNA > {CKNNA_MAX:g}): {int(excluded['n_excluded'].sum())} model pairs "
            f"({per_k}). Why: {OUT_OF_RANGE_REASON}.")


def locality_table(df: pd.DataFrame, score_col: str | None) -> pd.DataFrame:
    """Per k: pairs, mean alignment, and Spearman / Pearson correlation of alignment with `score_col`."""
    rows = []
    for k, g in df.groupby("k", sort=True):
        rho, p = spearman(g[score_col], g["score"]) if score_col else (np.nan, np.nan)
        r, pr = pearson(g[score_col], g["score"]) if score_col else (np.nan, np.nan)
        rows.append({"k": int(k), "n_pairs": len(g), "mean_score": float(g["score"].mean()),
                     "spearman": rho, "spearman_p": p, "pearson": r, "pearson_p": pr})
    return pd.DataFrame(rows)


def normalised_alignment(df: pd.DataFrame, model_meta: pd.DataFrame | None, score_col: str | None) -> pd.DataFrame:
    """The paper's Fig. 10 normalisation. Per (k, vision objective, LM): mean alignment over that objective's vision
    models (model_x; the LM is model_y), then per (k, objective): minus the value at the smallest LM by n_params (of
    models.csv), over its std across LMs (ddof=1). LMs without a `score_col` value are left out. Empty without meta."""
    cols = ["k", "objective", "lm", "n_params", "alignment", "smallest_lm", "normalised"]
    meta = model_meta.drop_duplicates("model").set_index("model") if model_meta is not None else pd.DataFrame()
    if not {"objective", "n_params"} <= set(meta.columns):
        return pd.DataFrame(columns=cols)
    d = df[df[score_col].notna()] if score_col else df
    d = d.assign(objective=d["model_x"].map(meta["objective"]).fillna("unknown").astype(str))
    t = d.groupby(["k", "objective", "model_y"], as_index=False)["score"].mean()
    t = t.rename(columns={"model_y": "lm", "score": "alignment"})
    t["n_params"] = t["lm"].map(meta["n_params"]).astype(float)
    sizes = t.drop_duplicates("lm").sort_values(["n_params", "lm"])
    if sizes.empty or not np.isfinite(sizes["n_params"].iloc[0]):
        return pd.DataFrame(columns=cols)
    smallest = str(sizes["lm"].iloc[0])
    groups = t.groupby(["k", "objective"])["alignment"]
    anchor = t.set_index(["k", "objective", "lm"])["alignment"].xs(smallest, level="lm")
    centre = pd.Series(list(zip(t["k"], t["objective"]))).map(anchor).to_numpy()
    std = groups.transform(lambda a: a.std(ddof=1) if len(a) > 1 else np.nan).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        t["normalised"] = np.where(std > 0, (t["alignment"] - centre) / std, np.nan)
    return t.assign(smallest_lm=smallest)[cols]


def fig_locality(
    cknna_k: pd.DataFrame,
    out: str | os.PathLike,
    *,
    model_meta: pd.DataFrame | None = None,
    context: dict | None = None,
) -> FigureResult:
    """Fig. 10: how the alignment-vs-language-score trend of CKNNA changes from small k to k = n - 1 (CKA), raw and
    normalised per vision objective as in the paper (`normalised_alignment`; needs model_meta)."""
    require(cknna_k, ["model_x", "model_y", "score"], "locality")
    df = cknna_k.copy()
    df["k"] = _k_column(df)
    df = df[df["k"] > 0]
    if df.empty:
        raise PrhError("locality table has no rows with a positive k")
    df, excluded = in_range(df)
    if df.empty:
        raise PrhError(f"locality table: every row is out of range (CKNNA > {CKNNA_MAX}); nothing to plot")
    score_col = next((c for c in COMPETENCE_COLUMNS if c in df.columns and df[c].notna().any()), None)
    table = locality_table(df, score_col).merge(excluded, on="k", how="left").fillna({"n_excluded": 0})
    table["n_excluded"] = table["n_excluded"].astype(int)
    norm = normalised_alignment(df, model_meta, score_col)
    if score_col:
        norm[score_col] = norm["lm"].map(df.drop_duplicates("model_y").set_index("model_y")[score_col])
    set_style()
    fig, (ax_l, ax_m, ax_r) = plt.subplots(1, 3, figsize=(16.5, 4.6))
    lines = _locality_lines(ax_l, df, score_col)
    _normalised_lines(ax_m, norm, score_col)
    _locality_trend(ax_r, table, score_col)
    title = "Locality: CKNNA trend with language score across k"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.tight_layout()
    n = f"n = {int(df['n'].max())}, " if "n" in df.columns else ""
    ks = sorted(table["k"])
    ctx = context_text(df.drop(columns=["n"], errors="ignore"), "cknna", context)
    caption = (f"CKNNA with k from {ks[0]} to {ks[-1]} ({n}k = n - 1 is unbiased CKA). Left: mean alignment per "
               f"language model vs its {score_col or 'score'}, one line per k. Middle: {_normalised_text(norm)} "
               f"Right: rank (Spearman) and linear (Pearson) correlation of alignment with {score_col or 'score'} "
               f"at each k. {ctx}.{_excluded_text(excluded)}")
    reading = _locality_reading(table, norm, score_col)
    return save(fig, table, out, title, caption, reading, extra={"lines": lines, "normalised": norm})


def _normalised_text(norm: pd.DataFrame) -> str:
    """Caption sentence for the normalised panel."""
    if norm.empty:
        return "the paper's normalisation needs the models table (objective, n_params); not available."
    return (f"the paper's normalisation: per vision objective ({norm['objective'].nunique()}: "
            f"{', '.join(sorted(norm['objective'].unique()))}), the mean alignment of its vision models to each "
            f"language model, minus that to the smallest language model by parameters ({norm['smallest_lm'].iloc[0]}), "
            f"divided by its standard deviation across the {norm['lm'].nunique()} language models; mean over "
            f"objectives, one line per k.")


def _locality_lines(ax: plt.Axes, df: pd.DataFrame, score_col: str | None) -> pd.DataFrame:
    """Left panel: mean alignment per LM vs its language score, a line per k (or mean alignment vs k)."""
    ks = sorted(df["k"].unique())
    if score_col is None:
        t = df.groupby("k", as_index=False)["score"].mean()
        ax.plot(t["k"], t["score"], marker="o")
        ax.set_xscale("log")
        ax.set_xlabel("k")
        ax.set_ylabel("mean CKNNA")
        ax.set_title("no lm_score column: mean alignment only", fontsize=9)
        return t
    t = df.groupby(["k", score_col], as_index=False)["score"].mean()
    for k in ks:
        g = t[t["k"] == k].sort_values(score_col)
        ax.plot(g[score_col], g["score"], marker="o", ms=3.5, color=_k_colour(k, ks), label=f"k={k}")
    ax.set_xlabel(score_col.replace("_", " "))
    ax.set_ylabel("mean CKNNA over vision models")
    ax.set_title("raw", fontsize=10)
    ax.legend(fontsize=7, ncol=2 if len(ks) > 5 else 1, frameon=True, loc="best")
    return t


def _k_colour(k: int, ks: list[int]) -> tuple:
    """Colour of k on a log scale over ks (viridis)."""
    logs = np.log(ks)
    return plt.get_cmap("viridis")(0.05 + 0.85 * (np.log(k) - logs.min()) / (np.ptp(logs) or 1))


def _normalised_lines(ax: plt.Axes, norm: pd.DataFrame, score_col: str | None) -> None:
    """Middle panel: normalised alignment (mean over objectives) vs language score, a line per k."""
    if score_col is None or norm.empty or norm["normalised"].isna().all():
        note(ax, "normalised alignment needs a language score and the models table (objective, n_params)")
        return
    ks = sorted(norm["k"].unique())
    t = norm.groupby(["k", score_col], as_index=False)["normalised"].mean()
    for k in ks:
        g = t[t["k"] == k].sort_values(score_col)
        ax.plot(g[score_col], g["normalised"], marker="o", ms=3.5, color=_k_colour(k, ks), label=f"k={k}")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlabel(score_col.replace("_", " "))
    ax.set_ylabel(f"(alignment - that to {norm['smallest_lm'].iloc[0]})\n/ std across LMs")
    ax.set_title("normalised per vision objective (paper)", fontsize=10)


def _locality_trend(ax: plt.Axes, table: pd.DataFrame, score_col: str | None) -> None:
    """Right panel: Spearman and Pearson correlation vs k (log axis)."""
    if score_col is None:
        note(ax, "no language-score column (lm_score / competence): correlation not available")
        return
    if table["spearman"].isna().all():
        note(ax, "correlation needs at least 3 pairs with varying scores at some k")
        return
    ax.plot(table["k"], table["spearman"], marker="o", label="Spearman rho")
    ax.plot(table["k"], table["pearson"], marker="s", ls="--", label="Pearson r")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("k (log scale)")
    ax.set_ylabel(f"correlation with {score_col.replace('_', ' ')}")
    ax.set_ylim(min(-0.1, table[["spearman", "pearson"]].min().min() - 0.1), 1.05)
    ax.legend(fontsize=8, frameon=True)


def _locality_reading(table: pd.DataFrame, norm: pd.DataFrame, score_col: str | None) -> str:
    """Two lines: the correlation (and the normalised gap of the best LM) at the smallest and largest k, and the rank
    trend of the correlation with k."""
    lo, hi = table.iloc[0], table.iloc[-1]
    if score_col is None:
        return (f"Mean CKNNA: {lo['mean_score']:.3f} at k={int(lo['k'])}, {hi['mean_score']:.3f} at k={int(hi['k'])}.\n"
                "No language-score column, so no trend correlation.")
    line1 = (f"Spearman rho(alignment, {score_col}) = {fmt_r(lo['spearman'])} at k={int(lo['k'])} and "
             f"{fmt_r(hi['spearman'])} at k={int(hi['k'])}")
    gap = norm.dropna(subset=["normalised"]).groupby(["k", "lm", score_col], as_index=False)["normalised"].mean()
    if not gap.empty:
        best = gap.sort_values([score_col, "lm"]).iloc[-1]["lm"]
        at = gap[gap["lm"] == best].set_index("k")["normalised"]
        line1 += (f"; normalised per vision objective, the best LM ({best}) sits {at.iloc[0]:+.2f} std from "
                  f"{norm['smallest_lm'].iloc[0]} at k={int(at.index[0])} and {at.iloc[-1]:+.2f} at "
                  f"k={int(at.index[-1])}")
    rho, p = spearman(table["k"], table["spearman"])
    return (f"{line1}.\nAcross {len(table)} values of k, Spearman rho(k, trend strength) = {fmt_r(rho)} "
            f"(p = {fmt_p(p)}).")


def agreement_matrix(align_all: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(Spearman correlation between metric settings over model pairs, number of model pairs). A pair's two orders
    (vision-vision tables hold both) count once, with their scores averaged."""
    require(align_all, ["model_x", "model_y", "metric", "score"], "all-metrics alignment")
    df = align_all.copy()
    params = df["params"] if "params" in df.columns else pd.Series("{}", index=df.index)
    df["setting"] = [params_label(m, p) for m, p in zip(df["metric"], params)]
    first = df["model_x"] <= df["model_y"]
    df["model_x"], df["model_y"] = np.where(first, df["model_x"], df["model_y"]), np.where(first, df["model_y"], df["model_x"])
    keys = ["model_x", "model_y"] + (["dataset"] if "dataset" in df.columns else [])
    wide = df.pivot_table(index=keys, columns="setting", values="score", aggfunc="mean")
    return wide.corr(method="spearman", min_periods=3), len(wide)


def pair_kind(align: pd.DataFrame, model_meta: pd.DataFrame | None) -> str:
    """'vision-language', 'vision-vision' (or several, comma-joined) from the models' modalities; 'model' unknown."""
    meta = model_meta.drop_duplicates("model").set_index("model") if model_meta is not None else pd.DataFrame()
    if "modality" not in meta.columns:
        return "model"
    mod = meta["modality"].astype(str)
    kinds = {"-".join(sorted((mod.get(x, "?"), mod.get(y, "?")), key=lambda m: m != "vision"))
             for x, y in zip(align["model_x"], align["model_y"])}
    return ", ".join(sorted(kinds))


def fig_metric_agreement(
    align_all: pd.DataFrame,
    out: str | os.PathLike,
    *,
    align_vision: pd.DataFrame | None = None,
    model_meta: pd.DataFrame | None = None,
    context: dict | None = None,
) -> FigureResult:
    """Fig. 12: annotated heatmap of Spearman correlations between all (metric, params) settings over model pairs;
    with `align_vision` (report.agreement_vision), a second heatmap over its pairs (the paper: vision-vision among
    all vision models) beside the first."""
    panels = {pair_kind(t, model_meta): t for t in (align_all, align_vision) if t is not None}
    if len(panels) < (1 if align_vision is None else 2):
        panels = {f"{pair_kind(t, model_meta)} ({i + 1})": t for i, t in enumerate((align_all, align_vision))}
    corrs = {kind: agreement_matrix(t) for kind, t in panels.items()}
    order = list(dict.fromkeys(s for c, _ in corrs.values() for s in c.index))  # one setting order for all panels
    corrs = {kind: (c.reindex(index=order, columns=order), n) for kind, (c, n) in corrs.items()}
    m = len(order)
    set_style()
    fig, axes = plt.subplots(1, len(corrs) + 1, figsize=(3.0 + (0.75 + 0.62 * m) * len(corrs), max(4.2, 2.4 + 0.62 * m)),
                             gridspec_kw={"width_ratios": [1] * len(corrs) + [0.05]})
    for i, (ax, (kind, (corr, n_pairs))) in enumerate(zip(axes, corrs.items())):
        _agreement_heatmap(ax, corr, axes[-1], labels_y=i == 0)
        ax.set_title(f"{kind} pairs ({n_pairs})", fontsize=10)
    axes[-1].set_visible(m >= 2)  # the colour bar's axes
    title = "Agreement between alignment metrics"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.tight_layout()
    where = "; ".join(f"{kind.capitalize()} pairs: {n} model pairs, {context_text(panels[kind], None, context)}"
                      for kind, (_, n) in corrs.items())
    side = (" Left and right: the two experiments (report.agreement and report.agreement_vision), the paper's "
            "Fig. 12 being computed on vision-vision pairs among all vision models." if len(corrs) > 1 else "")
    caption = (f"Spearman rank correlation between {m} metric settings over model pairs (pairwise complete, at least "
               f"3 pairs; a pair's two orders averaged).{side} {where}.")
    table = pd.concat([c.reset_index().rename(columns={"setting": "metric"}).assign(pairs=kind)
                       for kind, (c, _) in corrs.items()], ignore_index=True)
    table = table[["pairs", *[c for c in table.columns if c != "pairs"]]]
    return save(fig, table, out, title, caption, _agreement_reading(corrs))


def _agreement_heatmap(ax: plt.Axes, corr: pd.DataFrame, cbar_ax: plt.Axes, labels_y: bool) -> None:
    """One annotated correlation heatmap, its colour bar drawn in cbar_ax (a note when there is nothing to compare)."""
    m = len(corr)
    if m < 2:
        note(ax, "fewer than two metric settings: nothing to compare")
        return
    sns.heatmap(corr, ax=ax, vmin=-1, vmax=1, cmap="vlag", annot=m <= 16, fmt=".2f", square=True,
                annot_kws={"fontsize": 7}, cbar_ax=cbar_ax, cbar_kws={"label": "Spearman rho"},
                linewidths=0.5, linecolor="white", yticklabels=labels_y)
    ax.set_xlabel("")
    ax.set_ylabel("")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", fontsize=8)
    plt.setp(ax.get_yticklabels(), rotation=0, fontsize=8)


def _agreement_summary(corr: pd.DataFrame, n_pairs: int) -> str:
    """'over 20 model pairs, mean Spearman rho ... ; least agreement: a vs b (rho = ...); most: ...' of one matrix."""
    if len(corr) < 2:
        return f"only {len(corr)} metric setting over {n_pairs} model pairs"
    iu = np.triu_indices(len(corr), 1)
    vals = corr.to_numpy()[iu]
    names = [(corr.index[i], corr.columns[j]) for i, j in zip(*iu)]
    ok = np.isfinite(vals)
    if not ok.any():
        return f"too few model pairs ({n_pairs}) to correlate metrics"
    lo, hi = int(np.nanargmin(vals)), int(np.nanargmax(vals))
    return (f"over {n_pairs} model pairs, mean Spearman rho between {len(corr)} metric settings = "
            f"{np.nanmean(vals):.3f}; {int((vals[ok] > 0.5).sum())} of {int(ok.sum())} setting pairs exceed 0.5; "
            f"least agreement: {names[lo][0]} vs {names[lo][1]} (rho = {fmt_r(vals[lo])}); most: "
            f"{names[hi][0]} vs {names[hi][1]} (rho = {fmt_r(vals[hi])})")


def _agreement_reading(corrs: dict[str, tuple[pd.DataFrame, int]]) -> str:
    """Two lines: one summary per panel, or (one panel) its summary split over two lines."""
    lines = [f"{kind.capitalize()} pairs: {_agreement_summary(c, n)}." for kind, (c, n) in corrs.items()]
    if len(lines) == 1:
        head, _, tail = lines[0].partition("; least")
        lines = [f"{head}.", f"Least{tail}"] if tail else [head, "-"]
    return "\n".join(lines)
