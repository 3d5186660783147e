"""The `prh` command: inspect sources and the feature store, and score your own features against stored models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prh.errors import PrhError


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


def cmd_models_ls(args: argparse.Namespace) -> None:
    """List every model of the config with its source, modality and weights digest."""
    from prh.models import weights_digest
    from prh.pipeline import resolved_spec
    from prh.plan import Plan

    cfg = _config(args)
    plan = Plan(cfg)
    rows = []
    for name, spec in cfg["models"].items():
        receipts = plan.model_receipt(name)
        if spec["source"] == "zoo" and not Path(receipts[0]).exists():
            digest = "(not trained yet: run snakemake)"
        else:
            digest = weights_digest(name, resolved_spec(name, spec, receipts, cfg["store"]))[:16]
        rows.append({"model": name, "source": spec["source"], "modality": plan.modality(name), "digest": digest})
    print(_table(rows, ["model", "source", "modality", "digest"]))


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
    counts = {"entries": len(store.keys()), "memos": len(store.memo_keys())}
    print(", ".join(f"{v} {k}" for k, v in counts.items()) + f" and the zoo / model caches checked: {len(damage)} damaged")
    if damage:
        sys.exit(1)


def referenced_keys(results: str) -> set[str]:
    """Store keys named by the receipts under ``results`` (prh.plan.Paths)."""
    from prh.plan import Paths

    keys = set()
    for path in Paths(results).existing_receipts():
        try:
            keys.add(json.loads(path.read_text())["key"])
        except (OSError, ValueError, KeyError):
            continue
    return keys


def cmd_store_gc(args: argparse.Namespace) -> None:
    """Remove temp dirs of killed writes and, with --unreferenced, entries no receipt under --results refers to."""
    keep = referenced_keys(args.results) if args.unreferenced else None
    removed = _store(args).gc(keep, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in removed:
        print(f"{verb} {path}")
    print(f"{len(removed)} paths {verb}")


def cmd_store_rm(args: argparse.Namespace) -> None:
    """Delete an entry, memo, zoo checkpoint or model cache, and the receipts naming it, so the workflow remakes it."""
    store = _store(args)
    ident = args.key if "/" in args.key else _full_key(store, args.key)
    for path in store.remove(ident):
        print(f"removed {path}")
    for receipt in receipts_naming(args.results, ident.rpartition("/")[2]):
        receipt.unlink()
        print(f"removed receipt {receipt} (the workflow reruns its job)")


def receipts_naming(results: str, name: str) -> list[Path]:
    """Extraction, zoo and weights-cache receipts under ``results`` that name a store key or checkpoint directory."""
    from prh.plan import Paths

    out = []
    for path in Paths(results).existing_receipts():
        try:
            receipt = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if receipt.get("key") == name or Path(str(receipt.get("checkpoint", ""))).name == name:
            out.append(path)
    return sorted(out)


def cmd_score(args: argparse.Namespace) -> None:
    """Score a saved (layers, n, d) feature array against stored reference models."""
    import numpy as np

    from prh.scorer import Scorer

    path = Path(args.features)
    if not path.is_file():
        raise PrhError(f"{path}: no such features file")
    feats = np.load(path)
    scorer = Scorer(args.dataset, args.against, store=args.store, results=args.results, metric=args.metric, k=args.k,
                    permutations=args.permutations, bootstrap=args.bootstrap, seed=args.seed)  # fmt: skip
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


def parser() -> argparse.ArgumentParser:
    """The argument parser of `prh`."""
    p = argparse.ArgumentParser(prog="prh", description=__doc__)
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
                    help="also remove entries no receipt under --results names (not on a store other runs share)")
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
                       help="permutation-null draws of the max over layer pairs (default 200, as the config)")
    score.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the interval (default 200)")
    score.add_argument("--seed", type=int, default=0, help="seed of permutations and bootstrap (default 0, as the config)")
    score.set_defaults(func=cmd_score)
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
