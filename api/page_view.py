"""What the staff page shows, as plain values for the templates: bookings per camera/court in
words, the recent videos with a way to play each, the cameras to aim.

Nothing here renders HTML (the templates do, with autoescaping) or knows HTTP: the page's
handlers call these with the store, the settings and the status report that `GET /status`
answers (`controller.health.collect`), so the page and the API cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from controller.config import Settings
from controller.db import Booking
from controller.fsm import BookingStore, allowed_triggers
from controller.fsm.states import FAILED, State
from controller.recordings import outputs_of

# The state names are the contract; these say what each means to someone at the venue.
STATE_WORDS: dict[str, str] = {
    State.CONFIRMED: "booked, waiting for its slot",
    State.RECORDING: "recording now",
    State.COMPLETED: "recorded, waiting for the video to be built",
    State.VIDEO_PROCESSED: "video built, waiting to be uploaded",
    State.VIDEO_UPLOADED: "video uploaded",
    State.RECORDING_FAILED: "recording failed",
    State.PROCESSING_FAILED: "building the video failed",
    State.UPLOAD_FAILED: "upload failed",
    State.CANCELLED: "cancelled",
    State.MISSED: "missed: nothing could record the slot",
}


def _leaving_by(trigger: str) -> frozenset[State]:
    return frozenset(s for s in State if trigger in allowed_triggers(s.value))


# The states the machine lets `cancel` / `retry` leave, so that the page offers only what the
# API would accept; a race still gets the API's own refusal.
CANCELLABLE = _leaving_by("cancel")
RETRYABLE = _leaving_by("retry")
# Each poll renders them again (~0.8 kB and ~0.25 ms each here, several times that on a Pi):
# the page shows the soonest ones, `ezrec bookings` lists everything.
BOOKINGS_SHOWN = 100
VIDEOS_SHOWN = 6
VIDEO_DAYS = 7


@dataclass(frozen=True)
class BookingRow:
    id: str
    user_id: str
    start: datetime
    end: datetime
    state: str
    words: str
    stage: str | None
    progress: float | None  # 0..1, or None when nothing is under way
    attempts: int
    max_attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    can_cancel: bool
    can_retry: bool
    can_mark: bool  # replay marks are taken while the booking records


@dataclass(frozen=True)
class CameraGroup:
    camera_id: str
    rows: list[BookingRow]


@dataclass(frozen=True)
class VideoItem:
    id: str
    user_id: str
    start: datetime
    state: str
    file_name: str | None
    size_mb: float | None
    play_url: str | None  # None: not playable for this request (see `why_not`)
    why_not: str = ""


@dataclass(frozen=True)
class CameraView:
    index: int
    width: int
    height: int
    fps: int
    rotation: int
    model: str = ""
    mode: str = ""
    up: bool | None = None
    detail: str = ""


def local_day_start(now: datetime) -> datetime:
    """Midnight of the box's own day: "today" is the venue's day, not UTC's."""
    local = now.astimezone()
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def local_video(booking: Booking, settings: Settings) -> Path | None:
    """The finished video's file on this box: the build's output while it is kept, else the
    local storage backend's stored copy (never a path outside that backend's directory)."""
    outputs = outputs_of(booking.extra.get("outputs"), booking.processed_path)
    if outputs and outputs[0].is_file():
        return outputs[0]
    url = booking.video_url or ""
    if url.startswith("file://") and settings.storage_url.startswith("file://"):
        root = Path(settings.storage_url.removeprefix("file://")).resolve()
        stored = Path(url.removeprefix("file://")).resolve()
        if stored.is_relative_to(root) and stored.is_file():
            return stored
    return None


def _progress(booking: Booking, now: datetime) -> tuple[str | None, float | None]:
    if booking.state == State.RECORDING:
        # The supervisor reports build and upload progress; a recording's is its clock.
        length = (booking.end_time - booking.start_time).total_seconds()
        done = (now - booking.start_time).total_seconds()
        return State.RECORDING, max(0.0, min(1.0, done / length)) if length > 0 else None
    if booking.progress is not None and booking.state in (
        State.COMPLETED, State.VIDEO_PROCESSED
    ):
        return booking.progress_stage, booking.progress
    return None, None


def booking_row(booking: Booking, settings: Settings, now: datetime) -> BookingRow:
    stage, progress = _progress(booking, now)
    return BookingRow(
        id=booking.id,
        user_id=booking.user_id or "",
        start=booking.start_time,
        end=booking.end_time,
        state=booking.state,
        words=STATE_WORDS.get(booking.state, booking.state),
        stage=stage,
        progress=progress,
        attempts=booking.attempts,
        max_attempts=settings.max_attempts,
        next_attempt_at=booking.next_attempt_at if booking.state in FAILED else None,
        last_error=booking.last_error,
        can_cancel=booking.state in CANCELLABLE,
        can_retry=booking.state in RETRYABLE,
        can_mark=booking.state == State.RECORDING,
    )


def booking_groups(store: BookingStore, settings: Settings, now: datetime) -> list[CameraGroup]:
    """Today's and upcoming bookings, plus failed ones of any day (they wait for someone)."""
    soonest = store.list(start_from=local_day_start(now), limit=BOOKINGS_SHOWN)
    shown = {b.id: b for b in soonest}
    for booking in store.list(state=sorted(FAILED), limit=50):
        shown.setdefault(booking.id, booking)
    groups: dict[str, list[BookingRow]] = {}
    for booking in sorted(shown.values(), key=lambda b: (b.start_time, b.id)):
        groups.setdefault(booking.camera_id, []).append(booking_row(booking, settings, now))
    return [CameraGroup(camera, rows) for camera, rows in sorted(groups.items())]


def newest_videos(store: BookingStore, now: datetime) -> list[Booking]:
    """The last VIDEOS_SHOWN finished bookings of the past VIDEO_DAYS, newest first.

    Asked of the database with its own order and limit: the store's list is oldest first, and
    a box keeps a year of uploaded bookings, which the page polls for every 2 s.
    """
    query = (
        select(Booking)
        .where(
            Booking.state.in_([State.VIDEO_PROCESSED, State.VIDEO_UPLOADED]),
            Booking.end_time > now - timedelta(days=VIDEO_DAYS),
        )
        .order_by(Booking.end_time.desc(), Booking.id.desc())
        .limit(VIDEOS_SHOWN)
    )
    with store.db.reader() as session:
        return list(session.scalars(query))


def video_items(
    store: BookingStore,
    settings: Settings,
    now: datetime,
    *,
    capabilities: bool,
    local_link: Callable[[str], str],
) -> list[VideoItem]:
    """The newest finished videos. Each is playable only with `capabilities` (the token):
    from the box's own file while it is there, else from the stored object's presigned URL."""
    items = []
    for booking in newest_videos(store, now):
        outputs = outputs_of(booking.extra.get("outputs"), booking.processed_path)
        local = local_video(booking, settings)
        presigned = booking.extra.get("presigned_url")
        play, why = None, ""
        if not capabilities:
            why = "enter the API token to play it"
        elif local is not None:
            play = local_link(booking.id)
        elif isinstance(presigned, str) and presigned:
            play = presigned
        else:
            why = "no copy on this box and no presigned URL stored (EZREC_S3_PRESIGN_S)"
        items.append(
            VideoItem(
                id=booking.id,
                user_id=booking.user_id or "",
                start=booking.start_time,
                state=booking.state,
                file_name=local.name if local else (outputs[0].name if outputs else None),
                size_mb=round(local.stat().st_size / 1e6, 1) if local else None,
                play_url=play,
                why_not=why,
            )
        )
    return items


def camera_views(settings: Settings, report: dict[str, Any]) -> list[CameraView]:
    """Every configured camera with what it is set to, and what the supervisor last saw."""
    seen = {
        c.get("index"): c
        for c in report.get("cameras") or []
        if isinstance(c, dict) and report["supervisor"].get("running")
    }
    views = []
    for n in range(settings.cameras):
        cam = seen.get(n, {})
        views.append(
            CameraView(
                index=n,
                width=settings.width,
                height=settings.height,
                fps=settings.fps,
                rotation=settings.rotation_for(n),
                model=str(cam.get("model") or ""),
                mode=str(cam.get("mode") or ""),
                up=bool(cam["up"]) if "up" in cam else None,
                detail=str(cam.get("detail") or ""),
            )
        )
    return views
