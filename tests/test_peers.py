"""prh's measures against the field's installed libraries on fixed data: agreement to 1e-6 where the definitions agree,
and a test of the difference where they do not (the footnotes of benchmarks/peers.py and docs/metrics.md).

Peers in the dev extras: rsatoolbox (RDM comparisons), dcor (distance correlation), scikit-learn (ridge), scipy.
netrep, the Aristotelian measures and ReSi are not on PyPI (benchmarks/peers.py runs them from a checkout)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from test_measures import related

from prh.align import prepare
from prh.metrics import layerwise, pairwise
from prh.metrics.predictivity import fold_assignment

rsatoolbox = pytest.importorskip("rsatoolbox")
dcor = pytest.importorskip("dcor")


def prepared_pair(n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Two related layers through prh's own preprocessing (clipped, unit-norm rows), as the measures see them."""
    a, b = related(n, 10, 14, 21, noise=0.5)
    return prepare([a])[0], prepare([b])[0]


def rsatoolbox_compare(a: np.ndarray, b: np.ndarray, rdm: str, method: str) -> float:
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    ra, rb = (calc_rdm(Dataset(x.astype(np.float64)), method=rdm) for x in (a, b))
    return float(compare(ra, rb, method=method)[0, 0])


@pytest.mark.parametrize("compare,method", [("spearman", "spearman"), ("pearson", "corr"), ("cosine", "cosine"),
                                            ("kendall_tau_a", "tau-a")])  # fmt: skip
def test_rsa_equals_rsatoolbox_on_correlation_rdms(compare: str, method: str) -> None:
    a, b = prepared_pair()
    want = rsatoolbox_compare(a, b, "correlation", method)
    assert pairwise("rsa", a, b, rdm="correlation", compare=compare) == pytest.approx(want, abs=1e-6)


def test_rsa_euclidean_differs_from_rsatoolbox_by_its_squared_per_channel_rdm() -> None:
    """rsatoolbox's 'euclidean' RDM is the squared distance / d: rank comparisons agree, Pearson and cosine differ
    and equal prh's on the square root of d times rsatoolbox's RDM (prh's Euclidean distance)."""
    a, b = prepared_pair()
    for compare, method in (("spearman", "spearman"), ("kendall_tau_a", "tau-a")):
        got = pairwise("rsa", a, b, rdm="euclidean", compare=compare)
        assert got == pytest.approx(rsatoolbox_compare(a, b, "euclidean", method), abs=1e-6)
    theirs = rsatoolbox_compare(a, b, "euclidean", "corr")
    ours = pairwise("rsa", a, b, rdm="euclidean", compare="pearson")
    assert abs(ours - theirs) > 1e-4
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm

    va, vb = (np.sqrt(calc_rdm(Dataset(x.astype(np.float64)), method="euclidean").get_vectors()[0] * x.shape[1])
              for x in (a, b))  # fmt: skip
    assert ours == pytest.approx(float(np.corrcoef(va, vb)[0, 1]), abs=1e-6)


def test_distance_correlation_equals_dcor_v_statistic_not_its_u_statistic() -> None:
    a, b = prepared_pair()
    got = layerwise("distance_correlation", [a, b], [b])
    want = [[dcor.distance_correlation(x.astype(np.float64), b.astype(np.float64))] for x in (a, b)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    unbiased = np.sqrt(max(dcor.u_distance_correlation_sqr(a.astype(np.float64), b.astype(np.float64)), 0.0))
    assert abs(got[0, 0] - unbiased) > 1e-3  # the bias-corrected estimator is another number


def sklearn_predictivity(a: np.ndarray, b: np.ndarray, alpha: float, folds: int = 5, seed: int = 0) -> float:
    """scikit-learn: Ridge(alpha) in cross_val_predict over prh's folds, r2_score(multioutput='variance_weighted')."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.model_selection import PredefinedSplit, cross_val_predict

    split = PredefinedSplit(fold_assignment(len(a), folds, seed))
    x, y = a.astype(np.float64), b.astype(np.float64)
    pred = cross_val_predict(Ridge(alpha=alpha), x, y, cv=split)
    return float(r2_score(y, pred, multioutput="variance_weighted"))


@pytest.mark.parametrize("alpha", [1e-2, 1.0])
def test_linear_predictivity_equals_sklearn_ridge_at_one_alpha(alpha: float) -> None:
    a, b = prepared_pair()
    got = pairwise("linear_predictivity", a, b, ridge_alphas=[alpha])
    assert got == pytest.approx(sklearn_predictivity(a, b, alpha), abs=1e-6)
    wide = np.hstack([a, a[:, ::-1] ** 2, np.ones((len(a), 40), np.float32)])  # d > n: the dual form
    got = pairwise("linear_predictivity", wide, b, ridge_alphas=[alpha])
    assert got == pytest.approx(sklearn_predictivity(wide, b, alpha), abs=1e-6)


def test_linear_predictivity_alpha_by_gcv_is_one_of_sklearns_fixed_alpha_fits() -> None:
    """With a grid, prh picks alpha per fold by GCV (sklearn's RidgeCV uses exact leave-one-out): the score is then
    sklearn's Ridge at prh's choices; when every fold picks the same alpha, one fixed-alpha sklearn run."""
    a, b = prepared_pair()
    grid = [1e-3, 1e-1, 10.0]
    got = pairwise("linear_predictivity", a, b, ridge_alphas=grid)
    fixed = [sklearn_predictivity(a, b, alpha) for alpha in grid]
    assert min(fixed) - 1e-9 <= got <= max(fixed) + 1e-9


def test_peers_benchmark_reads_two_models_on_one_dataset_from_a_store(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/peers.py --store: without keys it takes two different models' entries on one dataset (the same
    inputs), the deepest such pair, prepared as the workflow does (clipped, unit-norm rows, the concatenation
    appended); one model's entries on two datasets, however deep, are not a pair."""
    from prh.extract import Features
    from prh.store import FeatureStore, make_request

    bench_dir = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench_dir))
    spec = importlib.util.spec_from_file_location("peers_bench", bench_dir / "peers.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "peers_bench", bench)
    spec.loader.exec_module(bench)

    store = FeatureStore(tmp_path / "features")
    rng = np.random.default_rng(3)
    params = {"pooling": "mean", "layers": "all", "dtype": "float32", "max_tokens": 64, "prompt_template": None}
    entries = {("deep", "d1"): (40, 9), ("deep", "d2"): (40, 9), ("mid", "d1"): (40, 5), ("low", "d1"): (40, 4),
               ("low", "d3"): (30, 7), ("other", "d3"): (30, 6)}  # fmt: skip
    keys = {}
    for (model, dataset), (n, depth) in entries.items():
        req = make_request(model_name=model, weights_digest="w" * 64, dataset_name=dataset, modality="text",
                           dataset_digest="c" * 64, params=params)  # fmt: skip
        keys[model, dataset] = store.key(req)
        layers = [rng.standard_normal((n, 6 + i)).astype(np.float32) for i in range(depth)]
        with store.put(keys[model, dataset], req) as w:
            w.write(Features(layers, [f"blocks.{i}" for i in range(depth)], {}, {"pooling": "mean"}))
    a, b, title = bench.from_store(str(tmp_path / "features"), None)
    assert (len(a), len(b)) == (7 + 1, 6 + 1)  # low and other on d3 (shallower side 6 > mid's 5 on d1)
    assert title.endswith("low (8 layers) vs other (7 layers) on d3, n = 30")
    for got, ref in zip(a, prepare(store.open(keys["low", "d3"]).layers(), q=0.95)):
        np.testing.assert_array_equal(got, ref)
    a, b, title = bench.from_store(str(tmp_path / "features"), [keys["deep", "d1"], keys["mid", "d1"]])
    assert (len(a), len(b)) == (10, 6) and "deep (10 layers) vs mid (6 layers) on d1" in title
