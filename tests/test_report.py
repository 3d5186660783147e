"""The HTML report: every section, embedded images, tables, provenance, atomic write."""

from __future__ import annotations

import base64
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prh.errors import PrhError
from prh.figures import fig_layer_heatmap
from prh.report import Section, build_report, collect_versions

VOID = {"meta", "img", "br", "hr", "input", "link"}


class TagChecker(HTMLParser):
    """Records tag nesting errors and every src attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.srcs += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Two small rendered figures."""
    out = tmp_path_factory.mktemp("figs")
    rng = np.random.default_rng(0)
    return [fig_layer_heatmap(rng.uniform(size=(3, 4)), ["a0", "a1", "a2"], ["b0", "b1", "b2", "b3"], f"A{i}",
                              "B", "cka", out / f"layers{i}") for i in range(2)]


def _inputs() -> tuple[pd.DataFrame, pd.DataFrame]:
    align = pd.DataFrame({"model_x": ["m1", "m1", "m2", "m1"], "model_y": ["m2", "m3", "m3", "m2"],
                          "metric": "mutual_knn", "params": '{"k": 10}', "score": [0.41, 0.22, 0.33, 0.30],
                          "calibrated": [0.35, 0.15, 0.27, 0.2], "ci_low": [0.38, 0.2, 0.3, 0.27],
                          "ci_high": [0.44, 0.25, 0.36, 0.33], "p_value": 0.005, "chance": 0.1})
    solved = pd.DataFrame({"model": ["m1", "m1", "m2", "m2"], "task": ["t1", "t2", "t1", "t2"],
                           "accuracy": [0.9, 0.5, 0.6, 0.7], "best": [0.9, 0.7, 0.9, 0.7],
                           "solved": [True, False, False, True]})
    return align, solved


def test_report_has_every_section_and_is_self_contained(figures: list, tmp_path: Path) -> None:
    align, solved = _inputs()
    sections = [Section.from_figure(f) for f in figures] + [Section.from_figure(figures[0].png)]
    keys = [{"model": "m1", "dataset": "places", "key": "0123456789abcdef" * 4}]
    out = build_report(sections, {"alignment": {"k": 10}}, {"numpy": "9.9"}, keys, tmp_path / "r" / "report.html",
                       alignment={"vision-vision": align}, solved=solved)
    doc = out.read_text()
    checker = TagChecker()
    checker.feed(doc)
    assert checker.errors == [] and checker.stack == []
    assert doc.startswith("<!DOCTYPE html>")
    assert all(s.startswith(("data:image/png;base64,", "#")) for s in checker.srcs)
    assert 'src="http' not in doc and "<link" not in doc
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', doc)
    assert len(imgs) == 3 and base64.b64decode(imgs[0]) == figures[0].png.read_bytes()
    for f in figures:
        assert f.title in doc and f.caption in doc and f.reading.splitlines()[1] in doc
    for text in ("Alignment matrices", "Probe tasks solved", "Run configuration", "k: 10", "numpy", "9.9",
                 "0123456789ab", "places", "class=\"sortable\""):
        assert text in doc
    assert "0123456789abc<" not in doc  # keys shown as 12 characters


def test_alignment_matrix_is_best_score_symmetrised_with_ci_on_hover(figures: list, tmp_path: Path) -> None:
    align, solved = _inputs()
    doc = build_report([], {}, {}, [], tmp_path / "a.html", alignment=align, solved=solved).read_text()
    table = doc.split('id="mat-alignment"')[1].split("</table>")[0]
    found = re.findall(r"<th scope=row>(\w+)</th>(.*?)</tr>", table)
    rows = {m: re.findall(r"<td[^>]*>([^<]*)</td>", r) for m, r in found}
    assert rows["m1"] == ["", "0.410", "0.220"]  # best of the two m1-m2 rows, diagonal empty
    assert rows["m2"] == ["0.410", "", "0.330"]  # mirrored
    assert 'title="calibrated 0.350; chance 0.100; p 0.005; 95% CI [0.380, 0.440]"' in table
    solved_tab = doc.split('id="solved"')[1].split("</table>")[0]
    assert solved_tab.count('class="solved"') == 2
    assert re.search(r"m1</th><td[^>]*>0.900</td><td[^>]*>0.500</td><td>1</td><td>0.500</td>", solved_tab)


def test_alignment_matrix_per_dataset_shows_every_caption_density(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = [{"model_x": v, "model_y": lm, "dataset": ds, "metric": "mutual_knn", "params": '{"k": 10}',
             "score": float(rng.uniform(0.05, 0.3))}
            for ds in ("scenes-w5", "scenes-w10", "scenes-w30") for v in ("v1", "v2") for lm in ("l1", "l2")]
    align = pd.DataFrame(rows)
    doc = build_report([], {}, {}, [], tmp_path / "d.html", alignment={"caption-density": align}).read_text()
    for ds in ("scenes-w5", "scenes-w10", "scenes-w30"):
        table = doc.split(f'id="mat-caption-density-{ds}"')[1].split("</table>")[0]
        found = dict(re.findall(r"<th scope=row>(\w+)</th>(.*?)</tr>", table))
        expect = align[align["dataset"] == ds].pivot(index="model_x", columns="model_y", values="score")
        for v in ("v1", "v2"):
            assert re.findall(r"<td[^>]*>([^<]*)</td>", found[v]) == [f"{x:.3f}" for x in expect.loc[v, ["l1", "l2"]]]
    assert doc.index("dataset scenes-w5") < doc.index("dataset scenes-w10") < doc.index("dataset scenes-w30")
    pairs = doc.split('id="pairs-caption-density"')[1].split("</table>")[0]
    assert "<th>dataset</th>" in pairs and pairs.count("<tr>") == 1 + len(align)  # header + every (pair, density)


def test_report_write_is_atomic(figures: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report.html"
    out.write_text("old report")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(PrhError, match="disk full"):  # a one-line error, like every other failed write
        build_report([Section.from_figure(figures[0])], {}, {}, [], out)
    assert out.read_text() == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left behind


def test_missing_figure_and_sidecar_are_named(tmp_path: Path) -> None:
    with pytest.raises(PrhError, match="nothing.json"):
        Section.from_figure(tmp_path / "nothing")
    with pytest.raises(PrhError, match="gone.png"):
        build_report([Section("t", "c", "r", tmp_path / "gone.png")], {}, {}, [], tmp_path / "x.html")


def test_versions() -> None:
    v = collect_versions(["numpy", "surely-not-a-package"])
    assert v["numpy"] == np.__version__ and v["surely-not-a-package"] == "not installed" and "python" in v
