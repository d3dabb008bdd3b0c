"""A booking's media: which intro and logos its video gets (the booking user's own, from the
booking system, over the venue's settings), resolved through the media cache, and which media
any booking not built yet still needs (so that the cache keeps those and drops the rest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.config import Settings
from controller.db import Booking
from controller.drivers import builder
from controller.drivers.media_cache import Kind, MediaCache
from controller.fsm import BookingStore
from controller.fsm.states import NOT_BUILT

MAX_SPONSORS = 3


def media_sources(settings: Settings, booking: Booking) -> dict[str, Any]:
    """The booking user's own media (from the booking system) over the venue's defaults."""
    own = booking.extra.get("media") or {}
    sponsors = [s for s in (own.get("sponsors") or []) if s] or list(settings.sponsor_logos)
    return {
        "intro": own.get("intro") or settings.intro,
        "venue_logo": settings.logo,
        "user_logo": own.get("logo"),
        "sponsors": sponsors[:MAX_SPONSORS],
    }


def media_in_use(settings: Settings, store: BookingStore) -> dict[str, list[str]]:
    """Every intro and image source a build may still need: the venue's and those of the
    bookings not built yet (for POST /media/notify and for dropping stale cached copies)."""
    videos = {settings.intro} if settings.intro else set()
    images = {settings.logo} if settings.logo else set()
    images.update(settings.sponsor_logos)
    for booking in store.list(state=sorted(NOT_BUILT)):
        media = booking.extra.get("media") or {}
        if media.get("intro"):
            videos.add(str(media["intro"]))
        if media.get("logo"):
            images.add(str(media["logo"]))
        images.update(str(s) for s in media.get("sponsors") or [] if s)
    return {"video": sorted(videos), "image": sorted(images)}


def forget_stale_media(settings: Settings, store: BookingStore, cache: MediaCache) -> None:
    """Delete cached copies of media nothing uses any more (after the settings changed)."""
    in_use = media_in_use(settings, store)
    cache.forget(in_use["video"] + in_use["image"])


def resolve_media(
    settings: Settings, booking: Booking, cache: MediaCache
) -> tuple[Path | None, list[builder.Overlay], list[str]]:
    """The intro and overlays of `booking`'s video as local files, and notes on what was left
    out (an unreadable logo is a line in the history, not a failed build)."""
    sources = media_sources(settings, booking)
    notes: list[str] = []

    def fetch(source: str | None, kind: Kind, label: str) -> Path | None:
        if not source:
            return None
        resolved = cache.resolve(source, kind, label=label)
        if resolved.note:
            notes.append(resolved.note)
        return resolved.path

    intro = fetch(sources["intro"], "video", "intro")
    overlays = builder.overlays_from_settings(
        settings,
        venue_logo=fetch(sources["venue_logo"], "image", "logo"),
        user_logo=fetch(sources["user_logo"], "image", "user logo"),
        sponsors=[
            fetch(src, "image", f"sponsor{i}") for i, src in enumerate(sources["sponsors"], 1)
        ],
    )
    return intro, overlays, notes
