"""Bookings persisted through the state machine.

Every change of a booking goes through `BookingStore.fire`: one database transaction writes
the new state, an append-only history row and a version bump, conditional on the version that
was read. A stale write changes nothing and raises StaleVersion; an invalid trigger raises
InvalidTrigger before anything is written. The CLI, the API and the supervisor all use this
class, so there is exactly one way a booking changes.
"""

from __future__ import annotations

import json
import logging
import random
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller.db import (
    Booking,
    Database,
    KeyValue,
    OutboxRow,
    SlotLock,
    TransitionRow,
    upsert,
    utcnow,
)
from controller.fsm.machine import (
    COMPLETED,
    CONFIRMED,
    FAILED_STATES,
    LIVE_STATES,
    RECORDING,
    RECORDING_FAILED,
    STATES,
    VIDEO_PROCESSED,
    VIDEO_UPLOADED,
    next_state,
)
from controller.fsm.retry import RetryPolicy

log = logging.getLogger("ezrec.store")

BOOKING_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
USER_ID = re.compile(r"^[A-Za-z0-9_.@:-]{1,128}$")
# Where the player's video links are mailed (extra["contact_email"]); one plain address.
EMAIL = re.compile(r"^[^@\s<>,;\"]{1,64}@[^@\s<>,;\"]{1,253}$")
# Columns a transition may change besides the state machine's own bookkeeping.
CHANGEABLE = frozenset(
    {"raw_dir", "processed_path", "video_url", "start_time", "end_time", "extra"}
)
SUCCESS_TRIGGERS = frozenset({"start", "finish", "process", "upload"})


class BookingError(Exception):
    """Base of every error a caller can fix; the message is meant for a person."""


class NotFound(BookingError):
    pass


class InvalidBooking(BookingError):
    pass


class Conflict(BookingError):
    def __init__(self, message: str, other_id: str | None = None) -> None:
        super().__init__(message)
        self.other_id = other_id


class StaleVersion(BookingError):
    def __init__(self, booking_id: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"booking {booking_id} changed meanwhile (version {actual}, expected {expected}); "
            "nothing was written: read it again and retry"
        )
        self.booking_id, self.expected, self.actual = booking_id, expected, actual


@dataclass(frozen=True)
class Due:
    """The work the supervisor should look at now, and when to look again."""

    bookings: list[Booking]
    next_wakeup: datetime | None


def _outbox(
    booking: dict[str, Any],
    kind: str,
    change: dict[str, Any] | None,
    now: datetime,
    values: dict[str, Any] | None = None,
) -> OutboxRow:
    snapshot = dict(booking)
    for key, value in (values or {}).items():
        if key == "extra_json":
            snapshot["extra"] = json.loads(value)
        elif key in snapshot:
            snapshot[key] = value.isoformat() if isinstance(value, datetime) else value
    payload = {"booking": snapshot, "change": change, "at": now.isoformat()}
    return OutboxRow(
        booking_id=snapshot["id"],
        seq=int(snapshot.get("version") or 0),
        kind=kind,
        payload=json.dumps(payload, sort_keys=True, default=str),
        created_at=now,
        attempts=0,
    )


def _aware(value: datetime | None) -> datetime | None:
    # Aggregates (min) bypass the column type, so the UTC tag must be put back by hand.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def new_booking_id(now: datetime) -> str:
    return f"bk-{now:%Y%m%d-%H%M}-{secrets.token_hex(5)}"


def check_times(start: datetime, end: datetime, max_length: timedelta) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidBooking(
            "times must carry a UTC offset (e.g. 2026-11-23T18:00:00+01:00); naive times are "
            "refused, not guessed"
        )
    if end <= start:
        raise InvalidBooking(f"end {end.isoformat()} is not after start {start.isoformat()}")
    if end - start > max_length:
        raise InvalidBooking(
            f"booking is {end - start} long; the maximum is {max_length} (EZREC_MAX_BOOKING_H)"
        )


class BookingStore:
    def __init__(
        self,
        db: Database,
        *,
        device_id: str,
        policy: RetryPolicy | None = None,
        max_length: timedelta = timedelta(hours=12),
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.device_id = device_id
        self.policy = policy or RetryPolicy()
        self.max_length = max_length
        self.clock = clock
        self.rng = rng
        # Called after a commit that queued outbox rows (the sync pushes them now, not at its
        # next tick). Called from whichever thread wrote: keep them quick and thread-safe.
        self.on_outbox: list[Callable[[], None]] = []

    # -- reading ---------------------------------------------------------------------------

    def get(self, booking_id: str) -> Booking:
        with self.db.reader() as session:
            booking = session.get(Booking, booking_id)
            if booking is None:
                raise NotFound(f"no booking {booking_id!r}")
            return booking

    def history(self, booking_id: str) -> list[TransitionRow]:
        with self.db.reader() as session:
            rows = session.scalars(
                select(TransitionRow)
                .where(TransitionRow.booking_id == booking_id)
                .order_by(TransitionRow.seq)
            )
            return list(rows)

    def list(
        self,
        state: str | Sequence[str] | None = None,
        start_from: datetime | None = None,
        start_to: datetime | None = None,
        limit: int | None = None,
    ) -> list[Booking]:
        query = select(Booking).order_by(Booking.start_time, Booking.id)
        if state:
            states = [state] if isinstance(state, str) else list(state)
            for name in states:
                if name not in STATES:
                    raise InvalidBooking(f"unknown state {name!r} (known: {', '.join(STATES)})")
            query = query.where(Booking.state.in_(states))
        if start_from:
            query = query.where(Booking.end_time > start_from)
        if start_to:
            query = query.where(Booking.start_time < start_to)
        if limit:
            query = query.limit(limit)
        with self.db.reader() as session:
            return list(session.scalars(query))

    def uploaded_with_files(self) -> list[Booking]:
        """Uploaded bookings whose local files are still on disk (for the retention rule)."""
        query = select(Booking).where(
            Booking.state == VIDEO_UPLOADED, Booking.raw_dir.is_not(None)
        )
        with self.db.reader() as session:
            return list(session.scalars(query))

    def counts(self) -> dict[str, int]:
        with self.db.reader() as session:
            rows = session.execute(select(Booking.state, func.count()).group_by(Booking.state))
            found = {state: count for state, count in rows}
        return {state: found.get(state, 0) for state in STATES}

    def due(self, now: datetime, preroll_s: float = 0.0) -> Due:
        """Bookings with work due at `now`, and the earliest time something else falls due.

        Each branch is one indexed range scan (state, time), so this stays cheap with a long
        history of finished bookings.
        """
        horizon = now + timedelta(seconds=preroll_s)
        query = select(Booking).where(
            or_(
                and_(Booking.state == CONFIRMED, Booking.start_time <= horizon),
                Booking.state == RECORDING,
                Booking.state.in_((COMPLETED, VIDEO_PROCESSED)),
                and_(Booking.state.in_(FAILED_STATES), Booking.next_attempt_at <= now),
                # Slot over: its footage is delivered (or it is missed), attempts or not.
                and_(Booking.state == RECORDING_FAILED, Booking.end_time <= now),
            )
        ).order_by(Booking.start_time)
        lead = timedelta(seconds=preroll_s)
        with self.db.reader() as session:
            bookings = list(session.scalars(query))
            candidates = [
                session.scalar(
                    select(func.min(Booking.start_time)).where(
                        Booking.state == CONFIRMED, Booking.start_time > horizon
                    )
                ),
                session.scalar(
                    select(func.min(Booking.end_time)).where(
                        Booking.state.in_((RECORDING, RECORDING_FAILED)), Booking.end_time > now
                    )
                ),
                session.scalar(
                    select(func.min(Booking.next_attempt_at)).where(
                        Booking.state.in_(FAILED_STATES), Booking.next_attempt_at > now
                    )
                ),
            ]
        next_start, next_end, next_retry = (_aware(t) for t in candidates)
        times = [t for t in (next_start and next_start - lead, next_end, next_retry) if t]
        return Due(bookings, min(times) if times else None)

    # -- writing ---------------------------------------------------------------------------

    def create(
        self,
        start: datetime,
        end: datetime,
        *,
        booking_id: str | None = None,
        user_id: str | None = None,
        camera_id: str | None = None,
        extra: dict[str, Any] | None = None,
        allow_past: bool = False,
    ) -> Booking:
        now = self.clock()
        check_times(start, end, self.max_length)
        if not allow_past and end <= now:
            raise InvalidBooking(f"the slot ended already ({end.isoformat()})")
        booking_id = booking_id or new_booking_id(now)
        if not BOOKING_ID.fullmatch(booking_id):
            raise InvalidBooking("id must be 1-64 characters of A-Z a-z 0-9 _ -")
        if user_id is not None and not USER_ID.fullmatch(user_id):
            raise InvalidBooking("user_id must be 1-128 characters of A-Z a-z 0-9 _ . @ : -")
        email = (extra or {}).get("contact_email")
        if email is not None and not EMAIL.fullmatch(str(email)):
            raise InvalidBooking("contact_email must be one address such as player@example.com")
        camera = camera_id or self.device_id
        if not BOOKING_ID.fullmatch(camera):
            raise InvalidBooking("camera_id must be 1-64 characters of A-Z a-z 0-9 _ -")
        booking = Booking(
            id=booking_id,
            user_id=user_id,
            camera_id=camera,
            device_id=self.device_id,
            start_time=start,
            end_time=end,
            state=CONFIRMED,
            version=0,
            attempts=0,
            extra_json=json.dumps(extra or {}, sort_keys=True),
            created_at=now,
            updated_at=now,
        )
        try:
            with self.db.session() as session:
                self._lock_camera(session, camera)
                if session.get(Booking, booking_id) is not None:
                    raise Conflict(f"booking {booking_id} exists already", booking_id)
                self._check_overlap(session, camera, start, end, exclude=None)
                session.add(booking)
                session.add(_outbox(booking.to_dict(), "booking", None, now))
        except IntegrityError:
            raise Conflict(f"booking {booking_id} exists already", booking_id) from None
        self._outbox_written()
        return booking

    def fire(
        self,
        booking_id: str,
        trigger: str,
        *,
        expected_version: int | None = None,
        detail: str | None = None,
        error: str | None = None,
        admin: bool = False,
        changes: dict[str, Any] | None = None,
        retry_by: datetime | None = None,
        permanent: bool = False,
        within: Callable[[Session], None] | None = None,
        push: bool = False,
    ) -> Booking:
        """Apply `trigger` to the booking as one transaction; return the updated booking.

        `retry_by` caps the backoff of a `fail` (a recording is retried at the latest when
        its slot ends, so that what it recorded is finalised then); a `permanent` failure is
        one no retry can fix (bad credentials): it waits for an operator. `within` writes rows that
        belong to this change (a replay mark) in the same transaction, after the versioned
        update succeeded. `push` sends a `note` to the booking system too (a renewed share
        link); other notes stay local.
        """
        current = self.get(booking_id)
        if expected_version is not None and expected_version != current.version:
            raise StaleVersion(booking_id, expected_version, current.version)
        dest = next_state(current.state, trigger)
        changes = dict(changes or {})
        unknown = set(changes) - CHANGEABLE
        if unknown:
            raise ValueError(f"a transition cannot change {sorted(unknown)}")
        now = self.clock()
        values: dict[str, Any] = {
            "state": dest,
            "version": current.version + 1,
            "updated_at": now,
        }
        if "extra" in changes:
            merged = current.extra | changes.pop("extra")
            values["extra_json"] = json.dumps(merged, sort_keys=True)
        values.update(changes)
        if trigger == "fail":
            attempts = current.attempts + 1
            values["attempts"] = attempts
            retry_at = None if permanent else self.policy.next_attempt_at(attempts, now, self.rng)
            if retry_at is not None and retry_by is not None:
                retry_at = min(retry_at, max(retry_by, now))
            values["next_attempt_at"] = retry_at
            values["last_error"] = error or detail or "failed"
            values["progress"] = None
        elif trigger == "retry":
            values["next_attempt_at"] = None
            if admin:
                values["attempts"] = 0
        elif trigger == "rebuild":
            # A new build, not a new chance: attempts and the last error stay as they were.
            values["next_attempt_at"] = None
            values["progress"] = None
            values["progress_stage"] = None
        elif trigger in SUCCESS_TRIGGERS:
            values["attempts"] = 0
            values["next_attempt_at"] = None
            values["last_error"] = None
            values["progress"] = None
            values["progress_stage"] = None
        if trigger == "reschedule":
            start = values.get("start_time", current.start_time)
            end = values.get("end_time", current.end_time)
            check_times(start, end, self.max_length)
        with self.db.session() as session:
            if trigger == "reschedule":
                self._lock_camera(session, current.camera_id)
                self._check_overlap(
                    session,
                    current.camera_id,
                    values.get("start_time", current.start_time),
                    values.get("end_time", current.end_time),
                    exclude=booking_id,
                )
            result = session.execute(
                update(Booking)
                .where(Booking.id == booking_id, Booking.version == current.version)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                actual = session.scalar(select(Booking.version).where(Booking.id == booking_id))
                raise StaleVersion(booking_id, current.version, actual)
            if within is not None:
                within(session)
            session.execute(
                insert(TransitionRow).values(
                    booking_id=booking_id,
                    seq=current.version + 1,
                    from_state=current.state,
                    to_state=dest,
                    trigger=trigger,
                    at=now,
                    detail=detail,
                    error=error,
                )
            )
            if trigger != "note" or push:
                after = current.to_dict() | {
                    k: v for k, v in values.items() if k in ("state", "version")
                }
                change = {"from": current.state, "to": dest, "trigger": trigger,
                          "detail": detail, "error": error}
                session.add(_outbox(after, "transition", change, now, values))
        if trigger != "note" or push:
            self._outbox_written()
        return self.get(booking_id)

    def _outbox_written(self) -> None:
        for listener in self.on_outbox:
            try:
                listener()
            except Exception:  # a listener's bug must not turn a committed change into an error
                log.exception("outbox listener failed")

    def outbox_pending(self, limit: int = 100) -> list[OutboxRow]:
        """Undelivered changes, oldest first: the order they must reach the booking system."""
        query = (
            select(OutboxRow)
            .where(OutboxRow.delivered_at.is_(None))
            .order_by(OutboxRow.id)
            .limit(limit)
        )
        with self.db.reader() as session:
            return list(session.scalars(query))

    def outbox_delivered(self, row_id: int) -> None:
        with self.db.session() as session:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row_id)
                .values(delivered_at=self.clock())
                .execution_options(synchronize_session=False)
            )

    def outbox_failed(self, row_id: int, error: str) -> None:
        with self.db.session() as session:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row_id)
                .values(attempts=OutboxRow.attempts + 1, last_error=error[:2000])
                .execution_options(synchronize_session=False)
            )

    def note(self, booking_id: str, detail: str) -> Booking:
        """A history line that changes no state (a camera died, an intro was unreadable)."""
        for _ in range(5):
            try:
                return self.fire(booking_id, "note", detail=detail)
            except StaleVersion:
                continue
        return self.fire(booking_id, "note", detail=detail)

    def set_progress(self, booking_id: str, stage: str | None, fraction: float | None) -> None:
        """Progress is not a state change: no version bump, no history row."""
        value = None if fraction is None else max(0.0, min(1.0, fraction))
        with self.db.session() as session:
            session.execute(
                update(Booking)
                .where(Booking.id == booking_id)
                .values(progress=value, progress_stage=stage)
                .execution_options(synchronize_session=False)
            )

    # -- small shared facts ----------------------------------------------------------------

    def kv_set(self, key: str, value: Any) -> None:
        row = {"key": key, "value": json.dumps(value, default=str), "updated_at": self.clock()}
        with self.db.session() as session:
            upsert(session, KeyValue, row)

    def kv_get(self, key: str) -> tuple[Any, datetime] | None:
        with self.db.reader() as session:
            row = session.get(KeyValue, key)
            return None if row is None else (json.loads(row.value), row.updated_at)

    # -- internals -------------------------------------------------------------------------

    def _lock_camera(self, session: Session, camera: str) -> None:
        # The first statement of the transaction is a write, so SQLite takes its write lock
        # before we read anything and PostgreSQL locks this camera's row until commit.
        done = session.execute(
            update(SlotLock)
            .where(SlotLock.camera_id == camera)
            .values(counter=SlotLock.counter + 1)
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 0:  # type: ignore[attr-defined]
            session.execute(insert(SlotLock).values(camera_id=camera, counter=1))

    def _check_overlap(
        self,
        session: Session,
        camera: str,
        start: datetime,
        end: datetime,
        exclude: str | None,
    ) -> None:
        query = select(Booking.id, Booking.start_time, Booking.end_time).where(
            Booking.camera_id == camera,
            Booking.state.in_(LIVE_STATES),
            Booking.start_time < end,
            Booking.end_time > start,
        )
        if exclude:
            query = query.where(Booking.id != exclude)
        other = session.execute(query.limit(1)).first()
        if other is not None:
            raise Conflict(
                f"overlaps booking {other.id} ({other.start_time.isoformat()} to "
                f"{other.end_time.isoformat()}) on camera {camera}",
                other.id,
            )
