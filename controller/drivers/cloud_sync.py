"""Two-way sync with the booking system (Supabase), offline-safe.

Down: `pull()` reads this device's bookings from the `bookings` table and feeds them into the
local state machine (new ones created with their id kept, rescheduled ones rescheduled while
still `confirmed`, cancelled ones cancelled). The user's own media (`user_settings`) is
resolved once, when the booking is created, into `extra["media"]`.

Up: `push()` drains the local outbox (every booking change, written in the same transaction
as the change) in order, at least once; each write is idempotent on the far side (an update
that sets the same values, an upsert on a unique column), so a redelivered row is harmless.
`push_status()` upserts this device's `system_status` row and its `cameras` row.

The local database stays the source of truth for what the box is doing: a pull never touches
a booking that has started recording, and a network outage only delays what is pushed.

This is a driver: it knows neither the state machine's classes nor the supervisor. The store
is anything with the few methods of `BookingSource`, the status a callable that returns the
`status.collect` dictionary.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import TYPE_CHECKING, Any, Protocol

from controller.config import Settings
from controller.dbhealth import describe, is_unavailable

if TYPE_CHECKING:
    from supabase import Client

log = logging.getLogger("ezrec.sync")

VIDEO_UPLOADED = "video_uploaded"  # the booking state names are the contract (DESIGN.md)

# Remote statuses that mean "the customer or the venue cancelled this booking".
CANCELLED_WORDS = frozenset({"cancelled", "canceled", "cancel"})
# States the box itself pushes after `confirmed`. A remote row in one of them that the local
# database does not know (a wiped SD card) is history, not a new booking to record again.
PUSHED_STATES = frozenset(
    {
        "recording", "completed", "video_processed", "video_uploaded", "recording_failed",
        "processing_failed", "upload_failed", "missed",
    }
)
# The pull may change a local booking only while nothing has been recorded for it.
RESCHEDULABLE = frozenset({"confirmed"})
CANCELLABLE = frozenset({"confirmed", "recording_failed"})
MEDIA_COLUMNS = ("intro_video_path", "logo_path")
SPONSOR_COLUMNS = ("sponsor_logo1_path", "sponsor_logo2_path", "sponsor_logo3_path")
BOOKING_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# PostgREST `or` filter: status empty or not a cancellation (NOT IN alone drops NULLs).
NOT_CANCELLED = "status.is.null,status.not.ilike.cancel*"

PULL_LIMIT = 500
PUSH_BATCH = 100
# A row the booking system rejects for its content (a constraint or a bad value: SQLSTATE
# classes 22 and 23) would block the ordered queue forever; after this many tries it is set
# aside (kept, marked delivered with its error) so that later changes still get through.
# Anything else (network, 5xx, auth, a missing table) is retried without end.
GIVE_UP_AFTER = 5
MAX_BACKOFF_S = 300.0
# A signed media URL must outlive the booking's build, which may be days after the pull.
MEDIA_URL_SLACK = timedelta(days=7)
REQUEST_TIMEOUT_S = 20.0

StatusFn = Callable[[], dict[str, Any]]
# Writes ask for no rows back (`Prefer: return=minimal`): less traffic, and no need for
# read rights on the tables the box only writes to.
MINIMAL: Any = "minimal"


class SyncError(Exception):
    """Sync is not configured or a step failed; the message is meant for a person."""


class LocalBooking(Protocol):
    id: str
    state: str
    version: int
    user_id: str | None
    start_time: datetime
    end_time: datetime


class OutboxEntry(Protocol):
    id: int
    attempts: int

    @property
    def data(self) -> dict[str, Any]: ...


class BookingSource(Protocol):
    """The part of the booking store the sync uses (controller.fsm.BookingStore)."""

    def list(
        self,
        state: str | Sequence[str] | None = None,
        start_from: datetime | None = None,
        start_to: datetime | None = None,
        limit: int | None = None,
    ) -> Sequence[LocalBooking]: ...

    def create(
        self,
        start: datetime,
        end: datetime,
        *,
        booking_id: str | None = None,
        user_id: str | None = None,
        camera_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Any: ...

    def fire(self, booking_id: str, trigger: str, **kwargs: Any) -> Any: ...
    def outbox_pending(self, limit: int = 100) -> Sequence[OutboxEntry]: ...
    def outbox_delivered(self, row_id: int) -> None: ...
    def outbox_failed(self, row_id: int, error: str) -> None: ...
    def kv_set(self, key: str, value: Any) -> None: ...


@dataclass
class PullResult:
    seen: int = 0
    created: list[str] = field(default_factory=list)
    rescheduled: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    # Remote rows the local machine refused (overlap, slot over, bad id...), with the reason.
    refused: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class PushResult:
    delivered: int = 0
    set_aside: int = 0
    error: str | None = None  # the first failure, where delivery stopped


def is_configured(settings: Settings) -> bool:
    return bool(settings.supabase_url and settings.supabase_key)


def make_client(settings: Settings) -> Client:
    """The supabase client for the configured URL and key, without retries of its own.

    Retries are ours (the worker's backoff), so that a dead network costs one failed request
    per round, not the client's built-in 1 + 2 + 4 s of sleeping on every call.
    """
    if not is_configured(settings):
        raise SyncError("EZREC_SUPABASE_URL and EZREC_SUPABASE_KEY must both be set")
    # Imported here: supabase pulls in a lot, and most commands never talk to it.
    import httpx
    from supabase import SupabaseException, create_client
    from supabase.lib.client_options import SyncClientOptions

    assert settings.supabase_url and settings.supabase_key
    options = SyncClientOptions(
        postgrest_client_retry=False,
        # Our own HTTP client: a bounded timeout, and one connection pool for all calls.
        httpx_client=httpx.Client(timeout=REQUEST_TIMEOUT_S, follow_redirects=True),
        auto_refresh_token=False,
        persist_session=False,
    )
    try:
        return create_client(
            settings.supabase_url, settings.supabase_key.get_secret_value(), options
        )
    except SupabaseException as exc:  # a malformed URL
        raise SyncError(f"EZREC_SUPABASE_URL {settings.supabase_url!r}: {exc}") from None


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


def _remote_status(row: dict[str, Any]) -> str:
    value = row.get("status") if row.get("status") is not None else row.get("state")
    return str(value or "").strip().lower()


class SupabaseSync:
    """One round of pull, push and status push; `SyncWorker` repeats it in a thread."""

    def __init__(
        self,
        settings: Settings,
        store: BookingSource,
        *,
        client: Client | None = None,
        status_fn: StatusFn | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.client = client or make_client(settings)
        self.status_fn = status_fn
        self.clock = clock or (lambda: datetime.now(UTC))
        self.device_id = settings.device_id
        # Refusals already logged, so that a booking refused on every pull is logged once.
        self._told: set[tuple[str, str]] = set()

    # -- down: bookings and media ----------------------------------------------------------

    def fetch_bookings(self, now: datetime) -> list[dict[str, Any]]:
        """This device's bookings whose slot has not ended (cancelled ones included)."""
        response = (
            self.client.table("bookings")
            .select("*")
            .eq("camera_id", self.device_id)
            .gte("end_time", now.astimezone(UTC).isoformat())
            .order("start_time")
            .limit(PULL_LIMIT)
            .execute()
        )
        return [row for row in response.data if isinstance(row, dict)]

    def pull(self) -> PullResult:
        """Bring new, rescheduled and cancelled bookings into the local state machine.

        Network or server errors raise (the whole pull is retried next round); a single row
        that the local machine refuses is reported in `refused` and skipped.
        """
        now = self.clock()
        result = PullResult()
        rows = self.fetch_bookings(now)
        result.seen = len(rows)
        local = {b.id: b for b in self.store.list(start_from=now)}
        new_rows: list[tuple[dict[str, Any], datetime, datetime]] = []
        for row in rows:
            booking_id = str(row.get("id") or "")
            status = _remote_status(row)
            if not BOOKING_ID.match(booking_id):
                self._refuse(result, booking_id or "?", "id is not 1-64 of A-Z a-z 0-9 _ -")
                continue
            mine = local.get(booking_id)
            if status in CANCELLED_WORDS:
                if mine is not None:
                    self._cancel(result, mine)
                continue
            try:
                start = parse_remote_time(row.get("start_time"), row.get("date"))
                end = parse_remote_time(row.get("end_time"), row.get("date"))
            except ValueError as exc:
                self._refuse(result, booking_id, f"bad time: {exc}")
                continue
            if mine is None:
                if status not in PUSHED_STATES:
                    new_rows.append((row, start, end))
            elif (start, end) != (mine.start_time, mine.end_time):
                self._reschedule(result, mine, start, end)
        if new_rows:
            media = self.user_media({str(r["user_id"]) for r, _, _ in new_rows if r.get("user_id")},
                                    max(end for _, _, end in new_rows), result)
            for row, start, end in new_rows:
                user = str(row["user_id"]) if row.get("user_id") else None
                self._create(result, row, start, end, media.get(user or "", {}))
        return result

    def _create(
        self,
        result: PullResult,
        row: dict[str, Any],
        start: datetime,
        end: datetime,
        media: dict[str, Any],
    ) -> None:
        booking_id = str(row["id"])
        extra: dict[str, Any] = {"source": "supabase"}
        if media:
            extra["media"] = media
        try:
            self.store.create(
                start,
                end,
                booking_id=booking_id,
                user_id=str(row["user_id"]) if row.get("user_id") else None,
                extra=extra,
            )
        except Exception as exc:  # the machine's own refusals: overlap, slot over, bad input
            self._refuse(result, booking_id, str(exc))
            return
        result.created.append(booking_id)
        log.info("booking %s pulled from the booking system", booking_id)

    def _reschedule(
        self, result: PullResult, mine: LocalBooking, start: datetime, end: datetime
    ) -> None:
        if mine.state not in RESCHEDULABLE:
            self._refuse(result, mine.id, f"not rescheduled: it is {mine.state} here")
            return
        try:
            self.store.fire(
                mine.id,
                "reschedule",
                expected_version=mine.version,
                detail="rescheduled by the booking system",
                changes={"start_time": start, "end_time": end},
            )
        except Exception as exc:  # overlap, or the supervisor started it meanwhile
            self._refuse(result, mine.id, f"not rescheduled: {exc}")
            return
        result.rescheduled.append(mine.id)

    def _cancel(self, result: PullResult, mine: LocalBooking) -> None:
        if mine.state == "cancelled":
            return
        if mine.state not in CANCELLABLE:
            self._refuse(result, mine.id, f"not cancelled: it is {mine.state} here")
            return
        try:
            self.store.fire(
                mine.id,
                "cancel",
                expected_version=mine.version,
                detail="cancelled by the booking system",
            )
        except Exception as exc:
            self._refuse(result, mine.id, f"not cancelled: {exc}")
            return
        result.cancelled.append(mine.id)

    def _refuse(self, result: PullResult, booking_id: str, reason: str) -> None:
        result.refused[booking_id] = reason
        if (booking_id, reason) not in self._told:
            self._told.add((booking_id, reason))
            log.warning("booking %s from the booking system: %s", booking_id, reason)

    def user_media(
        self, user_ids: Iterable[str], valid_until: datetime, result: PullResult | None = None
    ) -> dict[str, dict[str, Any]]:
        """Each user's intro, logo and sponsor logos from `user_settings`, as fetchable URLs.

        A bare storage key becomes a signed URL of the media bucket that stays valid until a
        week after `valid_until`. A media item that cannot be resolved is left out (the
        venue's own media is used instead) and noted; a network error raises.
        """
        users = sorted(set(user_ids))
        if not users:
            return {}
        from postgrest.exceptions import APIError

        try:
            response = (
                self.client.table("user_settings").select("*").in_("user_id", users).execute()
            )
        except APIError as exc:  # no table, no right to read it: book without user media
            self._note(result, f"user_settings not readable: {error_text(exc)}")
            return {}
        expires = valid_until + MEDIA_URL_SLACK - self.clock()
        expires_s = max(3600, int(expires.total_seconds()))
        out: dict[str, dict[str, Any]] = {}
        for row in response.data:
            if not isinstance(row, dict) or not row.get("user_id"):
                continue
            media: dict[str, Any] = {}
            for column, name in zip(MEDIA_COLUMNS, ("intro", "logo"), strict=True):
                url = self.media_url(row.get(column), expires_s, result)
                if url:
                    media[name] = url
            sponsors = [self.media_url(row.get(c), expires_s, result) for c in SPONSOR_COLUMNS]
            if any(sponsors):
                media["sponsors"] = [s for s in sponsors if s]
            out[str(row["user_id"])] = media
        return out

    def media_url(self, value: Any, expires_s: int, result: PullResult | None = None) -> str | None:
        if not value or not isinstance(value, str) or not value.strip():
            return None
        value = value.strip()
        if value.startswith(("http://", "https://")):
            return value
        from storage3.exceptions import StorageApiError

        bucket = self.settings.supabase_media_bucket
        key = value.lstrip("/").removeprefix(f"{bucket}/")
        try:
            signed = self.client.storage.from_(bucket).create_signed_url(key, expires_s)
        except StorageApiError as exc:  # the object is gone, or no right to sign it
            self._note(result, f"media {bucket}/{key} not available: {exc.message}")
            return None
        url = signed.get("signedURL") or signed.get("signedUrl")
        return str(url) if url else None

    def _note(self, result: PullResult | None, line: str) -> None:
        if result is not None:
            result.notes.append(line)
        if ("", line) not in self._told:
            self._told.add(("", line))
            log.warning("%s", line)

    # -- up: the outbox --------------------------------------------------------------------

    def push(self, stop: threading.Event | None = None) -> PushResult:
        """Deliver pending outbox rows in order; stop at the first failure."""
        result = PushResult()
        while stop is None or not stop.is_set():
            rows = self.store.outbox_pending(PUSH_BATCH)
            for row in rows:
                if stop is not None and stop.is_set():
                    return result
                try:
                    self.deliver(row.data)
                except Exception as exc:
                    text = error_text(exc)
                    self.store.outbox_failed(row.id, text)
                    if is_rejected_row(exc) and row.attempts + 1 >= GIVE_UP_AFTER:
                        # Set aside, never silently: the row keeps its error and attempts.
                        self.store.outbox_delivered(row.id)
                        result.set_aside += 1
                        log.error("outbox row %s set aside after %s tries: %s",
                                  row.id, row.attempts + 1, text)
                        continue
                    result.error = text
                    return result
                self.store.outbox_delivered(row.id)
                result.delivered += 1
            if len(rows) < PUSH_BATCH:
                break
        return result

    def deliver(self, payload: dict[str, Any]) -> None:
        """Apply one outbox payload to the booking system; idempotent, raises on failure."""
        booking = payload["booking"]
        change = payload.get("change") or {}
        patch: dict[str, Any] = {"status": booking["state"]}
        if booking.get("video_url"):
            patch["video_url"] = booking["video_url"]
        if change.get("trigger") == "reschedule":
            patch["start_time"] = booking["start_time"]
            patch["end_time"] = booking["end_time"]
        uploaded_now = change.get("to") == VIDEO_UPLOADED and change.get("from") != VIDEO_UPLOADED
        # A pushed note on an uploaded booking: its share links were made, renewed or revoked.
        share_news = change.get("trigger") == "note" and booking["state"] == VIDEO_UPLOADED
        if uploaded_now or share_news:
            # The video row goes first: whoever sees `video_uploaded` up there must find it.
            row = video_row(booking)
            if row is not None:
                self._upsert_video(row)
        # Matching no row is fine: a booking made on the box itself is unknown up there.
        query = (
            self.client.table("bookings")
            .update(patch, returning=MINIMAL)
            .eq("id", booking["id"])
        )
        if booking["state"] != "cancelled":
            # A cancellation made up there since our last pull must not be overwritten by
            # older news from here: the next pull brings it down (or reports why it cannot).
            query = query.or_(NOT_CANCELLED)
        query.execute()

    def _upsert_video(self, row: dict[str, Any]) -> None:
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

    # -- up: health ------------------------------------------------------------------------

    def push_status(self) -> None:
        if self.status_fn is None:
            raise SyncError("no status source given")
        status = self.status_fn()
        now = self.clock().astimezone(UTC).isoformat()
        row = status_row(self.device_id, status, now)
        self.client.table("system_status").upsert(
            row, on_conflict="device_id", returning=MINIMAL
        ).execute()
        self.client.table("cameras").update(
            {"status": row["status"], "last_seen": now}, returning=MINIMAL
        ).eq("id", self.device_id).execute()

    # -- one round -------------------------------------------------------------------------

    def run_once(self, stop: threading.Event | None = None) -> dict[str, Any]:
        """Pull, push, push status; each step on its own so that one failing does not stop
        the others. Returns what happened, also kept in the store's `sync` key."""
        report: dict[str, Any] = {"at": self.clock().isoformat(), "errors": []}
        try:
            pulled = self.pull()
            report["pull"] = {
                "seen": pulled.seen,
                "created": pulled.created,
                "rescheduled": pulled.rescheduled,
                "cancelled": pulled.cancelled,
                "refused": pulled.refused,
                "notes": pulled.notes,
            }
        except Exception as exc:
            report["errors"].append(f"pull: {error_text(exc)}")
        pushed = self.push(stop)
        report["push"] = {"delivered": pushed.delivered, "set_aside": pushed.set_aside}
        if pushed.error:
            report["errors"].append(f"push: {pushed.error}")
        # Counted up to one batch: "100+" is all a person needs to know.
        report["pending"] = len(self.store.outbox_pending(PUSH_BATCH + 1))
        if self.status_fn is not None:
            try:
                self.push_status()
                report["status_pushed"] = True
            except Exception as exc:
                report["status_pushed"] = False
                report["errors"].append(f"status: {error_text(exc)}")
        try:
            self.store.kv_set("sync", report)
        except Exception as exc:  # the database is busy: the next round writes it again
            log.debug("could not record the sync report: %s", exc)
        return report


# Columns of `videos` that only a booking system set up for replays has.
REPLAY_COLUMNS = ("clips", "share_url", "share_expires_at")


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
    """The `system_status` row for this device, from the `status.collect` dictionary."""
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


class SyncWorker(threading.Thread):
    """Runs `SupabaseSync.run_once` every `interval_s`, sooner when woken; never raises out.

    After a failed round it waits longer (doubling up to MAX_BACKOFF_S, with jitter), so a
    long outage costs a request every few minutes, and the outbox simply grows meanwhile.
    """

    def __init__(
        self,
        sync: SupabaseSync,
        interval_s: float,
        *,
        max_backoff_s: float = MAX_BACKOFF_S,
        rng: random.Random | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="supabase-sync", daemon=True)
        self.sync = sync
        # Called after a pull changed local bookings, so the supervisor looks at them now
        # instead of at the end of a long idle sleep.
        self.on_change = on_change
        self.interval_s = interval_s
        self.max_backoff_s = max(max_backoff_s, interval_s)
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._rng = rng or random.Random()
        self.failures = 0
        self.rounds = 0
        self.last_report: dict[str, Any] | None = None

    def wake(self) -> None:
        """Push now (a booking changed) instead of at the next tick; not while backing off."""
        self._wake.set()

    def stop(self, timeout: float | None = 10.0) -> None:
        self.stop_event.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    def delay(self) -> float:
        if self.failures == 0:
            return self.interval_s
        base = min(self.max_backoff_s, self.interval_s * 2 ** min(self.failures, 16))
        return base * (0.5 + self._rng.random() / 2)

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                report = self.sync.run_once(self.stop_event)
                self.last_report = report
                pulled = report.get("pull") or {}
                changed = any(pulled.get(k) for k in ("created", "rescheduled", "cancelled"))
                if changed and self.on_change is not None:
                    self.on_change()
                self.failures = self.failures + 1 if report["errors"] else 0
                if report["errors"]:
                    log.warning("sync round failed (%s in a row): %s",
                                self.failures, "; ".join(report["errors"]))
            except Exception as exc:  # a bug must not kill the thread: log it, try again later
                self.failures += 1
                if is_unavailable(exc):  # our own database is away: the loop says so already
                    log.warning("sync round skipped: %s", describe(exc))
                else:
                    log.exception("sync round crashed")
            self.rounds += 1
            self._sleep(started + self.delay())

    def _sleep(self, until: float) -> None:
        # A wake cuts a normal pause short, but not a back-off: during an outage every state
        # change would otherwise hammer the far side at once.
        while not self.stop_event.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return
            woken = self._wake.wait(left)
            self._wake.clear()
            if woken and self.failures == 0:
                return


def start_sync(
    settings: Settings,
    store: BookingSource,
    *,
    status_fn: StatusFn | None,
    interval_s: float | None = None,
    on_change: Callable[[], None] | None = None,
) -> SyncWorker | None:
    """Start the sync thread, or return None when Supabase is not configured.

    `status_fn` is `lambda: controller.status.collect(settings, store)`: passed in because a
    driver does not import the layers above it.
    """
    if not is_configured(settings):
        return None
    sync = SupabaseSync(settings, store, status_fn=status_fn)
    worker = SyncWorker(sync, interval_s or settings.supabase_sync_s, on_change=on_change)
    worker.start()
    return worker
