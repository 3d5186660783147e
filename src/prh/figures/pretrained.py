"""What changes with real pretrained models: competence, vision-vision and vision-language alignment of the packaged
ImageNet EfficientNets against the trained zoo, language-model size ladders within one family, and the depth of the
best language layer."""

from __future__ import annotations

import os
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from prh.errors import PrhError
from prh.figures._common import FigureResult, context_text, require, save, select_metric, set_style
from prh.figures.language import orient
from prh.figures.vision import _competence

PRETRAINED = "packaged"  # models.csv source of the pretrained models shipped in wheels (the rest: zoo, hub)


def _models(model_meta: pd.DataFrame) -> pd.DataFrame:
    require(model_meta, ["model", "modality", "source", "family", "n_params", "n_layers"], "models")
    return model_meta.drop_duplicates("model").set_index("model")


def relative_depth(layer: str, n_layers: float) -> float:
    """Position of a stored layer named ``<name>.<i>`` among n_layers as i / (n_layers - 1); NaN for concat."""
    m = re.search(r"(\d+)$", str(layer))
    if m is None or not np.isfinite(n_layers) or n_layers < 2:
        return float("nan")
    return int(m.group(1)) / (n_layers - 1)


def ladders(meta: pd.DataFrame, modality: str) -> dict[str, list[str]]:
    """Family -> its models of one modality ordered by parameter count, for families with at least two sizes."""
    m = meta[meta["modality"] == modality].sort_values("n_params")
    return {f: list(g.index) for f, g in m.groupby("family", sort=False) if len(g) > 1}


def pretrained_table(align_vv: pd.DataFrame, align_vl: pd.DataFrame, tasks_solved: pd.DataFrame,
                     model_meta: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """One row per vision model: source, fraction of probe tasks solved, mean VV alignment to models of its own
    source and of the other, mean VL alignment, and the best language layer's mean relative depth."""
    meta = _models(model_meta)
    frac = _competence(tasks_solved)
    vv, _ = select_metric(align_vv, metric, "vision-vision alignment")
    vl, _ = select_metric(align_vl, metric, "vision-language alignment")
    lms = set(meta.index[meta["modality"] == "language"])
    vl = orient(vl, lms)
    vl = vl.assign(depth=[relative_depth(layer, meta.at[lm, "n_layers"]) if lm in meta.index else np.nan
                          for layer, lm in zip(np.where(vl["model_y"].isin(lms), vl["layer_y"], vl["layer_x"]), vl["lm"])])
    rows = []
    for model in meta.index[meta["modality"] == "vision"]:
        if model not in frac.index:
            continue
        src = meta.at[model, "source"]
        mine = vv[(vv["model_x"] == model) & (vv["model_y"] != model)]
        same = mine["model_y"].map(meta["source"]) == src
        v = vl[vl["vision"] == model]
        rows.append({"model": model, "source": src, "family": meta.at[model, "family"],
                     "n_params": meta.at[model, "n_params"], "frac_solved": frac[model],
                     "vv_same_source": mine.loc[same, "score"].mean(), "vv_other_source": mine.loc[~same, "score"].mean(),
                     "vl_mean": v["score"].mean(), "best_lm_depth": v["depth"].mean()})  # fmt: skip
    if not rows:
        raise PrhError("pretrained figure: no vision model has both probe results and alignment rows")
    return pd.DataFrame(rows)


def ladder_table(align_vl: pd.DataFrame, model_meta: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Per language family with several sizes and per vision source: mean VL alignment at each size."""
    meta = _models(model_meta)
    vl, _ = select_metric(align_vl, metric, "vision-language alignment")
    vl = orient(vl, set(meta.index[meta["modality"] == "language"]))
    vl = vl.assign(source=vl["vision"].map(meta["source"]))
    rows = []
    for family, members in ladders(meta, "language").items():
        for rank, lm in enumerate(members):
            for src, g in vl[vl["lm"] == lm].groupby("source"):
                rows.append({"family": family, "lm": lm, "rank": rank, "n_params": meta.at[lm, "n_params"],
                             "source": src, "score": g["score"].mean(), "n_vision": len(g)})  # fmt: skip
    return pd.DataFrame(rows, columns=["family", "lm", "rank", "n_params", "source", "score", "n_vision"])


def fig_pretrained(align_vv: pd.DataFrame, align_vl: pd.DataFrame, tasks_solved: pd.DataFrame, model_meta: pd.DataFrame,
                   out: str | os.PathLike, *, metric: str | None = None) -> FigureResult:
    """Pretrained (packaged) vs zoo vision models: competence, alignment, LM size ladders, best LM layer depth."""
    table = pretrained_table(align_vv, align_vl, tasks_solved, model_meta, metric)
    ladder = ladder_table(align_vl, model_meta, metric)
    _, setting = select_metric(align_vl, metric, "vision-language alignment")
    set_style()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    colors = {PRETRAINED: "#d95f02", "zoo": "#1b9e77"}
    t = table.sort_values(["source", "n_params"])
    axes[0].bar(np.arange(len(t)), t["frac_solved"], color=[colors.get(s, "0.5") for s in t["source"]])
    axes[0].set_xticks(np.arange(len(t)), t["model"], rotation=60, ha="right", fontsize=7)
    axes[0].set_ylabel("fraction of probe tasks solved")
    axes[0].set_title("Competence", fontsize=10)
    for src, g in table.groupby("source"):
        axes[1].scatter(g["frac_solved"], g["vl_mean"], color=colors.get(src, "0.5"), label=src, s=30)
        for r in g.itertuples():
            axes[1].annotate(r.model, (r.frac_solved, r.vl_mean), fontsize=6, xytext=(3, 2), textcoords="offset points")
    axes[1].set_xlabel("fraction of probe tasks solved")
    axes[1].set_ylabel(f"mean alignment to the LMs\n{setting}")
    axes[1].legend(fontsize=8)
    axes[1].set_title("Vision-language alignment", fontsize=10)
    for (family, src), g in ladder.groupby(["family", "source"]):
        g = g.sort_values("rank")
        axes[2].plot(g["lm"], g["score"], "o-", color=colors.get(src, "0.5"), label=f"{family}, {src} vision")
    if ladder.empty:
        axes[2].text(0.5, 0.5, "no language family with two sizes", ha="center", transform=axes[2].transAxes)
    axes[2].set_ylabel(f"mean alignment\n{setting}")
    axes[2].set_title("Language size ladders (one family)", fontsize=10)
    axes[2].legend(fontsize=7)
    plt.setp(axes[2].get_xticklabels(), rotation=30, ha="right", fontsize=8)
    title = "What changes with real pretrained models"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.tight_layout()
    caption = ("Packaged ImageNet-pretrained vision models (orange) against the workflow's trained zoo (green): the "
               "fraction of probe tasks solved, mean alignment to the language models against it, and mean alignment "
               f"along each language family's size ladder. {context_text(align_vl, setting, None)}.")
    return save(fig, table, out, title, caption, pretrained_reading(table, ladder), extra={"ladders": ladder})


def pretrained_reading(table: pd.DataFrame, ladder: pd.DataFrame) -> str:
    """Two lines: competence and alignment of pretrained vs zoo; LM ladders and the best LM layer depth."""
    pre, zoo = table[table["source"] == PRETRAINED], table[table["source"] == "zoo"]
    if pre.empty or zoo.empty:
        return f"{len(pre)} pretrained and {len(zoo)} zoo vision models: nothing to compare.\n-"
    pre = pre.sort_values("n_params")
    line1 = (f"Tasks solved: {', '.join(f'{r.model} {r.frac_solved:.2f}' for r in pre.itertuples())} vs zoo median "
             f"{zoo['frac_solved'].median():.2f} (max {zoo['frac_solved'].max():.2f}); mean VL alignment "
             f"{', '.join(f'{r.vl_mean:.3f}' for r in pre.itertuples())} vs zoo median {zoo['vl_mean'].median():.3f}; "
             f"VV among pretrained {pre['vv_same_source'].mean():.3f} vs among zoo {zoo['vv_same_source'].mean():.3f}.")
    steps = []
    for (family, src), g in ladder.groupby(["family", "source"]):
        g = g.sort_values("rank")
        steps.append(f"{family} ({src} vision) {' -> '.join(f'{s:.3f}' for s in g['score'])}")
    line2 = (f"Along LM size ladders: {'; '.join(steps) if steps else 'none'}. Best LM layer at mean relative depth "
             f"{pre['best_lm_depth'].mean():.2f} for pretrained vs {zoo['best_lm_depth'].mean():.2f} for zoo vision "
             f"models (0 = embeddings, 1 = last).")
    return f"{line1}\n{line2}"
