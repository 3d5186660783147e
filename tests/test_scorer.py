"""Scorer against a small real store: agreement with layerwise() and best_pair(), chance for shuffled rows, cached reference work, errors."""

from __future__ import annotations

import numpy as np
import pytest

from prh.align import best_pair, prepare
from prh.metrics import layerwise
from prh.errors import PrhError
from prh.extract import Features
from prh.metrics import calibrate_layers
from prh.scorer import Scorer
from prh.store import FeatureStore, make_request, write_receipt

N = 120


def _layers(rng: np.random.Generator, latent: np.ndarray, dims: list[int], noise: float) -> list[np.ndarray]:
    """Random linear views of a shared latent plus noise: one (N, d) array per layer."""
    return [(latent @ rng.normal(size=(latent.shape[1], d)) + noise * rng.normal(size=(N, d))).astype(np.float32)
            for d in dims]  # fmt: skip


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(N, 6))
    fs = FeatureStore(tmp_path / "features")
    refs = {"ref-a": _layers(rng, latent, [16, 24, 8], 0.5), "ref-b": _layers(rng, latent, [12, 12], 2.0)}
    for name, layers in refs.items():
        request = make_request(name, f"digest-{name}", "toy", "image", "toy-digest", {"pooling": "mean"})
        key = fs.key(request)
        with fs.put(key, request) as writer:
            writer.write(Features(layers, [f"l{i}" for i in range(len(layers))], {}, {"n_params": 1}))
        write_receipt(tmp_path / "results" / "features" / "toy" / f"{name}.json", key, request, fs.info(key))
    return tmp_path, refs, latent, rng


def test_scores_equal_align_and_reference_work_is_cached(store):
    root, refs, latent, rng = store
    mine = _layers(rng, latent, [10, 20], 1.0)
    scorer = Scorer("toy", ["ref-a", "ref-b"], store=str(root / "features"), results=str(root / "results"), k=5,
                    permutations=49, bootstrap=10)  # fmt: skip
    assert scorer.prepare_calls == 2
    for _ in range(3):
        got = {s.reference: s for s in scorer.score(mine)}
    assert scorer.prepare_calls == 2  # repeated calls reuse the references' prepared work
    for name, layers in refs.items():
        matrix = layerwise("mutual_knn", prepare(mine), prepare(layers), k=5)
        score, best = best_pair(matrix)
        assert got[name].score == score
        assert np.array_equal(got[name].matrix, matrix)
        assert got[name].reference_layer == (["l0", "l1", "l2"][: len(layers)] + ["concat"])[best[1]]
        # calibrated against the null of the max over layer pairs, the reference's rows permuted (as the tables)
        want = calibrate_layers(prepare(mine), prepare(layers), "mutual_knn", permutations=49, bootstrap=10, k=5)
        assert np.array_equal(got[name].matrix, want.matrix) and got[name].calibrated == want.calibrated
        assert (got[name].p_value, got[name].tau, got[name].ci_low, got[name].ci_high) == (
            want.p_value, want.tau, want.ci_low, want.ci_high)
        assert got[name].p_value == pytest.approx(1 / 50) and got[name].calibrated > 0
        assert got[name].chance == pytest.approx(5 / (N - 1))


def test_a_named_model_gets_the_tables_orientation_of_a_symmetric_pair(store):
    root, refs, latent, rng = store
    mine = _layers(rng, latent, [10, 20], 1.0)
    scorer = Scorer("toy", ["ref-a", "ref-b"], store=str(root / "features"), results=str(root / "results"), k=5,
                    permutations=19, bootstrap=4)  # fmt: skip
    for name, swapped in (("aaa", False), ("zzz", True)):  # the table permutes the larger name's rows
        got = {s.reference: s for s in scorer.score(mine, name=name)}
        for ref, layers in refs.items():
            a, b = (prepare(layers), prepare(mine)) if swapped else (prepare(mine), prepare(layers))
            want = calibrate_layers(a, b, "mutual_knn", permutations=19, bootstrap=4, k=5)
            assert (got[ref].tau, got[ref].p_value, got[ref].null_mean) == (want.tau, want.p_value, want.null_mean)
            assert got[ref].score == want.score  # a symmetric metric: the same maximum either way


def test_shuffled_rows_score_near_chance(store):
    root, refs, _, rng = store
    shuffled = [a[rng.permutation(N)] for a in refs["ref-a"]]
    scorer = Scorer("toy", ["ref-a"], store=str(root / "features"), results=str(root / "results"), k=5,
                    permutations=49, bootstrap=0)  # fmt: skip
    (s,) = scorer.score(shuffled)
    assert s.score < 5 / (N - 1) + 0.05 and s.p_value > 0.05 and s.calibrated == 0.0
    (same,) = scorer.score(refs["ref-a"])
    assert same.score == 1.0


def test_torch_input_and_errors(store):
    import torch

    root, refs, latent, rng = store
    scorer = Scorer("toy", ["ref-a"], store=str(root / "features"), results=str(root / "results"), k=5)
    t = torch.tensor(np.stack(refs["ref-a"][:2][0][None].repeat(2, axis=0)), dtype=torch.float16)
    assert scorer.score(t)[0].score > 0.5
    with pytest.raises(PrhError, match="samples, but dataset 'toy' has 120"):
        scorer.score([np.zeros((N - 1, 4), np.float32)])
    bad = refs["ref-a"][0].copy()
    bad[3, 1] = np.nan
    with pytest.raises(PrhError, match="NaN or Inf"):
        scorer.score([bad])
    with pytest.raises(PrhError, match=r"reference model 'nope' has no features on dataset 'toy'.*snakemake"):
        Scorer("toy", ["nope"], store=str(root / "features"), results=str(root / "results"))
