"""The calibration figures (which trends survive calibration, the scale confound of random-init models) and the
pretrained-vs-zoo figure.

Statistics are checked against independent computations (scipy over explicitly built pairs, scikit-learn's
least squares and the textbook OLS standard error)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import LinearRegression

from prh.errors import PrhError
from prh.figures import fig_calibration_survival, fig_scale_confound
from prh.figures.calibration import shape_slopes, survival_table

VISION = {"v1": 0.1, "v2": 0.3, "v3": 0.5, "v4": 0.7, "v5": 0.9}  # fraction of probe tasks solved
LMS = {"l1": 0.2, "l2": 0.4, "l3": 0.6}  # 1 - bpb


def _row(x: str, y: str, score: float, calibrated: float, metric: str = "mutual_knn", params: str = '{"k": 10}') -> dict:
    return {"model_x": x, "model_y": y, "dataset": "d", "metric": metric, "params": params, "n": 100,
            "score": score, "calibrated": calibrated, "effect": score - 0.1, "null_mean": 0.1}


def _tables(seed: int = 0) -> tuple[pd.DataFrame, ...]:
    rng = np.random.default_rng(seed)
    names = list(VISION)
    vv, vl = [], []
    for metric in ("mutual_knn", "cka"):
        params = '{"k": 10}' if metric == "mutual_knn" else "{}"
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                s = min(VISION[a], VISION[b]) + rng.normal(0, 0.05)
                c = max(0.0, float(rng.normal(0, 0.1)))  # calibrated: unrelated to competence
                vv += [_row(a, b, s, c, metric, params), _row(b, a, s, c, metric, params)]  # mirrored rows
        for v in names:
            for lm, lm_score in LMS.items():
                vl.append(_row(v, lm, lm_score + rng.normal(0, 0.05), float(rng.uniform(0, 0.2)), metric, params))
    vv.append(_row("v1", "v2", 0.5, np.nan, "svcca", '{"dim": 10}'))  # not calibrated: not in the table
    solved = pd.DataFrame({"model": names, "frac_solved": [VISION[m] for m in names]})
    lm = pd.DataFrame({"model": list(LMS), "bpb": [1 - v for v in LMS.values()]})
    meta = pd.DataFrame({"model": names + list(LMS), "modality": ["vision"] * len(names) + ["language"] * len(LMS)})
    return pd.DataFrame(vv), solved, pd.DataFrame(vl), lm, meta


def test_survival_rhos_match_scipy_on_explicit_pairs() -> None:
    vv, solved, vl, lm, meta = _tables()
    table = survival_table(vv, solved, vl, lm, meta)
    assert list(table["metric"]) == ["mutual_knn(k=10)", "cka", "mutual_knn(k=10)", "cka"]
    for r in table.itertuples():
        metric = r.metric.split("(")[0]
        if r.trend.startswith("Fig. 2"):
            rows = vv[(vv["metric"] == metric) & (vv["model_x"] < vv["model_y"])]
            x = [min(VISION[a], VISION[b]) for a, b in zip(rows["model_x"], rows["model_y"])]
        else:
            rows = vl[vl["metric"] == metric]
            x = [LMS[m] for m in rows["model_y"]]
        assert r.n == len(rows) == (10 if r.trend.startswith("Fig. 2") else 15)
        for col in ("score", "calibrated", "effect"):
            want = stats.spearmanr(x, rows[col])
            assert getattr(r, f"rho_{col}") == pytest.approx(want.statistic, abs=1e-12)
            assert getattr(r, f"p_{col}") == pytest.approx(want.pvalue, rel=1e-9)
        assert r.n_calibrated_zero == int((rows["calibrated"] == 0).sum())
        assert r.survives == (r.p_calibrated < 0.05 and np.sign(r.rho_calibrated) == np.sign(r.rho_score))
    assert (table["rho_score"] > 0.8).all() and (table["p_score"] < 0.01).all()  # the built-in raw trend


def test_survival_figure_renders_and_reads_from_the_table(tmp_path: Path) -> None:
    vv, solved, vl, lm, meta = _tables(1)
    res = fig_calibration_survival(vv, solved, vl, lm, tmp_path / "calibration", model_meta=meta)
    img = matplotlib.image.imread(res.png)
    assert img.ndim == 3 and img[..., :3].std() > 0.05
    table = pd.read_csv(res.csv)
    lines = res.reading.splitlines()
    assert len(lines) == 2 and json.loads(res.png.with_suffix(".json").read_text())["reading"] == res.reading
    first = table.iloc[0]
    assert f"rho {first.rho_score:.3f}" in lines[0] and f"calibrated {first.rho_calibrated:.3f}" in lines[0]


def test_survival_needs_calibrated_rows(tmp_path: Path) -> None:
    vv, solved, vl, lm, meta = _tables()
    with pytest.raises(PrhError, match="calibrated rows"):
        survival_table(vv.assign(calibrated=np.nan), solved, vl.assign(calibrated=np.nan), lm, meta)


def _grid(calibrated: float = 0.0) -> tuple[pd.DataFrame, dict]:
    rows, shapes = [], {}
    for d in (2, 4, 8):
        for w in (32, 64, 128):
            m = f"rand-d{d}-w{w}"
            shapes[m] = {"depth": d, "width": w}
            for ref, off in (("ref-a", 0.0), ("ref-b", 0.02)):
                score = 0.1 + 0.02 * np.log2(d) + 0.01 * np.log2(w) + off + 0.001 * ((d * w) % 3)
                rows.append(_row(m, ref, score, calibrated) | {"null_mean": score - 0.001})
    return pd.DataFrame(rows), shapes


def test_shape_slopes_match_least_squares_and_the_ols_standard_error() -> None:
    df, shapes = _grid()
    t = df.groupby("model_x", as_index=False)["score"].mean()
    t["depth"] = t["model_x"].map(lambda m: shapes[m]["depth"])
    t["width"] = t["model_x"].map(lambda m: shapes[m]["width"])
    fit = shape_slopes(t, "score")
    design = np.log2(t[["depth", "width"]].to_numpy(float))
    ref = LinearRegression().fit(design, t["score"])
    assert fit["depth_slope"] == pytest.approx(ref.coef_[0], abs=1e-12)
    assert fit["width_slope"] == pytest.approx(ref.coef_[1], abs=1e-12)
    x = np.column_stack([np.ones(len(t)), design])
    resid = t["score"] - ref.predict(design)
    se = np.sqrt(np.diag(np.linalg.pinv(x.T @ x)) * (resid @ resid) / (len(t) - 3))
    assert fit["depth_se"] == pytest.approx(se[1], rel=1e-9)
    assert fit["width_p"] == pytest.approx(2 * stats.t.sf(abs(ref.coef_[1] / se[2]), len(t) - 3), rel=1e-9)


def test_scale_confound_figure_reports_slopes(tmp_path: Path) -> None:
    df, shapes = _grid()
    res = fig_scale_confound(df, shapes, tmp_path / "scale_confound")
    slopes = pd.read_csv(tmp_path / "scale_confound_slopes.csv")
    raw = slopes[slopes["value"] == "score"].iloc[0]
    assert raw["depth_slope"] == pytest.approx(0.02, abs=2e-3) and raw["width_slope"] == pytest.approx(0.01, abs=2e-3)
    cal = slopes[slopes["value"] == "calibrated"].iloc[0]
    assert cal["depth_slope"] == pytest.approx(0.0, abs=1e-12)
    lines = res.reading.splitlines()
    assert len(lines) == 2 and f"{raw['depth_slope']:+.4f} per doubling of depth" in lines[0]
    assert "0 of 9 (model, metric) means above 0" in lines[1]
    assert len(pd.read_csv(res.csv)) == 9  # one row per grid model (mean over the two references)


def test_scale_confound_names_a_model_without_shape(tmp_path: Path) -> None:
    df, shapes = _grid()
    shapes["rand-d2-w32"] = {"depth": None, "width": 32}
    with pytest.raises(PrhError, match="rand-d2-w32"):
        fig_scale_confound(df, shapes, tmp_path / "x")


# ----------------------------------------------------------------------------- pretrained vs zoo (issue 18)


def _pretrained_tables() -> tuple[pd.DataFrame, ...]:
    vision = {"eff0": ("packaged", 4.7e6, 0.9), "eff1": ("packaged", 5.5e6, 0.95), "zoo-a": ("zoo", 1e5, 0.3),
              "zoo-b": ("zoo", 2e5, 0.5)}
    lms = {"mini": ("bert", 2.2e7, 7), "mpnet": ("bert", 1.1e8, 13), "tiny": ("llama", 1e6, 3)}
    meta = pd.DataFrame([{"model": m, "modality": "vision", "source": s, "family": "effnet" if s == "packaged" else "zoo",
                          "n_params": p, "n_layers": 5} for m, (s, p, _) in vision.items()]
                        + [{"model": m, "modality": "language", "source": "packaged", "family": f, "n_params": p,
                            "n_layers": nl} for m, (f, p, nl) in lms.items()])  # fmt: skip
    solved = pd.DataFrame({"model": list(vision), "frac_solved": [v[2] for v in vision.values()]})
    vv = pd.DataFrame([_row(a, b, 0.3 if vision[a][0] == vision[b][0] else 0.1, 0.0)
                       for a in vision for b in vision if a != b])  # fmt: skip
    vl = pd.DataFrame([_row(v, lm, 0.1 + 0.1 * (lm == "mpnet") + 0.05 * (vision[v][0] == "packaged"), 0.0)
                       | {"layer_x": "blocks.1", "layer_y": f"hidden_states.{lms[lm][2] - 1}"}
                       for v in vision for lm in lms])  # fmt: skip
    return vv, vl, solved, meta


def test_pretrained_table_and_ladders_follow_the_definitions(tmp_path: Path) -> None:
    from prh.figures import fig_pretrained
    from prh.figures.pretrained import ladder_table, pretrained_table, relative_depth

    assert relative_depth("hidden_states.6", 7) == 1.0 and relative_depth("hidden_states.0", 13) == 0.0
    assert np.isnan(relative_depth("concat", 7))
    vv, vl, solved, meta = _pretrained_tables()
    t = pretrained_table(vv, vl, solved, meta).set_index("model")
    assert t.loc["eff0", "vv_same_source"] == pytest.approx(0.3) and t.loc["eff0", "vv_other_source"] == pytest.approx(0.1)
    assert t.loc["eff1", "vl_mean"] == pytest.approx(np.mean([0.15, 0.25, 0.15]))
    assert t.loc["zoo-a", "best_lm_depth"] == pytest.approx(1.0)  # every best layer is each LM's last
    ladder = ladder_table(vl, meta)
    assert set(ladder["family"]) == {"bert"}  # llama has one size: no ladder
    got = ladder[ladder["source"] == "zoo"].sort_values("rank")
    assert list(got["lm"]) == ["mini", "mpnet"] and list(got["score"]) == pytest.approx([0.1, 0.2])
    res = fig_pretrained(vv, vl, solved, meta, tmp_path / "pretrained")
    lines = res.reading.splitlines()
    assert len(lines) == 2 and "eff0 0.90, eff1 0.95 vs zoo median 0.40" in lines[0]
    assert "bert (zoo vision) 0.100 -> 0.200" in lines[1]
