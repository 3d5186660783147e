"""The paper's Sec. 3 hypotheses tested on models prh trains itself: alignment against one varied training factor
(training step, parameter count, number of tasks, weight decay), raw and calibrated, with a Spearman test each.

One figure per ``report.hypotheses`` entry. Each of its alignment experiments is a panel: x = the factor's value of
the model, y = its calibrated score (filled) and raw max-over-layer-pairs score (open), averaged over the
experiment's references. When the references are themselves models of the hypothesis (independently seeded runs),
only pairs of distinct models with the same factor value are used: alignment between runs that differ only in
seed. Models whose objective is "random" form a separate control line (the scale confound); where a trained and a
random-init model share a shape (depth, width), their difference, what training adds, is tested against the factor
too.
"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from prh.errors import PrhError
from prh.figures._common import FigureResult, context_text, fmt_p, fmt_r, note, require, save, set_style, spearman

FACTORS = {  # factor -> (axis label, log axis)
    "step": ("training step", True),
    "n_params": ("parameters", True),
    "tasks": ("number of training tasks", True),
    "weight_decay": ("weight decay", True),
}
VALUES = ["score", "calibrated"]


def factor_values(factor: str, values: dict[str, float], model_meta: pd.DataFrame) -> dict[str, float]:
    """Each model's value of the factor: from the config (``values``), or n_params from the model table."""
    if factor != "n_params":
        return {m: float(v) for m, v in values.items()}
    require(model_meta, ["model", "n_params"], "models")
    known = model_meta.set_index("model")["n_params"]
    return {m: float(known[m]) for m in values if m in known.index}


def hypothesis_table(align: pd.DataFrame, experiment: str, values: dict[str, float], trained: dict[str, bool]) -> pd.DataFrame:
    """Per x model of one experiment: its factor value, trained or control, and its raw and calibrated scores
    averaged over references (over same-value seed pairs when the references are hypothesis models)."""
    require(align, ["model_x", "model_y", "score", "calibrated"], experiment)
    df = align[align["model_x"].isin(list(values))].copy()
    if df.empty:
        raise PrhError(f"report.hypotheses: experiment {experiment!r} has none of the hypothesis models as x")
    df["value"] = df["model_x"].map(values)
    among = df["model_y"].isin(list(values))
    if among.all():  # references are the hypothesis' own models: runs of equal value, different seeds
        df = df[(df["model_y"] != df["model_x"]) & (df["model_y"].map(values) == df["value"])]
        if df.empty:
            raise PrhError(f"report.hypotheses: experiment {experiment!r} has no two models with the same value")
        kind = "between seeds"
    else:
        df = df[~among]
        refs = sorted(df["model_y"].unique())
        kind = "to " + (", ".join(refs) if len(refs) <= 2 else f"{len(refs)} references (mean)")
    out = df.groupby(["model_x", "value"], as_index=False)[VALUES].mean()
    out["trained"] = out["model_x"].map(trained).fillna(True).astype(bool)
    out["experiment"], out["references"] = experiment, kind
    return out.sort_values(["trained", "value", "model_x"], ascending=[False, True, True], ignore_index=True)


GAIN = "trained - random init"  # the group of per-shape differences


def training_gain(table: pd.DataFrame, shapes: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """Per experiment and model shape (depth, width) that has both a trained and a random-init model: the trained
    model's factor value and the difference of their scores (what training adds, net of the scale confound)."""
    df = table.assign(shape=table["model_x"].map(lambda m: tuple(shapes[m]) if m in shapes else None)).dropna(subset=["shape"])
    keys = ["experiment", "shape"]
    trained, random = df[df["trained"]].set_index(keys), df[~df["trained"]].set_index(keys)
    both = trained.join(random[VALUES], rsuffix="_random", how="inner")
    out = pd.DataFrame({"value": both["value"], **{c: both[c] - both[f"{c}_random"] for c in VALUES}}).reset_index()
    return out.assign(trained=True, group=GAIN)


def factor_tests(table: pd.DataFrame, gain: pd.DataFrame | None = None) -> pd.DataFrame:
    """Spearman rho (p) of the factor against the raw and calibrated scores, per experiment and model group, and
    against the per-shape training gain when there is one."""
    groups = [((exp, "trained" if tr else "random init"), g) for (exp, tr), g in table.groupby(["experiment", "trained"], sort=False)]
    if gain is not None and not gain.empty:
        groups += [((exp, GAIN), g) for exp, g in gain.groupby("experiment", sort=False)]
    rows = []
    for (exp, group), g in groups:
        row = {"experiment": exp, "group": group, "n": len(g)}
        for col in VALUES:
            row[f"rho_{col}"], row[f"p_{col}"] = spearman(g["value"], g[col])
        rows.append(row)
    return pd.DataFrame(rows)


def fig_hypothesis(
    aligns: dict[str, pd.DataFrame], name: str, factor: str, values: dict[str, float], trained: dict[str, bool],
    out: str | os.PathLike, model_meta: pd.DataFrame | None = None, accuracy: pd.DataFrame | None = None,
    claim: str = "", shapes: dict[str, tuple[int, int]] | None = None,
) -> FigureResult:
    """One hypothesis: a panel per experiment (alignment vs the factor), plus probe accuracy vs the factor when the
    models were probed. ``aligns``: experiment name -> its alignment table (calibrated rows). ``shapes`` (depth,
    width per model) pair trained and random-init models of one shape: their difference is also tested."""
    if factor not in FACTORS:
        raise PrhError(f"report.hypotheses.{name}.vary: {factor!r} is not one of {sorted(FACTORS)}")
    vals = factor_values(factor, values, model_meta if model_meta is not None else pd.DataFrame())
    tables = [hypothesis_table(a[a["calibrated"].notna()] if "calibrated" in a else a, exp, vals, trained)
              for exp, a in aligns.items()]  # fmt: skip
    table = pd.concat(tables, ignore_index=True)
    gain = training_gain(table, shapes) if shapes else None
    tests = factor_tests(table, gain)
    probe = _probe_accuracy(accuracy, vals)
    set_style()
    panels = len(tables) + (probe is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.4 * panels, 3.8), squeeze=False)
    label, log = FACTORS[factor]
    for ax, t in zip(axes[0], tables):
        _panel(ax, t, tests, log)
        ax.set_xlabel(label)
    if probe is not None:
        ax = axes[0][-1]
        ax.plot(probe["value"], probe["accuracy"], "s-", color="0.25")
        rho, p = spearman(probe["value"], probe["accuracy"])
        ax.set_title(f"probe competence\nrho = {fmt_r(rho, '+.2f')} (p = {fmt_p(p)})", fontsize=8.5)
        ax.set_ylabel("mean linear-probe accuracy")
        ax.set_xlabel(label)
        _log_axis(ax, probe["value"], log)
    title = f"Hypothesis: {name}"
    fig.suptitle(title + (f" ({claim})" if claim else ""), fontsize=11, fontweight="bold")
    fig.tight_layout()
    caption = (f"{table['model_x'].nunique()} models varying {label}. Filled: calibrated score (the maximum over "
               f"layer pairs against its permutation null, 0 = not above the null's 95th percentile); open: the raw "
               f"maximum; each averaged over the panel's references. Titles: Spearman rho of the factor against the "
               f"calibrated score (p, n models). {context_text(table.assign(dataset=_datasets(aligns)), None, None)}.")
    data = table.merge(probe, on="value", how="left") if probe is not None else table
    return save(fig, data, out, title, caption, _reading(tests, probe), extra={"tests": tests})


def _datasets(aligns: dict[str, pd.DataFrame]) -> str:
    """The datasets of the panels, for the caption."""
    return ", ".join(sorted({str(d) for a in aligns.values() if "dataset" in a for d in a["dataset"].unique()}))


def _log_axis(ax: plt.Axes, x: pd.Series, log: bool) -> None:
    """Symmetric-log x axis (0 allowed) when the factor spans decades, with its values as ticks."""
    if log and (x > 0).any() and x[x > 0].max() / x[x > 0].min() >= 8:
        ax.set_xscale("symlog", linthresh=max(float(x[x > 0].min()), 1e-12))
    ticks = sorted(set(float(v) for v in x))
    if len(ticks) <= 9:
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks], fontsize=7.5)
        ax.minorticks_off()


def _panel(ax: plt.Axes, t: pd.DataFrame, tests: pd.DataFrame, log: bool) -> None:
    """Calibrated (filled) and raw (open) score against the factor, one line per group (trained, random init)."""
    exp = t["experiment"].iloc[0]
    lines = []
    for trained, colour in ((True, "tab:blue"), (False, "tab:orange")):
        g = t[t["trained"] == trained]
        if g.empty:
            continue
        m = g.groupby("value", as_index=False)[VALUES].mean()
        group = "trained" if trained else "random init"
        ax.plot(m["value"], m["calibrated"], "o-", color=colour, label=f"{group}, calibrated")
        ax.plot(m["value"], m["score"], "o--", color=colour, mfc="none", alpha=0.7, label=f"{group}, raw")
        r = tests[(tests["experiment"] == exp) & (tests["group"] == group)].iloc[0]
        lines.append(f"{group}: rho = {fmt_r(r['rho_calibrated'], '+.2f')} (p = {fmt_p(r['p_calibrated'])}, n = {r['n']})")
    g = tests[(tests["experiment"] == exp) & (tests["group"] == GAIN)]
    if not g.empty:
        lines.append(f"{GAIN}, same shape: rho = {g.iloc[0]['rho_calibrated']:+.2f} (p = {fmt_p(g.iloc[0]['p_calibrated'])})")
    if not lines:
        note(ax, f"{exp}: no models")
        return
    _log_axis(ax, t["value"], log)
    ax.set_ylabel(f"{exp}\nalignment {t['references'].iloc[0]}", fontsize=8)
    ax.set_title("\n".join(lines), fontsize=8)
    ax.legend(fontsize=6.5, frameon=True)


def _probe_accuracy(accuracy: pd.DataFrame | None, values: dict[str, float]) -> pd.DataFrame | None:
    """Mean probe accuracy per factor value of the probed hypothesis models, or None when none was probed."""
    if accuracy is None:
        return None
    require(accuracy, ["model", "accuracy"], "probes/accuracy")
    acc = accuracy[accuracy["model"].isin(list(values))]
    if acc.empty:
        return None
    per_model = acc.groupby("model", as_index=False)["accuracy"].mean()
    per_model["value"] = per_model["model"].map(values)
    return per_model.groupby("value", as_index=False)["accuracy"].mean()


def _reading(tests: pd.DataFrame, probe: pd.DataFrame | None) -> str:
    """Two lines: the calibrated trend per experiment (trained models), and the controls and raw trends."""
    main, rest = [], []
    for r in tests.itertuples():
        text = f"{r.experiment}: rho = {fmt_r(r.rho_calibrated, '+.2f')} (p = {fmt_p(r.p_calibrated)}, n = {r.n})"
        (main if r.group == "trained" else rest).append(text if r.group == "trained" else f"{text} for {r.group}")
    raw = "; ".join(f"{r.experiment} ({r.group}) {fmt_r(r.rho_score, '+.2f')}" for r in tests.itertuples())
    line2 = (f"Random-init controls and per-shape differences: {'; '.join(rest)}. " if rest else "") + f"Raw-score rho: {raw}."
    if probe is not None and len(probe) >= 3:
        rho, p = spearman(probe["value"], probe["accuracy"])
        line2 += f" Probe accuracy: rho = {fmt_r(rho, '+.2f')} (p = {fmt_p(p)})."
    return f"Calibrated alignment vs the factor: {'; '.join(main) or 'no trained models'}.\n{line2}"
