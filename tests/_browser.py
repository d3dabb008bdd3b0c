"""Debian's Chromium driven by Playwright, and a box of real processes for it to look at:
`ezrec api` and `ezrec run` sharing one data dir, with synthetic cameras, on loopback.

Playwright only drives the browser here: its own browser downloads (`playwright install`) are
never used; `make test` installs Debian's `chromium` when it is missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.test_api_server import free_port, wait_ready

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent
EZREC = [sys.executable, "-m", "controller"]


def chromium_or_fail() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium "
                    "(apt-get install chromium)")
    return CHROMIUM


def box_env(data_dir: Path, token: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EZREC")}
    env.update(
        EZREC_DATA_DIR=str(data_dir), EZREC_DEVICE_ID="court1", EZREC_CAMERA_DRIVER="synthetic",
        EZREC_WIDTH="320", EZREC_HEIGHT="240", EZREC_FPS="10", EZREC_SEGMENT_S="1",
        EZREC_PREROLL_S="0.5", EZREC_MIN_FREE_DISK_MB="1", EZREC_CAMERA_BITRATE_KBPS="500",
        # Several chunks in a short booking: the browser plays the joined file.
        EZREC_CHUNK_S="2",
        EZREC_API_TOKEN=token, PYTHONPATH=str(ROOT),
        # A failure written by a test must stay failed while the page is looked at.
        EZREC_RETRY_BASE_S="600", EZREC_RETRY_MAX_S="600",
    )
    env.update(extra)
    return env


@dataclass
class Box:
    data_dir: Path
    env: dict[str, str]
    port: int
    url: str
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        log = (self.data_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [*EZREC, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.data_dir,
        )
        log.close()

    def start_api(self) -> None:
        self.start("api", "api", "--port", str(self.port))
        wait_ready(self.url, self.procs["api"])

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log(self, name: str) -> str:
        path = self.data_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def running_box(data_dir: Path, token: str, *, supervisor: bool) -> Iterator[Box]:
    port = free_port()
    box = Box(data_dir, box_env(data_dir, token), port, f"http://127.0.0.1:{port}")
    try:
        box.start_api()
        if supervisor:
            box.start("supervisor", "run")
        yield box
    finally:
        for name in list(box.procs):
            box.stop(name)
