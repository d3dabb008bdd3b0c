"""The two long jobs the loop hands to its workers, building a booking's video and uploading
it, and their typed outcomes.

Each job is a plain function of (settings, booking, driver, progress, stop) run in a worker
thread. It returns what happened instead of raising: `Built` / `Uploaded` when done,
`RetryLater` for a failure that trying again can fix, `NeedsOperator` for one it cannot (bad
credentials, no such bucket), `Rebuild` when the finished video is gone. The loop turns an
outcome into the booking's transition in one place (`job_runner.transition`). Progress goes to
the store directly (it is not a state change), so `ezrec show` / `status` see it meanwhile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from controller import booking_media, clips, recordings
from controller.config import Settings
from controller.db import Booking
from controller.drivers import builder
from controller.drivers.media_cache import MediaCache
from controller.drivers.storage import FileCheckpoint, Storage, StorageError
from controller.fileio import Stopped, flocked

# progress(fraction, **detail): detail is chunks_built/chunks_total/bytes_uploaded/bytes_total.
Progress = Callable[..., None]


@dataclass(frozen=True)
class Built:
    outputs: list[Path]
    duration_s: float
    notes: list[str] = field(default_factory=list)
    # Per output path: where the booking sits in it (builder.Timeline.to_dict), for the clips.
    timeline: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu_s: float = 0.0  # CPU of every ffmpeg the build ran, chunks made while recording too
    chunks: int = 0


@dataclass(frozen=True)
class Uploaded:
    objects: list[dict[str, Any]]
    video_url: str
    presigned_url: str | None = None
    notes: list[str] = field(default_factory=list)  # clips left out, for the history


@dataclass(frozen=True)
class RetryLater:
    """Failed this time; the retry policy decides when it is tried again."""

    reason: str


@dataclass(frozen=True)
class NeedsOperator:
    """Failed in a way no retry can fix: it waits for a person (`ezrec retry` after the fix)."""

    reason: str


@dataclass(frozen=True)
class Rebuild:
    """The finished video is not on disk any more: the raw files are, so it is built again."""

    reason: str


BuildOutcome = Built | RetryLater | NeedsOperator
UploadOutcome = Uploaded | RetryLater | NeedsOperator | Rebuild
Outcome = BuildOutcome | UploadOutcome


def reason_of(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def build_spec(
    settings: Settings, booking: Booking, cache: MediaCache
) -> tuple[builder.BuildSpec, list[str]]:
    """What the builder is asked to make of `booking`'s raw files, and notes on left-out media."""
    files = recordings.booking_files(settings, booking.id)
    feeds = builder.feeds_from_raw_dir(
        files.raw_dir, [settings.rotation_for(i) for i in range(settings.cameras)]
    )
    if not feeds:
        raise builder.BuildError("no recorded segments on disk")
    intro, overlays, notes = booking_media.resolve_media(settings, booking, cache)
    spec = builder.spec_from_settings(
        settings,
        booking.id,
        feeds,
        files.processed_path,
        start_at=booking.start_time.timestamp(),
        duration=(booking.end_time - booking.start_time).total_seconds(),
        intro=intro,
        overlays=overlays,
    )
    return spec, notes


def build_video(
    settings: Settings,
    booking: Booking,
    cache: MediaCache,
    on_progress: Progress,
    stop: threading.Event,
) -> BuildOutcome:
    last = [0.0]

    def progress(fraction: float) -> None:
        last[0] = fraction
        on_progress(fraction)

    def chunks(built: int, total: int) -> None:
        on_progress(last[0], chunks_built=built, chunks_total=total)

    try:
        spec, notes = build_spec(settings, booking, cache)
        result = builder.build(spec, on_progress=progress, stop=stop, on_chunks=chunks)
    except builder.BuildError as exc:
        return RetryLater(reason_of(exc))
    timeline = {str(path): t.to_dict() for path, t in result.timeline.items()}
    return Built(result.outputs, result.duration_s, notes + list(result.notes), timeline,
                 round(result.cpu_s, 2), result.chunks)  # fmt: skip


def upload_video(
    settings: Settings,
    booking: Booking,
    storage: Storage,
    on_progress: Progress,
    stop: threading.Event,
) -> UploadOutcome:
    outputs = recordings.outputs_of(booking.extra.get("outputs"), booking.processed_path)
    if not outputs:
        return RetryLater("no processed video recorded for this booking")
    missing = [str(p) for p in outputs if not p.is_file()]
    if missing:
        # The finished file is gone (disk swapped?): the raw files are still there, so the
        # booking goes back to processing rather than failing forever.
        return Rebuild(f"processed video missing: {', '.join(missing)}")
    # The replay clips go with the video; only the ones not cut yet are cut now. A clip that
    # cannot be cut is left out (and said so): it must not hold the video back.
    notes = clips.ensure_clips(settings, booking, stop)
    clip_files = {p for p in clips.clip_files(booking) if p.is_file()}
    try:
        objects = _store(settings, booking, storage, outputs, clip_files, on_progress, stop)
    except StorageError as exc:
        reason = reason_of(exc)
        return RetryLater(reason) if exc.retryable else NeedsOperator(reason)
    except Stopped:
        return RetryLater("upload interrupted by shutdown; it resumes")
    for path in outputs:
        # Stored and verified: the chunk journal and the upload's state are of no more use.
        recordings.remove_working_files(path)
    return Uploaded(objects, objects[0]["url"], objects[0]["presigned_url"], notes)


def _store(
    settings: Settings,
    booking: Booking,
    storage: Storage,
    outputs: list[Path],
    clip_files: set[Path],
    on_progress: Progress,
    stop: threading.Event,
) -> list[dict[str, Any]]:
    """Every output and clip stored and verified, one after the other, with overall progress."""
    paths = outputs + sorted(clip_files)
    total = sum(p.stat().st_size for p in paths)
    done_before = 0
    objects: list[dict[str, Any]] = []
    for path in paths:
        suffix = path.stem.removeprefix(booking.id)
        key = storage.key_for(booking.id, booking.start_time, suffix)
        base = done_before

        def progress(sent: int, _size: int, base: int = base) -> None:
            done = base + sent
            on_progress(done / total if total else 1.0, bytes_uploaded=done, bytes_total=total)

        # The live uploader may be sending parts of this file: one uploader at a time.
        with flocked(recordings.upload_lock(path), wait=True, stop=stop):
            stored = storage.upload(
                path,
                key,
                checkpoint=FileCheckpoint(recordings.upload_checkpoint(path)),
                on_progress=progress,
                stop=stop,
            )
        presigned = stored.presigned_url
        if presigned is None and settings.s3_presign_s:
            presigned = storage.presign(key, settings.s3_presign_s)
        objects.append(
            {
                "url": stored.url,
                "key": stored.key,
                "size": stored.size,
                "sha256": stored.sha256,
                "etag": stored.etag,
                "presigned_url": presigned,
                "kind": "clip" if path in clip_files else "video",
                "uploaded_at": datetime.now().astimezone().isoformat(),
            }
        )
        done_before += path.stat().st_size
    return objects
