"""A booking's replay clips: planned from its marks when the video is built, cut before it is
uploaded, uploaded and kept with it.

Planning (at the `process` transition, stored in the booking's `extra["clips"]`): each mark
asks for CLIP_BEFORE_S before it and CLIP_AFTER_S after it. A mark's wall-clock time maps to
video time through the build's timeline: the booking's start is shown at `booking_start_s`
(after the intro; shifted when stream copy began on an earlier keyframe or a camera started
late), so a mark at `t` is at `booking_start_s + (t - start_time)`. Windows are clamped to the
recording (never into the intro, never past the end); overlapping ones merge into one clip.

Cutting (in the upload job, before anything is sent): each planned clip whose file is missing
is cut from the finished video; the ones already on disk are kept, so a crash while cutting
redoes only the missing clips. The files sit next to the video
(`recordings/processed/<booking>-clip01.mp4`) and go wherever it goes, retention included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from controller.config import Settings
from controller.db import Booking
from controller.drivers.builder.clips import CutResult, cut_clip
from controller.drivers.builder.spec import BuildError
from controller.fsm import BookingStore
from controller.fsm.marks import marks_of

MIN_CLIP_S = 0.5  # a mark in the last instant of the video gives no useful clip


@dataclass(frozen=True)
class Window:
    start_s: float  # video time
    end_s: float
    marks: tuple[datetime, ...]


def clip_path(output: Path, number: int) -> Path:
    return output.with_name(f"{output.stem}-clip{number:02d}{output.suffix}")


def windows(
    marks: Sequence[datetime],
    booking_start: datetime,
    timeline: dict[str, float],
    before_s: float,
    after_s: float,
) -> list[Window]:
    """The clips of one video: a window per mark, clamped to the recording, overlaps merged."""
    first = float(timeline["intro_s"])
    last = float(timeline["duration_s"])
    anchor = float(timeline["booking_start_s"])
    raw: list[Window] = []
    for mark in sorted(marks):
        at = anchor + (mark - booking_start).total_seconds()
        start, end = max(first, at - before_s), min(last, at + after_s)
        if end - start >= MIN_CLIP_S:
            raw.append(Window(start, end, (mark,)))
    merged: list[Window] = []
    for w in raw:
        if merged and w.start_s <= merged[-1].end_s:
            prev = merged[-1]
            merged[-1] = Window(prev.start_s, max(prev.end_s, w.end_s), prev.marks + w.marks)
        else:
            merged.append(w)
    return merged


def plan(
    settings: Settings,
    booking: Booking,
    marks: Sequence[datetime],
    timelines: dict[str, dict[str, float]],
) -> list[dict[str, Any]]:
    """The clips to cut from every output of the build, as stored in `extra["clips"]`."""
    planned: list[dict[str, Any]] = []
    for output, timeline in sorted(timelines.items()):
        source = Path(output)
        cuts = windows(marks, booking.start_time, timeline, settings.clip_before_s,
                       settings.clip_after_s)  # fmt: skip
        anchor = float(timeline["booking_start_s"])
        for number, w in enumerate(cuts, start=1):
            path = clip_path(source, number)
            planned.append(
                {
                    "name": path.stem.removeprefix(booking.id).lstrip("-"),
                    "source": str(source),
                    "path": str(path),
                    "start_s": round(w.start_s, 3),
                    "end_s": round(w.end_s, 3),
                    "from": _wall(booking.start_time, w.start_s - anchor),
                    "to": _wall(booking.start_time, w.end_s - anchor),
                    "marks": [m.isoformat() for m in w.marks],
                }
            )
    return planned


def _wall(start: datetime, offset_s: float) -> str:
    return (start + timedelta(seconds=offset_s)).isoformat(timespec="milliseconds")


def planned(booking: Booking) -> list[dict[str, Any]]:
    clips = booking.extra.get("clips") or []
    return [c for c in clips if isinstance(c, dict) and c.get("path")]


def clip_files(booking: Booking) -> list[Path]:
    return [Path(c["path"]) for c in planned(booking)]


def ensure_clips(
    settings: Settings,
    booking: Booking,
    stop: threading.Event | None = None,
    on_cut: Callable[[CutResult], None] | None = None,
) -> list[str]:
    """Cut every planned clip that is not on disk yet; returns why any could not be cut."""
    failures: list[str] = []
    for clip in planned(booking):
        path = Path(clip["path"])
        if path.is_file() and path.stat().st_size > 0:
            continue  # cut before a crash or a failed upload: kept as it is
        try:
            made = cut_clip(
                Path(clip["source"]),
                float(clip["start_s"]),
                float(clip["end_s"]),
                path,
                preset=settings.x264_preset,
                crf=settings.crf,
                stop=stop,
            )
        except BuildError as exc:
            if stop is not None and stop.is_set():
                raise  # shutting down: the next start cuts it
            failures.append(f"clip {clip['name']} not cut: {exc}")
            continue
        if on_cut is not None:
            on_cut(made)
    return failures


def build_extra(
    settings: Settings, store: BookingStore, booking_id: str, timeline: dict[str, Any]
) -> dict[str, Any]:
    """What the `process` transition stores for the clips: the timeline and the plan.

    Clips cut from an earlier build of the booking (a rebuild after its video went missing)
    are deleted here: they belong to the old video, and the new plan is cut afresh."""
    booking = store.get(booking_id)
    for output in timeline:
        source = Path(output)
        for old in source.parent.glob(f"{source.stem}-clip[0-9][0-9]{source.suffix}"):
            old.unlink(missing_ok=True)
    marks = [m.at for m in marks_of(store, booking_id)]
    return {"timeline": timeline, "clips": plan(settings, booking, marks, timeline)}
