"""One-shot ffmpeg and ffprobe calls the camera drivers (and the API's previews) share."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from controller.drivers.cameras import CameraError


def ffmpeg_binary() -> str:
    found = shutil.which("ffmpeg")
    if not found:
        raise CameraError("ffmpeg not found on PATH (Debian: apt install ffmpeg)")
    return found


def first_timestamp(path: Path, timeout: float = 10.0) -> float | None:
    """The first presentation timestamp in a segment (s), or None when it has none yet."""
    cmd = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1",
           "-show_entries", "packet=pts_time", "-of", "csv=p=0", str(path)]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.decode(errors="replace").split():
        with contextlib.suppress(ValueError):
            return float(line.strip().strip(","))
    return None


def ffmpeg_jpeg(input_args: Sequence[str], timeout: float = 10.0) -> bytes | None:
    """One JPEG frame from an ffmpeg input, or None when ffmpeg could not decode one."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", *input_args,
           "-frames:v", "1", "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "4", "-"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    data = done.stdout
    return data if done.returncode == 0 and data.startswith(b"\xff\xd8") else None


def snapshot_from_segments(segments: Sequence[Path], timeout: float = 10.0) -> bytes:
    """A JPEG of the first frame of the newest decodable segment.

    Reads the files only, so the live recording is never disturbed. Segments start on a
    keyframe, so the still is at most SEGMENT_S old: fine for aiming a camera.
    """
    for path in sorted(segments, reverse=True)[:3]:
        if not path.exists() or path.stat().st_size == 0:
            continue
        jpeg = ffmpeg_jpeg(["-i", str(path)], timeout=timeout)
        if jpeg:
            return jpeg
    raise CameraError("no decodable segment yet for a snapshot")
