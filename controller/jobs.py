"""The two long jobs the supervisor hands to its workers: building a booking's video and
uploading it. Each is a plain function of (settings, booking, drivers) that returns a result
or raises; the loop turns the outcome into a transition. Progress goes to the store directly
(it is not a state change), so `ezrec show` / `status` see it while the job runs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from controller import clips as clips_mod
from controller import recordings
from controller.config import Settings
from controller.db import Booking
from controller.drivers import builder as builder_mod
from controller.drivers import storage as storage_mod
from controller.drivers.media_cache import MediaCache

Progress = Callable[[float], None]


class OutputMissing(FileNotFoundError):
    """The finished video is not on disk any more: it must be built again."""


@dataclass
class BuildOutcome:
    outputs: list[Path]
    duration_s: float
    notes: list[str] = field(default_factory=list)
    # Per output path: where the booking sits in it (builder.Timeline.to_dict), for the clips.
    timeline: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class UploadOutcome:
    objects: list[dict[str, Any]]
    video_url: str
    presigned_url: str | None = None
    notes: list[str] = field(default_factory=list)  # clips left out, for the history


def raw_dir(settings: Settings, booking_id: str) -> Path:
    return recordings.booking_files(settings, booking_id).raw_dir


def processed_path(settings: Settings, booking_id: str) -> Path:
    return recordings.booking_files(settings, booking_id).processed_path


def has_recording(
    settings: Settings, booking_id: str, slot: tuple[datetime, datetime] | None = None
) -> bool:
    return recordings.booking_files(settings, booking_id).has_footage(slot)


def media_sources(settings: Settings, booking: Booking) -> dict[str, Any]:
    """The booking user's own media (from the booking system) over the venue's defaults."""
    own = booking.extra.get("media") or {}
    sponsors = [s for s in (own.get("sponsors") or []) if s] or list(settings.sponsor_logos)
    return {
        "intro": own.get("intro") or settings.intro,
        "venue_logo": settings.logo,
        "user_logo": own.get("logo"),
        "sponsors": sponsors[:3],
    }


# Not built yet: their media will still be needed.
UNBUILT = ("confirmed", "recording", "recording_failed", "completed", "processing_failed")


def media_in_use(settings: Settings, store: Any) -> dict[str, list[str]]:
    """Every intro and image source a build may still need: the venue's and those of the
    bookings not built yet (for POST /media/notify and for dropping stale cached copies)."""
    videos = {settings.intro} if settings.intro else set()
    images = {settings.logo} if settings.logo else set()
    images.update(settings.sponsor_logos)
    for booking in store.list(state=list(UNBUILT)):
        media = booking.extra.get("media") or {}
        if media.get("intro"):
            videos.add(str(media["intro"]))
        if media.get("logo"):
            images.add(str(media["logo"]))
        images.update(str(s) for s in media.get("sponsors") or [] if s)
    return {"video": sorted(videos), "image": sorted(images)}


def forget_stale_media(settings: Settings, store: Any, cache: MediaCache) -> None:
    """Delete cached copies of media nothing uses any more (after the settings changed)."""
    in_use = media_in_use(settings, store)
    cache.forget(in_use["video"] + in_use["image"])


def resolve_media(
    settings: Settings, booking: Booking, cache: MediaCache
) -> tuple[Path | None, list[builder_mod.Overlay], list[str]]:
    sources = media_sources(settings, booking)
    notes: list[str] = []

    def fetch(source: str | None, kind: str, label: str) -> Path | None:
        if not source:
            return None
        resolved = cache.resolve(source, kind, label=label)  # type: ignore[arg-type]
        if resolved.note:
            notes.append(resolved.note)
        return resolved.path

    intro = fetch(sources["intro"], "video", "intro")
    overlays = builder_mod.overlays_from_settings(
        settings,
        venue_logo=fetch(sources["venue_logo"], "image", "logo"),
        user_logo=fetch(sources["user_logo"], "image", "user logo"),
        sponsors=[
            fetch(src, "image", f"sponsor{i}") for i, src in enumerate(sources["sponsors"], 1)
        ],
    )
    return intro, overlays, notes


def build_spec(
    settings: Settings, booking: Booking, cache: MediaCache
) -> tuple[builder_mod.BuildSpec, list[str]]:
    feeds = builder_mod.feeds_from_raw_dir(
        raw_dir(settings, booking.id),
        [settings.rotation_for(i) for i in range(settings.cameras)],
    )
    if not feeds:
        raise builder_mod.BuildError("no recorded segments on disk")
    intro, overlays, notes = resolve_media(settings, booking, cache)
    spec = builder_mod.spec_from_settings(
        settings,
        booking.id,
        feeds,
        processed_path(settings, booking.id),
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
    spec, notes = build_spec(settings, booking, cache)
    result = builder_mod.build(spec, on_progress=on_progress, stop=stop)
    timeline = {str(path): t.to_dict() for path, t in result.timeline.items()}
    return BuildOutcome(result.outputs, result.duration_s, notes + list(result.notes), timeline)


def outputs_of(booking: Booking) -> list[Path]:
    return recordings.outputs_of(booking.extra.get("outputs"), booking.processed_path)


def upload_video(
    settings: Settings,
    booking: Booking,
    storage: storage_mod.Storage,
    on_progress: Progress,
    stop: threading.Event,
) -> UploadOutcome:
    outputs = outputs_of(booking)
    if not outputs:
        raise storage_mod.StorageError("no processed video recorded for this booking")
    missing = [str(p) for p in outputs if not p.is_file()]
    notes: list[str] = []
    if not missing:
        # The replay clips go with the video; only the ones not cut yet are cut now. A clip
        # that cannot be cut is left out (and said so): it must not hold the video back.
        notes = clips_mod.ensure_clips(settings, booking, stop)
    clip_files = {p for p in clips_mod.clip_files(booking) if p.is_file()}
    outputs = outputs + sorted(clip_files)
    if missing:
        # The finished file is gone (disk swapped?): the raw files are still there, so the
        # caller sends the booking back to processing rather than failing forever.
        raise OutputMissing(f"processed video missing: {', '.join(missing)}")
    total = sum(p.stat().st_size for p in outputs)
    done_before = 0
    objects: list[dict[str, Any]] = []
    for path in outputs:
        suffix = path.stem.removeprefix(booking.id)
        key = storage.key_for(booking.id, booking.start_time, suffix)
        base = done_before

        def progress(sent: int, _size: int, base: int = base) -> None:
            on_progress((base + sent) / total if total else 1.0)

        stored = storage.upload(
            path,
            key,
            checkpoint=storage_mod.FileCheckpoint(path.with_name(path.name + ".upload.json")),
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
    return UploadOutcome(objects, objects[0]["url"], objects[0]["presigned_url"], notes)
