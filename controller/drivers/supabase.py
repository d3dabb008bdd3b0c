"""The booking system (Supabase): its client, its tables, and the mapping of its rows.

`make_client` builds the supabase-py client the sync and `ezrec doctor` share; `BookingSystem`
is the few requests the sync makes on it (docs/cloud-sync.md lists them with their rights);
`RemoteBooking`, `booking_patch`, `video_row` and `status_row` translate between the booking
system's rows and our fields. What to do with a row (create, reschedule, cancel, push) is the
sync service's business (`controller.sync`): this driver knows neither it nor the state machine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import TYPE_CHECKING, Any

from controller.config import Settings

if TYPE_CHECKING:
    import httpx
    from supabase import Client

log = logging.getLogger("ezrec.sync")

REQUEST_TIMEOUT_S = 20.0
CHECK_TIMEOUT_S = 5.0
# Remote statuses that mean "the customer or the venue cancelled this booking".
CANCELLED_WORDS = frozenset({"cancelled", "canceled", "cancel"})
# PostgREST `or` filter: status empty or not a cancellation (NOT IN alone drops NULLs).
NOT_CANCELLED = "status.is.null,status.not.ilike.cancel*"
MEDIA_COLUMNS = ("intro_video_path", "logo_path")
SPONSOR_COLUMNS = ("sponsor_logo1_path", "sponsor_logo2_path", "sponsor_logo3_path")
# Columns of `videos` that only a booking system set up for replays has.
REPLAY_COLUMNS = ("clips", "share_url", "share_expires_at")
# Writes ask for no rows back (`Prefer: return=minimal`): less traffic, and no need for
# read rights on the tables the box only writes to.
MINIMAL: Any = "minimal"


class SupabaseError(Exception):
    """Supabase is not configured, or refused a read the sync can do without; for a person."""


def is_configured(settings: Settings) -> bool:
    return bool(settings.supabase_url and settings.supabase_key)


def make_client(
    settings: Settings,
    *,
    timeout_s: float = REQUEST_TIMEOUT_S,
    on_response: Callable[[httpx.Response], None] | None = None,
) -> Client:
    """The supabase client for the configured URL and key, without retries of its own.

    Retries are the sync worker's (its back-off), so that a dead network costs one failed
    request per round, not the client's built-in 1 + 2 + 4 s of sleeping on every call.
    `on_response` sees every HTTP answer (the doctor wants the status code, which
    postgrest's errors do not keep).
    """
    if not is_configured(settings):
        raise SupabaseError("EZREC_SUPABASE_URL and EZREC_SUPABASE_KEY must both be set")
    # Imported here: supabase pulls in a lot, and most commands never talk to it.
    import httpx
    from supabase import SupabaseException, create_client
    from supabase.lib.client_options import SyncClientOptions

    assert settings.supabase_url and settings.supabase_key
    hooks = {"response": [on_response]} if on_response else None
    options = SyncClientOptions(
        postgrest_client_retry=False,
        # Our own HTTP client: a bounded timeout, and one connection pool for all calls.
        httpx_client=httpx.Client(timeout=timeout_s, follow_redirects=True, event_hooks=hooks),
        auto_refresh_token=False,
        persist_session=False,
    )
    try:
        return create_client(
            settings.supabase_url, settings.supabase_key.get_secret_value(), options
        )
    except SupabaseException as exc:  # a malformed URL
        raise SupabaseError(f"EZREC_SUPABASE_URL {settings.supabase_url!r}: {exc}") from None


@dataclass(frozen=True)
class Check:
    """What `ezrec doctor` reports about the booking system: fine or not, and a line why."""

    ok: bool
    detail: str


def check(settings: Settings, *, timeout_s: float = CHECK_TIMEOUT_S) -> Check:
    """One cheap read (`bookings`, one id) through the sync's own client: URL, key, rights."""
    if not is_configured(settings):
        return Check(
            True, "booking-system sync off (EZREC_SUPABASE_URL / EZREC_SUPABASE_KEY not set)"
        )
    import httpx
    from postgrest.exceptions import APIError

    answers: list[int] = []
    try:
        client = make_client(
            settings, timeout_s=timeout_s, on_response=lambda r: answers.append(r.status_code)
        )
        client.table("bookings").select("id").limit(1).execute()
    except SupabaseError as exc:
        return Check(False, str(exc))
    except httpx.HTTPError as exc:
        return Check(False, f"Supabase {settings.supabase_url} unreachable: {exc}")
    except APIError as exc:
        code = answers[-1] if answers else None
        if code in (401, 403):
            return Check(False, f"Supabase refused the key ({code}): check EZREC_SUPABASE_KEY")
        return Check(False, f"Supabase answered {code or error_text(exc)} for table bookings")
    return Check(True, f"Supabase {settings.supabase_url}: bookings readable")


def error_text(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None)
    if code or message:
        details = getattr(exc, "details", None)
        more = f" ({details})" if details and isinstance(details, str) else ""
        return f"{type(exc).__name__} {code or ''}: {message or ''}{more}".replace(" :", ":")
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def is_rejected_row(exc: BaseException) -> bool:
    """The server refused this row's content (SQLSTATE 22xxx data, 23xxx constraint)."""
    from postgrest.exceptions import APIError

    code = getattr(exc, "code", None) if isinstance(exc, APIError) else None
    return bool(code) and len(str(code)) == 5 and str(code)[:2] in ("22", "23")


class BookingSystem:
    """The requests the sync makes, on one client; network and server errors raise."""

    def __init__(self, client: Client, *, media_bucket: str) -> None:
        self.client = client
        self.media_bucket = media_bucket

    def bookings(self, camera_id: str, ending_after: datetime, limit: int) -> list[dict[str, Any]]:
        """This camera's bookings whose slot has not ended (cancelled ones included)."""
        response = (
            self.client.table("bookings")
            .select("*")
            .eq("camera_id", camera_id)
            .gte("end_time", ending_after.astimezone(UTC).isoformat())
            .order("start_time")
            .limit(limit)
            .execute()
        )
        return [row for row in response.data if isinstance(row, dict)]

    def user_media(
        self, user_ids: Iterable[str], expires_s: int
    ) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Each user's intro, logo and sponsor logos from `user_settings`, as fetchable URLs,
        and a line for each item that could not be had (the venue's own media stand in).

        A bare storage key becomes a URL of the media bucket signed for `expires_s`.
        """
        users = sorted(set(user_ids))
        if not users:
            return {}, []
        from postgrest.exceptions import APIError

        notes: list[str] = []
        try:
            response = (
                self.client.table("user_settings").select("*").in_("user_id", users).execute()
            )
        except APIError as exc:  # no table, no right to read it: book without user media
            return {}, [f"user_settings not readable: {error_text(exc)}"]
        out: dict[str, dict[str, Any]] = {}
        for row in response.data:
            if not isinstance(row, dict) or not row.get("user_id"):
                continue
            media: dict[str, Any] = {}
            for column, name in zip(MEDIA_COLUMNS, ("intro", "logo"), strict=True):
                url = self.media_url(row.get(column), expires_s, notes)
                if url:
                    media[name] = url
            sponsors = [self.media_url(row.get(c), expires_s, notes) for c in SPONSOR_COLUMNS]
            if any(sponsors):
                media["sponsors"] = [s for s in sponsors if s]
            out[str(row["user_id"])] = media
        return out, notes

    def media_url(self, value: Any, expires_s: int, notes: list[str]) -> str | None:
        if not value or not isinstance(value, str) or not value.strip():
            return None
        value = value.strip()
        if value.startswith(("http://", "https://")):
            return value
        from storage3.exceptions import StorageApiError

        bucket = self.media_bucket
        key = value.lstrip("/").removeprefix(f"{bucket}/")
        try:
            signed = self.client.storage.from_(bucket).create_signed_url(key, expires_s)
        except StorageApiError as exc:  # the object is gone, or no right to sign it
            notes.append(f"media {bucket}/{key} not available: {exc.message}")
            return None
        url = signed.get("signedURL") or signed.get("signedUrl")
        return str(url) if url else None

    def update_booking(
        self, booking_id: str, patch: dict[str, Any], *, unless_cancelled: bool
    ) -> None:
        """Matching no row is fine: a booking made on the box itself is unknown up there."""
        query = (
            self.client.table("bookings")
            .update(patch, returning=MINIMAL)
            .eq("id", booking_id)
        )
        if unless_cancelled:
            query = query.or_(NOT_CANCELLED)
        query.execute()

    def upsert_video(self, row: dict[str, Any]) -> None:
        from postgrest.exceptions import APIError

        def upsert(values: dict[str, Any]) -> None:
            self.client.table("videos").upsert(
                values, on_conflict="booking_id", returning=MINIMAL
            ).execute()

        try:
            upsert(row)
        except APIError as exc:
            if getattr(exc, "code", None) != "PGRST204":  # "no such column"
                raise
            # A booking system set up before replays lacks their columns: the video itself
            # must still arrive (its status update waits behind this row).
            log.warning("the videos table has no %s column(s) (docs/cloud-sync.md): "
                        "sending the video without clips and share links",
                        "/".join(REPLAY_COLUMNS))
            upsert({k: v for k, v in row.items() if k not in REPLAY_COLUMNS})

    def upsert_status(self, row: dict[str, Any]) -> None:
        """The box's `system_status` row, and its `cameras` row's status and last sight."""
        self.client.table("system_status").upsert(
            row, on_conflict="device_id", returning=MINIMAL
        ).execute()
        self.client.table("cameras").update(
            {"status": row["status"], "last_seen": row["last_seen"]}, returning=MINIMAL
        ).eq("id", row["device_id"]).execute()


# -- the rows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteBooking:
    """A `bookings` row as the sync reads it; its times are parsed on demand (`times`), so
    that a cancelled row with unreadable times still cancels."""

    id: str
    status: str  # lower case, "" when empty
    user_id: str | None
    row: dict[str, Any]

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RemoteBooking:
        status = row.get("status") if row.get("status") is not None else row.get("state")
        return cls(
            id=str(row.get("id") or ""),
            status=str(status or "").strip().lower(),
            user_id=str(row["user_id"]) if row.get("user_id") else None,
            row=row,
        )

    @property
    def cancelled(self) -> bool:
        return self.status in CANCELLED_WORDS

    def times(self) -> tuple[datetime, datetime]:
        """(start, end), aware; ValueError when either is missing or unreadable."""
        day = self.row.get("date")
        return parse_remote_time(self.row.get("start_time"), day), parse_remote_time(
            self.row.get("end_time"), day
        )


def parse_remote_time(value: Any, day: Any = None) -> datetime:
    """A remote timestamp as an aware datetime.

    `timestamptz` columns arrive with an offset. The seed schema also has a `date` column
    with bare `HH:MM` times, and naive timestamps: those are wall-clock times at the venue,
    i.e. in the box's own time zone.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            if day is None:
                raise ValueError(f"time {value!r} has no date") from None
            day_value = day if isinstance(day, date) else date.fromisoformat(str(day)[:10])
            parsed = datetime.combine(day_value, dtime.fromisoformat(text))
    else:
        raise ValueError(f"missing or empty time {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # the box's local zone
    return parsed.astimezone(UTC)


def booking_patch(booking: dict[str, Any], *, with_times: bool) -> dict[str, Any]:
    """The `bookings` update for one of our bookings (an outbox payload's `booking`)."""
    patch: dict[str, Any] = {"status": booking["state"]}
    if booking.get("video_url"):
        patch["video_url"] = booking["video_url"]
    if with_times:
        patch["start_time"] = booking["start_time"]
        patch["end_time"] = booking["end_time"]
    return patch


def video_row(booking: dict[str, Any]) -> dict[str, Any] | None:
    """The seed system's `videos` row for an uploaded booking (None without a user)."""
    if not booking.get("user_id"):
        return None
    extra = booking.get("extra") or {}
    uploaded = (extra.get("uploaded") or [{}])[0]
    key = str(uploaded.get("key") or "")
    duration = extra.get("duration_s")
    start = datetime.fromisoformat(booking["start_time"])
    share = extra.get("share") if isinstance(extra.get("share"), dict) else {}
    links = {item["name"]: item for item in share.get("links") or []}
    keys = {o.get("key"): o for o in extra.get("uploaded") or []}
    clips = []
    for clip in extra.get("clips") or []:
        name = clip.get("name")
        stored = next((o for k, o in keys.items() if str(k).endswith(f"-{name}.mp4")), {})
        clips.append({
            "name": name, "from": clip.get("from"), "to": clip.get("to"),
            "marks": clip.get("marks"), "storage_path": stored.get("key"),
            "video_url": stored.get("url"), "share_url": links.get(name, {}).get("url"),
        })  # fmt: skip
    return {
        "clips": clips,
        "share_url": links.get("video", {}).get("url"),
        "share_expires_at": share.get("expires_at"),
        "booking_id": booking["id"],
        "user_id": booking["user_id"],
        "video_url": booking.get("video_url") or uploaded.get("url"),
        "storage_path": key or None,
        "filename": key.rsplit("/", 1)[-1] or None,
        # The day of the game at the venue, as a person would file it.
        "date": start.astimezone().date().isoformat(),
        "duration_seconds": round(float(duration)) if duration is not None else None,
        "uploaded_at": uploaded.get("uploaded_at") or booking.get("updated_at"),
        "size": uploaded.get("size"),
    }


def status_row(device_id: str, status: dict[str, Any], now: str) -> dict[str, Any]:
    """The `system_status` row for this device, from the `status.collect` dictionary.

    Its `status` is the device's (offline / recording / degraded / online), not a booking's.
    """
    supervisor = status.get("supervisor") or {}
    system = status.get("system") or {}
    cameras = status.get("cameras") or []
    recording = list(supervisor.get("recording") or [])
    cameras_up = sum(1 for c in cameras if isinstance(c, dict) and c.get("up"))
    if not supervisor.get("running"):
        overall = "offline"
    elif recording:
        overall = "recording"
    elif (cameras and cameras_up < len(cameras)) or not (status.get("disk") or {}).get("ok", True):
        overall = "degraded"
    else:
        overall = "online"
    return {
        "device_id": device_id,
        "status": overall,
        "is_recording": bool(recording),
        "cpu_usage": system.get("cpu_percent"),
        "memory_usage": system.get("memory_percent"),
        "disk_free_mb": (status.get("disk") or {}).get("free_mb"),
        "temperature_c": system.get("temperature_c"),
        "cameras_up": cameras_up,
        "queue": status.get("queue") or {},
        "last_errors": list(status.get("last_errors") or [])[-10:],
        "last_seen": now,
        "details": status,
    }
