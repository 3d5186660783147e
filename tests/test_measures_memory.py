"""The documented entry points (``layerwise``, ``pairwise``) go to the bounded-memory engine when the dense n x n
states would not fit in available memory, or refuse in one line naming the memory needed and the bounded entry point
(issue 30, item 9). Available memory is patched; nothing large is allocated."""

from __future__ import annotations

import numpy as np
import pytest

import prh.metrics.engine as engine
from prh.errors import PrhError
from prh.metrics import get_metric, layerwise, pairwise
from prh.metrics.engine import dense_bytes


def layers(n: int, dims: tuple[int, ...], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 5))
    return [(z @ rng.standard_normal((5, d)) + rng.standard_normal((n, d))).astype(np.float32) for d in dims]


def test_dense_estimate_at_n_65536_exceeds_the_3_gb_that_killed_it() -> None:
    need = dense_bytes(get_metric("mutual_knn"), 65_536, (128, 128))
    assert need > 3 * 2**30  # one Gram per layer alone is 17 GB
    assert need >= 2 * 4 * 65_536**2


@pytest.mark.parametrize("metric,params", [("mutual_knn", {"k": 5}), ("cka", {}), ("unbiased_cka", {}), ("cknna", {"k": 5})])
def test_layerwise_dispatches_to_the_bounded_engine_when_dense_would_not_fit(
    monkeypatch: pytest.MonkeyPatch, metric: str, params: dict
) -> None:
    a, b = layers(120, (6, 9), 0), layers(120, (7,), 1)
    dense = layerwise(metric, a, b, **params)
    calls = []
    real = engine.large_n_layerwise
    monkeypatch.setattr(engine, "large_n_layerwise", lambda *args, **kw: calls.append(args[0]) or real(*args, **kw))
    monkeypatch.setattr(engine, "available_memory", lambda: dense_bytes(get_metric(metric), 120, (6, 9, 7)) - 1)
    got = layerwise(metric, a, b, **params)
    assert calls == [metric]  # today's code builds the dense states regardless
    np.testing.assert_allclose(got, dense, rtol=0, atol=1e-9)
    monkeypatch.setattr(engine, "available_memory", lambda: dense_bytes(get_metric(metric), 120, (6, 7)) - 1)
    assert pairwise(metric, a[0], b[0], **params) == pytest.approx(dense[0, 0], abs=1e-9)
    assert calls == [metric, metric]


@pytest.mark.parametrize("metric", ["rsa", "svcca", "distance_correlation", "procrustes", "linear_predictivity"])
def test_metrics_without_a_large_n_form_refuse_in_one_line(monkeypatch: pytest.MonkeyPatch, metric: str) -> None:
    a, b = layers(60, (6,), 2), layers(60, (7,), 3)
    monkeypatch.setattr(engine, "available_memory", lambda: 1000)
    with pytest.raises(PrhError) as err:
        layerwise(metric, a, b, **({"dim": 3} if metric == "svcca" else {}))
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"metric: {metric} at n = 60 needs about ")
    assert "GiB" in text and "large_n_layerwise" in text and "mutual_knn" in text


def test_dense_path_is_untouched_when_memory_suffices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "large_n_layerwise", lambda *args, **kw: pytest.fail("bounded path taken"))
    a, b = layers(40, (5,), 4), layers(40, (6,), 5)
    assert np.isfinite(layerwise("mutual_knn", a, b, k=3)).all()
