"""The metric registry: each record's permutation action, symmetry, maximum and chance against direct computation;
parameter errors name the field; the config schema's metric entry is the registry's."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from prh.config import ConfigError, load_schema, validate_config
from prh.errors import PrhError
from prh.metrics import METRICS, get_metric, layerwise, pairwise, permutation_null, prepare_layers
from prh.metrics.kernels import permuted_square
from prh.metrics.registry import RECORDS, ParamError, resolve_params
from prh.metrics.shared import KernelCache

PARAMS = {"svcca": {"dim": 4}}  # every other metric at its defaults, except k below
N = 48


def params_of(name: str) -> dict:
    """Small-n parameters: k = 6 where the metric takes k."""
    return PARAMS.get(name, {"k": 6} if "k" in get_metric(name).param_names else {})


def layers(n: int, dims: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Correlated layers (a random walk in a 12-d latent space) of different widths."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, 12))
    out = []
    for d in dims:
        h = h + 0.8 * rng.standard_normal((n, 12))
        out.append((h @ rng.standard_normal((12, d))).astype(np.float32))
    return out


def state(name: str, x: np.ndarray) -> dict:
    """One layer's state through the record."""
    record = get_metric(name)
    return record.state(KernelCache([x]), 0, resolve_params(record, params_of(name), x.shape[0], x.shape[1:]))


CASES = [(m, {}) for m in METRICS] + [("cka", {"kernel": "rbf", "sigma": 4.0})]


@pytest.mark.parametrize("name,extra", CASES, ids=[f"{m}{'-' + str(e) if e else ''}" for m, e in CASES])
def test_permute_state_equals_scoring_permuted_features(name: str, extra: dict) -> None:
    record = get_metric(name)
    p = {**params_of(name), **extra}
    x, y = layers(N, (9, 14), 0)
    perm = np.random.default_rng(1).permutation(N)
    kx, ky = KernelCache([x]), KernelCache([y])
    rp = resolve_params(record, p, N, (9, 14))
    sx, sy = record.state(kx, 0, rp), record.state(ky, 0, rp)
    fresh = materialised(record.state(KernelCache([y[perm]]), 0, rp))
    moved = materialised(record.permute_state(sy, perm))
    assert set(moved) == set(fresh)
    want, got = comparable(fresh), comparable(moved)
    for key in want:  # the permuted state is the state of the permuted features
        np.testing.assert_allclose(np.asarray(got[key], np.float64), np.asarray(want[key], np.float64), rtol=0, atol=1e-6)
    assert record.pair(sx, moved) == pytest.approx(pairwise(name, x, y[perm], **p), abs=1e-9)
    assert record.pair(record.permute_state(sx, perm), sy) == pytest.approx(pairwise(name, x[perm], y, **p), abs=1e-9)


def comparable(state: dict) -> dict:
    """A state with its SVD bases (subspace measures) replaced by the rotation-free products U diag(s)^2 U^T,
    V diag(s)^2 V^T and W W^T: eigenvectors of (near-)equal singular values may rotate with float summation order."""
    if "u" in state and "s" in state:
        us = state["u"] * state["s"]
        state = {**state, "u": us @ us.T}
        if "vs" in state:
            state["vs"] = state["vs"] @ state["vs"].T
        if "w" in state:  # the complement's basis is any orthonormal one: compare its projector
            state["w"] = state["w"] @ state["w"].T
    return state


def materialised(state: dict) -> dict:
    """A (permuted) state with any deferred work carried out (CKNNA's reordering, ridge's predictor parts)."""
    if "fold" in state:
        from prh.metrics.predictivity import with_predictor

        return with_predictor(state)
    if "perm" not in state:
        return state
    perm = state["perm"]
    return {**{k: v for k, v in state.items() if k != "perm"}, "kern": permuted_square(state["kern"], perm),
            "ind": permuted_square(state["ind"], perm)}  # fmt: skip


@pytest.mark.parametrize("name", METRICS)
def test_permuting_twice_is_permuting_by_the_composition(name: str) -> None:
    record = get_metric(name)
    p = params_of(name)
    x, y = layers(N, (9, 14), 5)
    rng = np.random.default_rng(6)
    p1, p2 = rng.permutation(N), rng.permutation(N)
    rp = resolve_params(record, p, N, (9, 14))
    sx, sy = record.state(KernelCache([x]), 0, rp), record.state(KernelCache([y]), 0, rp)
    twice = record.permute_state(record.permute_state(sy, p1), p2)
    assert record.pair(sx, twice) == pytest.approx(pairwise(name, x, y[p1][p2], **p), abs=1e-9)
    assert record.pair(twice, sx) == pytest.approx(pairwise(name, y[p1][p2], x, **p), abs=1e-9)


@pytest.mark.parametrize("name", METRICS)
def test_permute_state_acts_on_stacked_layer_states(name: str) -> None:
    record = get_metric(name)
    p = params_of(name)
    a, b = layers(N, (8, 11, 6), 2), layers(N, (7, 10), 3)
    perm = np.random.default_rng(4).permutation(N)
    ca, cb = prepare_layers(name, a, **p), prepare_layers(name, b, **p)
    got = record.all_pairs(ca.arrays, record.permute_state(cb.arrays, perm))
    np.testing.assert_allclose(got, layerwise(name, a, [y[perm] for y in b], **p), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", METRICS)
def test_symmetry_flag_and_maximum_bound_the_scores(name: str) -> None:
    record = get_metric(name)
    p = params_of(name)
    x, y = layers(N, (9, 14), 5)
    forward, backward = pairwise(name, x, y, **p), pairwise(name, y, x, **p)
    if record.symmetric:
        assert forward == pytest.approx(backward, abs=1e-9)
    else:
        assert abs(forward - backward) > 1e-6
    assert -1.0 <= forward <= record.max_value + 1e-9 and pairwise(name, x, x, **p) <= record.max_value + 1e-9


@pytest.mark.parametrize("name", [m for m in METRICS if get_metric(m).chance(100, resolve_params(get_metric(m), {}, 100)) is not None])
def test_known_chance_levels_match_the_permutation_null(name: str) -> None:
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((100, 6)).astype(np.float32), rng.standard_normal((100, 6)).astype(np.float32)
    p = params_of(name)
    record = get_metric(name)
    mean, std, _, samples = permutation_null(name, a, b, n_perm=60, seed=7, **p)
    chance = record.chance(100, resolve_params(record, p, 100))
    # 15% slack: cycle_knn's chance treats its k events as independent (0.313 vs a null mean of 0.274 here)
    assert mean == pytest.approx(chance, abs=4 * std / np.sqrt(samples.size) + 0.15 * chance + 0.005)


def test_every_record_is_complete_and_names_are_unique() -> None:
    assert [r.name for r in RECORDS] == list(METRICS) and len(set(METRICS)) == len(METRICS)
    for r in RECORDS:
        assert r.max_value == 1.0 and r.min_n >= 2
        assert all(callable(f) for f in (r.state, r.pair, r.all_pairs, r.permute_state, r.resample_state, r.chance))
        assert set(r.defaults()) <= set(r.param_names)


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: resolve_params(get_metric("cka"), {"kk": 3}), "kk"),
        (lambda: resolve_params(get_metric("cka"), {"k": 3}, strict=True), "k"),
        (lambda: resolve_params(get_metric("mutual_knn"), {"k": 0}), "k"),
        (lambda: resolve_params(get_metric("mutual_knn"), {"k": 2.5}), "k"),
        (lambda: resolve_params(get_metric("cknna"), {"k": 50}, n=50), "k"),
        (lambda: resolve_params(get_metric("cka"), {"sigma": "wide"}), "sigma"),
        (lambda: resolve_params(get_metric("cka"), {"sigma": -1.0}), "sigma"),
        (lambda: resolve_params(get_metric("cka"), {"kernel": "poly"}), "kernel"),
        (lambda: resolve_params(get_metric("svcca"), {"dim": 0}), "dim"),
        (lambda: resolve_params(get_metric("svcca"), {"dim": 12}, n=50, widths=(30, 11)), "dim"),
        (lambda: resolve_params(get_metric("unbiased_cka"), {}, n=3), "n"),
    ],
)
def test_bad_parameters_raise_one_line_naming_the_field(call, field: str) -> None:
    with pytest.raises(ParamError) as err:
        call()
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ") and "\n" not in str(err.value)


def test_field_prefix_and_unknown_metric() -> None:
    with pytest.raises(ParamError, match=r"^alignment\.experiments\.e\.metrics\.0\.k: must satisfy 1 <= k <= n - 1 = 9, got 10$"):
        resolve_params(get_metric("mutual_knn"), {"k": 10}, n=10, field="alignment.experiments.e.metrics.0.")
    with pytest.raises(PrhError, match="^metric: unknown metric 'nope'; valid metrics are mutual_knn, "):
        get_metric("nope")
    assert resolve_params(get_metric("cka"), {"k": 5}) == {"kernel": "linear", "sigma": 1.0}  # other metrics' params dropped


# ----------------------------------------------------------------------------- the config's view of the registry

ROOT = Path(__file__).resolve().parents[1]


def test_schema_metric_entry_is_generated_from_the_registry() -> None:
    on_disk = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())["definitions"]["metric"]
    assert set(on_disk) == {"description"}  # names and parameters are never repeated in the file
    entry = load_schema()["definitions"]["metric"]
    assert entry["properties"]["name"]["enum"] == list(METRICS)
    configurable = {p.name for r in RECORDS for p in r.params if p.configurable}
    assert set(entry["properties"]) == {"name"} | configurable
    assert all(prop.get("description") for prop in entry["properties"].values())
    assert entry["additionalProperties"] is False and entry["required"] == ["name"]


@pytest.fixture(scope="module")
def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


@pytest.mark.parametrize(
    "entry,message",
    [
        ({"name": "mutual_kmm"}, "metrics.0.name: 'mutual_kmm' is not one of"),
        ({"name": "mutual_knn", "kk": 3}, "metrics.0.kk: unknown key"),
        ({"name": "cka", "k": 5}, "metrics.0.k: not a parameter of cka (its parameters: kernel, sigma)"),
        ({"name": "unbiased_cka", "dim": 5}, "metrics.0.dim: not a parameter of unbiased_cka (its parameters: none)"),
        ({"name": "svcca", "seed": 1}, "metrics.0.seed: unknown key"),
        ({"name": "cka", "sigma": "wide"}, "metrics.0.sigma:"),
        ({"name": "cka", "kernel": "poly"}, "metrics.0.kernel:"),
        ({"name": "svcca", "dim": 2000}, "metrics.0.dim: svcca dim=2000 exceeds min(n, feature widths) = 1000 (dataset"),
        ({"name": "cknna", "k": 1000}, "metrics.0.k: must satisfy 1 <= k <= n - 1 = 999, got 1000 (dataset"),
    ],
)
def test_config_metric_errors_are_one_line_naming_the_field(default_config: dict, entry: dict, message: str) -> None:
    cfg = copy.deepcopy(default_config)
    cfg["alignment"]["experiments"]["vision-vision"]["metrics"] = [entry]
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    text = str(err.value)
    assert text.startswith("config error: alignment.experiments.vision-vision.metrics.0.") and "\n" not in text
    assert message in text
