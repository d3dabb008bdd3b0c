"""Shared fixtures: a clean environment, settings in a temporary data dir, the test servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.config import Settings, load_settings
from controller.context import Context, open_context

pytest_plugins = ["tests._postgres", "tests._e2e"]
if Path(__file__).with_name("_s3server.py").exists():
    pytest_plugins.append("tests._s3server")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own EZREC_* settings must not leak into the tests.
    for key in list(os.environ):
        if key.upper().startswith("EZREC"):
            monkeypatch.delenv(key)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        data_dir=tmp_path,
        device_id="testdev",
        camera_driver="synthetic",
        width=320,
        height=240,
        fps=10,
        segment_s=1,
        preroll_s=0.5,
        min_free_disk_mb=1,
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    c = open_context(settings)
    yield c
    c.close()
