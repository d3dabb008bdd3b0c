"""Helpers for the camera driver tests: small settings, ffprobe readings of real files, and
cameras made to fail (through the fake ffmpeg in tests/fake_ffmpeg)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.config import Settings
from tests.fake_ffmpeg.inject import FAIL_ENV, parse_failures

FAKE_FFMPEG_DIR = Path(__file__).with_name("fake_ffmpeg")

W, H, FPS = 160, 120, 15


def small_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path, "width": W, "height": H, "fps": FPS, "segment_s": 1, "cameras": 2,
    }
    values.update(overrides)
    return Settings(**values)


def ffprobe(path: Path) -> dict[str, Any]:
    """Stream and format facts, with frames counted by decoding (a truncated file shows it)."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,width,height,nb_read_frames:format=duration,start_time",
         "-of", "json", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert done.returncode == 0, f"ffprobe failed on {path}: {done.stderr}"
    data = json.loads(done.stdout)
    stream = data["streams"][0]
    return {
        "codec": stream["codec_name"],
        "width": int(stream["width"]),
        "height": int(stream["height"]),
        "frames": int(stream.get("nb_read_frames", 0)),
        "duration": float(data["format"].get("duration", 0.0)),
        "start": float(data["format"].get("start_time", 0.0)),
    }


def first_packet_is_keyframe(path: Path) -> bool:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1",
         "-show_entries", "packet=flags", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return done.stdout.strip().startswith("K")


def total_frames(paths: list[Path]) -> int:
    return sum(ffprobe(path)["frames"] for path in paths)


def jpeg_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


def jpeg_mean_diff(a: bytes, b: bytes) -> float:
    """Mean absolute difference of two stills, on 16x12 greyscale thumbnails (0..255)."""
    from PIL import Image, ImageChops, ImageStat

    with Image.open(io.BytesIO(a)) as ia, Image.open(io.BytesIO(b)) as ib:
        ta = ia.convert("L").resize((16, 12))
        tb = ib.convert("L").resize((16, 12))
        return float(ImageStat.Stat(ImageChops.difference(ta, tb)).mean[0])


def wait_for(predicate: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    """Poll until predicate() is truthy (returned) or the timeout passes (then its last value)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = predicate()
    return value


def camera_faults(spec: str) -> dict[str, str]:
    """The environment that makes the cameras' ffmpeg fail as `spec` says (see
    tests/fake_ffmpeg/inject.py), for this process or an `ezrec` subprocess. A typo in `spec`
    fails here (ValueError), not mid-test."""
    parse_failures(spec)
    return {
        FAIL_ENV: spec,
        "PATH": f"{FAKE_FFMPEG_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        "EZRECTEST_PYTHON": sys.executable,
    }


def inject_camera_faults(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    """camera_faults() for the drivers of this process, undone after the test."""
    for key, value in camera_faults(spec).items():
        monkeypatch.setenv(key, value)
