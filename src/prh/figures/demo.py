"""Synthetic but realistic tables in prh's formats, to render every figure and the report without features.

Scores follow the paper's shape (alignment grows with competence and language score, on top of the chance
level k / (n - 1)) so figures look like real runs; the numbers mean nothing. Used by tests and `render_demo`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from prh.figures._common import FigureResult
from prh.metrics.registry import RECORDS

METRIC_SETTINGS: list[tuple[str, dict]] = [(m.name, m.defaults()) for m in RECORDS]  # every metric at its defaults
OBJECTIVES = ("classification", "mae", "dino", "clip", "clip_ft")
WIDTHS = {"tiny": 192, "small": 384, "base": 768}


def _row(x: str, y: str, dataset: str, metric: str, params: dict, n: int, score: float, chance: float,
         rng: np.random.Generator) -> dict:
    """One alignment row with a plausible null, CI and calibration."""
    null_std = 0.004 + 0.002 * rng.random()
    se = 0.01 + 0.01 * rng.random()
    null_mean = chance + 0.01 + rng.normal(0, 0.001)  # the null of a max over layer pairs sits above one pair's chance
    tau = null_mean + 1.65 * null_std
    return {"model_x": x, "model_y": y, "dataset": dataset, "metric": metric, "params": json.dumps(params), "n": n,
            "score": score, "layer_x": int(rng.integers(0, 12)), "layer_y": int(rng.integers(0, 12)),
            "chance": chance, "null_mean": null_mean, "null_std": null_std, "tau": tau,
            "p_value": 1 / 201 if score > null_mean + 4 * null_std else 0.3,
            "calibrated": float(np.clip((score - tau) / (1 - tau), 0, 1)), "effect": (score - null_mean) / (1 - null_mean),
            "ci_low": score - 2 * se, "ci_high": score + 2 * se}


def model_meta(n_vision: int = 15, seed: int = 0) -> pd.DataFrame:
    """Vision models over objectives x widths, and six language models."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_vision):
        obj, (wname, width) = OBJECTIVES[i % 5], list(WIDTHS.items())[(i // 5) % 3]
        rows.append({"model": f"vit_{wname}_{obj}", "modality": "vision", "family": "vit", "objective": obj,
                     "width": width, "steps": int(rng.integers(1, 5)) * 1000, "n_params": width**2 * 12 * 12})
    for name, n_params in [("bloomz-560m", 5.6e8), ("bloomz-1b7", 1.7e9), ("bloomz-7b1", 7.1e9),
                           ("open_llama-3b", 3e9), ("open_llama-7b", 7e9), ("llama-13b", 1.3e10)]:
        rows.append({"model": name, "modality": "language", "family": name.split("-")[0], "objective": "causal_lm",
                     "width": np.nan, "steps": np.nan, "n_params": n_params})
    return pd.DataFrame(rows)


def _quality(meta: pd.DataFrame) -> dict[str, float]:
    """Latent competence in [0.1, 1] per vision model (larger and CLIP/DINO models are better)."""
    bonus = {"classification": 0.2, "mae": 0.0, "dino": 0.35, "clip": 0.4, "clip_ft": 0.45}
    v = meta[meta["modality"] == "vision"]
    return {m: float(np.clip(0.15 + bonus[o] + 0.5 * (w - 192) / 576, 0.1, 1.0))
            for m, o, w in zip(v["model"], v["objective"], v["width"])}


def tasks_solved_table(meta: pd.DataFrame, n_tasks: int = 10, seed: int = 0) -> pd.DataFrame:
    """Competence table (model, n_solved, n_tasks, frac_solved) driven by latent quality."""
    rng = np.random.default_rng(seed)
    q = _quality(meta)
    n = {m: int(np.clip(round(v * n_tasks + rng.normal(0, 1)), 0, n_tasks)) for m, v in q.items()}
    return pd.DataFrame({"model": list(n), "n_solved": list(n.values()), "n_tasks": n_tasks,
                         "frac_solved": [v / n_tasks for v in n.values()]})


def align_vv(meta: pd.DataFrame, n: int = 1000, seed: int = 0, metrics: bool = False) -> pd.DataFrame:
    """Vision-vision alignment over unordered pairs (all eight metric settings when `metrics`)."""
    rng = np.random.default_rng(seed)
    q = _quality(meta)
    models = sorted(q)
    rows = []
    for i, x in enumerate(models):
        for y in models[i + 1:]:
            base = q[x] * q[y]
            for m_i, (metric, params) in enumerate(METRIC_SETTINGS if metrics else METRIC_SETTINGS[:1]):
                chance = RECORDS[m_i].chance(n, params) or 0.0
                gain = 0.5 + 0.05 * (m_i % 3)
                s = float(np.clip(chance + gain * base + rng.normal(0, 0.03 * (1 + m_i)), 0, 1))
                rows.append(_row(x, y, "places", metric, params, n, s, chance, rng))
    return pd.DataFrame(rows)


def lm_scores(meta: pd.DataFrame) -> pd.DataFrame:
    """LM scores: bpb falls with size; accuracies on two downstream tasks (one linear, one emergent)."""
    lms = meta[meta["modality"] == "language"]
    logp = np.log10(lms["n_params"].to_numpy())
    bpb = 1.15 - 0.18 * (logp - 8.7) + np.array([0.03, -0.02, 0.01, 0.02, -0.03, 0.0])
    return pd.DataFrame({"model": lms["model"].to_numpy(), "n_params": lms["n_params"].to_numpy(), "bpb": bpb,
                         "lm_score": 1 - bpb, "corpus": "wordnet-heldout",
                         "acc_gloss": 0.3 + 0.25 * (logp - 8.7),
                         "acc_arith": 0.02 + 0.5 / (1 + np.exp(-4 * (logp - 9.9)))})


def align_vl(meta: pd.DataFrame, lm: pd.DataFrame, n: int = 1024, seed: int = 0, density: int | None = None,
             metric: str = "mutual_knn", k: int = 10) -> pd.DataFrame:
    """Vision-language alignment: grows with vision quality x language score (and caption density)."""
    rng = np.random.default_rng(seed)
    q = _quality(meta)
    chance = k / (n - 1) if "knn" in metric else 0.0
    scale = 1.0 if density is None else 0.6 + 0.4 * np.log(density) / np.log(30)
    rows = []
    for v in sorted(q):
        for name, ls in zip(lm["model"], lm["lm_score"]):
            s = chance + 0.35 * q[v] * (ls + 0.2) * scale * (10 / k) ** 0.3 + rng.normal(0, 0.006)
            ds = "wit-scenes" if density is None else f"scenes-d{density}"
            rows.append(_row(v, name, ds, metric, {"k": k}, n, float(np.clip(s, 0, 1)), chance, rng))
    return pd.DataFrame(rows)


def cknna_k(meta: pd.DataFrame, lm: pd.DataFrame, n: int = 1024, seed: int = 0) -> pd.DataFrame:
    """CKNNA vs k: the language-score trend is strong for small k and washes out towards k = n - 1."""
    rng = np.random.default_rng(seed)
    q = _quality(meta)
    rows = []
    for k in (10, 20, 50, 100, 200, 500, n - 1):
        w = 1 - np.log(k) / np.log(n) * 0.9
        for v in sorted(q):
            for name, ls in zip(lm["model"], lm["lm_score"]):
                s = 0.1 + 0.3 * q[v] * (w * ls + (1 - w) * 0.2) + rng.normal(0, 0.004 + 0.02 * (1 - w))
                rows.append({"k": k, "model_x": v, "model_y": name, "score": s, "n": n, "lm_score": ls,
                             "metric": "cknna", "dataset": "wit-scenes"})
    return pd.DataFrame(rows)


def layer_matrix(n_x: int = 13, n_y: int = 19, seed: int = 0) -> np.ndarray:
    """A layer-pair score matrix peaking at late-middle layers (last row/column = concatenated layers)."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.linspace(0, 1, n_x), np.linspace(0, 1, n_y), indexing="ij")
    return 0.05 + 0.25 * np.exp(-((i - 0.8) ** 2 + (j - 0.65) ** 2) / 0.1) + rng.normal(0, 0.005, (n_x, n_y))


def demo_tables(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Every table the figures need, in prh's formats."""
    meta = model_meta(seed=seed)
    lm = lm_scores(meta)
    vl = align_vl(meta, lm, seed=seed)
    density = pd.concat([align_vl(meta, lm, seed=seed + d, density=d) for d in (5, 10, 20, 30)], ignore_index=True)
    density["density"] = density["dataset"].str.extract(r"(\d+)$")[0].astype(int)
    return {"meta": meta, "lm": lm, "tasks_solved": tasks_solved_table(meta, seed=seed),
            "align_vv": align_vv(meta, seed=seed), "align_all": align_vv(meta, seed=seed, metrics=True),
            "align_vl": vl, "density": density, "cknna_k": cknna_k(meta, lm, seed=seed)}


def render_demo(outdir: str | os.PathLike, seed: int = 0) -> list[FigureResult]:
    """Render all eight figures from `demo_tables` into outdir."""
    from prh.figures import (fig_caption_density, fig_convergence, fig_downstream, fig_layer_heatmap,
                             fig_locality, fig_metric_agreement, fig_umap, fig_vision_language)

    t, out = demo_tables(seed), Path(outdir)
    mat = layer_matrix(seed=seed)
    names_x = [f"block{i}" for i in range(mat.shape[0] - 1)] + ["concat"]
    names_y = [f"layer{i}" for i in range(mat.shape[1] - 1)] + ["concat"]
    return [
        fig_convergence(t["align_vv"], t["tasks_solved"], out / "convergence"),
        fig_umap(t["align_vv"], t["tasks_solved"], t["meta"], out / "umap"),
        fig_vision_language(t["align_vl"], t["lm"], t["meta"], out / "vision_language"),
        fig_downstream(t["align_vl"], t["lm"], out / "downstream", model_meta=t["meta"]),
        fig_caption_density(t["density"], t["meta"], out / "caption_density"),
        fig_locality(t["cknna_k"], out / "locality"),
        fig_metric_agreement(t["align_all"], out / "metric_agreement"),
        fig_layer_heatmap(mat, names_x, names_y, "vit_base_dino", "llama-13b", "mutual_knn(k=10)",
                          out / "layers", context={"n": 1024, "dataset": "wit-scenes"}),
    ]
