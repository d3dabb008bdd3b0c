"""What the end-to-end tests share: the environment of a small real `ezrec run`, a fixture that
starts (and kills) it, and ways to wait for and look at what it did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.config import load_settings
from controller.context import Context, open_context
from controller.drivers.nudge import send_nudge

ROOT = Path(__file__).resolve().parent.parent
EZREC = str(Path(sys.executable).with_name("ezrec"))


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EZREC")}
    env.update(
        EZREC_DATA_DIR=str(data_dir),
        EZREC_DEVICE_ID="e2e",
        EZREC_CAMERA_DRIVER="synthetic",
        EZREC_WIDTH="320",
        EZREC_HEIGHT="240",
        EZREC_FPS="10",
        EZREC_SEGMENT_S="1",
        EZREC_PREROLL_S="0.5",
        EZREC_MIN_FREE_DISK_MB="1",
        EZREC_RETRY_BASE_S="1",
        EZREC_RETRY_MAX_S="2",
        EZREC_CAMERA_BITRATE_KBPS="500",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
         str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    data = json.loads(out)
    video = next(s for s in data["streams"] if s["codec_type"] == "video")
    return {"duration": float(data["format"]["duration"]), "width": video["width"],
            "height": video["height"]}


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    env = env_for(tmp_path)
    for key, value in env.items():
        if key.startswith("EZREC"):
            monkeypatch.setenv(key, value)
    ctx = open_context(load_settings())
    # What the CLI and the API do after a change: wake the loop (it sleeps until its next
    # due thing, and a booking made here is news to it).
    ctx.store.on_outbox.append(lambda: send_nudge(tmp_path))
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, extra_env: dict[str, str] | None = None,
              ready: bool = False) -> subprocess.Popen[str]:
        """`ezrec run`; with `ready`, once its loop has made a first pass (on a loaded machine
        the start-up alone can outlast a test's short slot)."""
        # To a file, not a pipe: nobody reads a pipe while the test waits, and a supervisor
        # that filled one would block on its next log line.
        log = tmp_path / f"run{len(procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "_run_supervisor.py"), *args],
                env=env | (extra_env or {}), stdout=out, stderr=subprocess.STDOUT, text=True,
            )
        procs.append(proc)
        if ready:
            def up() -> bool:
                beat = ctx.store.kv_get("supervisor")
                return proc.poll() is not None or (beat is not None and
                                                   beat[0].get("pid") == proc.pid)
            wait_for(up, 60, "the supervisor's first pass")
            assert proc.poll() is None, "the supervisor exited at start"
        return proc

    def output(proc: subprocess.Popen[str]) -> str:
        """What `ezrec run` has printed so far (stdout and stderr)."""
        return (tmp_path / f"run{procs.index(proc)}.log").read_text()

    yield type("World", (), {"ctx": ctx, "env": env, "start": start, "dir": tmp_path,
                             "output": staticmethod(output)})
    for n, proc in enumerate(procs):
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        # Shown by pytest with a failing test's report (teardown output), else dropped.
        print(f"--- ezrec run #{n} ---\n" + (tmp_path / f"run{n}.log").read_text()[-6000:])
    ctx.close()


def state_of(ctx: Context, booking_id: str) -> str:
    return ctx.store.get(booking_id).state


def ffmpeg_processes(data_dir: Path) -> dict[int, str]:
    """pid -> command line of the camera/encoder processes writing into this data dir."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "ffmpeg" in cmd and str(data_dir) in cmd:
            found[int(proc.name)] = cmd
    return found


def ffmpeg_children_of(data_dir: Path) -> list[str]:
    """Camera/encoder processes still writing into this data dir (there must be none left)."""
    return list(ffmpeg_processes(data_dir).values())
