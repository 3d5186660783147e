"""The docs are checked: the site builds with `mkdocs build --strict`, the three generated reference pages equal a fresh
generation, every command marked `<!-- docs-test: run -->` runs, and the packaging files agree with the code."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import prh
from prh.docs import PAGES, _check_keywords, cli_page, config_page, stale_pages

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent
MARK = "<!-- docs-test: run -->"
MIN_DOC_COMMANDS = 7  # the marked commands in the pages today; fewer means a mark or a block was lost


def _env() -> dict[str, str]:
    """The environment of a documented command: the venv's bin/ first on PATH, this checkout's src importable."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
            "NO_MKDOCS_2_WARNING": "1"}  # fmt: skip


def doc_commands() -> list[tuple[str, str]]:
    """(page, command) of every line of every fenced block directly below the run mark, in README.md and docs/."""
    found = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for block in re.findall(re.escape(MARK) + r"\n```[^\n]*\n(.*?)\n```", page.read_text(), re.DOTALL):
            lines = [line.strip() for line in block.splitlines()]
            found += [(page.name, line) for line in lines if line and not line.startswith("#")]
    return found


def test_generated_pages_are_current() -> None:
    assert not stale_pages(DOCS), f"stale generated pages {stale_pages(DOCS)}: run `prh docs`"
    assert set(PAGES) == {"config.md", "cli.md", "metrics.md"}


def _schema_paths(node: dict, path: str) -> list[str]:
    """Every field path of a schema node, spelled as the config page spells it."""
    out = [path]
    for key, sub in node.get("properties", {}).items():
        out += _schema_paths(sub, f"{path}.{key}")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and "properties" in extra:
        out += _schema_paths(extra, f"{path}.<name>")[1:]
    items = node.get("items")
    if isinstance(items, dict) and "properties" in items:
        out += _schema_paths(items, f"{path}[]")[1:]
    return out


def test_config_page_has_every_schema_field_with_its_default() -> None:
    from prh.config import load_schema

    schema, page = load_schema(), config_page()
    paths = [p for key, node in schema["properties"].items() for p in _schema_paths(node, key)]
    assert len(paths) > 120
    for path in paths:
        assert f"| `{path}` |" in page, path
    assert "| `alignment.permutations` | integer (>= 1) | `200` |" in page
    assert "| `datasets.<name>.path` | string |  | local data path (fashion-mnist IDX folder, or a saved HF dataset) |" \
        in page  # a description with a comma, whole


def test_schema_check_refuses_a_description_cut_by_a_comma() -> None:
    cut = yaml.safe_load("properties: {path: {type: string, description: a path, or a folder}}")
    with pytest.raises(ValueError, match="'or a folder' is no schema keyword"):
        _check_keywords(cut, "")


def test_cli_page_has_every_command_and_argument() -> None:
    from prh.cli import parser

    page = cli_page()
    for command in ["data ls", "models ls", "store ls", "store show", "store verify", "store gc", "store rm", "metrics",
                    "prefetch", "score", "docs"]:  # fmt: skip
        assert f"## `prh {command}`" in page, command
    flags = re.findall(r"add_argument\(\"(--[a-z-]+)\"", (ROOT / "src" / "prh" / "cli.py").read_text())
    assert len(flags) > 15
    for flag in flags:
        assert f"`{flag}`" in page, flag
    assert parser().prog == "prh"


def test_prh_docs_check_fails_on_a_stale_page(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from prh.cli import main

    assert main(["docs", "--dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli.md", "config.md", "metrics.md"]
    assert main(["docs", "--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "cli.md").write_text((tmp_path / "cli.md").read_text().replace("store", "shop"))
    assert main(["docs", "--check", "--dir", str(tmp_path)]) == 1
    assert "stale generated pages cli.md" in capsys.readouterr().err


def _mkdocs() -> str:
    exe = shutil.which("mkdocs", path=str(BIN)) or shutil.which("mkdocs")
    if exe is None:
        pytest.skip("mkdocs is not installed (pip install -e .[docs])")
    return exe


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    out = subprocess.run([_mkdocs(), "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                         check=False, capture_output=True, text=True, env=_env(), timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    pages = re.findall(r"([a-z-]+)\.md", str(nav))
    assert sorted(pages) == sorted(p.stem for p in DOCS.glob("*.md")), "a page under docs/ is missing from the nav"
    for page in pages:
        assert (tmp_path / "site" / ("" if page == "index" else page) / "index.html").is_file(), page


def test_mkdocs_strict_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with (tmp_path / "docs" / "evidence.md").open("a") as f:
        f.write("\nSee [the old page](no-such-page.md) and [a heading](report.md#no-such-heading).\n")
    out = subprocess.run([_mkdocs(), "build", "--strict", "-d", str(tmp_path / "site")], cwd=tmp_path,
                         check=False, capture_output=True, text=True, env=_env(), timeout=300)  # fmt: skip
    assert out.returncode != 0
    assert "no-such-page.md" in out.stderr


def test_documented_commands_run() -> None:
    commands = doc_commands()
    assert len(commands) >= MIN_DOC_COMMANDS, commands
    for page, command in commands:
        out = subprocess.run(command, shell=True, cwd=ROOT, check=False, capture_output=True, text=True, env=_env(),
                             timeout=300)
        assert out.returncode == 0, f"{page}: `{command}` exited {out.returncode}: {out.stderr[-2000:]}"
        assert "nan" not in out.stdout.split(), (page, command)


def test_readme_is_a_front_door() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    first = re.search(r"```\n(.*?)\n```", text, re.DOTALL).group(1).splitlines()
    assert first == ["bash setup.sh && .venv/bin/snakemake --workflow-profile profiles/local",
                     "bash setup.sh && .venv/bin/python -m pytest -q"]  # fmt: skip
    assert "->" not in re.sub(r"`[^`]*`", "", text), "no measurement history (a -> b) in the README"
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.(?:md|cff))(?:#[\w-]+)?\)", text):
        assert (ROOT / link).is_file(), link


def test_version_changelog_and_citation_agree() -> None:
    from prh.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert f"## {prh.__version__}" in (ROOT / "CHANGELOG.md").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["version"] == prh.__version__
    assert cff["preferred-citation"]["title"] == "The Platonic Representation Hypothesis"
    titles = {r["title"] for r in cff["references"]}
    assert {"Similarity of Neural Network Representations Revisited", "Feature Selection via Dependence Maximization",
            "Generalized Shape Metrics on Neural Representations"} <= titles


def _prh_imports(path: Path) -> set[str]:
    """Every prh module a source file imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prh"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("prh")}
    return names


def test_imports_run_one_way() -> None:
    src = ROOT / "src" / "prh"
    assert "prh.plan" not in _prh_imports(src / "config.py")
    assert {"prh.config", "prh.figure_specs"} <= _prh_imports(src / "plan.py")
    assert not _prh_imports(src / "figure_specs.py")
    assert not {"prh.metrics.svcca", "prh.metrics.registry"} & _prh_imports(src / "metrics" / "shared.py")
    out = subprocess.run([sys.executable, "-c", "import sys, prh.config; print('prh.plan' in sys.modules)"],
                         capture_output=True, text=True, env=_env(), check=True)  # fmt: skip
    assert out.stdout.strip() == "False"


def test_bin_reading_says_too_few_bins_instead_of_nan() -> None:
    from prh.figures._common import fmt_p, fmt_r
    from prh.figures.vision import _bins_trend

    two = pd.DataFrame({"bin": ["40-60%", "80-100%"], "hi": [0.6, 1.0], "mean": [0.286, 0.681], "n_models": [3, 3]})
    text = _bins_trend(two)
    assert text == "0.286 (40-60%, m=3) -> 0.681 (80-100%, m=3), too few bins (2) for a rank correlation"
    three = pd.DataFrame({"bin": ["a", "b", "c"], "hi": [0.4, 0.6, 1.0], "mean": [0.2, 0.3, 0.5],
                          "n_models": [2, 2, 3]})
    assert _bins_trend(three).endswith("Spearman rho(bin, mean) = 1.000 over 3 bins")
    flat = three.assign(mean=0.3)
    assert _bins_trend(flat).endswith("no rank correlation over 3 bins (equal bin means)")
    assert "nan" not in fmt_p(np.nan)
    assert fmt_r(np.nan) == "undefined (too few points or a constant input)"
    assert fmt_r(0.81234) == "0.812" and fmt_r(-0.5, "+.2f") == "-0.50"


def test_seeds_config_trains_every_default_zoo_vision_model_at_three_seeds() -> None:
    from prh.config import load_config, model_modality, select_models

    cfg = load_config(ROOT / "configs" / "seeds.yaml")
    default = load_config(ROOT / "config.yaml")
    assert {m: cfg["models"][m] for m in default["models"]} == default["models"]  # the default's models, unchanged
    assert set(default["alignment"]["experiments"]) < set(cfg["alignment"]["experiments"])
    main = [m for m in select_models(cfg, "vision", "x") if cfg["models"][m]["source"] == "zoo"]
    assert len(main) == 6
    for name in main:
        copies = [name] + [f"{name}-s{s}" for s in (1, 2)]
        specs = [cfg["models"][c] for c in copies]
        assert [s.get("seed", 0) for s in specs] == [0, 1, 2]
        strip = [{k: v for k, v in s.items() if k not in ("seed", "group")} for s in specs]
        assert strip[0] == strip[1] == strip[2], name  # the same recipe but its seed
        assert all(model_modality(c, cfg["models"][c]) == "vision" for c in copies)
    for seed in (1, 2):
        exp = cfg["alignment"]["experiments"][f"vision-vision-seed{seed}"]
        pretrained = {"effnet-lite0", "effnet-lite1", "effnet-lite2"}
        assert set(select_models(cfg, exp["x"], "x")) == {f"{m}-s{seed}" for m in main} | pretrained
