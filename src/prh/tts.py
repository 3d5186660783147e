"""Test-time scaling of alignment (issue 35): several captions and several views per item, prompts, many-to-many.

One stage, driven by a small config (``configs/tts/all.yaml``; :func:`check_config` lists its fields):

- captions: a scenes dataset with ``captions: C`` gives C independent wordings / orders of each scene graph
  (``meta["captions"]``); every language model is extracted once on all n C captions (one store entry, item-major
  rows) and the features of "c captions" are the mean of each item's first c caption features, for c in ``captions``.
- views: every vision model is extracted once on n V seeded augmentations (:func:`view_images`; view 0 is the image
  itself) and "v views" averages each item's first v view features, for v in ``views``.
- prompt: each language model is also extracted on the first captions wrapped in ``prompt`` (the template is in the
  store key); :func:`paired_test` gives its effect and a paired permutation p-value.
- alignment: the configured metric, max over layer pairs, calibrated with its permutation null and bootstrap
  interval (``prh.metrics.layer_calibration``), per vision-language pair at every c (with v = 1) and every v (c = 1);
  the saturating law ``a - b x^-k`` fitted per pair and to the mean over pairs (:func:`fit_saturating`); the
  1 -> C and 1 -> V gains with paired permutation p-values (:func:`paired_test`); the Spearman between the pairs'
  rankings at c = 1 and c = C; many-to-many mutual kNN beside one-to-one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from prh.errors import PrhError

REQUIRED = ("store", "results", "dataset", "models", "captions", "views", "prompt")
DEFAULTS: dict[str, Any] = {
    "device": "cpu", "batch_size": 64, "max_tokens": 64, "view_seed": 0, "metric": {"name": "mutual_knn", "k": 10},
    "q": 0.95, "permutations": 200, "bootstrap": 200, "alpha": 0.05, "seed": 0,
}  # fmt: skip
CROP_AREA = (0.6, 1.0)  # a view's crop covers this fraction of the image's area (uniform), before resizing back


# ---------------------------------------------------------------- views and pooling


def view_images(images: np.ndarray, views: int, seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n views, H, W, 3), item-major: view 0 is the image, view j > 0 a seeded square-aspect
    random crop (CROP_AREA of the area) resized back to H x W (bilinear), mirrored with probability 1/2. View j of
    image i depends only on (seed, j, i, the image)."""
    from PIL import Image

    from prh.data import rng_for

    n, h, w, _ = images.shape
    out = np.empty((n, views, h, w, 3), dtype=np.uint8)
    out[:, 0] = images
    for j in range(1, views):
        rng = rng_for(seed, f"view-{j}")
        scale = np.sqrt(rng.uniform(*CROP_AREA, size=n))
        flips = rng.random(n) < 0.5
        corner = rng.random((n, 2))
        for i in range(n):
            ch, cw = max(1, round(scale[i] * h)), max(1, round(scale[i] * w))
            y0, x0 = int(corner[i, 0] * (h - ch + 1)), int(corner[i, 1] * (w - cw + 1))
            crop = Image.fromarray(images[i, y0 : y0 + ch, x0 : x0 + cw]).resize((w, h), Image.BILINEAR)
            arr = np.asarray(crop)
            out[i, j] = arr[:, ::-1] if flips[i] else arr
    return out.reshape(n * views, h, w, 3)


def pooled(layers: list[np.ndarray], m: int, c: int) -> list[np.ndarray]:
    """Per-layer (n m, d) item-major rows -> (n, d) means of each item's first c rows."""
    if not 1 <= c <= m:
        raise PrhError(f"pooling over {c} rows per item, but only {m} were extracted")
    return [x.reshape(x.shape[0] // m, m, x.shape[1])[:, :c].mean(axis=1) for x in layers]


def item_captions(dataset, count: int) -> list[str]:
    """The first ``count`` captions of every item, item-major (scenes / emoji with ``captions``: meta["captions"])."""
    sets = dataset.meta.get("captions") or ([[t] for t in dataset.texts or []] if count == 1 else None)
    if not sets or any(len(s) < count for s in sets):
        raise PrhError(f"dataset {dataset.name!r}: has no {count} captions per item (set its `captions: {count}`)")
    return [t for s in sets for t in s[:count]]


# ---------------------------------------------------------------- statistics


def saturating(x: np.ndarray, a: float, b: float, k: float) -> np.ndarray:
    """The saturating law a - b x^-k."""
    return a - b * np.power(x, -k)


def fit_saturating(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> dict[str, float]:
    """Least-squares a - b x^-k (k in [0.01, 10]) -> {a, b, k, r2}; NaN where it does not converge or y is flat."""
    from scipy.optimize import curve_fit

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    nan = {"a": float("nan"), "b": float("nan"), "k": float("nan"), "r2": float("nan")}
    if x.size < 3 or not np.all(np.isfinite(y)) or np.ptp(y) == 0:
        return nan
    p0 = (float(y.max()), float(y.max() - y.min()), 0.5)
    try:
        (a, b, k), _ = curve_fit(saturating, x, y, p0=p0, bounds=([-np.inf, -np.inf, 0.01], [np.inf, np.inf, 10.0]),
                                 maxfev=20000)  # fmt: skip
    except (RuntimeError, ValueError):
        return nan
    resid = y - saturating(x, a, b, k)
    return {"a": float(a), "b": float(b), "k": float(k), "r2": float(1 - resid @ resid / np.sum((y - y.mean()) ** 2))}


def max_scores(record, params: dict, vision: dict[str, list], language: dict[str, list[np.ndarray]]) -> np.ndarray:
    """(vision models, language models) raw scores, max over layer pairs; ``vision``: name -> layer states."""
    from prh.metrics import prepare_kernels

    lang_states = [record.layer_states(prepare_kernels(layers), params) for layers in language.values()]
    return np.array([[np.max(record.all_pairs(sv, sl)) for sl in lang_states] for sv in vision.values()])


def paired_test(
    metric: dict, fixed: dict[str, list[np.ndarray]], before: dict[str, list[np.ndarray]],
    after: dict[str, list[np.ndarray]], permutations: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """A paired change of one side of every pair (a prompt, c captions instead of 1, v views instead of 1): delta =
    mean over (fixed, changed) model pairs of score(fixed, after) - score(fixed, before), each the max over layer
    pairs; and its two-sided paired permutation p-value. Under the null an item's before and after features are
    exchangeable, so each draw swaps them for a random half of the items (in every changed model at once) and
    recomputes delta; p = (1 + #{|delta*| >= |delta|}) / (K + 1). Inputs are prepared layers; ``fixed`` is scored
    as model_x (the unchanged side; a symmetric metric does not care)."""
    from prh.metrics import get_metric, prepare_kernels
    from prh.metrics.registry import resolve_params

    record = get_metric(metric["name"])
    n = next(iter(fixed.values()))[0].shape[0]
    params = resolve_params(record, {k: v for k, v in metric.items() if k != "name"}, n, ())
    states = {m: record.layer_states(prepare_kernels(layers), params) for m, layers in fixed.items()}

    def delta(swap: np.ndarray | None) -> np.ndarray:
        def mix(a: list[np.ndarray], b: list[np.ndarray]) -> list[np.ndarray]:
            return [np.where(swap[:, None], y, x) for x, y in zip(a, b)] if swap is not None else a

        new = {m: mix(after[m], before[m]) for m in before}
        old = {m: mix(before[m], after[m]) for m in before}
        return max_scores(record, params, states, new) - max_scores(record, params, states, old)

    observed = delta(None)
    rng = np.random.default_rng(seed)
    null = np.array([delta(rng.random(n) < 0.5).mean() for _ in range(permutations)])
    stat = float(observed.mean())
    p = float((1 + np.sum(np.abs(null) >= abs(stat) - 1e-12)) / (permutations + 1))
    return {"delta": stat, "p_value": p, "permutations": permutations, "per_pair": observed}


def spearman(a: list[float] | np.ndarray, b: list[float] | np.ndarray) -> float:
    """Spearman rank correlation (NaN with fewer than 3 values or a constant side)."""
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


# ---------------------------------------------------------------- the stage


def check_config(config: dict) -> dict:
    """The tts config with defaults filled; a missing or bad field raises one PrhError naming it."""
    for key in REQUIRED:
        if key not in config:
            raise PrhError(f"tts config: missing field {key!r} (needs {', '.join(REQUIRED)})")
    unknown = sorted(set(config) - set(REQUIRED) - set(DEFAULTS))
    if unknown:
        raise PrhError(f"tts config: unknown field(s) {unknown}")
    cfg = {**DEFAULTS, **config}
    for key in ("captions", "views"):
        v = cfg[key]
        if not isinstance(v, list) or not v or not all(isinstance(i, int) and i >= 1 for i in v) or sorted(set(v)) != v:
            raise PrhError(f"tts config: {key} must be an increasing list of ints >= 1, got {v!r}")
    if not isinstance(cfg["prompt"], str) or "{text}" not in cfg["prompt"]:
        raise PrhError(f"tts config: prompt must be a string with '{{text}}', got {cfg['prompt']!r}")
    if cfg["dataset"].get("source") not in ("scenes", "emoji"):
        raise PrhError("tts config: dataset.source must be scenes or emoji (the sources with several captions per item)")
    if int(cfg["dataset"].get("captions", 1)) < cfg["captions"][-1]:
        raise PrhError(f"tts config: dataset.captions must be >= {cfg['captions'][-1]} (the largest of captions)")
    from prh.config import model_modality

    models = cfg["models"]
    if not isinstance(models, dict) or any(not isinstance(s, dict) for s in models.values()):
        raise PrhError("tts config: models must map names to model specs (as in config.yaml)")
    kinds = {model_modality(m, s) for m, s in models.items()}
    if kinds != {"vision", "language"}:
        raise PrhError(f"tts config: models needs at least one vision and one language model (has {sorted(kinds)})")
    return cfg


def _extract(cfg: dict, store, name: str, spec: dict, dataset, params: dict) -> list[np.ndarray]:
    """A model's layers on an (expanded) dataset, through the store (reused when its key exists)."""
    from prh.config import CACHED_PACKAGES
    from prh.devices import resolve_device
    from prh.extract import extract_to_store
    from prh.models import load_model, prepare_model, weights_digest
    from prh.pipeline import resolved_spec

    spec = resolved_spec(name, spec, [], cfg["store"])
    if spec.get("package") in CACHED_PACKAGES:
        prepare_model(name, spec)
    key, _ = extract_to_store(store, name, spec, dataset, params, weights_digest=weights_digest(name, spec),
                              load_model_fn=load_model, device=resolve_device(cfg["device"]),
                              batch_size=int(spec.get("batch_size", cfg["batch_size"])), progress=False)  # fmt: skip
    return [np.asarray(x, dtype=np.float32) for x in store.open(key).layers()]


def extract_all(cfg: dict) -> tuple[dict, dict, dict, dict]:
    """-> (vision n V rows, language n C rows, prompted language n rows, timings) raw layers per model."""
    from prh.config import model_modality
    from prh.data import load_dataset, make_dataset
    from prh.store import FeatureStore

    store = FeatureStore(cfg["store"])
    base = load_dataset("tts", cfg["dataset"])
    C, V = cfg["captions"][-1], cfg["views"][-1]
    views = make_dataset(f"tts-views{V}", images=view_images(base.images, V, int(cfg["view_seed"])))
    caps = make_dataset(f"tts-captions{C}", texts=item_captions(base, C))
    first = make_dataset("tts-captions1", texts=item_captions(base, 1))
    vision, language, prompted, seconds = {}, {}, {}, {}
    for name, spec in cfg["models"].items():
        t0 = time.perf_counter()
        if model_modality(name, spec) == "vision":
            params = {"pooling": "auto", **({"input_size": spec["input_size"]} if "input_size" in spec else {})}
            vision[name] = _extract(cfg, store, name, spec, views, params)
        else:
            params = {"pooling": "mean", "max_tokens": int(cfg["max_tokens"])}
            language[name] = _extract(cfg, store, name, spec, caps, params)
            prompted[name] = _extract(cfg, store, name, spec, first, {**params, "prompt_template": cfg["prompt"]})
        seconds[name] = time.perf_counter() - t0
    return vision, language, prompted, seconds


def calibrated_rows(cfg: dict, axis: str, size: int, vision: dict, language: dict) -> list[dict]:
    """One row per vision-language pair: raw score, calibration and interval at one c (or v)."""
    from prh.metrics.layer_calibration import calibrate_models

    metric = cfg["metric"]
    models = {**{f"v:{m}": x for m, x in vision.items()}, **{f"l:{m}": x for m, x in language.items()}}
    pairs = [(f"v:{v}", f"l:{lang}") for v in vision for lang in language]
    out = calibrate_models(models, pairs, metric["name"], permutations=int(cfg["permutations"]),
                           bootstrap=int(cfg["bootstrap"]), alpha=float(cfg["alpha"]), seed=int(cfg["seed"]),
                           **{k: v for k, v in metric.items() if k != "name"})  # fmt: skip
    rows = []
    for (x, y), c in out.items():
        span = max(1.0 - c.tau, 1e-12)
        rows.append({"axis": axis, "size": size, "model_x": x[2:], "model_y": y[2:], "score": c.score,
                     "ci_low": c.ci_low, "ci_high": c.ci_high, "tau": c.tau, "p_value": c.p_value,
                     "calibrated": c.calibrated, "calibrated_low": float(np.clip((c.ci_low - c.tau) / span, 0, 1)),
                     "calibrated_high": float(np.clip((c.ci_high - c.tau) / span, 0, 1))})  # fmt: skip
    return rows


def fits(curves: pd.DataFrame) -> pd.DataFrame:
    """The saturating law per (axis, pair) and for the mean over pairs, on raw and calibrated scores, with the gain
    from the smallest to the largest size (absolute and relative)."""
    rows = []
    for axis, part in curves.groupby("axis", sort=False):
        groups = [((x, y), g) for (x, y), g in part.groupby(["model_x", "model_y"], sort=False)]
        groups.append((("pooled", "pooled"), part.groupby("size", as_index=False)[["score", "calibrated"]].mean()))
        for (x, y), g in groups:
            g = g.sort_values("size")
            for measure in ("score", "calibrated"):
                first, last = float(g[measure].iloc[0]), float(g[measure].iloc[-1])
                rows.append({"axis": axis, "model_x": x, "model_y": y, "measure": measure,
                             **fit_saturating(g["size"], g[measure]), "first": first, "last": last,
                             "gain": last - first, "relative_gain": (last - first) / first if first else float("nan")})  # fmt: skip
    return pd.DataFrame(rows)


def run(config: dict) -> dict:
    """Run the stage: extract (store-cached), score, fit, test; write curves.csv, fits.csv, summary.json and the
    figure under ``<results>/tts/``; return the summary."""
    from prh.align import prepare
    from prh.io import write_csv_atomic, write_json_atomic

    cfg = check_config(config)
    t0, c0 = time.perf_counter(), time.process_time()
    raw_v, raw_l, raw_p, seconds = extract_all(cfg)
    C, V = cfg["captions"][-1], cfg["views"][-1]
    q = float(cfg["q"])
    t_extract = time.perf_counter() - t0
    rows = []
    v1 = {m: prepare(pooled(x, V, 1), q) for m, x in raw_v.items()}
    for c in cfg["captions"]:
        rows += calibrated_rows(cfg, "captions", c, v1, {m: prepare(pooled(x, C, c), q) for m, x in raw_l.items()})
    l1 = {m: prepare(pooled(x, C, 1), q) for m, x in raw_l.items()}
    for v in cfg["views"]:
        rows += calibrated_rows(cfg, "views", v, {m: prepare(pooled(x, V, v), q) for m, x in raw_v.items()}, l1)
    curves = pd.DataFrame(rows)
    fit_table = fits(curves)
    draws, seed = int(cfg["permutations"]), int(cfg["seed"])
    prompt = paired_test(cfg["metric"], v1, l1, {m: prepare(x, q) for m, x in raw_p.items()}, draws, seed)
    more_c = paired_test(cfg["metric"], v1, l1, {m: prepare(pooled(x, C, C), q) for m, x in raw_l.items()}, draws, seed)
    more_v = paired_test(cfg["metric"], l1, v1, {m: prepare(pooled(x, V, V), q) for m, x in raw_v.items()}, draws, seed)
    k = int(cfg["metric"].get("k", 10))
    m2m = many_to_many_rows(v1, raw_l, C, q, k)
    at = curves[curves.axis == "captions"].pivot_table(index=["model_x", "model_y"], columns="size", values="calibrated")
    summary = {
        "n": int(next(iter(v1.values()))[0].shape[0]), "captions": cfg["captions"], "views": cfg["views"],
        "metric": cfg["metric"], "prompt": cfg["prompt"],
        "prompt_delta": prompt["delta"], "prompt_p_value": prompt["p_value"],
        "prompt_per_pair": {f"{x}|{y}": float(prompt["per_pair"][i, j]) for i, x in enumerate(v1)
                            for j, y in enumerate(l1)},
        "captions_gain": more_c["delta"], "captions_gain_p_value": more_c["p_value"],
        "views_gain": more_v["delta"], "views_gain_p_value": more_v["p_value"],
        "ranking_spearman_c1_cC": spearman(at[cfg["captions"][0]].to_numpy(), at[C].to_numpy()),
        "many_to_many": m2m,
        "extract_seconds": seconds, "extract_wall_s": t_extract,
        "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
    }  # fmt: skip
    out = Path(cfg["results"]) / "tts"
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(str(out / "curves.csv"), curves)
    write_csv_atomic(str(out / "fits.csv"), fit_table)
    from prh.figures.tts import draw_tts

    summary["reading"] = draw_tts(curves, fit_table, summary, str(out / "tts.png")).reading
    summary["results_dir"] = str(out)
    summary["wall_s"], summary["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    write_json_atomic(str(out / "summary.json"), json.loads(json.dumps(summary, default=float)))
    return summary


def many_to_many_rows(vision: dict, raw_language: dict, m: int, q: float, k: int) -> list[dict]:
    """Per pair: many-to-many mutual kNN over all m captions (each its own row) beside one-to-one mutual kNN with
    the first caption and with the mean of the m captions (each the max over layer pairs)."""
    from prh.align import prepare
    from prh.metrics import get_metric, prepare_kernels
    from prh.metrics.knn import many_to_many_mutual_knn

    record = get_metric("mutual_knn")
    out = []
    for lang, raw in raw_language.items():
        rows_l = prepare(raw, q)  # every caption its own row (item-major), concatenation last
        one, mean = prepare(pooled(raw, m, 1), q), prepare(pooled(raw, m, m), q)
        for vis, img in vision.items():
            st = record.layer_states(prepare_kernels(img), {"k": k})
            o2o_1 = float(np.max(record.all_pairs(st, record.layer_states(prepare_kernels(one), {"k": k}))))
            o2o_m = float(np.max(record.all_pairs(st, record.layer_states(prepare_kernels(mean), {"k": k}))))
            out.append({"model_x": vis, "model_y": lang, "many_to_many": float(np.max(many_to_many_mutual_knn(img, rows_l, m, k))),
                        "one_to_one_c1": o2o_1, f"one_to_one_mean_c{m}": o2o_m})  # fmt: skip
    return out


def result_markdown(out_dir: str | Path) -> str:
    """Markdown tables of one run's ``<results>/tts/`` (for docs/test-time-scaling.md): calibrated score per pair at
    every c and v, the 1 -> C / 1 -> V gains and fits, the prompt, many-to-many vs one-to-one."""
    out = Path(out_dir)
    curves, fit_table = pd.read_csv(out / "curves.csv"), pd.read_csv(out / "fits.csv")
    s = json.loads((out / "summary.json").read_text())
    curves["pair"] = curves["model_x"] + " / " + curves["model_y"]
    parts = []
    for axis in ("captions", "views"):
        t = curves[curves["axis"] == axis].pivot_table(index="pair", columns="size", values="calibrated", sort=False)
        f = fit_table[(fit_table["axis"] == axis) & (fit_table["measure"] == "score")].copy()
        f["pair"] = f["model_x"] + " / " + f["model_y"]
        f = f.set_index("pair")
        t["raw 1 -> max"] = [f"{f.loc[p, 'first']:.4f} -> {f.loc[p, 'last']:.4f}" for p in t.index]
        t["fit a, b, k (R^2)"] = [f"{f.loc[p, 'a']:.3f}, {f.loc[p, 'b']:.3f}, {f.loc[p, 'k']:.2f} ({f.loc[p, 'r2']:.2f})"
                                  for p in t.index]  # fmt: skip
        pooled_fit = f.loc["pooled / pooled"]
        head = "| pair | " + " | ".join(f"{axis[0]}={c}" for c in t.columns[:-2]) + " | raw 1 -> max | fit a, b, k (R^2) |"
        rows = [head, "|" + "---|" * (len(t.columns) + 1)]
        rows += [f"| {p} | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + " |"
                 for p, r in zip(t.index, t.itertuples(index=False))]  # fmt: skip
        gain, p = s[f"{axis}_gain"], s[f"{axis}_gain_p_value"]
        parts.append(f"Calibrated mutual kNN vs {axis} (raw scores in the fit columns):\n\n" + "\n".join(rows) +
                     f"\n\nPooled over pairs: raw {pooled_fit['first']:.4f} -> {pooled_fit['last']:.4f}, gain "
                     f"{gain:+.4f} ({100 * gain / pooled_fit['first']:+.1f}%), paired permutation p = {p:.3f}; pooled "
                     f"fit a = {pooled_fit['a']:.3f}, b = {pooled_fit['b']:.3f}, k = {pooled_fit['k']:.2f}, "
                     f"R^2 = {pooled_fit['r2']:.2f}.")  # fmt: skip
    m = pd.DataFrame(s["many_to_many"])
    one_mean = next(c for c in m.columns if c.startswith("one_to_one_mean"))
    rows = ["| pair | many-to-many | one-to-one, 1st caption | one-to-one, mean of C | prompt delta |", "|---|---|---|---|---|"]
    rows += [f"| {r.model_x} / {r.model_y} | {r.many_to_many:.4f} | {r.one_to_one_c1:.4f} | {getattr(r, one_mean):.4f} | "
             f"{s['prompt_per_pair'][f'{r.model_x}|{r.model_y}']:+.4f} |" for r in m.itertuples()]  # fmt: skip
    parts.append("Raw mutual kNN (max over layer pairs) by protocol, and the prompt's change per pair:\n\n" +
                 "\n".join(rows) + f"\n\nPrompt: mean delta {s['prompt_delta']:+.4f}, paired permutation p = "
                 f"{s['prompt_p_value']:.3f}. Spearman between pair rankings at c = 1 and c = {s['captions'][-1]}: "
                 f"{s['ranking_spearman_c1_cC']:.2f}.")  # fmt: skip
    return "\n\n".join(parts)
