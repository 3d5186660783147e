"""The `prh` command: inspect sources and the feature store, and score your own features against stored models."""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

from prh.errors import PrhError

MAX_DRAWS = 10_000  # --permutations / --bootstrap: at most this many draws
MAX_PERMUTATION_BYTES = 1 << 30  # the (K, n) int64 permutation array --permutations implies: at most 1 GiB


def _table(rows: list[dict], columns: list[str]) -> str:
    """Plain fixed-width text table."""
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _config(args: argparse.Namespace) -> dict:
    from prh.config import load_config

    return load_config(args.config)


def cmd_data_ls(args: argparse.Namespace) -> None:
    """List every dataset of the config with its size and content digests."""
    from prh.data import load_dataset

    rows = []
    for name, spec in _config(args)["datasets"].items():
        ds = load_dataset(name, spec)
        rows.append({"dataset": name, "source": spec["source"], "n": ds.n,
                     "image_digest": (ds.image_digest or "-")[:16], "text_digest": (ds.text_digest or "-")[:16]})  # fmt: skip
    print(_table(rows, ["dataset", "source", "n", "image_digest", "text_digest"]))


MODEL_COLUMNS = ["model", "source", "modality", "commit", "digest", "n_params", "dtype", "gpus", "gpu_gb", "host_gb"]


def cmd_models_ls(args: argparse.Namespace) -> None:
    """List every model of the config: source, modality, hub commit, weights digest, and a job's estimated GPU count,
    GPU and host memory (prh.devices.estimate; the resources its Snakemake jobs request)."""
    from prh.hub import HubMissing
    from prh.models import weights_digest
    from prh.pipeline import resolved_spec
    from prh.plan import Plan

    cfg = _config(args)
    plan = Plan(cfg)
    rows = []
    for name, spec in cfg["models"].items():
        receipts = plan.model_receipt(name)
        commit = plan.hub_commits.get(f"models.{name}")
        if spec["source"] == "zoo" and not Path(receipts[0]).exists():
            digest = "(not trained yet: run snakemake)"
        else:
            try:
                digest = weights_digest(name, resolved_spec(name, plan.model_spec(name), receipts, cfg["store"]))[:16]
            except HubMissing:
                digest = "not cached"
        est = plan.estimate(name)
        rows.append({"model": name, "source": spec["source"], "modality": plan.modality(name),
                     "commit": commit[:12] if commit else "-", "digest": digest,
                     "n_params": f"{plan.n_params(name):.3g}", "dtype": plan.extraction_params(name)["dtype"],
                     "gpus": est.gpus, "gpu_gb": f"{est.gpu_gb:.1f}", "host_gb": f"{est.host_gb:.1f}"})  # fmt: skip
    print(_table(rows, MODEL_COLUMNS))


def _store(args: argparse.Namespace):
    from prh.store import FeatureStore

    return FeatureStore(args.store)


def cmd_store_ls(args: argparse.Namespace) -> None:
    """List committed store entries."""
    rows = [e.as_dict() for e in _store(args).ls()]
    for r in rows:
        r["key"] = r["key"][:16]
        r["size"] = f"{r['size_bytes'] / 2**20:.1f} MiB"
        r["age"] = f"{r['age_s'] / 3600:.1f} h"
    print(_table(rows, ["key", "model", "dataset", "shape", "size", "age"]) if rows else "store is empty")


def cmd_store_show(args: argparse.Namespace) -> None:
    """Print one entry's request, attrs and layout as JSON."""
    store = _store(args)
    print(json.dumps(store.show(_full_key(store, args.key)), indent=2, default=str))


def _full_key(store, prefix: str) -> str:
    """The one entry key starting with ``prefix`` (a non-empty hex prefix); PrhError otherwise."""
    if not re.fullmatch(r"[0-9a-f]{1,64}", prefix):
        raise PrhError(f"store key {prefix!r} is not a key or a key prefix (hex digits; `prh store ls` lists them)")
    matches = [k for k in store.keys() if k.startswith(prefix)]
    if len(matches) != 1:
        raise PrhError(f"store key {prefix!r}: {'no' if not matches else len(matches)} matching entries")
    return matches[0]


def cmd_store_verify(args: argparse.Namespace) -> None:
    """Re-checksum the whole store; one line per damaged item with its repair command, exit 1 if any."""
    store = _store(args)
    damage = store.audit()
    for item in damage:
        print(item.line())
    stale = store.stale_temps()
    if stale:
        print(f"{len(stale)} temp files or dirs of killed writes (harmless; `prh store gc` removes them)")
    old = store.old_format_memos()
    if old:
        print(f"{len(old)} memos in an older format without their key (never read: recomputed when next needed; "
              f"`prh store gc` removes them)")  # fmt: skip
    counts = {"entries": len(store.keys()), "memos": len(store.memo_keys())}
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" and the zoo / model caches checked: {len(damage)} damaged")
    if damage:
        sys.exit(1)


def referenced_keys(results: str) -> tuple[set[str], int]:
    """(store keys named by the extraction receipts under ``results``, how many such receipts were read)."""
    from prh.plan import Paths

    keys, n = set(), 0
    for path in Paths(results).existing_receipts():
        try:
            receipt = json.loads(path.read_text())  # a tts receipt names its members' and pooled entries' keys
            keys |= {receipt["key"]} if "key" in receipt else {*receipt["members"], *receipt["pooled"].values()}
            n += 1
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return keys, n


def _keep_set(store, results: str) -> set[str]:
    """The entries ``gc --unreferenced`` keeps; PrhError when the receipts under ``results`` name none of the store's
    entries (a wrong or empty results folder would make it remove them all)."""
    where = f"{Path(results).resolve()} (--results {results})"
    keep, n = referenced_keys(results)
    entries = set(store.keys())
    if entries and not keep & entries:
        found = f"none of the {n} receipts under {where} names" if n else f"no extraction receipts under {where} name"
        raise PrhError(f"gc --unreferenced: {found} an entry of the store at {store.root}: refusing to remove all "
                       f"{len(entries)} entries; pass --results of the run that uses this store")  # fmt: skip
    print(f"keeping the {len(keep & entries)} entries named by {n} receipts under {where}")
    return keep


def cmd_store_gc(args: argparse.Namespace) -> None:
    """Remove temp dirs of killed writes and, with --unreferenced (and --yes), entries no receipt under --results names."""
    from prh.store import OTHER_HOST_AGE_S

    store = _store(args)
    keep = _keep_set(store, args.results) if args.unreferenced else None
    act = not args.dry_run and (args.yes or not args.unreferenced)
    hours = OTHER_HOST_AGE_S / 3600 if args.other_hosts_after is None else args.other_hosts_after
    if hours < 0:
        raise PrhError(f"--other-hosts-after {hours} is negative (hours without a change)")
    removed = store.gc(keep, dry_run=not act, other_host_age_s=hours * 3600)
    verb = "removed" if act else "would remove"
    for path in removed:
        print(f"{verb} {path}")
    print(f"{len(removed)} paths {verb}" + ("" if act or args.dry_run else "; rerun with --yes to remove them"))


def cmd_store_rm(args: argparse.Namespace) -> None:
    """Delete an entry, memo, zoo checkpoint or model cache, and the receipts naming it, so the workflow remakes it."""
    store = _store(args)
    ident = args.key if "/" in args.key else _full_key(store, args.key)
    for path in store.remove(ident):
        print(f"removed {path}")
    receipts = receipts_naming(args.results, ident.rpartition("/")[2])
    for receipt in receipts:
        receipt.unlink()
        print(f"removed receipt {receipt} (the workflow reruns its job)")
    if not receipts and not ident.startswith("memo/"):
        print(f"no receipt under {Path(args.results).resolve()} (--results {args.results}) names it")


def receipts_naming(results: str, name: str) -> list[Path]:
    """Extraction, zoo, weights-cache and tts receipts under ``results`` that name a store key or checkpoint directory."""
    from prh.plan import Paths

    out = []
    for path in Paths(results).existing_receipts():
        try:
            receipt = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(receipt, dict):
            continue
        keys = {receipt.get("key"), *receipt.get("members", []), *dict(receipt.get("pooled", {})).values()}  # tts: several
        if name in keys or Path(str(receipt.get("checkpoint", ""))).name == name:
            out.append(path)
    return sorted(out)


@functools.cache
def _name_re() -> re.Pattern[str]:
    """The config schema's pattern of dataset and model names (``definitions.name``): usable in file paths."""
    import yaml

    from prh.config import SCHEMA_PATH

    return re.compile(yaml.safe_load(SCHEMA_PATH.read_text())["definitions"]["name"]["pattern"])


def _check_name(value: str, flag: str) -> str:
    """``value`` when it is a dataset / model name of the config schema's pattern, else a one-line PrhError."""
    if not _name_re().match(value):
        raise PrhError(f"{flag} {value!r} is not a name of the config (letters, digits, '_', '.', '+', '-'; no slash)")
    return value


def _check_draws(value: int, flag: str, lo: int) -> int:
    """``value`` when it is in lo..MAX_DRAWS, else a one-line PrhError naming the flag and the cap."""
    if not lo <= value <= MAX_DRAWS:
        raise PrhError(f"{flag} {value} is not in {lo}..{MAX_DRAWS:,} (the cap)")
    return value


def npy_header(path: Path) -> tuple[tuple[int, ...], Any]:
    """(shape, dtype) from a .npy file's header, read without its data; a one-line PrhError for anything that is
    not a whole .npy array of numbers (an .npz, a pickle or object array, a truncated file)."""
    import numpy as np

    fmt = np.lib.format
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    with open(path, "rb") as f:
        head = f.read(6)
        if head[:4] == b"PK\x03\x04":
            raise PrhError(f"{path}: an .npz archive; save one (layers, n, d) array with numpy.save (.npy)")
        if head != fmt.MAGIC_PREFIX:
            raise PrhError(f"{path}: not a .npy file (numpy.save writes one)")
        f.seek(0)
        try:
            version = fmt.read_magic(f)
            if version not in readers:
                raise ValueError(f"format version {version}")
            shape, _, dtype = readers[version](f)
        except (ValueError, SyntaxError, EOFError, TypeError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PrhError(f"{path}: unreadable .npy header ({why})") from None
        offset = f.tell()
    if dtype.hasobject or dtype.kind not in "fiu":
        raise PrhError(f"{path}: holds {dtype} values; save the features as a float array (no pickled objects)")
    size = path.stat().st_size - offset
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if need > size:
        raise PrhError(f"{path}: truncated: its header promises shape {shape} ({need:,} bytes), the file holds {size:,}")
    return shape, dtype


def cmd_score(args: argparse.Namespace) -> None:
    """Score a saved (layers, n, d) feature array against stored reference models."""
    import numpy as np

    from prh.scorer import Scorer
    from prh.store import KEY_RE

    _check_draws(args.permutations, "--permutations", 1)
    _check_draws(args.bootstrap, "--bootstrap", 0)
    path = Path(args.features)
    if not path.is_file():
        raise PrhError(f"{path}: no such features file")
    shape, _ = npy_header(path)
    if len(shape) not in (2, 3) or 0 in shape:
        raise PrhError(f"features: expected (layers, n, d) or (n, d), got shape {shape}")
    _check_name(args.dataset, "--dataset")
    for name in args.against:
        if not KEY_RE.match(name):
            _check_name(name, "--against")
    if args.name is not None:
        _check_name(args.name, "--name")
    scorer = Scorer(args.dataset, args.against, store=args.store, results=args.results, metric=args.metric, k=args.k,
                    permutations=args.permutations, bootstrap=args.bootstrap, seed=args.seed)  # fmt: skip
    if shape[-2] != scorer.n:
        raise PrhError(f"features layer 0: {shape[-2]} samples, but dataset {args.dataset!r} has {scorer.n}")
    need = args.permutations * scorer.n * 8  # the (K, n) int64 permutation array
    if need > MAX_PERMUTATION_BYTES:
        raise PrhError(f"--permutations {args.permutations} x n = {scorer.n:,} needs a {need / 2**30:.1f} GiB permutation "
                       f"array; the cap is 1 GiB: use at most {MAX_PERMUTATION_BYTES // (8 * scorer.n):,}")  # fmt: skip
    feats = np.load(path, mmap_mode="r", allow_pickle=False)
    print(Scorer.table(scorer.score(feats, name=args.name)).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def cmd_prefetch(args: argparse.Namespace) -> None:
    """Download the config's hub models and datasets into the hub cache and lock their commits; offline, check it."""
    from prh.prefetch import prefetch_configs

    if prefetch_configs(args.configfile or [args.config], args.lock, online=not args.offline):
        sys.exit(1)


def cmd_metrics(args: argparse.Namespace) -> None:
    """List the alignment metrics of the registry with their default parameters, symmetry and maximum."""
    from prh.metrics.registry import RECORDS

    rows = [{"metric": m.name, "params": " ".join(f"{k}={v}" for k, v in m.defaults().items()) or "-",
             "symmetric": "yes" if m.symmetric else "no (A first)", "max": m.max_value, "what": m.description}
            for m in RECORDS]  # fmt: skip
    print(_table(rows, ["metric", "params", "symmetric", "max", "what"]))


def cmd_docs(args: argparse.Namespace) -> None:
    """Regenerate the docs' reference pages (config, CLI, measures), or with --check list the stale ones and fail."""
    from prh.docs import stale_pages, write_pages

    if args.check:
        stale = stale_pages(args.dir)
        if stale:
            raise PrhError(f"{args.dir}: stale generated pages {', '.join(stale)}: run `prh docs` to regenerate them")
        print(f"{args.dir}: generated pages up to date")
        return
    changed = write_pages(args.dir)
    print(f"{args.dir}: rewrote {', '.join(changed)}" if changed else f"{args.dir}: generated pages up to date")


def cmd_tts(args: argparse.Namespace) -> None:
    """Run the test-time-scaling stage (prh.tts) of a tts config and print its figure's reading."""
    import yaml

    from prh.tts import run

    path = Path(args.tts_config)
    if not path.is_file():
        raise PrhError(f"tts config: no file {str(path)!r}")
    summary = run(yaml.safe_load(path.read_text()) or {})
    print(f"{summary['results_dir']}: {summary['reading']}")


def parser() -> argparse.ArgumentParser:
    """The argument parser of `prh`."""
    from prh import __version__

    p = argparse.ArgumentParser(prog="prh", description=__doc__)
    p.add_argument("--version", action="version", version=f"prh {__version__}")
    p.add_argument("--config", default="config.yaml", help="workflow config (default: config.yaml)")
    p.add_argument("--store", default="features", help="feature store root (default: features)")
    p.add_argument("--results", default="results", help="results root (default: results)")
    sub = p.add_subparsers(dest="command", required=True)
    data = sub.add_parser("data", help="datasets of the config").add_subparsers(dest="sub", required=True)
    data.add_parser("ls", help="list datasets with digests").set_defaults(func=cmd_data_ls)
    models = sub.add_parser("models", help="models of the config").add_subparsers(dest="sub", required=True)
    models.add_parser("ls", help="list models with weights digests").set_defaults(func=cmd_models_ls)
    store = sub.add_parser("store", help="the feature store").add_subparsers(dest="sub", required=True)
    store.add_parser("ls", help="list entries").set_defaults(func=cmd_store_ls)
    show = store.add_parser("show", help="show one entry")
    show.add_argument("key", help="key or unique key prefix")
    show.set_defaults(func=cmd_store_show)
    verify = store.add_parser("verify", help="re-checksum entries, memos, zoo checkpoints and model caches")
    verify.set_defaults(func=cmd_store_verify)
    gc = store.add_parser("gc", help="remove temp dirs of killed writes (and, if asked, unreferenced entries)")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.add_argument("--unreferenced", action="store_true",
                    help="also remove entries no receipt under --results names (not on a store other runs share); "
                         "refused when those receipts name no entry; shows what would go unless --yes")
    gc.add_argument("--yes", action="store_true", help="with --unreferenced: remove, rather than only show, what would go")
    gc.add_argument("--other-hosts-after", type=float, default=None, metavar="HOURS",
                    help="remove a temp dir of another host's writer (whose pid cannot be checked from here, e.g. a "
                         "SLURM job on a compute node) only after this many hours without a change (default 24)")
    gc.set_defaults(func=cmd_store_gc)
    rm = store.add_parser("rm", help="delete one entry, memo, zoo checkpoint or model cache (and receipts naming it)")
    rm.add_argument("key", help="entry key or unique prefix, or memo/<key>, zoo/<dir>, hf-cache/<dir> as verify names it")
    rm.set_defaults(func=cmd_store_rm)
    sub.add_parser("metrics", help="list the alignment metrics and their parameters").set_defaults(func=cmd_metrics)
    pre = sub.add_parser("prefetch", help="fill the hub cache with the config's hub models and datasets (where the "
                         "hub is reachable) and write a lock file of their commits; offline, check the cache")  # fmt: skip
    pre.add_argument("--configfile", nargs="+", help="config file(s), merged in order as snakemake does (default: --config)")
    pre.add_argument("--lock", help="lock file of the resolved commits (default: <results>/hub-lock.yaml)")
    pre.add_argument("--offline", action="store_true", help="do not contact the hub: only check the cache")
    pre.set_defaults(func=cmd_prefetch)
    score = sub.add_parser("score", help="score your features against stored models")
    score.add_argument("features", help=".npy array (layers, n, d) in the dataset's stored order")
    score.add_argument("--dataset", required=True, help="dataset name the features were computed on")
    score.add_argument("--against", nargs="+", required=True, help="reference model names (or store keys)")
    score.add_argument("--name", help="the features' model name, if they are a model of the tables (same calibration)")
    score.add_argument("--metric", default="mutual_knn", help="alignment metric (default mutual_knn; `prh metrics` lists them)")
    score.add_argument("--k", type=int, default=10, help="neighbours, for metrics that take k (default 10)")
    score.add_argument("--permutations", type=int, default=200,
                       help=f"permutation-null draws of the max over layer pairs (default 200, as the config; "
                            f"at most {MAX_DRAWS:,})")
    score.add_argument("--bootstrap", type=int, default=200,
                       help=f"bootstrap resamples for the interval (default 200; at most {MAX_DRAWS:,})")
    score.add_argument("--seed", type=int, default=0, help="seed of permutations and bootstrap (default 0, as the config)")
    score.set_defaults(func=cmd_score)
    docs = sub.add_parser("docs", help="regenerate the docs' reference pages (config, CLI, measures) from the code")
    docs.add_argument("--check", action="store_true", help="only check: list stale pages and exit 1 if any")
    docs.add_argument("--dir", default="docs", help="the docs directory (default: docs)")
    docs.set_defaults(func=cmd_docs)
    tts = sub.add_parser("tts", help="test-time scaling of alignment: captions, views, prompt, many-to-many (docs/test-time-scaling.md)")
    tts.add_argument("tts_config", help="the stage's config (configs/tts/all.yaml)")
    tts.set_defaults(func=cmd_tts)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand; user errors print one line and exit 1."""
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except PrhError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `prh store ls | head`
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
