"""The hypothesis figures (prh.figures.hypotheses): which pairs enter, the averages, and the Spearman tests."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from prh.errors import PrhError
from prh.figures import fig_hypothesis
from prh.figures.hypotheses import factor_tests, hypothesis_table

RNG = np.random.default_rng(0)


def exact_spearman_p(x, y) -> float:
    """Two-sided p of Spearman's rho over all n! orders of x against y (scipy's permutation_test, one sample)."""
    y = np.asarray(y)
    res = stats.permutation_test((np.asarray(x),), lambda a: stats.spearmanr(a, y).statistic,
                                 permutation_type="pairings", n_resamples=np.inf)  # fmt: skip
    return float(res.pvalue)


def rows(xs: list[str], ys: list[str], score) -> pd.DataFrame:
    """An alignment table with a score and a calibrated value per (x, y) pair."""
    out = []
    for x in xs:
        for y in ys:
            s = score(x, y)
            out.append({"model_x": x, "model_y": y, "dataset": "scenes", "metric": "mutual_knn", "n": 512,
                        "score": s, "calibrated": max(0.0, s - 0.1), "null_mean": 0.02})  # fmt: skip
    return pd.DataFrame(out)


def test_references_are_averaged_and_spearman_is_scipys() -> None:
    """Against outside references: each x model's mean over references; rho and p equal scipy's on those means."""
    values = {f"m{i}": v for i, v in enumerate([0, 10, 30, 100, 300])}
    noise = {(x, y): RNG.normal(0, 0.02) for x in values for y in ("lm1", "lm2")}
    align = rows(list(values), ["lm1", "lm2"], lambda x, y: 0.1 + 0.001 * values[x] ** 0.5 + noise[(x, y)])
    table = hypothesis_table(align, "dyn", values, {m: True for m in values})
    expect = align.groupby("model_x")["calibrated"].mean()
    assert np.allclose(table.set_index("model_x")["calibrated"], expect.loc[table["model_x"]])
    tests = factor_tests(table)
    rho = stats.spearmanr(table["value"], table["calibrated"]).statistic
    exact = exact_spearman_p(table["value"].to_numpy(), table["calibrated"].to_numpy())
    assert tests.iloc[0]["rho_calibrated"] == pytest.approx(rho)
    assert tests.iloc[0]["p_calibrated"] == pytest.approx(exact)  # n = 5: all 120 pairings


def test_runs_of_the_same_value_are_compared_between_seeds_only() -> None:
    """References that are the hypothesis' own models: only distinct models of equal value (seeds) are paired."""
    values = {"a0": 1, "a1": 1, "b0": 2, "b1": 2}
    align = rows(list(values), list(values), lambda x, y: 1.0 if x == y else (0.5 if values[x] == values[y] else 0.0))
    align.loc[(align["model_x"] == "b0") & (align["model_y"] == "b1"), "score"] = 0.7
    align["calibrated"] = align["score"]
    table = hypothesis_table(align, "mt", values, {m: True for m in values})
    assert table["references"].iloc[0] == "between seeds"
    got = table.set_index("model_x")["score"].to_dict()
    assert got == {"a0": 0.5, "a1": 0.5, "b0": 0.7, "b1": 0.5}


def test_controls_get_their_own_test_and_the_figure_reads_from_the_data(tmp_path: Path) -> None:
    """Random-init controls are tested apart from trained models; the figure, its tests table and its reading agree."""
    n_params = {"t1": 1e3, "t2": 1e4, "t3": 1e5, "r1": 1e3, "r2": 1e4, "r3": 1e5}
    trained = {m: m.startswith("t") for m in n_params}
    meta = pd.DataFrame({"model": list(n_params), "n_params": list(n_params.values())})
    score = {"t1": 0.2, "t2": 0.3, "t3": 0.4, "r1": 0.12, "r2": 0.11, "r3": 0.13}
    align = rows(list(n_params), ["lm"], lambda x, y: score[x])
    acc = pd.DataFrame({"model": ["t1", "t2", "t3"], "task": "a", "accuracy": [0.5, 0.6, 0.7]})
    shapes = {m: (2, 32 * int(m[1])) for m in n_params}  # t1 and r1 share a shape, and so on
    res = fig_hypothesis({"cap": align}, "capacity", "n_params", {m: None for m in n_params}, trained, tmp_path / "h",
                         model_meta=meta, accuracy=acc, claim="bigger converge", shapes=shapes)  # fmt: skip
    tests = pd.read_csv(tmp_path / "h_tests.csv")
    gain = tests[tests["group"] == "trained - random init"].iloc[0]
    expect = stats.spearmanr([1e3, 1e4, 1e5], [0.2 - 0.12, 0.3 - 0.11, 0.4 - 0.13]).statistic
    assert gain["n"] == 3 and gain["rho_score"] == pytest.approx(expect)
    t, r = tests[tests["group"] == "trained"].iloc[0], tests[tests["group"] == "random init"].iloc[0]
    assert t["rho_calibrated"] == pytest.approx(1.0) and r["n"] == 3
    assert r["rho_score"] == pytest.approx(stats.spearmanr([1e3, 1e4, 1e5], [0.12, 0.11, 0.13]).statistic)
    assert "cap: rho = +1.00" in res.reading and "for random init" in res.reading and "for trained - random init" in res.reading
    assert matplotlib.image.imread(res.png).shape[1] > 800
    assert json.loads((tmp_path / "h.json").read_text())["reading"] == res.reading


def test_unknown_factor_and_missing_models_are_named(tmp_path: Path) -> None:
    align = rows(["a"], ["lm"], lambda x, y: 0.2)
    with pytest.raises(PrhError, match="vary: 'depth'"):
        fig_hypothesis({"e": align}, "h", "depth", {"a": 1}, {"a": True}, tmp_path / "h")
    with pytest.raises(PrhError, match="experiment 'e' has none of the hypothesis models"):
        fig_hypothesis({"e": align}, "h", "step", {"b": 1}, {"b": True}, tmp_path / "h")


def test_spearman_p_is_exact_for_few_points() -> None:
    """Up to 9 points the p-value counts all n! pairings (scipy's permutation_test agrees, ties included); a perfect
    rank agreement of 5 points has p = 2/120, not the t approximation's ~1e-24; beyond 9 points scipy's t is kept,
    except at |rho| = 1 where it is 2/n!."""
    from prh.figures._common import spearman

    assert spearman([0, 10, 30, 100, 300], [0.1, 0.2, 0.3, 0.4, 0.5]) == (pytest.approx(1.0), pytest.approx(2 / 120))
    x, y = [1, 2, 2, 3, 5, 8, 9], [0.3, 0.1, 0.4, 0.4, 0.9, 0.2, 0.8]
    assert spearman(x, y)[1] == pytest.approx(exact_spearman_p(x, y))
    big = RNG.normal(size=(2, 20))
    assert spearman(*big)[1] == pytest.approx(stats.spearmanr(*big).pvalue)
    assert spearman(range(12), range(12))[1] == pytest.approx(2 / 479001600)
