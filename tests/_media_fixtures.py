"""Small real media for the builder and media-cache tests, made with ffmpeg and Pillow.

Cameras follow the raw layout contract: ``cam<N>/<run:03d>-<seq:05d>.ts`` (H.264 MPEG-TS, no
audio, one-second segments) plus ``run-<run:03d>.json``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from PIL import Image

SIZE = (320, 240)
FPS = 15


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, timeout=120)


def make_camera(
    raw_dir: Path,
    camera: int,
    seconds: float = 3,
    *,
    run: int = 0,
    started_at: float | None = 1_000_000.0,
    size: tuple[int, int] = SIZE,
    fps: int = FPS,
    source: str = "testsrc",
    x264_params: str | None = None,
) -> list[Path]:
    """Record ``seconds`` of a lavfi source as one run of camera ``camera``."""
    cam = raw_dir / f"cam{camera}"
    cam.mkdir(parents=True, exist_ok=True)
    ffmpeg(
        "-f", "lavfi", "-i", f"{source}=size={size[0]}x{size[1]}:rate={fps}",
        "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", str(fps), "-pix_fmt", "yuv420p",
        *(["-x264-params", x264_params] if x264_params else []),
        "-f", "segment", "-segment_time", "1", "-segment_format", "mpegts",
        str(cam / f"{run:03d}-%05d.ts"),
    )  # fmt: skip
    manifest: dict[str, Any] = {
        "camera": camera,
        "driver": "synthetic",
        "run": run,
        "started_at": started_at,
        "width": size[0],
        "height": size[1],
        "fps": fps,
        "stopped_at": None if started_at is None else started_at + seconds,
        "notes": [],
    }
    if started_at is not None:
        (cam / f"run-{run:03d}.json").write_text(json.dumps(manifest))
    return sorted(cam.glob(f"{run:03d}-*.ts"))


def make_intro(
    path: Path, seconds: float = 1, size: tuple[int, int] = (640, 360), audio: bool = False
) -> Path:
    args = ["-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate=25"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    args += ["-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-shortest"]
    ffmpeg(*args, str(path))
    return path


def make_logo(path: Path, size: tuple[int, int] = (64, 32), rgba=(255, 0, 0, 255)) -> Path:
    Image.new("RGBA", size, rgba).save(path)
    return path


def frame_at(video: Path, seconds: float, out: Path) -> Image.Image:
    """Decode the frame shown at ``seconds`` as RGB."""
    ffmpeg("-ss", f"{seconds:.3f}", "-i", str(video), "-frames:v", "1", str(out))
    return Image.open(out).convert("RGB")


def mean_diff(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int]) -> float:
    """Mean absolute per-channel difference of two images inside ``box``."""
    pa, pb = a.crop(box).tobytes(), b.crop(box).tobytes()
    return sum(abs(x - y) for x, y in zip(pa, pb, strict=True)) / max(1, len(pa))


def mean_color(img: Image.Image, box: tuple[int, int, int, int]) -> tuple[float, float, float]:
    data = img.crop(box).tobytes()  # RGB, one byte per channel
    n = max(1, len(data) // 3)
    return (sum(data[0::3]) / n, sum(data[1::3]) / n, sum(data[2::3]) / n)
