"""Test-time scaling of alignment (issue 35): several captions and several views per item, prompts, many-to-many.

The stage runs in the workflow (rules/tts.smk, config ``tts``; ``configs/hypotheses.yaml`` enables it) or on its own
(``prh tts configs/tts/all.yaml``, :func:`run`); both call the same functions:

- store entries (:func:`ensure_entries`): a language model is extracted on the j-th caption of every item, one
  store entry per caption j (a scenes / emoji dataset with ``captions: C`` keeps them in ``meta["captions"]``), a
  vision model on the j-th seeded view of every image (:func:`one_view`; view 0 is the image), one entry per view.
  The features of "the first c captions" (or v views) are their mean, its own entry whose key names the size, the
  caption mode (or the view seed and crop) and, through the extraction parameters, the prompt template
  (:func:`pooled_request`). A new c computes only the captions and the pooled entry the store lacks.
- prompt: the same entries with every caption wrapped in ``prompt``, at the first and the largest c.
- alignment (:func:`analyse`): the configured metric, max over layer pairs, calibrated with its permutation null
  and bootstrap interval (``prh.metrics.layer_calibration``), per vision-language pair at every c (first v) and
  every v (first c); the saturating law ``a - b x^-k`` per pair and pooled (:func:`fit_saturating`); the
  first -> last gains and the prompt's effect at both ends with paired permutation p-values (:func:`paired_test`);
  the Spearman between the pairs' rankings at the first and the largest c; many-to-many mutual kNN over all C
  captions, calibrated the same way (:func:`many_to_many_calibrated`), beside one-to-one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
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
SETTINGS = ("captions", "views", "prompt", "metric", "q", "permutations", "bootstrap", "alpha", "seed")
AXES = ("captions", "prompt", "views")  # language: captions, and captions wrapped in the prompt; vision: views
CROP_AREA = (0.6, 1.0)  # a view's crop covers this fraction of the image's area (uniform), before resizing back


def axis_sizes(axis: str, captions: list[int], views: list[int]) -> list[int]:
    """The sizes (c or v) of one axis: every c, every v, or the prompt's first and largest c."""
    return {"captions": captions, "views": views, "prompt": list(dict.fromkeys([captions[0], captions[-1]]))}[axis]


# ---------------------------------------------------------------- views and captions


def one_view(images: np.ndarray, j: int, seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8 -> view j of every image: j = 0 the image, j > 0 a seeded square-aspect random crop
    (CROP_AREA of the area) resized back to H x W (bilinear), mirrored with probability 1/2. View j of image i
    depends only on (seed, j, i, the image)."""
    from PIL import Image

    from prh.data import rng_for

    if j == 0:
        return images
    n, h, w, _ = images.shape
    rng = rng_for(seed, f"view-{j}")
    scale = np.sqrt(rng.uniform(*CROP_AREA, size=n))
    flips = rng.random(n) < 0.5
    corner = rng.random((n, 2))
    out = np.empty_like(images)
    for i in range(n):
        ch, cw = max(1, round(scale[i] * h)), max(1, round(scale[i] * w))
        y0, x0 = int(corner[i, 0] * (h - ch + 1)), int(corner[i, 1] * (w - cw + 1))
        arr = np.asarray(Image.fromarray(images[i, y0 : y0 + ch, x0 : x0 + cw]).resize((w, h), Image.BILINEAR))
        out[i] = arr[:, ::-1] if flips[i] else arr
    return out


def view_images(images: np.ndarray, views: int, seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8 -> (n views, H, W, 3), item-major: row i views + j is :func:`one_view` j of image i."""
    return np.stack([one_view(images, j, seed) for j in range(views)], axis=1).reshape(-1, *images.shape[1:])


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


# ---------------------------------------------------------------- store entries: one per caption / view, one per size


def member_dataset(dataset, axis: str, j: int, view_seed: int):
    """Caption j of every item (axis captions / prompt) or view j of every image (views), under the source's name:
    caption 0 of an all-items dataset is its texts, view 0 its images, so those entries are the workflow's own."""
    from prh.data import make_dataset

    if axis == "views":
        if dataset.images is None:
            raise PrhError(f"dataset {dataset.name!r} has no images to take views of")
        return make_dataset(dataset.name, images=one_view(dataset.images, j, view_seed))
    return make_dataset(dataset.name, texts=item_captions(dataset, j + 1)[j :: j + 1])


def pool_spec(dataset, axis: str, size: int, view_seed: int) -> dict[str, Any]:
    """What a pooled entry averages, named in its key: the first ``size`` captions (with the dataset's caption mode)
    or views (with the view seed and crop range)."""
    if axis == "views":
        return {"mean_of": "views", "first": size, "view_seed": view_seed, "crop_area": list(CROP_AREA)}
    mode = dataset.meta.get("spec", {}).get("caption_items", "all")
    return {"mean_of": "captions", "first": size, "caption_items": mode}


def pooled_request(model: str, weights_digest: str, dataset, modality: str, params: dict, member_digests: list[str],
                   pool: dict) -> dict:  # fmt: skip
    """The store request of a pooled entry: the members' content digests (in order) as its dataset content, the
    extraction parameters (prompt template included) plus ``pool``."""
    from prh.extract import dataset_modality
    from prh.store import make_request

    digest = hashlib.sha256(json.dumps(member_digests).encode()).hexdigest()
    return make_request(model, weights_digest, dataset.name, dataset_modality(modality), digest, {**params, "pool": pool})


def _usable(store, key: str) -> bool:
    """Whether ``key`` is committed and verifies; a corrupt entry is removed so that it is recomputed."""
    if not store.has(key):
        return False
    if not store.verify([key]):
        return True
    store.rm(key)
    return False


def ensure_entries(
    store, model: str, spec: dict, dataset, params: dict, axis: str, sizes: list[int], view_seed: int, *,
    weights_digest: str, load_model_fn: Callable[..., Any], device: str = "cpu", batch_size: int = 64,
) -> dict[str, Any]:  # fmt: skip
    """One model's entries on one axis, each computed only if the store lacks it -> {"members": [key of caption /
    view j, j < max(sizes)], "pooled": {"size": key of the mean of the first size members}}. The model is loaded
    at most once."""
    from prh.config import model_modality
    from prh.extract import (
        Features,
        dataset_modality,
        extract_to_store,
        normalize_params,
    )

    modality = model_modality(model, spec)
    if (axis == "views") != (modality == "vision"):
        raise PrhError(f"tts: axis {axis!r} does not apply to {modality} model {model!r}")
    p = normalize_params(params, modality, where=f"model {model!r}")
    loaded: dict[str, Any] = {}

    def load_once(*args: Any, **kwargs: Any) -> Any:
        if "model" not in loaded:
            loaded["model"] = load_model_fn(*args, **kwargs)
        return loaded["model"]

    members = [member_dataset(dataset, axis, j, view_seed) for j in range(max(sizes))]
    keys = [extract_to_store(store, model, spec, ds, p, weights_digest=weights_digest, load_model_fn=load_once,
                             device=device, batch_size=batch_size, progress=False)[0] for ds in members]  # fmt: skip
    digests = [ds.digest(dataset_modality(modality)) for ds in members]
    out: dict[str, str] = {}
    for size in sizes:
        request = pooled_request(model, weights_digest, dataset, modality, p, digests[:size],
                                 pool_spec(dataset, axis, size, view_seed))  # fmt: skip
        key = out[str(size)] = store.key(request)
        if _usable(store, key):
            continue
        entries = [store.open(k) for k in keys[:size]]
        mean = [np.mean([e.layer(i) for e in entries], axis=0, dtype=np.float64).astype(np.float32)
                for i in range(entries[0].n_layers)]  # fmt: skip
        attrs = {"model": model, "dataset": dataset.name, "n": int(mean[0].shape[0]), "pool": request["extraction"]["pool"],
                 "n_params": entries[0].attrs.get("n_params")}  # fmt: skip
        with store.put(key, request, store_dtype=p["store_dtype"]) as writer:
            writer.write(Features(layers=mean, layer_names=entries[0].layer_names, attrs=attrs))
    return {"model": model, "axis": axis, "members": keys, "pooled": out}


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


# ---------------------------------------------------------------- many-to-many mutual kNN, calibrated


def caption_rows(members: list[list[np.ndarray]]) -> list[np.ndarray]:
    """m member entries (caption j of every item: per layer (n, d)) -> per layer (n m, d), item-major."""
    return [np.stack([m[i] for m in members], axis=1).reshape(-1, members[0][i].shape[1]) for i in range(len(members[0]))]


def item_similarity(captions: np.ndarray, m: int) -> np.ndarray:
    """(n m, d) prepared caption rows, item-major -> (n m, n) float32: each caption's similarity to each item, that
    of the item's most similar caption."""
    gram = captions @ captions.T
    return gram.reshape(gram.shape[0], -1, m).max(axis=2)


def resampled_item_neighbours(sim: np.ndarray, m: int, idx: np.ndarray, k: int) -> np.ndarray:
    """Item neighbours of the captions of a sorted resample ``idx`` of the items -> (n m, k) positions, row p m + j
    caption j of position p: the k positions whose item is most similar, never a copy of the caption's own item
    (ties: smaller position). Ranks the distinct items once, then expands each into its positions."""
    from prh.metrics.kernels import _topk_exact

    uniq, first, inverse, counts = np.unique(idx, return_index=True, return_inverse=True, return_counts=True)
    if uniq.size <= k:
        raise PrhError(f"bootstrap resample holds {uniq.size} distinct items, k = {k} needs more")
    rows = (uniq[:, None] * m + np.arange(m)).ravel()
    neg = np.negative(sim[np.ix_(rows, uniq)], dtype=np.float32)
    neg[np.arange(rows.size), np.repeat(np.arange(uniq.size), m)] = np.inf  # never the caption's own item
    top = _topk_exact(neg, k) if k < uniq.size - 1 else np.argsort(neg, axis=1, kind="stable")[:, :k]
    cnt = counts[top]
    before = np.cumsum(cnt, axis=1) - cnt
    slot = np.arange(k)
    which = np.count_nonzero(before[:, :, None] <= slot[None, None, :], axis=1) - 1
    r = np.arange(rows.size)[:, None]
    pos = first[top[r, which]] + slot[None, :] - before[r, which]  # (U m, k)
    return pos[(inverse[:, None] * m + np.arange(m)).ravel()]


def many_to_many_calibrated(
    images: dict[str, list[np.ndarray]], captions: dict[str, list[np.ndarray]], m: int, k: int, permutations: int,
    bootstrap: int, alpha: float, seed: int,
) -> dict[tuple[str, str], Any]:  # fmt: skip
    """Many-to-many mutual kNN (``prh.metrics.knn.many_to_many_knn_all``), max over layer pairs, for every (image
    model, caption model) pair, calibrated as one-to-one scores are (``prh.metrics.layer_calibration``): the null
    permutes item identity on the caption side, each item's m captions moving together (row i m + j of y[pi] is
    row pi(i) m + j, its item neighbours relabelled), the same permutations for every pair; the bootstrap resamples
    items, an item's captions with it (copies are never neighbours). ``images``: prepared (n, d) layers;
    ``captions``: prepared (n m, d) layers, item-major -> {(x, y): LayerCalibration}."""
    from prh.metrics import get_metric
    from prh.metrics.kernels import (
        indicator,
        inverse_permutation,
        neighbours,
        ranking_depth,
        resampled_neighbours,
    )
    from prh.metrics.knn import caption_item_neighbours, many_to_many_knn_all
    from prh.metrics.layer_calibration import (
        bootstrap_indices,
        pair_calibration,
        permutation_array,
    )

    n = next(iter(images.values()))[0].shape[0]
    if not 1 <= k < n - 1:
        raise PrhError(f"many-to-many: k = {k} must be in [1, n - 2 = {n - 2}]")
    grams = {x: [a @ a.T for a in layers] for x, layers in images.items()}
    ind = {x: np.stack([indicator(neighbours(g, k), n) for g in gs]) for x, gs in grams.items()}
    sims = {y: [item_similarity(c, m) for c in layers] for y, layers in captions.items()}
    nbrs = {y: np.stack([caption_item_neighbours(c @ c.T, m, k) for c in layers]) for y, layers in captions.items()}
    pairs = [(x, y) for x in images for y in captions]
    score = lambda i, nb: float(np.max(many_to_many_knn_all(i, nb, m)))
    null = {p: np.empty(permutations) for p in pairs}
    for t, perm in enumerate(permutation_array(n, permutations, seed)):
        rows = (perm[:, None] * m + np.arange(m)).ravel()
        inv = inverse_permutation(perm)
        moved = {y: inv[nb[:, rows, :]] for y, nb in nbrs.items()}
        for x, y in pairs:
            null[(x, y)][t] = score(ind[x], moved[y])
    boot = {p: np.empty(bootstrap) for p in pairs}
    depth = ranking_depth(k, n)
    ranked = {x: [None if depth is None else neighbours(g, depth) for g in gs] for x, gs in grams.items()}
    for b, idx in enumerate(bootstrap_indices(n, bootstrap, seed)):
        img = {}
        for x, gs in grams.items():
            nb = [resampled_neighbours(g, idx, k, r) for g, r in zip(gs, ranked[x])]
            if any(v is None for v in nb):
                raise PrhError(f"bootstrap resample holds too few distinct items for k = {k}")
            img[x] = np.stack([indicator(v, n) for v in nb])
        cap = {y: np.stack([resampled_item_neighbours(s, m, idx, k) for s in ss]) for y, ss in sims.items()}
        for x, y in pairs:
            boot[(x, y)][b] = score(img[x], cap[y])
    record = get_metric("mutual_knn")
    return {(x, y): pair_calibration(record, {"k": k}, many_to_many_knn_all(ind[x], nbrs[y], m), null[(x, y)],
                                     boot[(x, y)], n, alpha, "max") for x, y in pairs}  # fmt: skip


# ---------------------------------------------------------------- the analysis


def calibrated_rows(settings: dict, axis: str, size: int, vision: dict, language: dict) -> list[dict]:
    """One row per vision-language pair: raw score, calibration and interval at one c (or v)."""
    from prh.metrics.layer_calibration import calibrate_models

    metric = settings["metric"]
    models = {**{f"v:{m}": x for m, x in vision.items()}, **{f"l:{m}": x for m, x in language.items()}}
    pairs = [(f"v:{v}", f"l:{lang}") for v in vision for lang in language]
    out = calibrate_models(models, pairs, metric["name"], permutations=int(settings["permutations"]),
                           bootstrap=int(settings["bootstrap"]), alpha=float(settings["alpha"]),
                           seed=int(settings["seed"]), **{k: v for k, v in metric.items() if k != "name"})  # fmt: skip
    return [{"axis": axis, "size": size, "model_x": x[2:], "model_y": y[2:], **calibration_fields(c)}
            for (x, y), c in out.items()]  # fmt: skip


def calibration_fields(c) -> dict[str, float]:
    """A LayerCalibration's score, interval, tau, p-value and calibrated score, the interval mapped through the same
    clamp((s - tau) / (1 - tau))."""
    span = max(1.0 - c.tau, 1e-12)
    return {"score": c.score, "ci_low": c.ci_low, "ci_high": c.ci_high, "tau": c.tau, "p_value": c.p_value,
            "calibrated": c.calibrated, "calibrated_low": float(np.clip((c.ci_low - c.tau) / span, 0, 1)),
            "calibrated_high": float(np.clip((c.ci_high - c.tau) / span, 0, 1))}  # fmt: skip


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


def check_entries(settings: dict, entries: list[dict]) -> dict[tuple[str, str], dict]:
    """(axis, model) -> its entries (:func:`ensure_entries`), every pooled size the settings name present."""
    by = {(e["axis"], e["model"]): e for e in entries}
    for (axis, model), e in by.items():
        missing = [s for s in axis_sizes(axis, settings["captions"], settings["views"]) if str(s) not in e["pooled"]]
        if missing:
            raise PrhError(f"tts: model {model!r} has no {axis} entries for sizes {missing} (rerun its extraction)")
    if not any(a == "views" for a, _ in by) or not any(a == "captions" for a, _ in by):
        raise PrhError("tts: needs views of at least one vision model and captions of at least one language model")
    return by


def analyse(settings: dict, entries: list[dict], store_root: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Score, fit and test from the stage's store entries (``settings``: SETTINGS of the tts config) -> (curves:
    one row per axis, size and pair; fits; summary)."""
    from prh.align import prepare
    from prh.store import FeatureStore

    t0, c0 = time.perf_counter(), time.process_time()
    by = check_entries(settings, entries)
    store = FeatureStore(store_root)
    cache: dict[str, list[np.ndarray]] = {}

    def raw(key: str) -> list[np.ndarray]:
        if key not in cache:
            cache[key] = [np.asarray(x, dtype=np.float32) for x in store.open(key).layers()]
        return cache[key]

    q, caps, views = float(settings["q"]), settings["captions"], settings["views"]
    vision = [m for a, m in by if a == "views"]
    language = [m for a, m in by if a == "captions"]

    def at(axis: str, size: int) -> dict[str, list[np.ndarray]]:
        return {m: prepare(raw(by[(axis, m)]["pooled"][str(size)]), q) for m in (vision if axis == "views" else language)}

    v1, l1 = at("views", views[0]), at("captions", caps[0])
    rows = [r for c in caps for r in calibrated_rows(settings, "captions", c, v1, at("captions", c))]
    rows += [r for v in views for r in calibrated_rows(settings, "views", v, at("views", v), l1)]
    curves = pd.DataFrame(rows)
    fit_table = fits(curves)
    metric, draws, seed = settings["metric"], int(settings["permutations"]), int(settings["seed"])
    C, V = caps[-1], views[-1]
    more_c = paired_test(metric, v1, l1, at("captions", C), draws, seed)
    more_v = paired_test(metric, l1, v1, at("views", V), draws, seed)
    prompt = {}
    for c in axis_sizes("prompt", caps, views):
        test = paired_test(metric, v1, at("captions", c), at("prompt", c), draws, seed)
        prompt[str(c)] = {"delta": test["delta"], "p_value": test["p_value"],
                          "per_pair": {f"{x}|{y}": float(test["per_pair"][i, j]) for i, x in enumerate(v1)
                                       for j, y in enumerate(language)}}  # fmt: skip
    at_c = curves[curves.axis == "captions"].pivot_table(index=["model_x", "model_y"], columns="size", values="calibrated")
    summary = {
        "n": int(next(iter(v1.values()))[0].shape[0]), "captions": caps, "views": views, "metric": metric,
        "prompt": settings["prompt"], "prompt_effect": prompt,
        "captions_gain": more_c["delta"], "captions_gain_p_value": more_c["p_value"],
        "views_gain": more_v["delta"], "views_gain_p_value": more_v["p_value"],
        "ranking_spearman_c1_cC": spearman(at_c[caps[0]].to_numpy(), at_c[C].to_numpy()),
        "many_to_many": many_to_many_rows(settings, v1, {m: caption_rows([raw(k) for k in by[("captions", m)]["members"][:C]])
                                                         for m in language}, curves),
        "analysis_wall_s": time.perf_counter() - t0, "analysis_cpu_s": time.process_time() - c0,
    }  # fmt: skip
    return curves, fit_table, summary


def many_to_many_rows(settings: dict, vision: dict, captions: dict[str, list[np.ndarray]], curves: pd.DataFrame) -> list[dict]:
    """Per pair: calibrated many-to-many mutual kNN over all C captions (each its own row) beside the calibrated
    one-to-one scores with the first caption and with the mean of C captions (from ``curves``)."""
    from prh.align import prepare

    caps = settings["captions"]
    C, k = caps[-1], int(settings["metric"].get("k", 10))
    cal = many_to_many_calibrated(vision, {m: prepare(rows, float(settings["q"])) for m, rows in captions.items()}, C, k,
                                  int(settings["permutations"]), int(settings["bootstrap"]), float(settings["alpha"]),
                                  int(settings["seed"]))  # fmt: skip
    one = curves[curves.axis == "captions"].set_index(["model_x", "model_y", "size"])
    out = []
    for (x, y), c in cal.items():
        row = {"model_x": x, "model_y": y, "captions": C, **{f"many_to_many_{f}": v for f, v in calibration_fields(c).items()}}
        for size, name in ((caps[0], "one_to_one_first"), (C, "one_to_one_mean")):
            row |= {f"{name}_{f}": float(one.loc[(x, y, size), f]) for f in ("score", "p_value", "calibrated")}
        out.append(row)
    return out


# ---------------------------------------------------------------- workflow jobs and the stand-alone command


def features_job(model: str, spec: dict, model_receipts: list[str], dataset_npz: str, store_root: str, params: dict,
                 axis: str, sizes: list[int], view_seed: int, out: str, device: str = "cpu", n_gpus: int = 0,
                 gpu: dict | None = None, batch_size: int = 64) -> None:  # fmt: skip
    """One model's entries on one axis (:func:`ensure_entries`) on the job's GPUs (prh.pipeline.on_gpus); writes a
    receipt listing their keys."""
    from prh.data import load_saved
    from prh.io import write_json_atomic
    from prh.models import weights_digest
    from prh.pipeline import on_gpus, resolved_spec
    from prh.store import FeatureStore

    spec = resolved_spec(model, spec, model_receipts, store_root)
    dataset = load_saved(dataset_npz)
    with on_gpus(model, spec, params.get("dtype", "float32"), store_root, device, n_gpus, gpu) as (dev, load):
        entries = ensure_entries(FeatureStore(store_root), model, spec, dataset, params, axis, sizes, view_seed,
                                 weights_digest=weights_digest(model, spec), load_model_fn=load, device=dev,
                                 batch_size=batch_size)  # fmt: skip
    write_json_atomic(out, {**entries, "dataset": dataset.name})


def score_job(settings: dict, receipts: list[str], store_root: str, outputs: dict[str, str]) -> None:
    """The analysis (:func:`analyse`) from the stage's receipts; writes curves, fits and summary."""
    from prh.io import write_csv_atomic, write_json_atomic

    curves, fit_table, summary = analyse(settings, [json.loads(Path(p).read_text()) for p in receipts], store_root)
    write_csv_atomic(outputs["curves"], curves)
    write_csv_atomic(outputs["fits"], fit_table)
    write_json_atomic(outputs["summary"], json.loads(json.dumps(summary, default=float)))


def figure_job(curves_csv: str, fits_csv: str, summary_json: str, out_png: str) -> str:
    """Draw the stage's figure (prh.figures.tts) from its tables -> its reading."""
    from prh.figures.tts import draw_tts

    summary = json.loads(Path(summary_json).read_text())
    return draw_tts(pd.read_csv(curves_csv), pd.read_csv(fits_csv), summary, str(Path(out_png).with_suffix(""))).reading


def extraction_params(spec: dict, modality: str, axis: str, max_tokens: int, prompt: str) -> dict:
    """A stand-alone run's extraction parameters (the workflow takes them from prh.plan.Plan.extraction_params)."""
    if modality == "vision":
        return {"pooling": "auto", **({"input_size": spec["input_size"]} if "input_size" in spec else {})}
    return {"pooling": "mean", "max_tokens": int(max_tokens), "prompt_template": prompt if axis == "prompt" else None}


def check_config(config: dict) -> dict:
    """The stand-alone tts config with defaults filled; a missing or bad field raises one PrhError naming it."""
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


def run(config: dict) -> dict:
    """The stage without Snakemake, through the workflow's job functions: the dataset, then :func:`features_job` per
    model and axis, :func:`score_job` and :func:`figure_job`, all under ``<results>/tts/``; returns the summary."""
    from prh.config import CACHED_PACKAGES, model_modality
    from prh.data import load_dataset, save_dataset
    from prh.io import write_json_atomic
    from prh.models import prepare_model
    from prh.pipeline import resolved_spec

    cfg = check_config(config)
    t0, c0 = time.perf_counter(), time.process_time()
    out = Path(cfg["results"]) / "tts"
    data = out / "data" / "tts.npz"
    save_dataset(load_dataset("tts", cfg["dataset"]), data)
    receipts, seconds = [], {}
    for name, spec in cfg["models"].items():
        t1 = time.perf_counter()
        modality = model_modality(name, spec)
        if spec.get("package") in CACHED_PACKAGES:
            prepare_model(name, resolved_spec(name, spec, [], cfg["store"]))
        for axis in ("views",) if modality == "vision" else ("captions", "prompt"):
            receipts.append(str(out / "features" / f"{name}.{axis}.json"))
            features_job(name, spec, [], str(data), cfg["store"],
                         extraction_params(spec, modality, axis, cfg["max_tokens"], cfg["prompt"]), axis,
                         axis_sizes(axis, cfg["captions"], cfg["views"]), int(cfg["view_seed"]), receipts[-1],
                         device=cfg["device"], batch_size=int(spec.get("batch_size", cfg["batch_size"])))  # fmt: skip
        seconds[name] = time.perf_counter() - t1
    tables = {t: str(out / f"{t}.{ext}") for t, ext in (("curves", "csv"), ("fits", "csv"), ("summary", "json"))}
    score_job({k: cfg[k] for k in SETTINGS}, receipts, cfg["store"], tables)
    reading = figure_job(tables["curves"], tables["fits"], tables["summary"], str(out / "tts.png"))
    summary = json.loads(Path(tables["summary"]).read_text())
    summary |= {"reading": reading, "results_dir": str(out), "extract_seconds": seconds,
                "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}  # fmt: skip
    write_json_atomic(tables["summary"], summary)
    return summary


def result_markdown(out_dir: str | Path) -> str:
    """Markdown tables of one run's tables (curves.csv, fits.csv, summary.json in ``out_dir``), for
    docs/test-time-scaling.md: calibrated score per pair at every c and v, the gains and fits, the prompt at the
    first and the largest c, many-to-many vs one-to-one."""
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
        t["raw first -> last"] = [f"{f.loc[p, 'first']:.4f} -> {f.loc[p, 'last']:.4f}" for p in t.index]
        t["fit a, b, k (R^2)"] = [f"{f.loc[p, 'a']:.3f}, {f.loc[p, 'b']:.3f}, {f.loc[p, 'k']:.2f} ({f.loc[p, 'r2']:.2f})"
                                  for p in t.index]  # fmt: skip
        pooled_fit = f.loc["pooled / pooled"]
        head = "| pair | " + " | ".join(f"{axis[0]}={c}" for c in t.columns[:-2]) + " | raw first -> last | fit a, b, k (R^2) |"
        rows = [head, "|" + "---|" * (len(t.columns) + 1)]
        rows += [f"| {p} | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + " |"
                 for p, r in zip(t.index, t.itertuples(index=False))]  # fmt: skip
        gain, p = s[f"{axis}_gain"], s[f"{axis}_gain_p_value"]
        parts.append(f"Calibrated mutual kNN vs {axis} (raw scores in the fit columns):\n\n" + "\n".join(rows) +
                     f"\n\nPooled over pairs: raw {pooled_fit['first']:.4f} -> {pooled_fit['last']:.4f}, gain "
                     f"{gain:+.4f} ({100 * gain / pooled_fit['first']:+.1f}%), paired permutation p = {p:.3f}; pooled "
                     f"fit a = {pooled_fit['a']:.3f}, b = {pooled_fit['b']:.3f}, k = {pooled_fit['k']:.2f}, "
                     f"R^2 = {pooled_fit['r2']:.2f}.")  # fmt: skip
    C, first = s["captions"][-1], s["captions"][0]
    prompts = s["prompt_effect"]
    head = (f"| pair | many-to-many (p; calibrated) | one-to-one, c = {first} | one-to-one, mean of {C} | prompt at c = "
            f"{first} | prompt at c = {C} |")  # fmt: skip
    rows = [head, "|---|---|---|---|---|---|"]
    rows += [f"| {r['model_x']} / {r['model_y']} | {r['many_to_many_score']:.4f} (p = {r['many_to_many_p_value']:.3f}; "
             f"{r['many_to_many_calibrated']:.4f}) | {r['one_to_one_first_score']:.4f} ({r['one_to_one_first_calibrated']:.4f}) | "
             f"{r['one_to_one_mean_score']:.4f} ({r['one_to_one_mean_calibrated']:.4f}) | "
             f"{prompts[str(first)]['per_pair'][r['model_x'] + '|' + r['model_y']]:+.4f} | "
             f"{prompts[str(C)]['per_pair'][r['model_x'] + '|' + r['model_y']]:+.4f} |" for r in s["many_to_many"]]  # fmt: skip
    effect = "; ".join(f"at c = {c}: mean delta {e['delta']:+.4f}, paired permutation p = {e['p_value']:.3f}"
                       for c, e in prompts.items())  # fmt: skip
    parts.append("Raw mutual kNN (max over layer pairs; calibrated in parentheses) by protocol, and the prompt's "
                 "change per pair:\n\n" + "\n".join(rows) + f"\n\nPrompt {effect}. Spearman between pair rankings at "
                 f"c = {first} and c = {C}: {s['ranking_spearman_c1_cC']:.2f}.")  # fmt: skip
    return "\n\n".join(parts)
