"""Bookings persisted through the state machine.

Every change of a booking goes through `BookingStore.fire`: one database transaction writes
the new state, what the trigger's `Effects` (machine.py) say besides, an append-only history
row and a version bump, conditional on the version that was read. A stale write changes nothing
and raises StaleVersion; an invalid trigger raises InvalidTrigger before anything is written.
The CLI, the API, the sync and the supervisor all use this class, so there is exactly one way a
booking changes. The reads are `queries.BookingQueries`, the outbox `outbox.OutboxQueue`.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller.db import Booking, Database, KeyValue, SlotLock, TransitionRow, upsert, utcnow
from controller.fsm.checks import check_fields, check_times, new_booking_id
from controller.fsm.errors import (
    BookingError,
    Conflict,
    InvalidBooking,
    NotFound,
    StaleVersion,
)
from controller.fsm.machine import Effects, effects_of, next_state
from controller.fsm.outbox import OutboxQueue, outbox_row
from controller.fsm.queries import BookingQueries, Due
from controller.fsm.retry import RetryPolicy
from controller.fsm.states import LIVE, State

log = logging.getLogger("ezrec.store")

# Columns a transition may change besides the state machine's own bookkeeping.
CHANGEABLE = frozenset(
    {"raw_dir", "processed_path", "video_url", "start_time", "end_time", "extra"}
)
# Generated ids carry 40 random bits per minute; at hundreds of bookings a minute two can
# still meet, and a caller that sent no id must not see that as a conflict.
GENERATED_ID_TRIES = 5


def _id_taken(booking_id: str) -> Conflict:
    return Conflict(f"booking {booking_id} exists already", booking_id)


class BookingStore(BookingQueries, OutboxQueue):
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
        self.on_outbox = []

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
        """Store a new confirmed booking. An id the caller chose that exists already is a
        Conflict, like an overlap on the camera; an id drawn here is drawn again instead."""
        now = self.clock()
        check_times(start, end, self.max_length)
        if not allow_past and end <= now:
            raise InvalidBooking(f"the slot ended already ({end.isoformat()})")
        camera = camera_id or self.device_id
        for attempt in range(GENERATED_ID_TRIES):
            chosen = booking_id or new_booking_id(now)
            check_fields(chosen, user_id, camera, extra)
            booking = Booking(
                id=chosen,
                user_id=user_id,
                camera_id=camera,
                device_id=self.device_id,
                start_time=start,
                end_time=end,
                state=State.CONFIRMED,
                version=0,
                attempts=0,
                extra_json=json.dumps(extra or {}, sort_keys=True),
                created_at=now,
                updated_at=now,
            )
            try:
                self._insert(booking, now)
            except Conflict as exc:
                drawn_clash = booking_id is None and exc.other_id == chosen
                if not drawn_clash or attempt == GENERATED_ID_TRIES - 1:
                    raise
                continue
            self._outbox_written()
            return booking
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert(self, booking: Booking, now: datetime) -> None:
        try:
            with self.db.session() as session:
                self._lock_camera(session, booking.camera_id)
                if session.get(Booking, booking.id) is not None:
                    raise _id_taken(booking.id)
                self._check_overlap(
                    session, booking.camera_id, booking.start_time, booking.end_time, exclude=None
                )
                session.add(booking)
                session.add(outbox_row(booking.to_dict(), "booking", None, now))
        except IntegrityError:  # a writer meanwhile inserted this id (or the camera's first lock)
            raise _id_taken(booking.id) from None

    def cancel(
        self, booking_id: str, *, detail: str | None = None, expected_version: int | None = None
    ) -> Booking:
        """Cancel the booking; one cancelled already is returned unchanged (a retried cancel
        is no error). From a state that cannot be cancelled: InvalidTrigger."""
        booking = self.get(booking_id)
        if booking.state == State.CANCELLED:
            return booking
        return self.fire(booking_id, "cancel", detail=detail, expected_version=expected_version)

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

        `admin` marks an operator's retry (it resets the attempts). `retry_by` caps the
        backoff of a `fail` (a recording is retried at the latest when its slot ends, so that
        what it recorded is finalised then); a `permanent` failure is one no retry can fix (bad
        credentials): it waits for an operator. `within` writes rows that belong to this change
        (a replay mark) in the same transaction, after the versioned update succeeded. `push`
        sends a `note` to the booking system too (a renewed share link); other notes stay local.
        """
        current = self.get(booking_id)
        if expected_version is not None and expected_version != current.version:
            raise StaleVersion(booking_id, expected_version, current.version)
        dest = next_state(current.state, trigger)
        effects = effects_of(trigger)
        now = self.clock()
        values = self._changed_columns(current, changes)
        values |= {"state": dest, "version": current.version + 1, "updated_at": now}
        values |= self._effect_columns(
            effects, current, now, error=error or detail, admin=admin, retry_by=retry_by,
            permanent=permanent,
        )
        start = values.get("start_time", current.start_time)
        end = values.get("end_time", current.end_time)
        if effects.checks_slot:
            check_times(start, end, self.max_length)
        pushed = effects.pushed or push
        with self.db.session() as session:
            if effects.checks_slot:
                self._lock_camera(session, current.camera_id)
                self._check_overlap(session, current.camera_id, start, end, exclude=booking_id)
            self._versioned_update(session, current, values)
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
            if pushed:
                after = current.to_dict() | {"state": dest, "version": current.version + 1}
                change = {"from": current.state, "to": dest, "trigger": trigger,
                          "detail": detail, "error": error}
                session.add(outbox_row(after, "transition", change, now, values))
        if pushed:
            self._outbox_written()
        return self.get(booking_id)

    @staticmethod
    def _changed_columns(current: Booking, changes: dict[str, Any] | None) -> dict[str, Any]:
        """The columns the caller's `changes` write (`extra` is merged into the stored one)."""
        changes = dict(changes or {})
        unknown = set(changes) - CHANGEABLE
        if unknown:
            raise ValueError(f"a transition cannot change {sorted(unknown)}")
        if "extra" in changes:
            merged = current.extra | changes.pop("extra")
            changes["extra_json"] = json.dumps(merged, sort_keys=True)
        return changes

    def _effect_columns(
        self,
        effects: Effects,
        current: Booking,
        now: datetime,
        *,
        error: str | None,
        admin: bool,
        retry_by: datetime | None,
        permanent: bool,
    ) -> dict[str, Any]:
        """The bookkeeping columns `effects` write for this change."""
        columns: dict[str, Any] = dict.fromkeys(effects.clears)
        if effects.attempts == "count":
            columns["attempts"] = current.attempts + 1
        elif effects.attempts == "reset" or (effects.attempts == "reset_by_admin" and admin):
            columns["attempts"] = 0
        if effects.next_attempt == "clear":
            columns["next_attempt_at"] = None
        elif effects.next_attempt == "backoff":
            attempts = columns.get("attempts", current.attempts)
            retry_at = None if permanent else self.policy.next_attempt_at(attempts, now, self.rng)
            if retry_at is not None and retry_by is not None:
                retry_at = min(retry_at, max(retry_by, now))
            columns["next_attempt_at"] = retry_at
        if effects.records_error:
            columns["last_error"] = error or "failed"
        return columns

    def _versioned_update(
        self, session: Session, current: Booking, values: dict[str, Any]
    ) -> None:
        result = session.execute(
            update(Booking)
            .where(Booking.id == current.id, Booking.version == current.version)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            actual = session.scalar(select(Booking.version).where(Booking.id == current.id))
            raise StaleVersion(current.id, current.version, actual)

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

    def set_progress_detail(self, booking_id: str, **counts: int) -> None:
        """Merge `counts` (chunks_built, chunks_total, bytes_uploaded, bytes_total) into the
        booking's progress detail: the builder and the uploader each set their own, from their
        own threads, so the merge is a compare-and-set on the text that was read (a plain
        read-then-write let one overwrite the other's count with a stale value)."""
        wanted = {k: int(v) for k, v in counts.items()}
        for _ in range(50):
            with self.db.reader() as session:
                row = session.execute(
                    select(Booking.progress_detail_json).where(Booking.id == booking_id)
                ).first()
            if row is None:
                return  # no such booking
            seen = row[0]
            detail = json.loads(seen) if seen else {}
            if all(detail.get(k) == v for k, v in wanted.items()):
                return
            detail.update(wanted)
            same = (
                Booking.progress_detail_json.is_(None)
                if seen is None
                else Booking.progress_detail_json == seen
            )
            with self.db.session() as session:
                done = session.execute(
                    update(Booking)
                    .where(Booking.id == booking_id, same)
                    .values(progress_detail_json=json.dumps(detail, sort_keys=True))
                    .execution_options(synchronize_session=False)
                ).rowcount
            if done:
                return
        # Progress is no state: the writer's next count says it again.
        log.warning("%s: progress detail not written, it kept changing meanwhile", booking_id)

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
            Booking.state.in_(LIVE),
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


__all__ = [
    "BookingError",
    "BookingStore",
    "Conflict",
    "Due",
    "InvalidBooking",
    "NotFound",
    "StaleVersion",
    "check_times",
    "new_booking_id",
]
