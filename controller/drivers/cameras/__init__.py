"""Camera drivers: the small interface the supervisor records through.

The supervisor only ever talks to a `CameraDriver` (the Protocol below): `start()` a booking's
recording, `poll()` it about once a second, `stop()` it or `hand_over()` the running cameras to
the next booking, take a `snapshot()` for aiming, `probe()` for `ezrec doctor`.

The package: this interface (which imports none of its implementations; the composition root,
`controller.context.open_cameras`, picks one from the settings), `children` (child processes
tied to the controller's life), `template` (the one recording lifecycle every driver shares),
`ffmpeg_tools` (one-shot ffmpeg calls: stills, timestamps), and the sources: `ffmpeg_source`
(one ffmpeg process per camera, the base of `synthetic` and `v4l2`) and `picamera2`. The raw
layout the drivers write is owned by `controller.recordings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol


@dataclass(frozen=True)
class CameraInfo:
    index: int
    driver: str
    model: str
    mode: str  # like "1280x720@30"
    up: bool
    detail: str = ""  # why it is down, one line


@dataclass(frozen=True)
class CameraEvent:
    camera: int
    kind: Literal["failed_to_start", "died", "stalled"]
    detail: str  # one line for the booking history


@dataclass(frozen=True)
class CameraProbe:
    camera: int
    ok: bool
    line: str  # "camera 0 ok: 1280x720@30 (...)", "camera 1: not found", ...


@dataclass
class RecordingResult:
    booking_id: str
    run: int
    files: dict[int, list[Path]]  # camera -> segments of this run, in order (may be empty)
    notes: list[str]  # lines for the booking history


class RecordingHandle(Protocol):
    booking_id: str
    out_dir: Path
    run: int
    cameras: list[int]  # cameras recording right now
    notes: list[str]  # what happened so far (start failures, drops), for the history


class CameraError(Exception):
    """No camera could record (start), or a driver cannot be used at all (open)."""


class CameraDriver(Protocol):
    name: str
    # A real sensor or device can be opened by one recording at a time: the next booking on
    # it takes the running camera over (hand_over) instead of opening it during the pre-roll.
    exclusive: bool

    def discover(self) -> list[CameraInfo]: ...

    def start(self, booking_id: str, out_dir: Path) -> RecordingHandle: ...

    def hand_over(
        self, handle: RecordingHandle, booking_id: str, out_dir: Path, at: float
    ) -> tuple[RecordingResult, RecordingHandle]: ...

    def poll(self, handle: RecordingHandle) -> list[CameraEvent]: ...

    def bytes_written(self, handle: RecordingHandle) -> int: ...

    def written_until(self, handle: RecordingHandle) -> float | None:
        """Wall time up to which every camera of `handle` has its frames on disk, if known."""
        ...

    def stop(self, handle: RecordingHandle, timeout: float = 5.0) -> RecordingResult: ...

    def snapshot(self, camera: int, handle: RecordingHandle | None = None) -> bytes: ...

    def probe(self) -> list[CameraProbe]: ...

    def close(self) -> None: ...


__all__ = [
    "CameraDriver", "CameraError", "CameraEvent", "CameraInfo", "CameraProbe",
    "RecordingHandle", "RecordingResult",
]
