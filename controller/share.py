"""Share links: a player opens their video and clips without an account.

A booking's links live in `extra["share"]`, written through the store (a history row, pushed
to the booking system's `videos` row). Each stored object (the video, every clip) gets one:

- with `SHARE_URL_TEMPLATE` set, that URL (`{booking}`, `{clip}`, `{key}`, `{token}` filled
  in): the venue's own site serves the video and checks the token against the booking system;
- otherwise an S3 presigned URL, valid `SHARE_LINK_H` hours (at most S3's 7 days), of a
  server-side copy under `shared-<token>/` next to the object. A presigned URL cannot be
  withdrawn, but the copy it points to can: revoking deletes the copies, so every link handed
  out stops working at once, while the booking's own objects stay.

Links are capabilities: the API shows them only with the API token. `renew_due` presigns them
again before they expire, for as long as the booking is kept; a revoked share is never renewed
(a new `ezrec share ID` makes new links under a new token).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from controller.config import Settings
from controller.db import Booking
from controller.drivers.storage import Storage, StorageError
from controller.fsm import BookingError, BookingStore, StaleVersion
from controller.fsm.states import State

# Renewed when less than this share of a link's life is left: with 7-day links, a day and a
# half before they expire, so a box that is off for a day still renews in time.
RENEW_WHEN_LEFT = 0.2
_TRIES = 5


class ShareError(BookingError):
    """No share link can be made (nothing stored yet, local storage without a template)."""


def active(booking: Booking) -> dict[str, Any] | None:
    """The booking's share if it has live links (not revoked), else None."""
    share = booking.extra.get("share")
    if not isinstance(share, dict) or share.get("revoked_at") or not share.get("links"):
        return None
    return share


def link(booking: Booking, name: str = "video") -> str:
    """The share URL of one object ("video", "clip01", …), or ShareError saying why not."""
    share = active(booking)
    if share is None:
        raise ShareError(f"booking {booking.id} has no share link (ezrec share {booking.id})")
    for item in share["links"]:
        if item["name"] == name:
            return str(item["url"])
    if name == "video":  # layout separate: one video per camera ("cam0", "cam1"); the first
        videos = [item for item in share["links"] if item["kind"] == "video"]
        if videos:
            return str(videos[0]["url"])
    names = ", ".join(item["name"] for item in share["links"])
    raise ShareError(f"booking {booking.id} has no {name!r} (it has: {names})")


def object_name(booking_id: str, key: str) -> str:
    """"video" for `<booking>.mp4`, "clip01" for `<booking>-clip01.mp4`, "cam0" …"""
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.removeprefix(booking_id).lstrip("-") or "video"


def _shared_key(key: str, token: str) -> str:
    head, _, name = key.rpartition("/")
    return f"{head}/shared-{token}/{name}" if head else f"shared-{token}/{name}"


def make_links(
    settings: Settings, storage: Storage, booking: Booking, token: str, now: datetime,
    *, copy: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Links for every stored object of `booking` (copies made first when `copy`)."""
    objects = [o for o in booking.extra.get("uploaded") or [] if o.get("key")]
    if booking.state != State.VIDEO_UPLOADED or not objects:
        raise ShareError(f"booking {booking.id} is {booking.state}: nothing stored to share yet")
    template = settings.share_url_template
    ttl_s = int(settings.share_link_h * 3600)
    links: list[dict[str, Any]] = []
    for obj in objects:
        name = object_name(booking.id, obj["key"])
        entry: dict[str, Any] = {"name": name, "kind": obj.get("kind", "video"), "key": obj["key"]}
        if template:
            clip = "" if name == "video" else name
            entry["url"] = template.format(booking=booking.id, clip=clip, key=obj["key"],
                                           token=token)  # fmt: skip
            entry["expires_at"] = None  # the venue's site decides
        else:
            shared = _shared_key(obj["key"], token)
            copier = getattr(storage, "copy", None)
            if copier is None:
                raise ShareError(
                    f"storage {storage.url} cannot hand out links: set EZREC_SHARE_URL_TEMPLATE "
                    "or store videos on S3 (EZREC_STORAGE_URL=s3://…)"
                )
            if copy:
                copier(obj["key"], shared)
            url = storage.presign(shared, ttl_s)
            if url is None:
                raise ShareError(f"storage {storage.url} gave no presigned URL")
            entry |= {"shared_key": shared, "url": url,
                      "expires_at": (now + timedelta(seconds=ttl_s)).isoformat()}  # fmt: skip
        links.append(entry)
    expiries = [e["expires_at"] for e in links if e["expires_at"]]
    return {
        "token": token,
        "created_at": now.isoformat(),
        "expires_at": min(expiries) if expiries else None,
        "links": links,
        "revoked_at": None,
    }


def _write(store: BookingStore, booking: Booking, share: dict[str, Any], detail: str) -> Booking:
    return store.fire(booking.id, "note", expected_version=booking.version, detail=detail,
                      changes={"extra": {"share": share}}, push=True)  # fmt: skip


def ensure(
    settings: Settings, store: BookingStore, storage: Storage, booking_id: str
) -> Booking:
    """The booking with live share links: made now if it has none (or they were revoked)."""
    for attempt in range(_TRIES):
        booking = store.get(booking_id)
        if active(booking) is not None:
            return booking
        now = store.clock()
        share = make_links(settings, storage, booking, secrets.token_urlsafe(16), now)
        try:
            return _write(store, booking, share, _detail("share links made", share))
        except StaleVersion:
            # Changed meanwhile: these links were never handed out; their copies go.
            for item in share["links"]:
                if item.get("shared_key"):
                    storage.delete(item["shared_key"])
            if attempt == _TRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def renew(settings: Settings, store: BookingStore, storage: Storage, booking_id: str) -> Booking:
    """Presign the live links again (same token, same copies)."""
    booking = store.get(booking_id)
    share = active(booking)
    if share is None:
        raise ShareError(f"booking {booking_id} has no live share links to renew")
    fresh = make_links(settings, storage, booking, share["token"], store.clock(), copy=False)
    fresh["created_at"] = share["created_at"]
    return _write(store, booking, fresh, _detail("share links renewed", fresh))


def revoke(store: BookingStore, storage: Storage, booking_id: str) -> Booking:
    """Withdraw the links: the shared copies are deleted, the links dropped and not renewed."""
    booking = store.get(booking_id)
    share = booking.extra.get("share")
    if not isinstance(share, dict) or not share.get("links"):
        raise ShareError(f"booking {booking_id} has no share links to revoke")
    for item in share["links"]:
        if item.get("shared_key"):
            storage.delete(item["shared_key"])  # StorageError: nothing written, try again
    now = store.clock()
    gone: dict[str, Any] = {"token": None, "created_at": share.get("created_at"),
                            "expires_at": None, "links": [], "revoked_at": now.isoformat()}
    return _write(store, booking, gone, "share links revoked")


def renew_due(
    settings: Settings, store: BookingStore, storage: Storage, now: datetime
) -> list[str]:
    """Renew every live share that is near its expiry; returns what went wrong, per booking."""
    problems: list[str] = []
    lifetime = timedelta(hours=settings.share_link_h)
    for booking in store.list(state=State.VIDEO_UPLOADED):
        share = active(booking)
        if share is None or not share.get("expires_at"):
            continue
        left = datetime.fromisoformat(share["expires_at"]) - now
        if left > lifetime * RENEW_WHEN_LEFT:
            continue
        try:
            renew(settings, store, storage, booking.id)
        except (BookingError, StorageError) as exc:
            problems.append(f"{booking.id}: share links not renewed: {exc}")
    return problems


def _detail(what: str, share: dict[str, Any]) -> str:
    until = f" until {share['expires_at']}" if share.get("expires_at") else ""
    return f"{what} ({len(share['links'])} link(s){until})"
