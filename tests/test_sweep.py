"""Sample-size sweep: nested subsets, scores equal to the dense engine on each subset, calibration only up to its
limit, the memo, the figure, and config errors naming the field."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from prh.align import best_pair, prepare
from prh.config import ConfigError, validate_config
from prh.figures import fig_sample_size
from prh.metrics import layerwise
from prh.sweep import nested_subsets, sweep_experiment

ROOT = Path(__file__).resolve().parents[1]
N = 90
SIZES = [20, 45, 90]
METRICS = [{"name": "mutual_knn", "k": 4}, {"name": "cka"}, {"name": "cknna", "k": 4}, {"name": "unbiased_cka"}]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory, latent_store) -> dict:
    """Two models' two-layer features of one latent, stored; the sweep run once over them."""
    tmp = tmp_path_factory.mktemp("sweep")
    stored = latent_store(tmp, ("a", "b"), N, 3, {"pooling": "cls"})
    receipts, feats = stored["receipts"], stored["feats"]
    exp = {"dataset": "d", "metrics": METRICS, "sizes": SIZES, "calibrate": True, "calibrate_max_n": 45}
    args = (exp, ["a"], ["b"], receipts, str(tmp / "store"), 0.95, {"permutations": 5, "bootstrap": 0, "seed": 2})
    table = sweep_experiment(*args, str(tmp / "e.csv"), str(tmp / "e.zarr"))
    return {"tmp": tmp, "feats": feats, "table": table, "args": args}


def test_subsets_are_nested_sorted_and_seeded() -> None:
    subsets = nested_subsets(50, [40, 10, 25], seed=1)
    assert list(subsets) == [10, 25, 40]
    assert set(subsets[10]) < set(subsets[25]) < set(subsets[40])
    assert all(np.all(np.diff(s) > 0) for s in subsets.values())
    assert np.array_equal(nested_subsets(50, [25], seed=1)[25], subsets[25])


def test_each_size_scores_the_dense_best_pair_on_its_own_preprocessed_subset(swept: dict) -> None:
    table = swept["table"]
    assert sorted(table["n"].unique()) == SIZES and len(table) == len(SIZES) * len(METRICS)
    subsets = nested_subsets(N, SIZES, seed=2)
    for row in table.itertuples():
        fa, fb = (prepare([x[subsets[row.n]] for x in swept["feats"][m]], q=0.95) for m in ("a", "b"))
        params = {k: v for k, v in yaml.safe_load(row.params).items()}
        want, _ = best_pair(layerwise(row.metric, fa, fb, **params))
        assert row.score == pytest.approx(want, rel=1e-6, abs=1e-9), (row.metric, row.n)


def test_calibration_only_up_to_its_limit_and_rerun_reads_the_memo(swept: dict) -> None:
    table = swept["table"]
    assert table.loc[table["n"] <= 45, "p_value"].notna().all()
    assert table.loc[table["n"] > 45, ["p_value", "calibrated", "tau"]].isna().all().all()
    again = sweep_experiment(*swept["args"], str(swept["tmp"] / "e2.csv"), str(swept["tmp"] / "e2.zarr"))
    pd.testing.assert_frame_equal(again, table)


def test_sample_size_figure_draws_raw_and_calibrated_panels(swept: dict, tmp_path: Path) -> None:
    res = fig_sample_size(swept["table"], tmp_path / "fig", permutations=5, calibrate_max_n=45)
    assert Image.open(res.png).size[0] > 800 and res.csv.exists()
    assert "n <= 45" in res.caption and "5 permutations" in res.caption
    assert res.reading.startswith("Mean over model pairs, smallest -> largest n of each (n = 20 to 90)")
    assert len(res.reading.splitlines()) == 2


@pytest.fixture(scope="module")
def config() -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["alignment"]["experiments"]["sweep"] = {"dataset": "fmnist", "x": ["vit-m-sup"], "y": ["resnet-s-sup"],
                                                "metrics": [{"name": "mutual_knn", "k": 10}], "sizes": [64, 1000]}
    cfg["report"]["sample_size"] = "sweep"
    return cfg


def test_a_sweep_config_validates_with_its_defaults(config: dict) -> None:
    assert validate_config(config)["alignment"]["experiments"]["sweep"]["calibrate_max_n"] == 4096


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sizes": [64, 2000]}, "alignment.experiments.sweep.sizes"),
        ({"sizes": [8]}, "alignment.experiments.sweep.metrics.0.k"),
        ({"metrics": [{"name": "cka", "kernel": "rbf"}]}, "alignment.experiments.sweep.metrics.0"),
        ({"metrics": [{"name": "svcca"}]}, "alignment.experiments.sweep.metrics.0"),
        ({"sizes": [2]}, "alignment.experiments.sweep.sizes.0"),
    ],
)
def test_bad_sweeps_are_one_line_config_errors(config: dict, change: dict, field: str) -> None:
    cfg = copy.deepcopy(config)
    cfg["alignment"]["experiments"]["sweep"].update(change)
    with pytest.raises(ConfigError, match=rf"^config error: {field}: ") as err:
        validate_config(cfg)
    assert "\n" not in str(err.value)


def test_report_sample_size_must_name_a_sweep(config: dict) -> None:
    cfg = copy.deepcopy(config)
    cfg["report"]["sample_size"] = "vision-vision"
    with pytest.raises(ConfigError, match="^config error: report.sample_size: experiment 'vision-vision' has no sizes"):
        validate_config(cfg)


def test_one_sample_size_figure_reads_every_listed_sweep(config: dict) -> None:
    from prh.plan import Plan

    cfg = copy.deepcopy(config)
    cfg["alignment"]["experiments"]["sweep2"] = {**cfg["alignment"]["experiments"]["sweep"], "calibrate_max_n": 512}
    cfg["report"]["sample_size"] = ["sweep", "sweep2"]
    fig = Plan(validate_config(cfg)).figures["sample_size"]
    assert fig.inputs == {"alignment": ["results/alignment/sweep.csv", "results/alignment/sweep2.csv"]}
    assert fig.params == {"calibration": {"permutations": 200, "calibrate_max_n": 4096}}
    cfg["report"]["sample_size"] = ["sweep", "nope"]
    with pytest.raises(ConfigError, match="^config error: report.sample_size: experiment 'nope' is not defined"):
        validate_config(cfg)
