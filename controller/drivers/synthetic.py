"""The synthetic camera driver: real H.264 from ffmpeg's lavfi test sources, no hardware needed.

Used by `ezrec demo`, the tests, and `CAMERA_DRIVER=auto` on a machine without cameras. Each
camera is one ffmpeg process reading a different pattern (testsrc2, smptebars, testsrc,
rgbtestsrc) with a moving box, the camera number, the wall-clock time and the frame number burnt
in, paced in real time (`-re`) so that a 3 s booking gives 3 s of video, and written by the
segment muxer exactly like the real drivers (see camera.py for the layout and kill safety).

Failure injection, for the supervisor's tests only. The environment variable
`EZRECTEST_SYNTHETIC_FAIL` (deliberately without the EZREC_ prefix: it is not a setting) holds
comma-separated `<camera>:<kind>[=<seconds>]` entries:

    1:start           camera 1 fails to start (ffmpeg is given a source that does not exist)
    1:die_after=2     camera 1's ffmpeg exits by itself after 2 s of video (exit code 0)
    1:kill_after=2    camera 1's ffmpeg is SIGKILLed after 2 s (a crash: open segment cut short)
    1:stall_after=2   camera 1's ffmpeg is frozen (SIGSTOP) after 2 s: alive, but no frames

It is read at every start(), so a test can change it between recordings.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from controller.drivers.camera import (
    CameraError,
    CameraInfo,
    FfmpegDriver,
    FfmpegInput,
    Injection,
    InjectionKind,
    ffmpeg_binary,
)

if TYPE_CHECKING:
    from controller.config import Settings

FAIL_ENV = "EZRECTEST_SYNTHETIC_FAIL"
PATTERNS = ("testsrc2", "smptebars", "testsrc", "rgbtestsrc")
BOX_COLOURS = ("white", "yellow", "cyan", "magenta")
FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"),  # Debian fonts-dejavu-core
    Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),
)
_KINDS: frozenset[str] = frozenset(get_args(InjectionKind))


def parse_failures(text: str) -> dict[int, Injection]:
    """`"1:start,0:die_after=2"` -> {1: Injection("start"), 0: Injection("die_after", 2.0)}."""
    out: dict[int, Injection] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        cam, sep, spec = entry.partition(":")
        kind, _, seconds = spec.partition("=")
        try:
            if not sep or not cam.strip().isdigit() or kind not in _KINDS:
                raise ValueError
            value = float(seconds) if seconds else 0.0
            if (kind == "start") != (not seconds) or value < 0:
                raise ValueError
        except ValueError:
            raise CameraError(
                f"{FAIL_ENV}: bad entry {entry!r}; expected <camera>:start or "
                "<camera>:die_after|kill_after|stall_after=<seconds>"
            ) from None
        out[int(cam)] = Injection(kind, value)  # type: ignore[arg-type]
    return out


@functools.cache
def _drawtext_font() -> Path | None:
    """A font for the burnt-in text, or None: then the video simply has no text."""
    font = next((path for path in FONT_CANDIDATES if path.is_file()), None)
    if font is None:
        return None
    try:
        filters = subprocess.run(
            [ffmpeg_binary(), "-hide_banner", "-filters"], capture_output=True, timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired, CameraError):
        return None
    # drawtext needs ffmpeg built with libfreetype; Debian's is, others may not be.
    return font if b" drawtext " in filters else None


class SyntheticDriver(FfmpegDriver):
    name = "synthetic"
    realtime_input = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        parse_failures(os.environ.get(FAIL_ENV, ""))  # a typo fails now, not mid-test

    def injection(self, camera: int) -> Injection | None:
        return parse_failures(os.environ.get(FAIL_ENV, "")).get(camera)

    def pattern(self, camera: int) -> str:
        return PATTERNS[camera % len(PATTERNS)]

    def camera_input(self, camera: int, *, realtime: bool) -> FfmpegInput:
        s = self.settings
        args = ["-re"] if realtime else []
        inject = self.injection(camera)
        if inject is not None and inject.kind == "die_after":
            args += ["-t", f"{inject.seconds:g}"]
        source = f"{self.pattern(camera)}=size={s.width}x{s.height}:rate={s.fps}"
        args += ["-f", "lavfi", "-i", source]
        return FfmpegInput(args, self._overlay(camera), f"synthetic {self.pattern(camera)}")

    def _overlay(self, camera: int) -> str:
        # A box crossing the frame (at a different height per camera) shows motion, so a frozen
        # or duplicated feed is visible in the finished video.
        colour = BOX_COLOURS[camera % len(BOX_COLOURS)]
        y = f"ih*{(camera % 4) + 1}/6"
        chain = [
            f"drawbox=x='mod(t*iw/4,iw-ih/6)':y='{y}':w=ih/6:h=ih/6:color={colour}@0.85:t=fill"
        ]
        font = _drawtext_font()
        if font is not None:
            chain.append(
                f"drawtext=fontfile={font}:text='cam {camera}  %{{localtime}}  #%{{n}}'"
                ":fontsize=h/14:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=4:x=8:y=8"
            )
        return ",".join(chain)

    def discover(self) -> list[CameraInfo]:
        return [
            CameraInfo(cam, self.name, f"synthetic {self.pattern(cam)}", self.mode, True)
            for cam in range(self.settings.cameras)
        ]
