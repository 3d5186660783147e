"""Benchmark: every prh measure against every library that implements it, on the same features: agreement and speed.

Usage: .venv/bin/python benchmarks/peers.py [--n 1024 --d 768 --layers-a 13 --layers-b 25] [--peer-pairs 6]
       [--measures procrustes,cca] [--store DIR [--keys KEY_A KEY_B]] [--aristotelian GITDIR] [--netrep GITDIR]
       [--resi GITDIR] [--before SRC] [--threads 1] [--quick]

Prints ONE table: measure, peer, pairs compared, max |prh - peer| over those pairs, prh seconds for ALL layer pairs
(``prh.metrics.layerwise``, per-layer work included), the peer's seconds for all layer pairs, and their ratio
(peer / prh). Where a measure's per-pair cost is one operation prh cannot avoid (the pair's cross-product and the
eigenvalues of its Gram, i.e. its singular values by prh's guarded eigen route; an inversion count), ``floor s`` times
that operation alone over all pairs (on prh's own per-layer states, per-layer work excluded) and ``prh/floor`` says
how close prh comes to it; ``peer/floor`` is the largest ratio any implementation doing that per-pair work could
reach against the peer (with no per-layer work at all). ``--before SRC`` also
times another prh source tree (e.g. the main checkout's ``src``) on the same data, in a subprocess run just before
each measure's own timing (interleaved, so both see the same load): ``before s`` and ``before/prh``, with the largest
difference of the two score matrices. Inputs: two synthetic models with known shared structure (13 and 25 layers of a shared 32-d latent
drifting through d-wide layers, as benchmarks/align_speed.py), each preprocessed as the workflow does
(``prh.align.prepare``: 95% clipping, unit-norm rows, the concatenated layer appended), so 14 x 26 = 364 layer pairs;
with ``--store`` also two models' real features from a feature store.

Peers that score one pair at a time are timed on ``--peer-pairs`` pairs drawn at random within strata (plain layers /
concatenated row / column / both) and extrapolated per stratum (marked ``~``); peers marked ``plain`` cannot run on the
concatenated layers (9,984- and 19,200-wide covariance eigendecompositions) and are timed on plain layer pairs only,
their mean time extrapolated to all pairs (an underestimate of the peer's time). Peers that score all pairs at once
(rsatoolbox: RDMs per layer, then one ``compare``) are timed whole. Peers not on PyPI run from a checkout of their
repository (``--aristotelian``, ``--netrep``, ``--resi``: a git directory, e.g. the search tool's mirror; the package is exported
into a temporary directory and imported from there, never installed). The footnotes say where definitions differ.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from align_speed import REFERENCE, correlated_layers, load, stratified_pairs, time_pairs
from threadpoolctl import threadpool_limits

from prh.align import prepare
from prh.metrics import layerwise
from prh.metrics.predictivity import ALPHAS, fold_assignment

K = 10
NOTES = {
    "eps": "adds an epsilon (1e-6 / 1e-8) to the denominator",
    "f32": "computes in float32 (prh: float32 kernels, float64 sums)",
    "arist-cka-f32": "Aristotelian's linear CKA takes float32 feature-space Grams: within 3e-6 on 768-wide layers, "
    "but off by up to 6e-2 on the 9,984- and 19,200-wide concatenated layers (1.015 where float64 gives 0.955)",
    "tie": "neighbour ties broken by an unstable torch.topk (prh: smaller index first)",
    "arist-svcca": "Aristotelian's svcca keeps the top-10 principal directions of centred, not standardised, features",
    "arist-procrustes": "Aristotelian's 'procrustes' is 1 - ||Xc Q - Yc||_F / ||Yc||_F of unnormalised features, "
    "another quantity than the normalised nuclear norm",
    "arist-pwcca": "Aristotelian weights by the sample L1 norm of X's canonical variates; prh by Morcos et al.'s "
    "projection of X's columns, sum_j |<h_i, x_j>|",
    "arist-cca": "Aristotelian always adds reg = 1e-6 to both covariances (compared here with reg = 0 where both "
    "widths are < n, as prh) and averages over min(d_x, d_y) correlations (prh: over min(rank_x, rank_y), which "
    "differs when both widths are >= n)",
    "ridge-loo": "sklearn RidgeCV chooses alpha by exact leave-one-out, prh by GCV; same folds, same R^2",
    "rsa-euclid": "Aristotelian's rsa uses Euclidean RDMs (prh rdm=euclidean)",
    "plain": "peer timed on plain layer pairs only (concatenated layers too wide for it), mean extrapolated to all",
    "dcor-naive": "dcor 0.7 with array-api-compat 1.16 skips its scipy path (array_namespace is not numpy) and "
    "builds (n, n, d) float64 differences: 6 GiB per call at d = 768, 150 GiB at the 19,200-wide concatenation",
    "resi-self": "ReSi drops each input's first sklearn neighbour as itself (prh excludes i by index; they differ "
    "only where a copy of an input ties with it)",
    "netrep-zero": "netrep zero-pads and whitens with eigenvalues clamped at 1e-7 (prh drops float32-rank-zero "
    "directions)",
}


@dataclass
class Peer:
    """One library's implementation of one measure: a per-pair scorer or an all-pairs scorer."""

    name: str
    pair: Callable[[np.ndarray, np.ndarray], float] | None = None
    all_pairs: Callable[[list[np.ndarray], list[np.ndarray]], np.ndarray] | None = None
    plain_only: bool = False
    notes: tuple[str, ...] = ()


@dataclass
class Measure:
    """A prh measure with its parameters and its peers."""

    label: str
    metric: str
    params: dict[str, Any]
    peers: list[Peer] = field(default_factory=list)


# ----------------------------------------------------------------------------- loading peers that are not on PyPI


def exported(git_dir: str, package: str, into: Path) -> Path:
    """Export ``package`` (a folder) of the repository at ``git_dir`` (HEAD) into ``into``; returns ``into``."""
    archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", "HEAD", package], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def import_subpackage(root: Path, dotted: str, alias: str) -> Any:
    """Import the sub-package ``dotted`` under ``root`` as ``alias``: its relative imports work and its parent's
    (heavy) __init__ never runs."""
    import importlib.util

    path = root.joinpath(*dotted.split("."))
    spec = importlib.util.spec_from_file_location(alias, path / "__init__.py", submodule_search_locations=[str(path)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)
    return module


def import_module_file(root: Path, dotted: str) -> Any:
    """Import the single module ``dotted`` under ``root`` with empty stand-ins for its parent packages (their
    __init__ files import every measure of the library, with dependencies this benchmark does not need)."""
    import importlib.util
    import types

    parts = dotted.split(".")
    for depth in range(1, len(parts)):
        name = ".".join(parts[:depth])
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(root.joinpath(*parts[:depth]))]
            sys.modules[name] = package
    spec = importlib.util.spec_from_file_location(dotted, root.joinpath(*parts).with_suffix(".py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[dotted] = module
    spec.loader.exec_module(module)
    return module


def stand_in(name: str, **attrs: Any) -> None:
    """A placeholder module for an import a peer's module makes but its measure never uses (not installed here)."""
    import types

    try:
        importlib.import_module(name)
    except ImportError:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module


# ----------------------------------------------------------------------------- peers


def f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def rsatoolbox_peer(method: str) -> Peer:
    """rsatoolbox: correlation RDMs of every layer (calc_rdm), then compare() of all combinations at once."""
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare, concat

    def all_pairs(xs: list[np.ndarray], ys: list[np.ndarray]) -> np.ndarray:
        ra = concat([calc_rdm(Dataset(f64(x)), method="correlation") for x in xs])
        rb = concat([calc_rdm(Dataset(f64(y)), method="correlation") for y in ys])
        return compare(ra, rb, method=method)

    return Peer(f"rsatoolbox compare({method!r})", all_pairs=all_pairs)


def dcor_peer() -> Peer:
    import dcor

    return Peer("dcor.distance_correlation", pair=lambda x, y: float(dcor.distance_correlation(f64(x), f64(y))),
                plain_only=True, notes=("dcor-naive", "plain"))  # fmt: skip


def sklearn_ridge_peer(alphas: tuple[float, ...], n: int) -> Peer:
    """scikit-learn: (RidgeCV | Ridge) in cross_val_predict over prh's folds, r2_score(variance_weighted)."""
    from sklearn.linear_model import Ridge, RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import PredefinedSplit, cross_val_predict

    split = PredefinedSplit(fold_assignment(n, 5, 0))
    model = Ridge(alpha=alphas[0]) if len(alphas) == 1 else RidgeCV(alphas=alphas)

    def pair(x: np.ndarray, y: np.ndarray) -> float:
        pred = cross_val_predict(model, f64(x), f64(y), cv=split)
        return float(r2_score(f64(y), pred, multioutput="variance_weighted"))

    name = f"sklearn Ridge(alpha={alphas[0]})" if len(alphas) == 1 else "sklearn RidgeCV (LOO)"
    return Peer(name, pair=pair, notes=() if len(alphas) == 1 else ("ridge-loo",))


def reference_peer(metric: str) -> Peer:
    """The reference-style per-pair loop of platonic-rep's definitions (benchmarks/align_speed.py)."""
    fn = REFERENCE[metric]
    return Peer("platonic-rep-style loop", pair=lambda x, y: fn(torch.from_numpy(x), torch.from_numpy(y)))


def aristotelian_peers(root: Path) -> dict[str, list[Peer]]:
    """Gröger et al.'s measures (mlbio-epfl/Aristotelian, aristotelian.metrics) keyed by prh measure label."""
    metrics = import_subpackage(root, "aristotelian.metrics", "aristotelian_metrics")
    cca_mod = sys.modules["aristotelian_metrics.cca"]
    other = sys.modules["aristotelian_metrics.other_metrics"]
    reg = metrics.MetricRegistry

    def raw(name: str, **config: Any) -> Callable[[np.ndarray, np.ndarray], float]:
        # a fresh config per call: MetricConfig carries a cache of Grams / neighbour lists keyed by role, not by data
        return lambda x, y: float(reg.compute_raw(name, torch.from_numpy(x), torch.from_numpy(y), metrics.MetricConfig(**config)))

    def cca(x: np.ndarray, y: np.ndarray) -> float:
        wide = max(x.shape[1], y.shape[1]) >= x.shape[0]
        return float(cca_mod.cca_mean(f64(x), f64(y), reg=1e-6 if wide else 0.0))

    def pwcca(x: np.ndarray, y: np.ndarray) -> float:
        wide = max(x.shape[1], y.shape[1]) >= x.shape[0]
        return float(cca_mod.pwcca_mean(f64(x), f64(y), reg=1e-6 if wide else 0.0))

    name = "Aristotelian"
    return {
        "mutual_knn": [Peer(name, pair=raw("mutual_knn", topk=K), notes=("tie",))],
        "cycle_knn": [Peer(name, pair=raw("cycle_knn", topk=K), notes=("tie",))],
        "cka": [Peer(name, pair=raw("cka_linear"), notes=("arist-cka-f32", "eps"))],
        "unbiased_cka": [Peer(name, pair=raw("cka_unbiased"), notes=("f32", "eps"))],
        "cknna": [Peer(name, pair=raw("cknna", topk=K, unbiased=True), notes=("f32", "eps", "tie"))],
        "svcca": [Peer(name, pair=raw("svcca", cca_dim=10), notes=("arist-svcca",))],
        "rsa euclidean": [Peer(name, pair=raw("rsa"), notes=("rsa-euclid", "f32"))],
        "procrustes": [Peer(name, pair=lambda x, y: float(other.procrustes_score(f64(x), f64(y))), plain_only=True,
                            notes=("arist-procrustes", "plain"))],  # fmt: skip
        "cca": [Peer(name + " cca_mean", pair=cca, plain_only=True, notes=("arist-cca", "plain"))],
        "pwcca": [Peer(name + " pwcca_mean", pair=pwcca, plain_only=True, notes=("arist-pwcca", "plain"))],
        "rv_coefficient": [Peer(name + " rv_coefficient", pair=lambda x, y: float(cca_mod.rv_coefficient(f64(x), f64(y))),
                                notes=("eps",))],  # fmt: skip
    }


def netrep_peers(root: Path) -> dict[str, list[Peer]]:
    """Williams et al.'s netrep: LinearMetric (angular distance -> cos) and LinearCKA."""
    sys.path.insert(0, str(root))
    from netrep.metrics import LinearMetric

    def shape(alpha: float) -> Callable[[np.ndarray, np.ndarray], float]:
        return lambda x, y: float(np.cos(LinearMetric(alpha=alpha, score_method="angular").fit_score(f64(x), f64(y))))

    note = ("netrep-zero", "plain")
    return {
        "procrustes": [Peer("netrep LinearMetric(alpha=1)", pair=shape(1.0), plain_only=True, notes=note)],
        "shape_metric": [Peer("netrep LinearMetric(alpha=0.5)", pair=shape(0.5), plain_only=True, notes=note)],
        "shape_metric alpha=0": [Peer("netrep LinearMetric(alpha=0)", pair=shape(0.0), plain_only=True, notes=note)],
    }


def resi_peers(root: Path) -> dict[str, list[Peer]]:
    """Klabunde et al.'s ReSi (mklabunde/resi, ``repsim.measures``): Jaccard kNN similarity."""
    import logging

    stand_in("einops", rearrange=None)  # used by ReSi's spatial reshaping only
    stand_in("loguru", logger=logging.getLogger("resi"))
    nn = import_module_file(root, "repsim.measures.nearest_neighbor")

    def jaccard(x: np.ndarray, y: np.ndarray) -> float:
        return float(nn.jaccard_similarity(f64(x), f64(y), shape="nd", k=K, inner="cosine", n_jobs=1))

    return {"jaccard_knn": [Peer("ReSi jaccard_similarity", pair=jaccard, notes=("resi-self",))]}


def measures(n: int, extra: dict[str, list[Peer]]) -> list[Measure]:
    """Every prh measure with the peers that implement it (reference loops, installed libraries, checkouts)."""
    rows = [
        Measure("mutual_knn", "mutual_knn", {"k": K}, [reference_peer("mutual_knn")]),
        Measure("cycle_knn", "cycle_knn", {"k": K}, [reference_peer("cycle_knn")]),
        Measure("lcs_knn", "lcs_knn", {"k": K}, [reference_peer("lcs_knn")]),
        Measure("edit_distance_knn", "edit_distance_knn", {"k": K}, [reference_peer("edit_distance_knn")]),
        Measure("jaccard_knn", "jaccard_knn", {"k": K}),
        Measure("cka", "cka", {}, [reference_peer("cka")]),
        Measure("unbiased_cka", "unbiased_cka", {}, [reference_peer("unbiased_cka")]),
        Measure("cknna", "cknna", {"k": K}, [reference_peer("cknna")]),
        Measure("rv_coefficient", "rv_coefficient", {}),
        Measure("svcca", "svcca", {"dim": 10}, [reference_peer("svcca")]),
        Measure("procrustes", "procrustes", {}),
        Measure("shape_metric", "shape_metric", {"shape_alpha": 0.5}),
        Measure("shape_metric alpha=0", "shape_metric", {"shape_alpha": 0.0}),
        Measure("cca", "cca", {}),
        Measure("pwcca", "pwcca", {}),
        Measure("distance_correlation", "distance_correlation", {}, [dcor_peer()]),
        Measure("linear_predictivity", "linear_predictivity", {}, [sklearn_ridge_peer(ALPHAS, n)]),
        Measure("linear_predictivity alpha=1", "linear_predictivity", {"ridge_alphas": [1.0]},
                [sklearn_ridge_peer((1.0,), n)]),  # fmt: skip
        Measure("rsa", "rsa", {}, [rsatoolbox_peer("spearman")]),
        Measure("rsa pearson", "rsa", {"compare": "pearson"}, [rsatoolbox_peer("corr")]),
        Measure("rsa cosine", "rsa", {"compare": "cosine"}, [rsatoolbox_peer("cosine")]),
        Measure("rsa kendall_tau_a", "rsa", {"compare": "kendall_tau_a"}, [rsatoolbox_peer("tau-a")]),
        Measure("rsa euclidean", "rsa", {"rdm": "euclidean"}),
    ]
    for m in rows:
        m.peers += extra.get(m.label, [])
    return rows


# ----------------------------------------------------------------------------- floors


def _subspace_floor(metric: str, a: list[np.ndarray], b: list[np.ndarray], params: dict[str, Any]) -> float:
    """Seconds of the per-pair operation of a subspace measure alone, over all pairs, on prh's states: the cross
    product M of the two bases and the eigenvalues of its smaller Gram (prh's eigen route, its precision guard and
    gesdd fallback excluded; PWCCA: the eigenvectors of M M^T and the weight product); the complements' product and
    its Gram's eigenvalues where prh takes them (CCA's exact pairs, the shape metric at alpha 0)."""
    from prh.metrics import prepare_layers
    from prh.metrics.subspace import eigen_singular, stack_width

    sa, sb = (prepare_layers(metric, x, **params).arrays for x in (a, b))
    n = sa["u"].shape[1]
    ra, rb = (np.count_nonzero(st["s"] > 0, axis=1) for st in (sa, sb))
    unit = metric == "cca" or (metric == "shape_metric" and params.get("shape_alpha") == 0.0)
    rows = [stack_width(vs) for vs in sa["vs"]] if metric == "pwcca" else []  # each layer's width within the padded stack
    t0 = time.perf_counter()
    for i in range(len(a)):
        for j in range(len(b)):
            exact = metric == "shape_metric" or not (sa["wide"][i] or sb["wide"][j])
            if unit and exact and sa["cs"][i] and sb["cs"][j]:
                wa, wb = sa["w"][i][:, : n - 1 - ra[i]], sb["w"][j][:, : n - 1 - rb[j]]
                eigen_singular(wa.T @ wb)
                continue
            m = sa["u"][i][:, : ra[i]].T @ sb["u"][j][:, : rb[j]]
            if metric != "pwcca":
                eigen_singular(m)
                continue
            w = eigen_singular(m, left=True)[2]
            np.abs(sa["vs"][i][: rows[i], : ra[i]] @ w).sum(axis=0)
    return time.perf_counter() - t0


def _tau_floor(metric: str, a: list[np.ndarray], b: list[np.ndarray], params: dict[str, Any]) -> float:
    """Seconds of scipy's discordance counter alone (B's ranks in A's order), over all pairs, on prh's states."""
    from scipy.stats._stats import _kendall_dis

    from prh.metrics import prepare_layers

    sa, sb = (prepare_layers(metric, x, **params).arrays for x in (a, b))
    xs = [sa["rank"][i][sa["order"][i]].astype(np.intp) for i in range(len(a))]
    t0 = time.perf_counter()
    for i in range(len(a)):
        for j in range(len(b)):
            _kendall_dis(xs[i], sb["rank"][j][sa["order"][i]].astype(np.intp))
    return time.perf_counter() - t0


def floor_seconds(m: Measure, a: list[np.ndarray], b: list[np.ndarray]) -> float | None:
    """The measure's floor (see the module doc), None where it has none."""
    if m.metric in ("procrustes", "shape_metric", "cca", "pwcca"):
        return _subspace_floor(m.metric, a, b, m.params)
    if m.metric == "rsa" and m.params.get("compare") == "kendall_tau_a":
        return _tau_floor(m.metric, a, b, m.params)
    return None


# ----------------------------------------------------------------------------- running


def before_result(src: str, label: str, args: argparse.Namespace) -> tuple[float, np.ndarray]:
    """(seconds, scores) of ``label`` from the prh source tree ``src`` on the same synthetic data (a subprocess)."""
    import os

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scores.npy"
        cmd = [sys.executable, __file__, "--prh-only", str(out), "--measures", label, "--n", str(args.n), "--d",
               str(args.d), "--layers-a", str(args.layers_a), "--layers-b", str(args.layers_b), "--seed",
               str(args.seed), "--threads", str(args.threads)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(Path(__file__).parent)])}
        done = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
        return float(done.stdout.split()[-1]), np.load(out)


def prh_only(args: argparse.Namespace) -> None:
    """Score one measure on the synthetic data, save the matrix to ``--prh-only`` and print the seconds."""
    (m,) = [m for m in measures(args.n, {}) if m.label == args.measures]
    a, b = synthetic(args)
    t0 = time.perf_counter()
    mat = layerwise(m.metric, a, b, **m.params)
    seconds = time.perf_counter() - t0
    np.save(args.prh_only, mat)
    print(seconds)



def synthetic(args: argparse.Namespace) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two prepared models sharing a 32-d latent (known structure), as in benchmarks/align_speed.py."""
    shared = np.random.default_rng(args.seed).standard_normal((args.n, 32))
    a = prepare(correlated_layers(args.n, args.d, args.layers_a, args.seed + 1, shared), q=0.95)
    b = prepare(correlated_layers(args.n, args.d, args.layers_b, args.seed + 2, shared), q=0.95)
    return a, b


def from_store(root: str, keys: list[str] | None) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """Two models' prepared layers from a feature store: ``keys``, else two different models' entries on one dataset
    (the same inputs, as alignment needs), the deepest such pair (most layers in the shallower of the two, then n)."""
    from prh.store import EntryInfo, FeatureStore

    store = FeatureStore(root)
    infos = {i.key: i for i in store.ls()}
    if not keys:
        deepest: dict[tuple[str, int], dict[str, EntryInfo]] = {}  # (dataset, n) -> model -> its deepest entry
        for info in infos.values():
            per_model = deepest.setdefault((info.dataset, info.shape[1]), {})
            if info.model not in per_model or info.shape[0] > per_model[info.model].shape[0]:
                per_model[info.model] = info
        pairs = [sorted(m.values(), key=lambda i: (-i.shape[0], i.key))[:2] for m in deepest.values() if len(m) > 1]
        if not pairs:
            raise SystemExit(f"--store {root}: no dataset has entries of two models; name them with --keys")
        keys = [i.key for i in max(pairs, key=lambda p: (p[1].shape[0], p[1].shape[1], p[0].key))]
    a, b = (prepare(store.open(k).layers(), q=0.95) for k in keys)
    names = [f"{infos[k].model} ({len(x)} layers)" for k, x in zip(keys, (a, b))]
    return a, b, f"store {root}: {names[0]} vs {names[1]} on {infos[keys[0]].dataset}, n = {len(a[0])}"


def peer_result(peer: Peer, a: list[np.ndarray], b: list[np.ndarray], strata: list, plain: list) -> tuple[float, dict, str]:
    """(seconds for all pairs, {pair: value}, how timed) of one peer."""
    if peer.all_pairs is not None:
        t0 = time.perf_counter()
        m = np.asarray(peer.all_pairs(a, b))
        return time.perf_counter() - t0, {(i, j): m[i, j] for i in range(len(a)) for j in range(len(b))}, "all"
    assert peer.pair is not None
    score = lambda i, j: peer.pair(a[i], b[j])  # noqa: E731
    if peer.plain_only:
        seconds, vals = time_pairs(score, plain)
        return seconds / sum(size for _, size in plain) * len(a) * len(b), vals, "~plain"
    seconds, vals = time_pairs(score, strata)
    return seconds, vals, "~" if sum(len(p) for p, _ in strata) < len(a) * len(b) else "all"


def ceiling(t_peer: float, floor: float | None) -> str:
    """The ``peer/floor`` cell: the peer's seconds over the floor's, blank without a floor."""
    return f" {t_peer / floor:9.1f}x" if floor else f" {'':>10}"


def run(a: list[np.ndarray], b: list[np.ndarray], rows: list[Measure], args: argparse.Namespace, title: str) -> None:
    """Time prh and every peer on one pair of models and print the table."""
    rng = np.random.default_rng(args.seed)
    total = len(a) * len(b)
    strata = stratified_pairs(len(a), len(b), args.peer_pairs if args.peer_pairs else total, rng)
    plain_pairs = [(i, j) for i in range(len(a) - 1) for j in range(len(b) - 1)]
    pick = rng.choice(len(plain_pairs), size=min(len(plain_pairs), args.peer_pairs or len(plain_pairs)), replace=False)
    plain = [([plain_pairs[t] for t in np.sort(pick)], (len(a) - 1) * (len(b) - 1))]
    print(f"\n{title}: {len(a)} x {len(b)} = {total} layer pairs (prepared, incl. concat), threads={args.threads}")
    print(f"start: {load()}")
    header = (f"{'measure':<28} {'peer':<34} {'pairs':>6} {'max |diff|':>11} {'prh s':>8} {'peer s':>10} {'ratio':>8} "
              f"{'floor s':>8} {'prh/floor':>9} {'peer/floor':>10}")  # fmt: skip
    if args.before:
        header += f" {'before s':>9} {'before/prh':>10} {'|prh-before|':>12}"
    header += "  notes"
    print(header + "\n" + "-" * len(header))
    used: list[str] = []
    for m in rows:
        timed_before = args.before and not args.store_run and m.label not in args.not_before.split(",")
        before = before_result(args.before, m.label, args) if timed_before else None
        t0 = time.perf_counter()
        mat = layerwise(m.metric, a, b, **m.params)
        t_prh = time.perf_counter() - t0
        floor = floor_seconds(m, a, b)
        floors = f" {floor:8.2f} {t_prh / floor:8.2f}x" if floor else f" {'':>8} {'':>9}"
        extra = ""
        if args.before:
            extra += (f" {before[0]:9.2f} {before[0] / t_prh:9.1f}x {np.nanmax(np.abs(before[1] - mat)):12.2e}"
                      if before else f" {'':>9} {'':>10} {'':>12}")  # fmt: skip
        if not m.peers:
            print(f"{m.label:<28} {'(no installed peer)':<34} {'':>6} {'':>11} {t_prh:8.2f} {'':>10} {'':>8}"
                  f"{floors} {'':>10}{extra}", flush=True)  # fmt: skip
        for peer in m.peers:
            t_peer, vals, how = peer_result(peer, a, b, strata, plain)
            diff = float(np.nanmax([abs(mat[i, j] - v) for (i, j), v in vals.items()]))
            marks = []
            for note in peer.notes:
                if note not in used:
                    used.append(note)
                marks.append(str(used.index(note) + 1))
            peer_s = f"{'~' if how != 'all' else ''}{t_peer:.1f}"
            print(f"{m.label:<28} {peer.name:<34} {len(vals):>6} {diff:11.2e} {t_prh:8.2f} {peer_s:>10} "
                  f"{t_peer / t_prh:7.1f}x{floors}{ceiling(t_peer, floor)}{extra}  {','.join(marks)}",
                  flush=True)  # fmt: skip
    print(f"end: {load()}")
    for t, note in enumerate(used, 1):
        print(f"  [{t}] {NOTES[note]}")
    print("  floor (subspace measures): per pair, the bases' cross product M and the eigenvalues of its smaller Gram "
          "(syevd; PWCCA: M M^T's eigenvectors and the weight product), prh's route without its guard's gesdd "
          "fallback; the complements' product and Gram eigenvalues where prh takes them. tau-a: scipy's discordance "
          "counter over B's ranks in A's order. peer/floor: the ratio an implementation doing only that would reach")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--layers-a", type=int, default=13, help="layers before the concatenated one")
    ap.add_argument("--layers-b", type=int, default=25, help="layers before the concatenated one")
    ap.add_argument("--peer-pairs", type=int, default=6, help="per-pair peers: time about P pairs, extrapolate; 0 = all")
    ap.add_argument("--measures", default="", help="comma-separated measure labels (default: all)")
    ap.add_argument("--store", default="", help="also run on two models' real features from this feature store")
    ap.add_argument("--keys", nargs=2, default=None, help="the two store keys (default: chosen automatically)")
    ap.add_argument("--aristotelian", default="", help="git dir of mlbio-epfl/Aristotelian (run from an export)")
    ap.add_argument("--netrep", default="", help="git dir of ahwillia/netrep (run from an export)")
    ap.add_argument("--resi", default="", help="git dir of mklabunde/resi (run from an export)")
    ap.add_argument("--before", default="", help="also time the prh source tree SRC (e.g. /work/main/src), interleaved")
    ap.add_argument("--not-before", default="", help="comma-separated measure labels --before skips (too slow there)")
    ap.add_argument("--prh-only", default="", help=argparse.SUPPRESS)  # the --before subprocess: save scores here
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="n=256, d=96, 3 x 5 layers")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.quick:
        args.n, args.d, args.layers_a, args.layers_b = 256, 96, 3, 5
    torch.set_num_threads(args.threads)
    args.store_run = False
    if args.prh_only:
        with threadpool_limits(args.threads):
            return prh_only(args)
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(args.threads):
        extra: dict[str, list[Peer]] = {}
        if args.aristotelian:
            for key, peers in aristotelian_peers(exported(args.aristotelian, "aristotelian/metrics", Path(tmp))).items():
                extra.setdefault(key, []).extend(peers)
        if args.netrep:
            for key, peers in netrep_peers(exported(args.netrep, "netrep", Path(tmp))).items():
                extra.setdefault(key, []).extend(peers)
        if args.resi:
            for key, peers in resi_peers(exported(args.resi, "repsim", Path(tmp))).items():
                extra.setdefault(key, []).extend(peers)
        rows = measures(args.n, extra)
        if args.measures:
            wanted = args.measures.split(",")
            rows = [m for m in rows if m.label in wanted]
        a, b = synthetic(args)
        run(a, b, rows, args, f"synthetic: n={args.n}, d={args.d}, {args.layers_a} + {args.layers_b} layers")
        if args.store:
            args.store_run = True
            a, b, title = from_store(args.store, args.keys)
            run(a, b, measures(len(a[0]), extra) if not args.measures else
                [m for m in measures(len(a[0]), extra) if m.label in args.measures.split(",")], args, title)  # fmt: skip


if __name__ == "__main__":
    main()
