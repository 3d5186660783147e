"""The run report: one self-contained HTML file with every figure, its caption and reading, and the key tables.

Images are embedded as base64 PNG; the only script is a few lines that sort tables on a header click. The file is
written atomically (temp file + rename), so a reader never sees half a report.
"""

from __future__ import annotations

import base64
import html
import importlib.metadata
import os
import platform
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml

from prh.errors import PrhError
from prh.io import write_bytes_atomic
from prh.figures import FigureResult, load_result
from prh.figures._common import select_metric

VERSION_PACKAGES = ("prh", "numpy", "scipy", "pandas", "scikit-learn", "umap-learn", "seaborn", "matplotlib",
                    "zarr", "snakemake", "torch", "timm", "transformers")


@dataclass(frozen=True)
class Section:
    """One figure of the report: title, caption, two-line reading and the PNG to embed (None for text only)."""

    title: str
    caption: str
    reading: str
    image: Path | None = None

    @classmethod
    def from_figure(cls, figure: FigureResult | str | os.PathLike) -> "Section":
        """Section from a FigureResult, or from a figure's output stem via its JSON sidecar."""
        res = figure if isinstance(figure, FigureResult) else load_result(figure)
        return cls(res.title, res.caption, res.reading, Path(res.png))

    @property
    def anchor(self) -> str:
        """HTML id derived from the title."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


def collect_versions(packages: Iterable[str] = VERSION_PACKAGES) -> dict[str, str]:
    """Installed versions of the libraries a run depends on (from package metadata; nothing is imported)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text to path via a temp file in the same directory and os.replace."""
    write_bytes_atomic(path, text.encode("utf-8"))
    return Path(path)


def _esc(x: Any) -> str:
    """HTML-escaped string of a value."""
    return html.escape(str(x), quote=True)


def _num(x: Any, digits: int = 3) -> str:
    """Number formatted for a table cell ('' for NaN/None)."""
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{digits}f}"
    return _esc(x)


def _table(df: pd.DataFrame, table_id: str, cell_title: pd.DataFrame | None = None,
           cell_class: pd.DataFrame | None = None) -> str:
    """A sortable HTML table of df (index as the first column when named)."""
    idx_name = df.index.name
    head = ([f"<th>{_esc(idx_name)}</th>"] if idx_name else []) + [f"<th>{_esc(c)}</th>" for c in df.columns]
    rows = []
    for i, key in enumerate(df.index):
        cells = [f"<th scope=row>{_esc(key)}</th>"] if idx_name else []
        for j in range(df.shape[1]):
            v = df.iat[i, j]
            t = cell_title.iat[i, j] if cell_title is not None else ""
            c = cell_class.iat[i, j] if cell_class is not None else ""
            attrs = (f' title="{_esc(t)}"' if t else "") + (f' class="{_esc(c)}"' if c else "")
            cells.append(f"<td{attrs}>{_num(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="sortable" id="{_esc(table_id)}"><thead><tr>{"".join(head)}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _hover(r: pd.Series) -> str:
    """Hover text of one alignment cell: calibrated score, its tau, CI, p-value, chance, layers."""
    parts = []
    for col, label in (("calibrated", "calibrated"), ("tau", "tau"), ("chance", "chance"), ("p_value", "p")):
        if col in r and pd.notna(r[col]):
            parts.append(f"{label} {float(r[col]):.3f}")
    if "ci_low" in r and pd.notna(r.get("ci_low")):
        parts.append(f"95% CI [{float(r['ci_low']):.3f}, {float(r['ci_high']):.3f}]")
    if "layer_x" in r and pd.notna(r.get("layer_x")):
        parts.append(f"layers {r['layer_x']} x {r['layer_y']}")
    return "; ".join(parts)


def best_pairs(align: pd.DataFrame, metric: str | None = None) -> tuple[pd.DataFrame, str]:
    """One row per (model_x, model_y) and dataset: the highest score of the chosen metric setting, with its
    calibration (a sample-size sweep: at its largest n)."""
    df, setting = select_metric(align, metric, "alignment")
    if "n" in df.columns and df["n"].nunique() > 1:
        df, setting = df[df["n"] == df["n"].max()], f"{setting} at n = {int(df['n'].max())}"
    if not {"model_x", "model_y"} <= set(df.columns):
        raise PrhError("alignment table lacks columns model_x / model_y")
    keys = ["model_x", "model_y"] + (["dataset"] if "dataset" in df.columns else [])
    best = df.sort_values("score", ascending=False).drop_duplicates(keys)
    return best.sort_values(keys).reset_index(drop=True), setting


def _square(best: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(score matrix, hover matrix); mirrored over all models when both sides share models (vision-vision)."""
    cells = best.assign(h=best.apply(_hover, axis=1))[["model_x", "model_y", "score", "h"]]
    rows, cols = sorted(set(cells["model_x"])), sorted(set(cells["model_y"]))
    if set(rows) & set(cols):
        mirror = cells.rename(columns={"model_x": "model_y", "model_y": "model_x"})
        cells = pd.concat([cells, mirror]).drop_duplicates(["model_x", "model_y"])
        rows = cols = sorted(set(rows) | set(cols))
    mat = cells.pivot(index="model_x", columns="model_y", values="score").reindex(index=rows, columns=cols)
    hover = cells.pivot(index="model_x", columns="model_y", values="h").reindex(index=rows, columns=cols)
    return mat, hover.fillna("")


def _datasets(align: pd.DataFrame) -> list[str | None]:
    """The table's datasets in the order they first appear, or [None] when it has one (or no dataset column)."""
    names = list(dict.fromkeys(align["dataset"].astype(str))) if "dataset" in align.columns else []
    return names if len(names) > 1 else [None]


def alignment_html(align: pd.DataFrame, name: str, metric: str | None = None) -> str:
    """Model x model matrix of best scores (hover: calibration), one per dataset when the experiment has several
    (caption densities), plus a sortable long table with CIs."""
    best, setting = best_pairs(align, metric)
    tid = re.sub(r"[^a-z0-9]+", "-", name.lower())
    datasets = _datasets(align)
    matrices = []
    for ds in datasets:
        mat, hover = _square(best if ds is None else best[best["dataset"].astype(str) == ds])
        mat.index.name = "model"
        mid = f"mat-{tid}" if ds is None else f"mat-{tid}-{re.sub(r'[^a-z0-9]+', '-', ds.lower())}"
        head = "" if ds is None else f"<h4>dataset {_esc(ds)}</h4>"
        matrices.append(f"{head}<div class=scroll>{_table(mat, mid, cell_title=hover)}</div>")
    cols = [c for c in ("model_x", "model_y", "dataset", "score", "calibrated", "tau", "p_value", "effect",
                        "null_mean", "chance", "ci_low", "ci_high", "layer_x", "layer_y", "n") if c in best.columns
            and (c != "dataset" or datasets != [None])]
    long = best[cols].set_index("model_x")
    per = f" One matrix per dataset ({len(datasets)})." if datasets != [None] else ""
    return (f"<h3>{_esc(name)}: {_esc(setting)}</h3>"
            f"<p class=note>Best score over layer pairs; hover a cell for the calibrated score, 95% CI, "
            f"permutation p-value and chance. The null is that of the maximum over all layer pairs (every layer of "
            f"model_y permuted alike): calibrated = clamp((score - tau) / (1 - tau), 0, 1), tau its 95% point, so 0 "
            f"means not distinguishable from shuffled pairs; effect = (score - null mean) / (1 - null mean); chance "
            f"is that of one layer pair.{per} Click a header to sort.</p>"
            f"{''.join(matrices)}"
            f"<details><summary>All {len(best)} pairs with calibration</summary>"
            f"<div class=scroll>{_table(long, f'pairs-{tid}')}</div></details>")


def solved_html(solved: pd.DataFrame) -> str:
    """Model x task accuracy matrix, solved cells highlighted, with the tasks-solved count per model."""
    need = {"model", "task", "accuracy", "solved"}
    if not need <= set(solved.columns):
        raise PrhError(f"solved table lacks column(s) {sorted(need - set(solved.columns))}")
    acc = solved.pivot(index="model", columns="task", values="accuracy")
    ok = solved.pivot(index="model", columns="task", values="solved").reindex_like(acc)
    cls = ok.map(lambda v: "solved" if v is True or v == 1 else "")
    tips = ok.map(lambda v: "solved" if v is True or v == 1 else "not solved")
    acc["n_solved"] = ok.fillna(False).astype(bool).sum(axis=1)
    acc["frac_solved"] = acc["n_solved"] / ok.notna().sum(axis=1)
    cls[["n_solved", "frac_solved"]] = ""
    tips[["n_solved", "frac_solved"]] = ""
    acc = acc.sort_values("frac_solved", ascending=False)
    return (f"<p class=note>Probe test accuracy; green = solved (at least the threshold fraction of the best "
            f"model's accuracy on that task).</p><div class=scroll>"
            f"{_table(acc, 'solved', cell_title=tips.reindex(acc.index), cell_class=cls.reindex(acc.index))}</div>")


def _image_tag(path: Path | None, alt: str) -> str:
    """<img> with the PNG embedded as base64 (a note when the file is missing)."""
    if path is None:
        return ""
    p = Path(path)
    if not p.exists():
        raise PrhError(f"report figure {p} does not exist")
    data = base64.b64encode(p.read_bytes()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _section_html(s: Section) -> str:
    """One figure section."""
    reading = "<br>".join(_esc(line) for line in s.reading.splitlines())
    return (f'<section id="{s.anchor}"><h2>{_esc(s.title)}</h2>{_image_tag(s.image, s.title)}'
            f"<p class=caption>{_esc(s.caption)}</p><p class=reading><b>Reading.</b> {reading}</p></section>")


def _store_html(store_keys: list[dict]) -> str:
    """Store keys table: model, dataset, key[:12] (full key on hover)."""
    rows = "".join(
        f"<tr><td>{_esc(k.get('model', ''))}</td><td>{_esc(k.get('dataset', ''))}</td>"
        f"<td title=\"{_esc(k.get('key', ''))}\"><code>{_esc(str(k.get('key', ''))[:12])}</code></td></tr>"
        for k in store_keys
    )
    return (f'<table class="sortable" id="store"><thead><tr><th>model</th><th>dataset</th><th>key</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _data_html(config: dict, hub_commits: dict[str, str | None]) -> str:
    """Datasets table: name, source, hub repository at the commit read, and how the rows were drawn."""
    from prh.data.hub import sampling_statement

    rows = []
    for name, spec in config.get("datasets", {}).items():
        hub = spec.get("id") if spec.get("source") == "hf" else None
        commit = hub_commits.get(f"datasets.{name}")
        where = f"{hub}@{(commit or 'not in the hub cache')[:12]}" if hub else spec.get("path", "")
        how = sampling_statement(spec) if spec.get("source") == "hf" else ", ".join(
            f"{k} {spec[k]}" for k in ("split", "n", "seed", "density") if k in spec)  # fmt: skip
        rows.append(f"<tr><td>{_esc(name)}</td><td>{_esc(spec.get('source'))}</td><td>{_esc(where)}</td>"
                    f"<td>{_esc(how)}</td></tr>")  # fmt: skip
    return ('<table class="sortable" id="datasets"><thead><tr><th>dataset</th><th>source</th><th>hub commit</th>'
            f"<th>rows</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _hub_models_html(config: dict, hub_commits: dict[str, str | None]) -> str:
    """Hub models table: model, repository, the revision asked for and the commit read (empty without hub models)."""
    rows = [f"<tr><td>{_esc(m)}</td><td>{_esc(s.get('id'))}</td><td>{_esc(s.get('revision') or 'main')}</td>"
            f"<td>{_esc(hub_commits.get(f'models.{m}') or 'not in the hub cache')}</td></tr>"
            for m, s in config.get("models", {}).items() if f"models.{m}" in hub_commits]  # fmt: skip
    if not rows:
        return ""
    return ('<h3>Hub models</h3><table class="sortable" id="hub-models"><thead><tr><th>model</th><th>id</th>'
            f"<th>revision</th><th>commit</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _versions_html(versions: dict) -> str:
    """Library versions table."""
    rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in versions.items())
    return f"<table><thead><tr><th>library</th><th>version</th></tr></thead><tbody>{rows}</tbody></table>"


CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:24px}
header p{margin:0;opacity:.85}
nav{padding:10px 32px;background:#e9eef3;font-size:14px;display:flex;flex-wrap:wrap;gap:4px 16px}
nav a{color:#1f3b57;text-decoration:none;white-space:nowrap}main{padding:8px 32px 48px;max-width:1300px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:14px 20px;margin:18px 0}
h2{margin:4px 0 10px;font-size:19px;color:#1f3b57}h3{font-size:16px;margin:14px 0 6px}
img{max-width:100%;height:auto;display:block;margin:6px auto}.caption{color:#444;font-size:14px}
.reading{background:#f1f6fb;border-left:4px solid #0072b2;padding:8px 12px;font-size:14px}
.note{color:#666;font-size:13px}.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f0f0f0;position:sticky;top:0}th[scope=row],td:first-child{text-align:left}
table.sortable thead th{cursor:pointer}table.sortable thead th:hover{background:#dde7f0}
td.solved{background:#cfe8d5}pre{background:#f6f6f6;padding:10px;overflow-x:auto;font-size:12.5px}
details summary{cursor:pointer;color:#1f3b57;margin:6px 0}
"""

JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('thead th').forEach(function(th,i){th.addEventListener('click',function(){
    var b=t.tBodies[0],rows=Array.from(b.rows),asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
    function v(r){var s=r.cells[i].textContent.trim(),n=parseFloat(s);return s===''?null:(isNaN(n)?s:n);}
    rows.sort(function(a,c){var x=v(a),y=v(c);if(x===null)return 1;if(y===null)return -1;
      var o=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));return asc?o:-o;});
    rows.forEach(function(r){b.appendChild(r);});});});});
"""


def build_report(
    sections: list[Section],
    config: dict,
    versions: dict,
    store_keys: list[dict],
    out_html: str | os.PathLike,
    *,
    alignment: dict[str, pd.DataFrame] | pd.DataFrame | None = None,
    solved: pd.DataFrame | None = None,
    title: str = "prh: representational alignment report",
    hub_commits: dict[str, str | None] | None = None,
) -> Path:
    """Write the self-contained HTML report (figures, alignment matrices, probe matrix, config, versions, keys)."""
    tables = {"alignment": alignment} if isinstance(alignment, pd.DataFrame) else dict(alignment or {})
    parts = [_section_html(s) for s in sections]
    nav = [(s.anchor, s.title) for s in sections]
    if tables:
        parts.append('<section id="alignment-matrix"><h2>Alignment matrices</h2>'
                     + "".join(alignment_html(t, name) for name, t in tables.items()) + "</section>")
        nav.append(("alignment-matrix", "Alignment matrices"))
    if solved is not None:
        parts.append(f'<section id="probes"><h2>Probe tasks solved</h2>{solved_html(solved)}</section>')
        nav.append(("probes", "Probes"))
    parts.append('<section id="config"><h2>Run configuration</h2>'
                 f"<pre>{_esc(yaml.safe_dump(config, sort_keys=False, default_flow_style=False))}</pre></section>")
    hub_commits = hub_commits or {}
    parts.append(f'<section id="provenance"><h2>Provenance</h2><h3>Datasets</h3>{_data_html(config, hub_commits)}'
                 f"{_hub_models_html(config, hub_commits)}<h3>Library versions</h3>{_versions_html(versions)}"
                 f"<h3>Feature store keys ({len(store_keys)})</h3>{_store_html(store_keys)}</section>")
    nav += [("config", "Config"), ("provenance", "Provenance")]
    nav_html = "".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t in nav)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
           f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
           f"<header><h1>{_esc(title)}</h1><p>{len(sections)} figures; generated {stamp}</p></header>"
           f"<nav>{nav_html}</nav>"
           f"<main>{''.join(parts)}</main><script>{JS}</script></body></html>\n")
    return write_atomic(out_html, doc)
