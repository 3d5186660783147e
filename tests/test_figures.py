"""Every figure renders from small synthetic tables; its CSV and reading match independent computations."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from prh.errors import PrhError
from prh.figures import (
    fig_caption_density,
    fig_convergence,
    fig_downstream,
    fig_layer_heatmap,
    fig_locality,
    fig_metric_agreement,
    fig_umap,
    fig_vision_language,
    load_result,
)
from prh.figures.vision import alignment_distance, competence_bins


def assert_rendered(res, min_side: int = 200) -> None:
    """PNG with real image content, SVG, CSV and JSON sidecar exist."""
    img = matplotlib.image.imread(res.png)
    assert img.ndim == 3 and min(img.shape[:2]) >= min_side
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert res.svg.read_text().lstrip().startswith(("<?xml", "<svg"))
    assert res.csv.stat().st_size > 0
    assert json.loads(res.png.with_suffix(".json").read_text())["reading"] == res.reading
    assert len(res.reading.splitlines()) == 2


def _row(x: str, y: str, score: float, metric: str = "mutual_knn", params: str = '{"k": 10}', **kw) -> dict:
    """An alignment row with the contract's columns."""
    return {"model_x": x, "model_y": y, "dataset": "places", "metric": metric, "params": params, "n": 100,
            "score": score, "layer_x": 3, "layer_y": 4, "chance": 10 / 99, "null_mean": 0.1, "null_std": 0.01,
            "p_value": 0.005, "ci_low": score - 0.02, "ci_high": score + 0.02, "calibrated": score - 0.1, **kw}


def _vv(models: list[str], seed: int) -> pd.DataFrame:
    """Random vision-vision table over unordered pairs."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame([_row(a, b, float(rng.uniform(0.1, 0.6)))
                         for i, a in enumerate(models) for b in models[i + 1:]])


def test_competence_bins_disjoint_and_cumulative() -> None:
    frac = pd.Series({"a": 0.0, "b": 0.2, "c": 0.21, "d": 0.6, "e": 1.0})
    assert competence_bins(frac, 5) == {0: ["a", "b"], 1: ["c"], 2: ["d"], 3: [], 4: ["e"]}
    cum = competence_bins(frac, 5, cumulative=True)
    assert cum[0] == ["a", "b"] and cum[2] == ["a", "b", "c", "d"] and cum[4] == list("abcde")


def _bin_means(align: pd.DataFrame, members: dict[str, list[str]]) -> pd.DataFrame:
    """Per bin (label -> its models): pairs, mean and SE of the pair scores (both orders averaged), by pandas."""
    key = align.assign(a=align[["model_x", "model_y"]].min(axis=1), b=align[["model_x", "model_y"]].max(axis=1))
    pairs = key.groupby(["a", "b"])["score"].mean().reset_index()
    rows = {}
    for label, models in members.items():
        s = pairs[pairs["a"].isin(models) & pairs["b"].isin(models)]["score"]
        rows[label] = {"n_models": len(models), "n_pairs": len(s), "mean": s.mean(), "se": s.sem()}
    return pd.DataFrame(rows).T


def test_convergence_bins_match_independent_means(tmp_path: Path) -> None:
    frac = {"m1": 0.1, "m2": 0.15, "m3": 0.05, "m4": 0.5, "m5": 0.55, "m6": 0.45, "m7": 0.9, "m8": 0.95, "m9": 1.0}
    align = _vv(sorted(frac), seed=0)
    # both orientations of one pair: the figure must average them
    extra = _row("m2", "m1", 0.9)
    align = pd.concat([align, pd.DataFrame([extra])], ignore_index=True)
    ts = pd.DataFrame({"model": list(frac), "frac_solved": list(frac.values())})
    res = fig_convergence(align, ts, tmp_path / "conv.png")
    assert_rendered(res)
    csv = pd.read_csv(res.csv)
    assert list(csv["binning"].unique()) == ["disjoint", "cumulative"] and len(csv) == 10
    f = pd.Series(frac)
    low, mid, high = (sorted(f.index[(f > lo) & (f <= hi)]) for lo, hi in ((0, 0.2), (0.4, 0.6), (0.8, 1.0)))
    disjoint = _bin_means(align, {"0-20%": low, "40-60%": mid, "80-100%": high})
    cumulative = _bin_means(align, {"0-20%": low, "0-60%": low + mid, "0-100%": low + mid + high})
    for binning, expect in (("disjoint", disjoint), ("cumulative", cumulative)):
        got = csv[csv["binning"] == binning].set_index("bin")
        for label, r in expect.iterrows():
            assert got.loc[label, "n_models"] == r["n_models"] and got.loc[label, "n_pairs"] == r["n_pairs"]
            assert got.loc[label, "mean"] == pytest.approx(r["mean"]) and got.loc[label, "se"] == pytest.approx(r["se"])
    got = csv.set_index(["binning", "bin"])
    assert got.loc[("disjoint", "20-40%"), "n_models"] == 0 and np.isnan(got.loc[("disjoint", "20-40%"), "mean"])
    assert got.loc[("cumulative", "0-40%"), "n_models"] == 3  # cumulative bins keep the lower models
    line1 = res.reading.splitlines()[0]
    assert (f"disjoint bins: {disjoint.loc['0-20%', 'mean']:.3f} (0-20%, m=3) -> "
            f"{disjoint.loc['80-100%', 'mean']:.3f} (80-100%, m=3)") in line1
    assert f"cumulative bins: {cumulative.loc['0-20%', 'mean']:.3f} (0-20%, m=3) -> " in line1
    assert f"{cumulative.loc['0-100%', 'mean']:.3f} (0-100%, m=9)" in line1
    pair = align.assign(a=align[["model_x", "model_y"]].min(axis=1), b=align[["model_x", "model_y"]].max(axis=1))
    pair_mean = pair.groupby(["a", "b"])["score"].mean()
    rho = stats.spearmanr([min(frac[a], frac[b]) for a, b in pair_mean.index], pair_mean).statistic
    assert f"= {rho:.3f}" in res.reading.splitlines()[1]
    assert "n = 100" in res.caption and "mutual_knn(k=10)" in res.caption and "places" in res.caption
    assert "disjoint bins" in res.caption and "cumulative bins" in res.caption


def test_convergence_tolerates_tiny_bins_and_rejects_missing_columns(tmp_path: Path) -> None:
    align = _vv(["a", "b"], seed=1)
    ts = pd.DataFrame({"model": ["a", "b"], "n_solved": [1, 9], "n_tasks": [10, 10]})
    res = fig_convergence(align, ts, tmp_path / "tiny")
    assert_rendered(res)
    csv = pd.read_csv(res.csv)
    assert csv.loc[csv["binning"] == "disjoint", "n_pairs"].sum() == 0  # a and b fall in different bins
    assert csv.loc[csv["binning"] == "cumulative", "n_pairs"].tolist() == [0, 0, 0, 0, 1]  # b (0.9) joins a at 100%
    assert "disjoint bins: no bin holds two models" in res.reading
    with pytest.raises(PrhError, match="score"):
        fig_convergence(align.drop(columns="score"), ts, tmp_path / "bad")


def test_alignment_distance_is_a_clipped_symmetric_log() -> None:
    df = pd.DataFrame([_row("a", "b", 0.5), _row("b", "a", 0.3), _row("a", "c", 0.0)])
    d, missing = alignment_distance(df, ["a", "b", "c"])
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    assert d[0, 1] == pytest.approx(-np.log(0.4))
    assert d[0, 2] == pytest.approx(-np.log(1e-6))
    assert missing == 1 and d[1, 2] == pytest.approx(-np.log(1e-6))  # missing pair -> largest distance


def _meta(models: list[str], objectives: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"model": models, "modality": "vision", "family": "vit", "objective": objectives,
                         "width": [192 * (1 + i % 3) for i in range(len(models))],
                         "n_params": [1e6 * (i + 1) for i in range(len(models))]})


def test_umap_small_uses_mds_and_reports_competence_trend(tmp_path: Path) -> None:
    models = ["a", "b", "c", "d", "e"]
    align = _vv(models, seed=2)
    ts = pd.DataFrame({"model": models, "frac_solved": [0.1, 0.3, 0.5, 0.7, 0.9]})
    res = fig_umap(align, ts, _meta(models, ["mae", "clip", "clip", "dino", "mae"]), tmp_path / "umap")
    assert_rendered(res)
    csv = pd.read_csv(res.csv).set_index("model")
    a = {m: [] for m in models}
    for r in align.itertuples():
        a[r.model_x].append(r.score)
        a[r.model_y].append(r.score)
    mean = pd.Series({m: np.mean(v) for m, v in a.items()})
    assert np.allclose(csv.loc[models, "mean_alignment"], mean[models])
    rho = stats.spearmanr(ts["frac_solved"], mean[models]).statistic
    assert f"= {rho:.3f}" in res.reading
    assert "MDS" in res.caption and set(csv["objective"]) == {"mae", "clip", "dino"}


@pytest.mark.slow
def test_umap_embeds_with_umap_learn(tmp_path: Path) -> None:
    models = [f"m{i}" for i in range(7)]
    ts = pd.DataFrame({"model": models, "frac_solved": np.linspace(0, 1, 7)})
    res = fig_umap(_vv(models, seed=3), ts, _meta(models, ["a", "b"] * 3 + ["a"]), tmp_path / "u")
    assert_rendered(res)
    assert "UMAP" in res.caption and np.isfinite(pd.read_csv(res.csv)[["x", "y"]].to_numpy()).all()


def _lm() -> pd.DataFrame:
    return pd.DataFrame({"model": ["l1", "l2", "l3", "l4"], "n_params": [1e8, 3e8, 1e9, 7e9],
                         "bpb": [1.3, 1.2, 1.0, 0.9], "lm_score": [-0.3, -0.2, 0.0, 0.1], "corpus": "wordnet",
                         "acc_gloss": [0.3, 0.35, 0.5, 0.6], "acc_arith": [0.01, 0.02, 0.05, 0.4]})


def _vl(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [_row(v, lm, float(rng.uniform(0.05, 0.3))) for v in ["va", "vb", "vc"] for lm in ["l1", "l2", "l3", "l4"]]
    rows[0] = {**rows[0], "model_x": "l1", "model_y": "va"}  # the LM may sit on either side
    return pd.DataFrame(rows)


def test_vision_language_table_and_trend(tmp_path: Path) -> None:
    align, lm = _vl(4), _lm()
    meta = _meta(["va", "vb", "vc"], ["clip", "clip", "mae"])
    res = fig_vision_language(align, lm, meta, tmp_path / "vl")
    assert_rendered(res)
    csv = pd.read_csv(res.csv)
    assert len(csv) == 12 and set(csv["panel"]) == {"clip", "mae"}
    got = csv.set_index(["vision", "lm"])["score"]
    assert got[("va", "l1")] == pytest.approx(align.loc[0, "score"])
    lm_score = dict(zip(lm["model"], lm["lm_score"]))
    x = [lm_score[r.model_y] if r.model_y in lm_score else lm_score[r.model_x] for r in align.itertuples()]
    rho = stats.spearmanr(x, align["score"]).statistic
    assert f"= {rho:.3f}" in res.reading.splitlines()[0]


def _downstream_expect(align: pd.DataFrame, ref: str) -> pd.Series:
    """Alignment of each LM to `ref`, recomputed from the table (the LM may sit on either side)."""
    d = align.assign(vision=np.where(align["model_x"].str.startswith("v"), align["model_x"], align["model_y"]),
                     lm=np.where(align["model_x"].str.startswith("l"), align["model_x"], align["model_y"]))
    return d[d["vision"] == ref].groupby("lm")["score"].mean()


def test_downstream_reference_is_the_pretrained_model_solving_most_tasks(tmp_path: Path) -> None:
    align, lm = _vl(5), _lm()
    align = align.iloc[::-1].reset_index(drop=True)  # vc's rows first: the tie must be broken by name, not order
    meta = _meta(["va", "vb", "vc"], ["mae", "imagenet", "imagenet"]).assign(source=["zoo", "packaged", "timm"])
    solved = pd.DataFrame({"model": ["va", "vb", "vc"], "n_solved": [9, 6, 6], "n_tasks": 9})  # va is zoo-trained
    res = fig_downstream(align, lm, tmp_path / "down", tasks_solved=solved, model_meta=meta)
    assert_rendered(res)
    expect = _downstream_expect(align, "vb")
    csv = pd.read_csv(res.csv).set_index("lm")
    assert set(csv["reference"]) == {"vb"} and np.allclose(csv.loc[expect.index, "alignment"], expect)
    assert list(csv.loc[["l1", "l4"], "bpb_rank"]) == [4, 1]
    for task in ("acc_gloss", "acc_arith"):
        rho = stats.spearmanr(lm.set_index("model").loc[expect.index, task], expect).statistic
        assert f"{task[4:]}: rho = {rho:.3f}" in res.reading
    assert "vb" in res.title and "Alignment to vb" in res.reading
    assert ("Reference: vb, report.downstream_reference is null: the pretrained vision model solving the largest "
            "fraction of probe tasks (67%, tied with vc, first by name)") in res.caption
    zoo_only = fig_downstream(align, lm, tmp_path / "zoo", tasks_solved=solved, model_meta=meta.assign(source="zoo"))
    assert "Reference: va" in zoo_only.caption and "(none is pretrained)" in zoo_only.caption


def test_downstream_named_reference_and_errors(tmp_path: Path) -> None:
    align, lm = _vl(5), _lm()
    named = fig_downstream(align, lm, tmp_path / "named", reference_model="vc")
    assert np.allclose(pd.read_csv(named.csv).set_index("lm")["alignment"], _downstream_expect(align, "vc"))
    assert "Reference: vc, named in report.downstream_reference." in named.caption
    no_tasks = fig_downstream(align, lm.drop(columns=["acc_gloss", "acc_arith"]), tmp_path / "none",
                              reference_model="vb")
    assert "no downstream" in no_tasks.reading
    with pytest.raises(PrhError, match="report.downstream_reference 'nope' is not a vision model"):
        fig_downstream(align, lm, tmp_path / "x", reference_model="nope")
    with pytest.raises(PrhError, match="report.downstream_reference is null and there are no probe results"):
        fig_downstream(align, lm, tmp_path / "y")
    with pytest.raises(PrhError, match="no vision model of the alignment table has probe results"):
        fig_downstream(align, lm, tmp_path / "z", tasks_solved=pd.DataFrame({"model": ["other"], "frac_solved": [1.0]}))


def test_caption_density_means_and_bands(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    rows = [{**_row(v, lm, float(0.05 + 0.003 * dens + rng.normal(0, 0.01))), "density": dens}
            for dens in (5, 10, 20, 30) for v in ("va", "vb", "vc") for lm in ("l1", "l2", "l3")]
    align = pd.DataFrame(rows)
    meta = pd.concat([_meta(["va", "vb", "vc"], ["clip", "clip", "mae"]),
                      pd.DataFrame({"model": ["l1", "l2", "l3"], "modality": "language"})], ignore_index=True)
    res = fig_caption_density(align, meta, tmp_path / "dens")
    assert_rendered(res)
    csv = pd.read_csv(res.csv).set_index(["group", "density"])
    clip = align[align["model_x"].isin(["va", "vb"]) & (align["density"] == 20)]
    per_lm = clip.groupby("model_y")["score"].mean()
    assert csv.loc[("clip", 20), "mean"] == pytest.approx(per_lm.mean())
    assert csv.loc[("clip", 20), "std"] == pytest.approx(per_lm.std(ddof=1))
    rho = stats.spearmanr(align["density"], align["score"]).statistic
    assert f"= {rho:.3f}" in res.reading


def test_caption_density_parses_dataset_names_and_names_missing_column(tmp_path: Path) -> None:
    align = pd.DataFrame([{**_row("va", "l1", 0.1 + 0.01 * d), "dataset": f"scenes-d{d}"} for d in (5, 10, 20)])
    res = fig_caption_density(align, _meta(["va"], ["clip"]), tmp_path / "d2")
    assert sorted(pd.read_csv(res.csv)["density"]) == [5, 10, 20]
    with pytest.raises(PrhError, match="density"):
        fig_caption_density(align.assign(dataset="scenes"), _meta(["va"], ["clip"]), tmp_path / "d3")


def test_locality_correlations_per_k(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    ls = {"l1": 0.1, "l2": 0.2, "l3": 0.3, "l4": 0.4}
    rows = [{"k": k, "model_x": v, "model_y": lm, "score": 0.1 + (0.5 if k == 5 else 0.0) * s + rng.normal(0, 0.02),
             "lm_score": s, "n": 50} for k in (5, 20, 49) for v in ("va", "vb") for lm, s in ls.items()]
    df = pd.DataFrame(rows)
    res = fig_locality(df, tmp_path / "loc")
    assert_rendered(res)
    csv = pd.read_csv(res.csv).set_index("k")
    for k in (5, 20, 49):
        g = df[df["k"] == k]
        assert csv.loc[k, "spearman"] == pytest.approx(stats.spearmanr(g["lm_score"], g["score"]).statistic)
        assert csv.loc[k, "pearson"] == pytest.approx(stats.pearsonr(g["lm_score"], g["score"]).statistic)
    assert f"{csv.loc[5, 'spearman']:.3f} at k=5" in res.reading
    assert (tmp_path / "loc_lines.csv").exists()
    bare = fig_locality(df.drop(columns="lm_score"), tmp_path / "bare")
    assert_rendered(bare)
    assert "No language-score column" in bare.reading


def test_locality_normalises_per_objective_as_the_paper(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    ls = {"l1": 0.1, "l2": 0.2, "l3": 0.3, "l4": 0.4, "enc": np.nan}  # enc: an encoder, no language score
    size = {"l1": 5e8, "l2": 1e8, "l3": 2e9, "l4": 7e9, "enc": 1e7}  # l2 the smallest scored LM, not the worst
    df = pd.DataFrame([{"k": k, "model_x": v, "model_y": lm, "score": float(rng.uniform(0.1, 0.5)), "lm_score": s,
                        "n": 50} for k in (5, 49) for v in ("va", "vb", "vc") for lm, s in ls.items()])
    objective = {"va": "sup", "vb": "sup", "vc": "mae"}
    meta = pd.DataFrame({"model": [*objective, *size], "objective": [*objective.values(), *["lm"] * len(size)],
                         "n_params": [1e6] * len(objective) + list(size.values())})
    res = fig_locality(df, tmp_path / "loc", model_meta=meta)
    assert_rendered(res)
    got = pd.read_csv(tmp_path / "loc_normalised.csv").set_index(["k", "objective", "lm"])["normalised"]
    scored = df[df["lm_score"].notna()]
    gaps = {}
    for k in (5, 49):
        for obj in ("sup", "mae"):
            members = [v for v, o in objective.items() if o == obj]
            a = scored[(scored["k"] == k) & scored["model_x"].isin(members)].groupby("model_y")["score"].mean()
            expect = (a - a["l2"]) / a.std(ddof=1)
            assert np.allclose(got.loc[(k, obj)].reindex(expect.index), expect)
            gaps.setdefault(k, []).append(expect["l4"])
    assert len(got) == 2 * 2 * 4  # k x objective x scored LM
    assert "smallest language model by parameters (l2)" in res.caption and "2: mae, sup" in res.caption
    assert (f"the best LM (l4) sits {np.mean(gaps[5]):+.2f} std from l2 at k=5 and {np.mean(gaps[49]):+.2f} at k=49"
            in res.reading.splitlines()[0])
    bare = fig_locality(df, tmp_path / "bare")  # no models table: raw panels only, and the caption says so
    assert "needs the models table" in bare.caption and "normalised" not in bare.reading


def test_metric_agreement_is_spearman_over_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    pairs = [(f"m{i}", f"m{j}") for i in range(6) for j in range(i + 1, 6)]
    base = rng.uniform(size=len(pairs))
    rows = []
    for (x, y), b in zip(pairs, base):
        rows.append(_row(x, y, b))
        rows.append(_row(x, y, b + rng.normal(0, 0.3), metric="cka", params='{"kernel": "linear"}'))
        rows.append(_row(x, y, -b, metric="svcca", params='{"dim": 10}'))
    res = fig_metric_agreement(pd.DataFrame(rows), tmp_path / "agree")
    assert_rendered(res)
    corr = pd.read_csv(res.csv).set_index("metric")
    cka = [r["score"] for r in rows if r["metric"] == "cka"]
    rho = stats.spearmanr(base, cka).statistic
    assert corr.loc["mutual_knn(k=10)", "cka(kernel=linear)"] == pytest.approx(rho)
    assert corr.loc["mutual_knn(k=10)", "svcca(dim=10)"] == pytest.approx(-1.0)
    assert "15 model pairs" in res.caption
    mean = np.mean([rho, -1.0, stats.spearmanr(cka, -base).statistic])
    assert f"= {mean:.3f}" in res.reading


def _three_metrics(pairs: list[tuple[str, str]], seed: int) -> pd.DataFrame:
    """mutual_knn, a noisy cka and a reversed svcca over the given model pairs."""
    rng = np.random.default_rng(seed)
    rows = []
    for (x, y), b in zip(pairs, rng.uniform(size=len(pairs))):
        rows += [_row(x, y, b), _row(x, y, b + rng.normal(0, 0.3), metric="cka", params='{"kernel": "linear"}'),
                 _row(x, y, -b + rng.normal(0, 0.3), metric="svcca", params='{"dim": 10}')]
    return pd.DataFrame(rows)


def test_metric_agreement_beside_vision_vision_pairs(tmp_path: Path) -> None:
    vision, lms = ["va", "vb", "vc", "vd", "ve"], ["l1", "l2", "l3"]
    vl = _three_metrics([(v, lm) for v in vision[:4] for lm in lms], seed=12)
    vv = _three_metrics([(a, b) for i, a in enumerate(vision) for b in vision[i + 1:]], seed=13)
    # vision-vision tables hold both orders: symmetric metrics mirrored, an asymmetric one (svcca here) not
    mirror = vv.rename(columns={"model_x": "model_y", "model_y": "model_x"})
    asym = mirror["metric"] == "svcca"
    mirror.loc[asym, "score"] += np.random.default_rng(14).normal(0, 0.3, asym.sum())
    vv = pd.concat([vv, mirror], ignore_index=True)
    meta = pd.DataFrame({"model": vision + lms, "modality": ["vision"] * 5 + ["language"] * 3})
    res = fig_metric_agreement(vl, tmp_path / "agree2", align_vision=vv, model_meta=meta)
    assert_rendered(res)
    csv = pd.read_csv(res.csv).set_index(["pairs", "metric"])
    for kind, table, n_pairs in (("vision-language", vl, 12), ("vision-vision", vv, 10)):
        pair = table.assign(a=table[["model_x", "model_y"]].min(axis=1), b=table[["model_x", "model_y"]].max(axis=1))
        wide = pair.pivot_table(index=["a", "b"], columns="metric", values="score", aggfunc="mean")
        assert len(wide) == n_pairs
        rho = stats.spearmanr(wide["mutual_knn"], wide["svcca"]).statistic
        assert csv.loc[(kind, "mutual_knn(k=10)"), "svcca(dim=10)"] == pytest.approx(rho)
        assert f"{kind.capitalize()} pairs: {n_pairs} model pairs" in res.caption
    first, second = res.reading.splitlines()
    assert first.startswith("Vision-language pairs: over 12 model pairs") and second.startswith(
        "Vision-vision pairs: over 10 model pairs")
    assert "report.agreement_vision" in res.caption


def test_layer_heatmap_marks_best_pair(tmp_path: Path) -> None:
    mat = np.random.default_rng(9).uniform(0, 0.2, size=(4, 6))
    mat[2, 3] = 0.9
    res = fig_layer_heatmap(mat, [f"x{i}" for i in range(4)], [f"y{j}" for j in range(6)], "A", "B",
                            "mutual_knn(k=10)", tmp_path / "layers", context={"n": 64, "dataset": "d"})
    assert_rendered(res)
    assert res.reading.startswith("Best pair: x2 x y3 = 0.900")
    csv = pd.read_csv(res.csv)
    assert len(csv) == 24 and csv.loc[csv["score"].idxmax(), ["layer_x", "layer_y"]].tolist() == ["x2", "y3"]
    assert "n = 64" in res.caption and load_result(tmp_path / "layers").caption == res.caption
    with pytest.raises(PrhError, match="shape"):
        fig_layer_heatmap(mat, ["x0"], ["y0"], "A", "B", "m", tmp_path / "bad")


def test_unknown_metric_is_named(tmp_path: Path) -> None:
    with pytest.raises(PrhError, match="metric 'cka'"):
        fig_convergence(_vv(["a", "b"], 0), pd.DataFrame({"model": ["a", "b"], "frac_solved": [0, 1]}),
                        tmp_path / "x", metric="cka")


def test_locality_excludes_out_of_range_cknna_and_says_why(tmp_path: Path) -> None:
    ls = {"l1": 0.1, "l2": 0.2, "l3": 0.3, "l4": 0.4}
    rows = [{"k": k, "model_x": v, "model_y": lm, "score": 0.2 + s + (0.55 if k == 45 and v == "va" else 0.0),
             "lm_score": s, "n": 50} for k in (5, 45) for v in ("va", "vb") for lm, s in ls.items()]  # fmt: skip
    df = pd.DataFrame(rows)
    res = fig_locality(df, tmp_path / "loc")
    assert_rendered(res)
    csv = pd.read_csv(res.csv).set_index("k")
    bad = (df["k"] == 45) & (df["score"] > 1)
    assert csv.loc[45, "n_excluded"] == bad.sum() == 2 and csv.loc[5, "n_excluded"] == 0
    assert csv.loc[45, "n_pairs"] == 6 and csv.loc[45, "mean_score"] == pytest.approx(df[(df["k"] == 45) & ~bad]["score"].mean())
    assert "Excluded as out of range (CKNNA > 1): 2 model pairs (2 at k=45)" in res.caption
    assert "Cauchy-Schwarz" in res.caption
