"""ffprobe, run on one file with JSON output: the one wrapper the builder and the media cache
share, and the rule for which stream of its answer is "the video"."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

PROBE_TIMEOUT_S = 60.0


class ProbeError(Exception):
    """ffprobe could not read the file; the message says why (ffprobe's last error line)."""


def ffprobe(path: Path | str, *args: str, timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """ffprobe's JSON answer about `path` (`args` say what to show); ProbeError if it fails."""
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", *args, str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"ffprobe timed out after {timeout:.0f} s") from None
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        raise ProbeError(err[-1] if err else f"ffprobe exited with {proc.returncode}")
    try:
        data: dict[str, Any] = json.loads(proc.stdout or b"{}")
    except json.JSONDecodeError:
        raise ProbeError("ffprobe printed no JSON") from None
    return data


def video_stream(info: dict[str, Any]) -> dict[str, Any] | None:
    """The first video stream of an ffprobe result that is not a cover picture."""
    for stream in info.get("streams", []):
        if stream.get("codec_type") == "video" and not stream.get("disposition", {}).get(
            "attached_pic"
        ):
            return stream
    return None
