"""One function per workflow job: the thin scripts under workflow/scripts/ call exactly one of these."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prh.errors import PrhError
from prh.hub import go_offline
from prh.io import write_csv_atomic, write_json_atomic
from prh.runtime import job_profile, phase, start_profile
from prh.worker import delegate

if TYPE_CHECKING:  # numpy and pandas are imported where used: a job handed to the fork server never needs them
    import numpy as np
    import pandas as pd


PROFILE_LINE = "prh job profile:"


def _job_config() -> dict | None:
    """The workflow config of the Snakemake job running this script (its ``snakemake`` object), if any."""
    job = getattr(sys.modules.get("__main__"), "snakemake", None)
    return getattr(job, "config", None)


@contextlib.contextmanager
def logged(log_path: str | os.PathLike | None, offline: bool = True) -> Iterator[None]:
    """Run a workflow job: stdout/stderr to its log, a PrhError as one line on the console and exit status 1, and
    (``offline``, every job but prefetch) the Hugging Face libraries on the hub cache only (prh.hub.go_offline): a
    file the cache lacks fails at once, never after a network time-out."""
    start_profile()
    if offline:
        go_offline()
        delegate(_job_config(), log_path)  # run in the fork server (prh.worker) and exit, when it is on and ready
    console = sys.__stderr__
    if log_path is None:
        handle = None
    else:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handle = open(log_path, "w", buffering=1)
    try:
        with contextlib.ExitStack() as stack:
            if handle is not None:
                stack.enter_context(contextlib.redirect_stdout(handle))
                stack.enter_context(contextlib.redirect_stderr(handle))
            yield
            if handle is not None:  # where the job's time went (benchmarks/job_overhead.py reads this line)
                handle.write(f"\n{PROFILE_LINE} {json.dumps(job_profile())}\n")  # after any progress bar
    except PrhError as err:
        line = f"error: {err}"
        if handle is not None:
            handle.write(line + "\n")
        print(line, file=console)
        sys.exit(1)
    finally:
        if handle is not None:
            handle.close()


# -- data ------------------------------------------------------------------------------------------
def materialise_dataset(name: str, spec: dict, out: str) -> None:
    """Load a dataset from its source and save it as one .npz the later stages read."""
    from prh.data import load_dataset, save_dataset

    save_dataset(load_dataset(name, spec), out)


# -- zoo -------------------------------------------------------------------------------------------
VISION_RECIPE_KEYS = ("arch", "arch_kwargs", "objective", "steps", "schedule_steps", "tasks", "lr", "weight_decay", "seed",
                      "width")  # fmt: skip
LANGUAGE_RECIPE_KEYS = ("hidden", "layers", "heads", "intermediate", "steps", "lr", "seq_len", "seed")


def zoo_recipe(spec: dict, keys: tuple[str, ...], data_field: str) -> dict:
    """A zoo training recipe from a model spec: the recipe keys, `batch` as batch_size, `train_data` as its data."""
    recipe = {k: spec[k] for k in keys if k in spec}
    if "batch" in spec:
        recipe["batch_size"] = spec["batch"]
    if "train_data" in spec:
        recipe[data_field] = spec["train_data"]
    return recipe


def vision_recipe(spec: dict) -> dict:
    """The zoo training recipe of a vision model spec (plain data, hashed into the cache key)."""
    return zoo_recipe(spec, VISION_RECIPE_KEYS, "dataset")


def language_recipe(spec: dict) -> dict:
    """The zoo training recipe of a causal LM spec."""
    return zoo_recipe(spec, LANGUAGE_RECIPE_KEYS, "corpus")


def train_zoo_model(name: str, spec: dict, cache_root: str, out: str) -> None:
    """Train (or reuse from the recipe-hash cache) one zoo model and write its receipt."""
    from prh.config import model_modality

    start = time.perf_counter()
    if model_modality(name, spec) == "vision":
        from prh.zoo.vision import ensure_trained

        path = ensure_trained(vision_recipe(spec), cache_root, name=name)
    else:
        from prh.zoo.language import ensure_trained_lm

        path = ensure_trained_lm(language_recipe(spec), cache_root, name=name)
    write_json_atomic(out, {"model": name, "checkpoint": str(path), "seconds": round(time.perf_counter() - start, 2)})


def prepare_model_job(name: str, spec: dict, store_root: str, out: str) -> None:
    """Build a packaged model's one-time weights cache in the store (prh.models.prepare_model) and write its receipt,
    so that the jobs loading the model start from the cache instead of waiting on each other to build it."""
    from prh.models import prepare_model

    start = time.perf_counter()
    built = prepare_model(name, resolved_spec(name, spec, [], store_root))
    if built is None:
        raise PrhError(f"models.{name}: has no weights cache to prepare (not one of prh.config.CACHED_PACKAGES)")
    cache, digest = built
    write_json_atomic(out, {"model": name, "checkpoint": str(cache), "source_sha256": digest,
                            "seconds": round(time.perf_counter() - start, 2)})  # fmt: skip


def resolved_spec(name: str, spec: dict, model_receipts: list[str], store_root: str) -> dict:
    """A model spec with its zoo checkpoint path filled in (from its training receipt), and packaged models' weights
    cache in the store (their prepare receipt only orders the jobs)."""
    spec = dict(spec)
    if spec["source"] == "packaged":
        spec.setdefault("cache_root", store_root)
    if spec["source"] == "zoo":
        if not model_receipts:
            raise PrhError(f"models.{name}: zoo model has no training receipt")
        spec["checkpoint"] = json.loads(Path(model_receipts[0]).read_text())["checkpoint"]
    return spec


# -- extraction ------------------------------------------------------------------------------------
@contextlib.contextmanager
def on_gpus(model: str, spec: dict, dtype: str, store_root: str, device: str, n_gpus: int = 0,
            gpu: dict | None = None) -> Iterator[tuple[str, Callable[..., Any]]]:  # fmt: skip
    """(device, model loader) of a job on its ``n_gpus`` GPUs (prh.devices.acquire_gpus: the scheduler's, else local
    slots; ``gpu`` is prh.plan.Plan.gpu_settings); a model the GPUs cannot hold stops here unless offload is set."""
    from prh import devices
    from prh.models import load_model

    if gpu is None or n_gpus <= 0:
        yield devices.resolve_device(device), load_model
        return
    wait_s = devices.wait_seconds(gpu["wait_s"])
    lock_dir = devices.host_lock_dir(store_root)
    with devices.acquire_gpus(n_gpus, gpu["slots"], lock_dir, wait_s, who=f"models.{model}") as ids:
        dev = devices.resolve_device(device)
        print(f"prh: models.{model} on {len(ids or [])} GPU(s): {','.join(ids or [])} "
              f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}), device {dev}", file=sys.stderr)
        if not dev.startswith("cuda"):
            yield dev, load_model
            return
        visible = len(ids or [])
        est = devices.estimate(float(spec.get("n_params", 1e8)), spec.get("dtype", dtype), visible, gpu["memory_gb"],
                               gpu["offload"], bool(spec.get("load_in_4bit")))  # fmt: skip
        devices.check_fits(model, est, visible, gpu["memory_gb"], gpu["offload"])
        placement = devices.Placement(visible, gpu["memory_gb"], gpu["offload"], gpu["offload_folder"])
        yield dev, functools.partial(load_model, placement=placement)


def extract_features(
    model: str, spec: dict, model_receipts: list[str], dataset_npz: str, store_root: str, params: dict,
    out: str, device: str = "cpu", n_gpus: int = 0, gpu: dict | None = None, batch_size: int = 64,
) -> None:  # fmt: skip
    """Extract one model's layer-wise features on one dataset into the store (a no-op if its key exists), on the
    job's ``n_gpus`` GPUs (``on_gpus``)."""
    with phase("imports"):
        from prh.data import load_saved
        from prh.extract import extract_to_store
        from prh.models import weights_digest
        from prh.store import FeatureStore, write_receipt

    spec = resolved_spec(model, spec, model_receipts, store_root)
    with phase("dataset"):
        dataset = load_saved(dataset_npz)
    store = FeatureStore(store_root)
    with on_gpus(model, spec, params["dtype"], store_root, device, n_gpus, gpu) as (dev, load):
        with phase("weights digest"):
            digest = weights_digest(model, spec)
        key, _ = extract_to_store(
            store, model, spec, dataset, params, weights_digest=digest, load_model_fn=load, device=dev,
            batch_size=batch_size,
        )  # fmt: skip
    with phase("receipt"):
        entry = store.open(key)
        write_receipt(out, key, entry.request, {**store.info(key).as_dict(), "n_params": entry.attrs.get("n_params")})


def train_zoo_job(name: str, spec: dict, cache_root: str, out: str, device: str = "cpu", gpus: int = 0,
                  wait_s: float = 600.0) -> None:  # fmt: skip
    """Train one zoo model (on its own GPU when the config has GPUs: prh.devices.acquire_gpus)."""
    from prh.devices import acquire_gpus, host_lock_dir, wait_seconds

    with acquire_gpus(1 if gpus > 0 else 0, gpus, host_lock_dir(cache_root), wait_seconds(wait_s), who=f"models.{name}"):
        train_zoo_model(name, spec, cache_root, out)


# -- probes ----------------------------------------------------------------------------------------
def probe_model(
    model: str, receipts: list[str], data: list[str], tasks: dict, layer: str | int, max_train: int, store_root: str,
    out: str,
) -> None:  # fmt: skip
    """Fit every probe task on one model's stored features (``receipts``, with their datasets' ``data`` in the same
    order); write its accuracy rows."""
    import pandas as pd

    from prh import probe
    from prh.data import load_saved
    from prh.store import FeatureStore, read_receipt

    store = FeatureStore(store_root)
    tables = []
    for receipt_path, data_path in zip(receipts, data, strict=True):
        receipt = read_receipt(receipt_path)
        dataset = load_saved(data_path)
        # the tasks are the labels' dataset's: the features may be a twin's (same images, e.g. emoji-keywords for
        # emoji-names), whose receipt names the twin
        name = dataset.name
        if dataset.is_train is None:
            raise PrhError(f"datasets.{name}: probe tasks need `probe_split: true`")
        layers = store.open(receipt["key"]).layers()
        tables.append(probe.probe_model(layers, dataset.labels, dataset.is_train, tasks, layer,
                                        model=model, dataset=name, max_train=max_train))  # fmt: skip
    write_csv_atomic(out, pd.concat(tables, ignore_index=True))


def probe_summary(tables: list[str], threshold: float, outputs: dict[str, str]) -> None:
    """Merge per-model probe tables into accuracy, solved matrix and tasks-solved tables."""
    import pandas as pd

    from prh import probe

    acc = pd.concat([pd.read_csv(t) for t in tables], ignore_index=True)
    solved = probe.solved_matrix(acc, threshold)
    write_csv_atomic(outputs["accuracy"], acc)
    write_csv_atomic(outputs["solved"], solved)
    write_csv_atomic(outputs["tasks_solved"], probe.tasks_solved(solved))


# -- alignment -------------------------------------------------------------------------------------
def align_job(
    experiment: dict, xs: list[str], ys: list[str], receipts: dict[str, str], store_root: str, q: float,
    calibration: dict, out_csv: str, out_matrices: str, device: str = "cpu",
) -> None:  # fmt: skip
    """Score every model pair of one experiment (prh.experiment.align_experiment), or of a sample-size sweep over
    ``device`` (prh.sweep.sweep_experiment) when the experiment has sizes."""
    if "sizes" in experiment:
        from prh.sweep import sweep_experiment

        sweep_experiment(experiment, xs, ys, receipts, store_root, q, calibration, out_csv, out_matrices, device)
        return
    from prh.experiment import align_experiment

    align_experiment(experiment, xs, ys, receipts, store_root, q, calibration, out_csv, out_matrices)


def model_table(models: dict, receipts: list[str], out: str) -> None:
    """One row per model: modality, source, family, objective, width, steps and parameter count."""
    import pandas as pd

    from prh.config import model_modality
    from prh.store import read_receipt

    n_params, n_layers = {}, {}
    for path in receipts:
        r = read_receipt(path)
        n_params[r["request"]["model"]["id"]] = r["entry"].get("n_params")
        n_layers[r["request"]["model"]["id"]] = r["entry"]["shape"][0]
    rows = []
    for name, spec in models.items():
        family = spec.get("family") or spec.get("arch", spec.get("package", spec.get("id", ""))).split("_")[0]
        rows.append({"model": name, "modality": model_modality(name, spec), "source": spec["source"], "family": family,
                     "objective": spec.get("objective", "pretrained"), "width": spec.get("width"),
                     "steps": spec.get("steps"), "n_params": n_params.get(name), "n_layers": n_layers.get(name)})  # fmt: skip
    write_csv_atomic(out, pd.DataFrame(rows))


# -- language competence ---------------------------------------------------------------------------
def score_language_model(
    model: str, spec: dict, model_receipts: list[str], corpus_npz: list[str], max_chars: int, downstream: dict,
    out: str, store_root: str, device: str = "cpu", n_gpus: int = 0, gpu: dict | None = None,
) -> None:  # fmt: skip
    """Bits-per-byte on the held-out corpus (causal LMs) and downstream multiple-choice accuracy, on the job's
    ``n_gpus`` GPUs (``on_gpus``)."""
    spec = resolved_spec(model, spec, model_receipts, store_root)
    with on_gpus(model, spec, "float32", store_root, device, n_gpus, gpu) as (dev, load):
        _score_language_model(load(model, spec, device=dev), corpus_npz, max_chars, downstream, out)


def _score_language_model(loaded: Any, corpus_npz: list[str], max_chars: int, downstream: dict, out: str) -> None:
    """Score a loaded model and write its scores."""
    from prh import lm
    from prh.data import load_saved

    corpus = load_saved(corpus_npz[0]) if corpus_npz and loaded.is_causal else None
    text = "\n".join(corpus.texts)[:max_chars] if corpus is not None else None
    tasks = lm.make_tasks({name: {"n": n} for name, n in downstream.items()}) if loaded.is_causal else {}
    write_json_atomic(out, lm.language_scores(loaded, tasks, corpus.name if corpus is not None else None, text))


def language_table(scores: list[str], published: str | None, out: str) -> None:
    """One row per language model (bpb, 1 - bpb, downstream accuracy), merged with published scores if given."""
    import pandas as pd

    from prh import lm

    rows = [json.loads(Path(p).read_text()) for p in scores]
    table = pd.DataFrame(rows, columns=None if rows else ["model", "n_params", "bpb", "lm_score", "corpus"])
    if published:
        table = lm.merge_published(published, table)
    write_csv_atomic(out, table)


# -- colour ----------------------------------------------------------------------------------------
def colour_job(names_npz: str, image_npzs: list[str], receipts: list[str], store_root: str, params: dict,
               outputs: dict[str, str]) -> None:
    """The colour experiment: pixel-PMI and language-model distances of colours against CIELAB (prh.colour); writes
    its alignment and layout tables (prh.plan.COLOUR_TABLES)."""
    import numpy as np

    from prh import colour
    from prh.data import load_saved
    from prh.store import FeatureStore, read_receipt

    names = load_saved(names_npz)
    rgb = np.stack([names.labels[c] for c in ("r", "g", "b")], axis=1)
    images = []
    for path in image_npzs:
        ds = load_saved(path)
        if ds.images is None:
            raise PrhError(f"colour.images: dataset {ds.name!r} has no images")
        images.append(ds.images)
    store = FeatureStore(store_root)
    features, layer_names = {}, {}
    for path in receipts:
        receipt = read_receipt(path)
        entry = store.open(receipt["key"])
        model = receipt["request"]["model"]["id"]
        features[model], layer_names[model] = entry.layers(), entry.layer_names
    alignment, layout = colour.colour_tables(names.texts or [], rgb, images, features, layer_names, params)
    write_csv_atomic(outputs["alignment"], alignment)
    write_csv_atomic(outputs["layout"], layout)


# -- figures and report ----------------------------------------------------------------------------
def _read_matrix(zarr_path: str, model_x: str, model_y: str) -> tuple[np.ndarray, list[str], list[str], str]:
    """The first stored layer-pair matrix of (model_x, model_y), or its transpose, with its metric id."""
    import zarr

    group = zarr.open_group(zarr_path, mode="r")
    for dataset in sorted(group.group_keys()):
        for metric in sorted(group[dataset].group_keys()):
            node = group[dataset][metric]
            for name, flip in ((f"{model_x}__{model_y}", False), (f"{model_y}__{model_x}", True)):
                if name in node:
                    arr = node[name]
                    m, nx, ny = arr[:], list(arr.attrs["layers_x"]), list(arr.attrs["layers_y"])
                    return (m.T, ny, nx, metric) if flip else (m, nx, ny, metric)
    raise PrhError(f"report.heatmaps: no layer-pair matrix for {model_x} x {model_y} in {zarr_path}")


def _draw_heatmap(tables: dict, params: dict, stem: str) -> None:
    from prh import figures

    mx, my = params["model_x"], params["model_y"]
    matrix, nx, ny, metric = _read_matrix(tables["matrices"], mx, my)
    figures.fig_layer_heatmap(matrix, nx, ny, mx, my, metric, stem, context={"dataset": params["dataset"]})


def _draw_caption_density(tables: dict, params: dict, stem: str) -> None:
    from prh import figures

    table = tables["alignment"].assign(density=lambda t: t["dataset"].map(params["density"]))
    figures.fig_caption_density(table, tables["models"], stem, metric=params["metric"])


def _draw_locality(tables: dict, params: dict, stem: str) -> None:
    import pandas as pd

    from prh import figures

    lm = tables["lm"]
    scores = lm.set_index("model")["lm_score"] if "lm_score" in lm.columns else pd.Series(dtype=float)
    figures.fig_locality(tables["alignment"].assign(lm_score=lambda t: t["model_y"].map(scores)), stem,
                         model_meta=tables["models"])


def _drawers() -> dict[str, Callable[[dict, dict, str], None]]:
    """Figure name (prh.plan.FIGURES, plus the heatmap) -> how it is drawn from its read tables and params."""
    from prh import figures
    from prh.plan import HEATMAP, HYPOTHESIS

    return {
        "convergence": lambda t, p, s: figures.fig_convergence(t["alignment"], t["solved"], s, metric=p["metric"]),
        "umap": lambda t, p, s: figures.fig_umap(t["alignment"], t["solved"], t["models"], s, metric=p["metric"]),
        "vision_language": lambda t, p, s: figures.fig_vision_language(t["alignment"], t["lm"], t["models"], s, metric=p["metric"]),
        "downstream": lambda t, p, s: figures.fig_downstream(t["alignment"], t["lm"], s, p["reference"], tasks_solved=t.get("solved"),
                                                             model_meta=t["models"], metric=p["metric"]),
        "caption_density": _draw_caption_density,
        "locality": _draw_locality,
        "agreement": lambda t, p, s: figures.fig_metric_agreement(t["alignment"], s, align_vision=t.get("av"),
                                                                  model_meta=t["models"]),
        "calibration": lambda t, p, s: figures.fig_calibration_survival(t["alignment"], t["solved"], t["vl"], t["lm"], s,
                                                                        model_meta=t["models"]),
        "scale_confound": lambda t, p, s: figures.fig_scale_confound(t["alignment"], p["shapes"], s),
        "pretrained": lambda t, p, s: figures.fig_pretrained(t["vv"], t["alignment"], t["solved"], t["models"], s,
                                                             metric=p["metric"]),
        "sample_size": lambda t, p, s: figures.fig_sample_size(t["alignment"], s, **p["calibration"]),
        "colour": lambda t, p, s: figures.fig_colour(t["colour"], t["colour_layout"], s),
        HEATMAP: _draw_heatmap,
        HYPOTHESIS: lambda t, p, s: figures.fig_hypothesis(t["experiments"], p["name"], p["vary"], p["values"],
                                                           p["trained"], s, model_meta=t["models"],
                                                           accuracy=t.get("accuracy"), claim=p["claim"],
                                                           shapes=p.get("shapes")),
    }  # fmt: skip


def draw_figure(figure: str, inputs: dict[str, str], params: dict, out_png: str) -> None:
    """Draw one of the report's figures from its input files and the config values it reads (prh.plan.FIGURES)."""
    import pandas as pd

    from prh.plan import HEATMAP, HYPOTHESIS

    kind = next((k for k in (HEATMAP, HYPOTHESIS) if figure.startswith(f"{k}-")), figure)
    drawers = _drawers()
    if kind not in drawers:
        raise PrhError(f"unknown figure {figure!r}")
    tables = {k: v if k == "matrices" else _read_tables(v) for k, v in inputs.items() if k != "experiments"}
    if "experiments" in inputs:  # alignment tables by experiment name (the file stem)
        tables["experiments"] = {Path(p).stem: pd.read_csv(p) for p in inputs["experiments"]}
    drawers[kind](tables, params, str(Path(out_png).with_suffix("")))


def _read_tables(paths: str | list[str]) -> pd.DataFrame:
    """One CSV table, or several (sample-size sweeps) stacked."""
    import pandas as pd

    if isinstance(paths, str):
        return pd.read_csv(paths)
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def build_report(config: dict, inputs: dict[str, list[str]], out_html: str, hub_commits: dict | None = None) -> None:
    """Assemble the self-contained HTML report from its declared inputs (prh.plan.Plan.report_inputs): figures,
    alignment tables (headline metric), the solved matrix and the receipts whose store keys it lists."""
    import pandas as pd

    from prh import report
    from prh.store import read_receipt

    sections = [report.Section.from_figure(Path(png).with_suffix("")) for png in inputs["figures"]]
    headline = config["report"]["headline_metric"]
    alignment = {Path(p).stem: pd.read_csv(p) for p in inputs["alignment"]}
    alignment = {k: v[v["metric"] == headline] for k, v in alignment.items() if (v["metric"] == headline).any()}
    solved = pd.read_csv(inputs["solved"][0]) if inputs.get("solved") else None
    keys = []
    for path in inputs["receipts"]:
        r = read_receipt(path)
        keys.append({"model": r["request"]["model"]["id"], "dataset": r["request"]["dataset"]["id"], "key": r["key"]})
    report.build_report(sections, config, report.collect_versions(), keys, out_html, hub_commits=hub_commits,
                        alignment=alignment, solved=solved, title=config["report"]["title"])  # fmt: skip
