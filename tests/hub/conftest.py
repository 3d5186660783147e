"""Fixtures of the offline-hub tests: one hub cache in the real layout (tests/hub/hubkit.py), built once per session,
and the environment that points Hugging Face libraries and prh at it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def hub_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(cache dir, repo -> commit of its main or dataset revision): every architecture class and dataset of
    hubkit, written once (about 10 s, 110 MB)."""
    from hubkit import build_hub

    cache = tmp_path_factory.mktemp("hf-hub")
    return cache, build_hub(cache)


@pytest.fixture()
def hub(hub_build: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """The session's hub cache as this process's HF_HUB_CACHE (offline)."""
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_build[0]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_build
