"""align_experiment over every registered metric: the config entry validates, every ordered model pair's row equals
the best of layerwise() on the same prepared features (asymmetric metrics scored both ways, symmetric ones mirrored), chance from the registry."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from prh.align import best_pair, prepare
from prh.config import validate_config
from prh.experiment import align_experiment, model_pairs
from prh.metrics import METRICS, chance_level, get_metric, layerwise

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("a", "b", "c")
N = 30


def small_entry(name: str) -> dict:
    """A config metric entry for n = 30 inputs with 6-wide layers."""
    sizes = {"k": 4, "dim": 3}
    return {"name": name, **{p: v for p, v in sizes.items() if p in get_metric(name).param_names}}


@pytest.fixture(scope="module")
def fan_in(tmp_path_factory: pytest.TempPathFactory, latent_store) -> dict:
    """Three models' two-layer features of a shared latent on one dataset, stored with their receipts."""
    tmp = tmp_path_factory.mktemp("fan_in")
    stored = latent_store(tmp, MODELS, N, 0, {"pooling": "cls", "layers": "all"})
    receipts, feats = stored["receipts"], stored["feats"]
    return {"tmp": tmp, "receipts": receipts, "feats": feats}


@pytest.fixture(scope="module")
def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.mark.parametrize("name", METRICS)
def test_every_metric_entry_validates_and_runs_through_align_experiment(fan_in: dict, default_config: dict, name: str) -> None:
    entry = small_entry(name)
    cfg = copy.deepcopy(default_config)
    cfg["alignment"]["experiments"]["vision-vision"]["metrics"] = [entry]
    assert validate_config(cfg)["alignment"]["experiments"]["vision-vision"]["metrics"] == [entry]
    out = fan_in["tmp"] / "results" / "alignment" / name
    calibration = {"permutations": 4, "bootstrap": 3, "seed": 0}
    table = align_experiment({"dataset": "d", "metrics": [entry], "calibrate": True}, list(MODELS), list(MODELS),
                             fan_in["receipts"], str(fan_in["tmp"] / "store"), 0.95, calibration, str(out / "e.csv"),
                             str(out / "e.zarr"))  # fmt: skip
    assert sorted(zip(table["model_x"], table["model_y"])) == sorted((x, y) for x in MODELS for y in MODELS if x != y)
    params = {k: v for k, v in entry.items() if k != "name"}
    for row in table.itertuples():
        fx, fy = (prepare(fan_in["feats"][m], q=0.95) for m in (row.model_x, row.model_y))
        want, _ = best_pair(layerwise(name, fx, fy, **params))
        assert row.score == pytest.approx(want, abs=1e-9), (row.model_x, row.model_y)
        expected_chance = chance_level(name, N, **params)
        assert (pd.isna(row.chance) if expected_chance is None else row.chance == pytest.approx(expected_chance))
        assert np.isfinite(row.null_mean) and row.ci_low <= row.ci_high


def test_asymmetric_metrics_score_both_orders() -> None:
    for name in METRICS:
        pairs = model_pairs(list(MODELS), list(MODELS), name)
        assert len(pairs) == (6 if not get_metric(name).symmetric else 3), name
    assert not get_metric("cknna").symmetric and not get_metric("cycle_knn").symmetric


def test_rows_are_calibrated_against_the_null_of_the_max_over_layer_pairs(fan_in: dict, tmp_path: Path) -> None:
    from prh.align import prepare
    from prh.metrics import calibrate_layers, permutation_array

    calibration = {"permutations": 19, "bootstrap": 5, "alpha": 0.1, "seed": 3}
    entry = {"name": "mutual_knn", "k": 4}

    def run(cal: dict) -> pd.DataFrame:
        return align_experiment({"dataset": "d", "metrics": [entry], "calibrate": True}, list(MODELS), list(MODELS),
                                fan_in["receipts"], str(fan_in["tmp"] / "store"), 0.95, cal, str(tmp_path / "e.csv"),
                                str(tmp_path / "e.zarr"))  # fmt: skip

    table = run(calibration)
    perms = permutation_array(N, 19, 3)  # one array per dataset, from the config seed
    for row in table.itertuples():  # a mirrored row carries the calibration of the pair in name order
        x, y = sorted((row.model_x, row.model_y))
        want = calibrate_layers(prepare(fan_in["feats"][x]), prepare(fan_in["feats"][y]),
                                "mutual_knn", permutations=perms, bootstrap=5, alpha=0.1, seed=3, k=4)  # fmt: skip
        got = [row.null_mean, row.null_std, row.tau, row.p_value, row.calibrated, row.effect, row.ci_low, row.ci_high]
        np.testing.assert_allclose(got, want.summary()[:8], rtol=0, atol=1e-12)
        assert row.score == want.score
    memo = fan_in["tmp"] / "store" / "memo"
    before = {p: p.stat().st_mtime_ns for p in memo.rglob("*.npy")}
    assert run(calibration).equals(table)  # memoised: nothing recomputed
    assert {p: p.stat().st_mtime_ns for p in memo.rglob("*.npy")} == before
    other = run({**calibration, "permutations": 29})  # another K: a new calibration, same scores
    assert (other["score"].to_numpy() == table["score"].to_numpy()).all() and len(set(memo.rglob("*.npy")) - set(before)) == 3


def test_an_experiment_overrides_the_resampling_counts(fan_in: dict, tmp_path: Path) -> None:
    entry = {"name": "mutual_knn", "k": 4}
    calibration = {"permutations": 19, "bootstrap": 5, "alpha": 0.1, "seed": 3}

    def run(**override: int) -> pd.DataFrame:
        exp = {"dataset": "d", "metrics": [entry], "calibrate": True, **override}
        return align_experiment(exp, list(MODELS), list(MODELS), fan_in["receipts"], str(fan_in["tmp"] / "store"),
                                0.95, calibration, str(tmp_path / "e.csv"), str(tmp_path / "e.zarr"))  # fmt: skip

    plain, own = run(), run(permutations=9, bootstrap=0)
    assert (plain["p_value"] >= 1 / 20).all() and (own["p_value"] >= 1 / 10).all()
    assert plain["ci_low"].notna().all() and own["ci_low"].isna().all() and own["tau"].notna().all()
    assert (own["p_value"] * 10).round(9).mod(1).eq(0).all()  # (1 + count) / (9 + 1)
