"""Vision-vision figures: convergence with competence (Fig. 2 left), the model UMAP (Fig. 2 right), layer heatmaps."""

from __future__ import annotations

import os
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from prh.align import best_pair
from prh.errors import PrhError
from prh.figures._common import (
    SEQUENTIAL,
    FigureResult,
    chance_level,
    context_text,
    fmt_p,
    fmt_r,
    pair_matrix,
    place_labels,
    require,
    save,
    select_metric,
    set_style,
    spearman,
    unordered_pairs,
)

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]


def _competence(tasks_solved: pd.DataFrame) -> pd.Series:
    """frac_solved per model (computed from n_solved / n_tasks when the column is absent)."""
    if "frac_solved" not in tasks_solved.columns:
        require(tasks_solved, ["model", "n_solved", "n_tasks"], "tasks_solved")
        tasks_solved = tasks_solved.assign(frac_solved=tasks_solved["n_solved"] / tasks_solved["n_tasks"])
    require(tasks_solved, ["model", "frac_solved"], "tasks_solved")
    return tasks_solved.drop_duplicates("model").set_index("model")["frac_solved"].astype(float)


def competence_bins(frac: pd.Series, bins: int = 5, cumulative: bool = False) -> dict[int, list[str]]:
    """Bin index -> models. Disjoint bins are (lo, hi] (the first includes 0); cumulative bins hold frac <= hi."""
    edges = np.linspace(0, 1, bins + 1)
    out: dict[int, list[str]] = {b: [] for b in range(bins)}
    for model, f in frac.items():
        if cumulative:
            for b in range(bins):
                if f <= edges[b + 1] + 1e-12:
                    out[b].append(str(model))
        else:
            out[int(np.clip(np.ceil(f * bins - 1e-9) - 1, 0, bins - 1))].append(str(model))
    return out


def _bin_label(b: int, bins: int, cumulative: bool) -> str:
    """'20-40%' (or '0-40%' when cumulative)."""
    lo, hi = (0 if cumulative else round(100 * b / bins)), round(100 * (b + 1) / bins)
    return f"{lo}-{hi}%"


BINNINGS = {"disjoint": False, "cumulative": True}  # binning name -> competence_bins(cumulative=...)
BINNING_TEXT = {"disjoint": "Disjoint bins: lo < frac <= hi", "cumulative": "Cumulative bins (the paper's): frac <= hi"}


def convergence_table(pairs: pd.DataFrame, frac: pd.Series, bins: int, cumulative: bool) -> pd.DataFrame:
    """Per bin: models, pairs, mean intra-bin alignment, its standard error over pairs, chance."""
    rows = []
    for b, models in competence_bins(frac, bins, cumulative).items():
        inside = pairs[pairs["a"].isin(models) & pairs["b"].isin(models)]
        s = inside["score"].to_numpy(float)
        rows.append({
            "binning": "cumulative" if cumulative else "disjoint",
            "bin": _bin_label(b, bins, cumulative), "lo": 0.0 if cumulative else b / bins, "hi": (b + 1) / bins,
            "n_models": len(models), "n_pairs": len(s), "mean": float(s.mean()) if len(s) else np.nan,
            "se": float(s.std(ddof=1) / np.sqrt(len(s))) if len(s) > 1 else np.nan,
            "chance": float(inside["chance"].mean()) if len(s) else np.nan,
        })
    return pd.DataFrame(rows)


def fig_convergence(
    align_vv: pd.DataFrame,
    tasks_solved: pd.DataFrame,
    out: str | os.PathLike,
    *,
    bins: int = 5,
    metric: str | None = None,
    context: dict | None = None,
) -> FigureResult:
    """Fig. 2 left: mean intra-bin alignment (SE bars) of models binned by the fraction of probe tasks solved, in
    disjoint bins (left panel) and in the paper's cumulative bins (right panel)."""
    require(align_vv, ["model_x", "model_y", "score"], "vision-vision alignment")
    df, setting = select_metric(align_vv, metric, "vision-vision alignment")
    frac = _competence(tasks_solved)
    df = df[df["model_x"].isin(frac.index) & df["model_y"].isin(frac.index)]
    pairs = unordered_pairs(df)
    tables = {name: convergence_table(pairs, frac, bins, cum) for name, cum in BINNINGS.items()}
    table = pd.concat(tables.values(), ignore_index=True)
    tops = (table["mean"] + table["se"].fillna(0)).to_numpy()
    top = float(np.nanmax(tops)) if np.isfinite(tops).any() else 1.0
    set_style()
    fig, axes = plt.subplots(1, len(tables), figsize=(11.5, 4.6), sharey=True)
    for ax, (name, t) in zip(axes, tables.items()):
        _convergence_panel(ax, t, top, chance_level(df))
        ax.set_title(BINNING_TEXT[name], fontsize=10)
        ax.set_xlabel(f"Fraction of probe tasks solved ({name} bins)")
    axes[0].set_ylabel(f"Intra-bin alignment\n{setting}")
    axes[0].set_ylim(0, top * 1.25 if top > 0 else 1)
    title = "Alignment within competence bins"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.tight_layout()
    ctx = context_text(df, setting, context)
    caption = (f"Mean pairwise alignment among the vision models in each competence bin (error bars: standard "
               f"error over model pairs; m = models in the bin; dashed: chance). Left: disjoint bins, each model "
               f"in one bin (lo < fraction solved <= hi); right: cumulative bins as in the paper, each bin holding "
               f"every model solving at most its upper edge, so the last bin holds all models and bins share "
               f"pairs. {ctx}; {int(frac.size)} models, {len(pairs)} pairs.")
    return save(fig, table, out, title, caption, _convergence_reading(tables, pairs, frac))


def _convergence_panel(ax: plt.Axes, t: pd.DataFrame, top: float, chance: float) -> None:
    """Bars of one binning: mean with SE, the bin's model and pair counts above, chance dashed."""
    x = np.arange(len(t))
    colors = plt.get_cmap(SEQUENTIAL)(np.linspace(0.15, 0.85, len(t)))
    ax.bar(x, t["mean"].fillna(0), yerr=t["se"].fillna(0), color=colors, capsize=4, edgecolor="0.2")
    for xi, r in zip(x, t.itertuples()):
        label = f"m={r.n_models}\n{r.n_pairs} pair{'s' * (r.n_pairs != 1)}"
        ax.text(xi, (0 if np.isnan(r.mean) else r.mean) + (0 if np.isnan(r.se) else r.se) + 0.02 * top,
                label, ha="center", va="bottom", fontsize=8, color="0.3")
    if np.isfinite(chance):
        ax.axhline(chance, ls="--", color="0.3", lw=1.2, label=f"chance ({chance:.3f})")
        ax.legend(loc="upper left", frameon=True)
    ax.set_xticks(x, t["bin"])


def _bins_trend(t: pd.DataFrame) -> str:
    """'0.162 (40-60%, m=2) -> 0.270 (80-100%, m=3), Spearman rho(bin, mean) = 1.000 over 3 bins' of one binning."""
    ok = t[t["mean"].notna()]
    if ok.empty:
        return "no bin holds two models"
    rho, _ = spearman(ok["hi"], ok["mean"])
    lo, hi = ok.iloc[0], ok.iloc[-1]
    if len(ok) < 3:
        trend = f"too few bins ({len(ok)}) for a rank correlation"
    elif not np.isfinite(rho):
        trend = f"no rank correlation over {len(ok)} bins (equal bin means)"
    else:
        trend = f"Spearman rho(bin, mean) = {fmt_r(rho)} over {len(ok)} bins"
    return (f"{lo['mean']:.3f} ({lo['bin']}, m={lo['n_models']}) -> {hi['mean']:.3f} ({hi['bin']}, "
            f"m={hi['n_models']}), {trend}")


def _convergence_reading(tables: dict[str, pd.DataFrame], pairs: pd.DataFrame, frac: pd.Series) -> str:
    """Two lines: the trend of bin means in each binning, and the per-pair rank correlation with competence."""
    line1 = "Intra-bin alignment, " + "; ".join(f"{name} bins: {_bins_trend(t)}" for name, t in tables.items()) + "."
    pmin = np.minimum(pairs["a"].map(frac), pairs["b"].map(frac))
    r2, p2 = spearman(pmin, pairs["score"])
    line2 = (f"Over {len(pairs)} model pairs, Spearman rho(min fraction solved of the pair, alignment) = "
             f"{fmt_r(r2)} (p = {fmt_p(p2)}).")
    return f"{line1}\n{line2}"


def alignment_distance(align: pd.DataFrame, models: list[str]) -> tuple[np.ndarray, int]:
    """(-log clip(alignment, 1e-6)) as a symmetric (m, m) distance with zero diagonal; missing pairs get the max."""
    a = pair_matrix(align, models)
    off = ~np.eye(len(models), dtype=bool)
    n_missing = int(np.isnan(a[off]).sum() // 2)
    d = -np.log(np.clip(a, 1e-6, None))
    fill = np.nanmax(d[off]) if np.isfinite(d[off]).any() else 1.0
    d = np.where(np.isnan(d), fill, d)
    np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0), n_missing


def classical_mds(dist: np.ndarray) -> np.ndarray:
    """(m, 2) classical (Torgerson) MDS coordinates of a distance matrix; deterministic up to sign."""
    m = len(dist)
    h = np.eye(m) - 1.0 / m
    b = -0.5 * h @ (dist**2) @ h
    vals, vecs = np.linalg.eigh(b)
    order = np.argsort(vals)[::-1][:2]
    return vecs[:, order] * np.sqrt(np.clip(vals[order], 0, None))


def embed_2d(dist: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D embedding of a precomputed distance: UMAP for >= 6 points, classical MDS below (UMAP needs neighbours)."""
    m = len(dist)
    if m < 3:
        return np.column_stack([np.arange(m, dtype=float), np.zeros(m)]), "line"
    try:
        import umap
    except ImportError:  # umap-learn absent (a bare GPU node): the same picture by classical MDS
        return classical_mds(dist), "MDS"
    if m < 6:
        return classical_mds(dist), "MDS"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_neighbors=min(15, m - 1), metric="precomputed", random_state=seed,
                            init="random", min_dist=0.3, n_jobs=1)
        return reducer.fit_transform(dist), "UMAP"


def fig_umap(
    align_vv: pd.DataFrame,
    tasks_solved: pd.DataFrame,
    model_meta: pd.DataFrame,
    out: str | os.PathLike,
    *,
    metric: str | None = None,
    seed: int = 0,
    label_max: int = 30,
    context: dict | None = None,
) -> FigureResult:
    """Fig. 2 right: models embedded by UMAP of -log(alignment), coloured by competence, marker = objective."""
    require(align_vv, ["model_x", "model_y", "score"], "vision-vision alignment")
    df, setting = select_metric(align_vv, metric, "vision-vision alignment")
    models = sorted(set(df["model_x"]) | set(df["model_y"]))
    if len(models) < 2:
        raise PrhError(f"UMAP needs at least 2 models in the vision-vision alignment table, got {models}")
    dist, n_missing = alignment_distance(df, models)
    xy, method = embed_2d(dist, seed)
    table = _umap_table(models, xy, dist, _competence(tasks_solved), model_meta)
    set_style()
    fig, ax = plt.subplots(figsize=(7.4, 5.6))
    _umap_scatter(ax, table, label_max)
    title = "Models embedded by alignment distance"
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ctx = context_text(df, setting, context)
    caption = (f"{method} of {len(models)} vision models with distance -log(alignment) (alignment clipped at 1e-6); "
               f"colour = fraction of probe tasks solved, marker = training objective. {ctx}."
               + (f" {n_missing} missing pairs were set to the largest distance." if n_missing else ""))
    return save(fig, table, out, title, caption, _umap_reading(table))


def _umap_table(models: list[str], xy: np.ndarray, dist: np.ndarray, frac: pd.Series,
                meta: pd.DataFrame) -> pd.DataFrame:
    """Per model: embedding coordinates, competence, objective, family, size, mean alignment to the others."""
    m = len(models)
    mean_align = np.exp(-dist)[~np.eye(m, dtype=bool)].reshape(m, m - 1).mean(1) if m > 1 else np.full(m, np.nan)
    t = pd.DataFrame({"model": models, "x": xy[:, 0], "y": xy[:, 1], "mean_alignment": mean_align})
    t["frac_solved"] = t["model"].map(frac)
    meta = meta.drop_duplicates("model").set_index("model") if "model" in meta.columns else pd.DataFrame()
    for col in ("objective", "family", "n_params"):
        t[col] = t["model"].map(meta[col]) if col in meta.columns else np.nan
    t["objective"] = t["objective"].fillna(t["family"]).fillna("unknown")
    return t


def _umap_scatter(ax: plt.Axes, t: pd.DataFrame, label_max: int) -> None:
    """Scatter coloured by frac_solved with one marker per objective, a colour bar and (few) labels."""
    cmap = plt.get_cmap(SEQUENTIAL)
    norm = plt.Normalize(0, 1)
    for i, (obj, g) in enumerate(t.groupby("objective", sort=True)):
        c = [cmap(norm(v)) if np.isfinite(v) else (0.7, 0.7, 0.7, 1) for v in g["frac_solved"]]
        ax.scatter(g["x"], g["y"], c=c, marker=MARKERS[i % len(MARKERS)], s=70, edgecolor="0.15",
                   linewidth=0.6, label=str(obj), zorder=3)
    cb = plt.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    cb.set_label("fraction of probe tasks solved")
    n_obj = t["objective"].nunique()
    leg = ax.legend(title="objective", loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(n_obj, 5),
                    fontsize=8, title_fontsize=9, markerscale=0.9, frameon=False)
    for h in leg.legend_handles:
        h.set_facecolor("0.6")
    ax.margins(x=0.15, y=0.1)
    if len(t) <= label_max:
        place_labels(ax, t["x"].to_numpy(), t["y"].to_numpy(), [str(m) for m in t["model"]])


def _umap_reading(t: pd.DataFrame) -> str:
    """Two lines: competence vs mean alignment, and the most central model."""
    rho, p = spearman(t["frac_solved"], t["mean_alignment"])
    line1 = (f"Across {len(t)} models, Spearman rho(fraction solved, mean alignment to the others) = {fmt_r(rho)} "
             f"(p = {fmt_p(p)}).")
    top = t.sort_values("mean_alignment", ascending=False).iloc[0]
    line2 = (f"Most central model: {top['model']} (mean alignment {top['mean_alignment']:.3f}, "
             f"solves {top['frac_solved']:.0%} of tasks).")
    return f"{line1}\n{line2}"


def fig_layer_heatmap(
    matrix: np.ndarray,
    layer_names_x: list[str],
    layer_names_y: list[str],
    model_x: str,
    model_y: str,
    metric: str,
    out: str | os.PathLike,
    *,
    context: dict | None = None,
) -> FigureResult:
    """Alignment of every layer pair of two models, with the best pair boxed and starred."""
    mat = np.asarray(matrix, dtype=float)
    if mat.shape != (len(layer_names_x), len(layer_names_y)):
        raise PrhError(f"layer matrix has shape {mat.shape}, layer names give "
                       f"({len(layer_names_x)}, {len(layer_names_y)})")
    if not np.isfinite(mat).any():
        raise PrhError(f"layer matrix of {model_x} x {model_y} has no finite score")
    _, (bi, bj) = best_pair(mat)
    set_style()
    h, w = mat.shape
    fig, ax = plt.subplots(figsize=(min(2.5 + 0.42 * w, 16), min(2 + 0.36 * h, 14)))
    im = ax.imshow(mat, cmap=SEQUENTIAL, aspect="auto", interpolation="nearest")
    plt.colorbar(im, ax=ax, pad=0.02).set_label(metric)
    if h * w <= 225:
        for i in range(h):
            for j in range(w):
                if np.isfinite(mat[i, j]):
                    v = (mat[i, j] - np.nanmin(mat)) / (np.ptp(mat[np.isfinite(mat)]) or 1)
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                            color="black" if v > 0.6 else "white")
    ax.add_patch(Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", lw=2.2, zorder=5))
    ax.plot(bj, bi, marker="*", color="red", ms=12, mec="white", zorder=6)
    _layer_ticks(ax, layer_names_x, layer_names_y)
    ax.set_ylabel(f"{model_x} layer")
    ax.set_xlabel(f"{model_y} layer")
    ax.grid(False)
    title = f"Layer-pair alignment: {model_x} vs {model_y}"
    ax.set_title(title, fontsize=11)
    ctx = context_text(None, metric, context)
    caption = (f"{metric} for every layer pair of {model_x} (rows) and {model_y} (columns); the star marks the "
               f"best pair, the model-level score. {ctx}.")
    table = pd.DataFrame([{"layer_x": layer_names_x[i], "layer_y": layer_names_y[j], "i": i, "j": j,
                           "score": mat[i, j]} for i in range(h) for j in range(w)])
    reading = (f"Best pair: {layer_names_x[bi]} x {layer_names_y[bj]} = {mat[bi, bj]:.3f} "
               f"(relative depth {bi / max(h - 1, 1):.2f} x {bj / max(w - 1, 1):.2f}).\n"
               f"Last entries ({layer_names_x[-1]} x {layer_names_y[-1]}): {mat[-1, -1]:.3f}; median over all "
               f"{h * w} pairs: {np.nanmedian(mat):.3f}.")
    return save(fig, table, out, title, caption, reading)


def _layer_ticks(ax: plt.Axes, names_x: list[str], names_y: list[str]) -> None:
    """Tick labels for layers, thinned to at most ~25 per axis."""
    for setter, names in ((ax.set_yticks, names_x), (ax.set_xticks, names_y)):
        step = max(1, int(np.ceil(len(names) / 25)))
        idx = list(range(0, len(names), step))
        if idx[-1] != len(names) - 1:
            idx.append(len(names) - 1)
        setter(idx, [names[i] for i in idx], fontsize=7)
    plt.setp(ax.get_xticklabels(), rotation=60, ha="right")
