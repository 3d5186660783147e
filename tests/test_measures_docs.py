"""docs/metrics.md is generated from the metric registry: regenerating it changes nothing, and every measure has its
formula, range, cost and peers."""

from __future__ import annotations

from pathlib import Path

from prh.metrics.descriptions import DOCS
from prh.metrics.reference import metrics_page
from prh.metrics.registry import METRICS, RECORDS

PAGE = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


def test_docs_metrics_md_is_the_generated_page() -> None:
    assert PAGE.read_text() == metrics_page(), (
        "docs/metrics.md is stale: regenerate it with "
        "python -c 'from prh.metrics.reference import metrics_page; open(\"docs/metrics.md\", \"w\").write(metrics_page())'"
    )


def test_every_measure_is_documented_with_its_parameters_and_orientation() -> None:
    assert set(DOCS) == set(METRICS)
    page = metrics_page()
    for record in RECORDS:
        assert f"## {record.name}\n" in page
        for p in record.params:
            assert (f"**Parameter `{p.name}`**" in page) is p.configurable, (record.name, p.name)
        if not record.symmetric:
            assert record.orientation, f"{record.name}: an asymmetric measure must say which side does what"
    assert "http" not in page  # relative links only
