"""Shared figure plumbing: one seaborn style, table checks, caption context, atomic PNG/SVG/CSV/JSON output."""

from __future__ import annotations

import itertools
import math

import json
import os
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402
from scipy import stats  # noqa: E402

from prh.errors import PrhError  # noqa: E402
from prh.io import atomic_path, spreadsheet_safe  # noqa: E402

DPI = 150
HEADLINE_METRIC = "mutual_knn"
SEQUENTIAL = "viridis"  # perceptually uniform and colour-blind safe


@dataclass(frozen=True)
class FigureResult:
    """Paths of one rendered figure, its caption and its two-line reading of the data."""

    png: Path
    svg: Path
    csv: Path
    title: str
    caption: str
    reading: str

    def __str__(self) -> str:
        """The reading, so a FigureResult prints as its two lines."""
        return self.reading


PLAIN_TEXT = {"text.parse_math": False}  # labels hold names and free text: a '$' is a dollar sign, never mathtext
plt.rcParams.update(PLAIN_TEXT)


def set_style() -> None:
    """The one prh figure style: seaborn paper context, white grid, colour-blind palette, readable fonts, every
    label plain text (no mathtext: a model family or claim with '$' in it is drawn as written)."""
    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.25)
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "svg.fonttype": "none", "axes.titleweight": "bold",
                         **PLAIN_TEXT})  # fmt: skip


def stem(out: str | os.PathLike) -> Path:
    """Output path without a figure suffix: 'fig/x.png' and 'fig/x' both give 'fig/x'."""
    p = Path(out)
    return p.with_suffix("") if p.suffix.lower() in {".png", ".svg", ".csv", ".json", ".pdf"} else p


def require(df: pd.DataFrame, columns: list[str], table: str) -> None:
    """Raise PrhError naming the table and the missing columns."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PrhError(f"{table} table lacks column(s) {missing} (has {list(df.columns)})")


def params_label(metric: str, params: Any) -> str:
    """'mutual_knn(k=10)' from a metric name and its params (json string or dict)."""
    p = _params_dict(params)
    inner = ", ".join(f"{k}={v}" for k, v in sorted(p.items()))
    return f"{metric}({inner})" if inner else str(metric)


def _params_dict(params: Any) -> dict:
    """Params column value (json string, dict, NaN) as a dict."""
    if isinstance(params, dict):
        return params
    if params is None or (isinstance(params, float) and np.isnan(params)) or params == "":
        return {}
    try:
        return dict(json.loads(params))
    except (TypeError, ValueError) as e:
        raise PrhError(f"alignment table params {params!r} is not a JSON object") from e


def select_metric(align: pd.DataFrame, metric: str | None, table: str) -> tuple[pd.DataFrame, str]:
    """Rows of one (metric, params) setting: the given one, else the headline mutual_knn, else the first."""
    require(align, ["metric", "score"], table)
    df = align.copy()
    if "params" not in df.columns:
        df["params"] = "{}"
    df["setting"] = [params_label(m, p) for m, p in zip(df["metric"], df["params"])]
    settings = list(dict.fromkeys(df["setting"]))
    if metric is None:
        heads = [s for s in settings if s.split("(")[0] == HEADLINE_METRIC]
        chosen = (heads or settings)[0] if settings else ""
    else:
        hits = [s for s in settings if s == metric or s.split("(")[0] == metric]
        if not hits:
            raise PrhError(f"{table} table has no rows for metric {metric!r} (has {settings})")
        chosen = hits[0]
    return df[df["setting"] == chosen].reset_index(drop=True), chosen


def pair_matrix(df: pd.DataFrame, models: list[str]) -> np.ndarray:
    """Symmetric (m, m) score matrix; (x, y) and (y, x) rows are averaged, missing pairs NaN, diagonal NaN."""
    idx = {m: i for i, m in enumerate(models)}
    total = np.zeros((len(models), len(models)))
    count = np.zeros_like(total)
    for x, y, s in zip(df["model_x"], df["model_y"], df["score"]):
        if x == y or x not in idx or y not in idx or not np.isfinite(s):
            continue
        for a, b in ((idx[x], idx[y]), (idx[y], idx[x])):
            total[a, b] += s
            count[a, b] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def unordered_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per unordered model pair (self pairs dropped): a, b, score (mean over orders), chance."""
    d = df[df["model_x"] != df["model_y"]].copy()
    d["a"] = np.where(d["model_x"] < d["model_y"], d["model_x"], d["model_y"])
    d["b"] = np.where(d["model_x"] < d["model_y"], d["model_y"], d["model_x"])
    if "chance" not in d.columns:
        d["chance"] = np.nan
    return d.groupby(["a", "b"], as_index=False)[["score", "chance"]].mean()


def chance_level(df: pd.DataFrame) -> float:
    """Mean calibrated chance level of the rows: `chance`, else `null_mean`, else NaN."""
    for col in ("chance", "null_mean"):
        if col in df.columns and df[col].notna().any():
            return float(df[col].mean())
    return float("nan")


def context_text(df: pd.DataFrame | None, setting: str | None, context: dict | None) -> str:
    """'n = 1000, metric = mutual_knn(k=10), dataset = places' from table columns, overridden by `context`."""
    ctx: dict[str, Any] = {}
    if df is not None:
        for col in ("n", "dataset"):
            if col in df.columns and df[col].notna().any():
                vals = sorted({str(v) for v in df[col].dropna()})
                ctx[col] = vals[0] if len(vals) == 1 else ", ".join(vals[:4]) + (" ..." if len(vals) > 4 else "")
    if setting:
        ctx["metric"] = setting
    ctx.update(context or {})
    return ", ".join(f"{k} = {v}" for k, v in ctx.items())


def fmt_r(r: float, spec: str = ".3f") -> str:
    """A correlation for a reading: formatted, or why it is undefined (never 'nan')."""
    return format(r, spec) if np.isfinite(r) else "undefined (too few points or a constant input)"


def fmt_p(p: float) -> str:
    """p-value for a reading line."""
    return "n/a" if not np.isfinite(p) else (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}")


def _correlation(test: Callable[..., Any], x: Any, y: Any) -> tuple[float, float]:
    """(statistic, p) of a scipy correlation test over finite pairs; NaN when fewer than 3 pairs or a constant input."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan"), float("nan")
    r = test(x[ok], y[ok])
    return float(r.statistic), float(r.pvalue)


EXACT_SPEARMAN_MAX_N = 9  # up to 9! = 362,880 pairings the p-value is exact; beyond, scipy's t approximation


@dataclass(frozen=True)
class _Test:
    statistic: float
    pvalue: float


def _spearman_test(x: np.ndarray, y: np.ndarray) -> _Test:
    """scipy's Spearman rho, with an exact two-sided p-value over all n! pairings of the ranks for small n, where the
    t approximation is wrong (it gives p ~ 1e-24 for rho = 1 at n = 5, where the exact p is 2/120)."""
    r = stats.spearmanr(x, y)
    if len(x) > EXACT_SPEARMAN_MAX_N:
        untied = len(np.unique(x)) == len(x) and len(np.unique(y)) == len(y)
        if untied and abs(float(r.statistic)) > 1 - 1e-12:  # t is infinite there: 2 of the n! pairings reach |rho| = 1
            return _Test(float(r.statistic), 2 / math.factorial(len(x)))
        return _Test(float(r.statistic), float(r.pvalue))
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    perms = np.array(list(itertools.permutations(range(len(ry)))), dtype=np.int8)
    null = (ry[perms] @ rx) / np.sqrt((rx @ rx) * (ry @ ry))  # rho of every pairing (ties: average ranks)
    p = float(np.mean(np.abs(null) >= abs(float(r.statistic)) - 1e-12))
    return _Test(float(r.statistic), p)


def spearman(x: Any, y: Any) -> tuple[float, float]:
    """Spearman (rho, p) over finite pairs; the p-value is exact (all pairings) for n <= EXACT_SPEARMAN_MAX_N."""
    return _correlation(_spearman_test, x, y)


def pearson(x: Any, y: Any) -> tuple[float, float]:
    """Pearson (r, p) over finite pairs."""
    return _correlation(stats.pearsonr, x, y)


def spread(xs: Any, min_gap: float) -> np.ndarray:
    """Label positions near xs (same order) with neighbours at least min_gap apart, moved as little as possible."""
    xs = np.asarray(xs, dtype=float)
    order = np.argsort(xs, kind="stable")
    pos = xs[order].copy()
    for _ in range(200):
        gaps = np.diff(pos)
        bad = gaps < min_gap - 1e-12
        if not bad.any():
            break
        for i in np.flatnonzero(bad):
            push = (min_gap - (pos[i + 1] - pos[i])) / 2
            pos[i] -= push
            pos[i + 1] += push
    out = np.empty_like(pos)
    out[order] = pos
    return out


_OFFSETS = [(5, 4, "left", "bottom"), (-5, 4, "right", "bottom"), (5, -4, "left", "top"),
            (-5, -4, "right", "top"), (0, 9, "center", "bottom"), (0, -9, "center", "top")]


def _overlap(a: Any, boxes: list[Any]) -> float:
    """Total overlap area (pixels^2) of bbox a with boxes."""
    total = 0.0
    for b in boxes:
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        total += max(w, 0) * max(h, 0)
    return total


def place_labels(ax: plt.Axes, xs: Any, ys: Any, names: list[str], fontsize: float = 7,
                 radius: Any = 4.0) -> None:
    """Annotate points (marker radius in points) with names, each at the offset overlapping labels/points least."""
    fig = ax.figure
    ax.autoscale_view()
    renderer = fig.canvas.get_renderer()
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    rad = np.broadcast_to(np.asarray(radius, dtype=float), (len(pts),))
    px = rad * fig.dpi / 72
    boxes = [Bbox.from_extents(x - r, y - r, x + r, y + r) for (x, y), r in zip(pts, px)]
    for x, y, name, r in zip(xs, ys, names, rad):
        best = None
        for dx, dy, ha, va in _OFFSETS:
            dx, dy = dx + np.sign(dx) * (r - 4) * 0.8, dy + np.sign(dy) * (r - 4) * 0.8
            t = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                            fontsize=fontsize, color="0.25", zorder=4)
            box = t.get_window_extent(renderer)
            inside = ax.get_window_extent(renderer)
            cost = _overlap(box, boxes) + 5 * (box.width * box.height - _overlap(box, [inside]))
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, t, box)
            else:
                t.remove()
            if cost == 0:
                break
        boxes.append(best[2])


def note(ax: plt.Axes, text: str) -> None:
    """Write a centred grey note in an axes that has nothing to plot."""
    wrapped = "\n".join(textwrap.fill(line, 38) for line in text.splitlines())
    ax.text(0.5, 0.5, wrapped, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    """Call write(tmp) for a temp file beside `path`, then rename it over `path`."""
    with atomic_path(path) as tmp:
        write(tmp)


def save(fig: plt.Figure, data: pd.DataFrame, out: str | os.PathLike, title: str, caption: str,
         reading: str, extra: dict[str, pd.DataFrame] | None = None) -> FigureResult:
    """Write PNG, SVG, the plotted numbers as CSV (+ `{stem}_{name}.csv` extras) and a JSON sidecar, atomically."""
    base = stem(out)
    res = FigureResult(base.with_suffix(".png"), base.with_suffix(".svg"), base.with_suffix(".csv"),
                       title, caption, reading)
    try:
        _atomic(res.png, lambda t: fig.savefig(t, format="png", dpi=DPI, bbox_inches="tight"))
        _atomic(res.svg, lambda t: fig.savefig(t, format="svg", bbox_inches="tight"))
    finally:
        plt.close(fig)
    _atomic(res.csv, lambda t: spreadsheet_safe(data).to_csv(t, index=False))
    for name, table in (extra or {}).items():
        _atomic(base.with_name(f"{base.name}_{name}.csv"), lambda t, tb=table: spreadsheet_safe(tb).to_csv(t, index=False))
    meta = {k: str(v) for k, v in asdict(res).items()}
    _atomic(base.with_suffix(".json"), lambda t: Path(t).write_text(json.dumps(meta, indent=1)))
    return res


def load_result(out: str | os.PathLike) -> FigureResult:
    """The FigureResult of a figure written earlier: title, caption and reading from its JSON sidecar; its files
    always the ones its stem names (never paths the sidecar claims, so the report embeds only the figure's own PNG)."""
    base = stem(out)
    side = base.with_suffix(".json")
    if not side.exists():
        raise PrhError(f"figure sidecar {side} does not exist; render the figure first")
    try:
        m = json.loads(side.read_text())
        text = [str(m[k]) for k in ("title", "caption", "reading")]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PrhError(f"figure sidecar {side} is unreadable ({type(e).__name__}); render the figure again") from None
    return FigureResult(base.with_suffix(".png"), base.with_suffix(".svg"), base.with_suffix(".csv"), *text)
