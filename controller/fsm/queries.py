"""Reading bookings: one booking, its history, filtered lists, counts, and what is due now.

`BookingQueries` is the reading half of `BookingStore` (which adds the writes); nothing here
changes a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select

from controller.db import Booking, Database, TransitionRow
from controller.fsm.errors import InvalidBooking, NotFound
from controller.fsm.states import FAILED, STATES, State


@dataclass(frozen=True)
class Due:
    """The work the supervisor should look at now, and when to look again."""

    bookings: list[Booking]
    next_wakeup: datetime | None


def _aware(value: datetime | None) -> datetime | None:
    # Aggregates (min) bypass the column type, so the UTC tag must be put back by hand.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class BookingQueries:
    db: Database

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
            Booking.state == State.VIDEO_UPLOADED, Booking.raw_dir.is_not(None)
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
                and_(Booking.state == State.CONFIRMED, Booking.start_time <= horizon),
                Booking.state == State.RECORDING,
                Booking.state.in_((State.COMPLETED, State.VIDEO_PROCESSED)),
                and_(Booking.state.in_(FAILED), Booking.next_attempt_at <= now),
                # Slot over: its footage is delivered (or it is missed), attempts or not.
                and_(Booking.state == State.RECORDING_FAILED, Booking.end_time <= now),
            )
        ).order_by(Booking.start_time)
        lead = timedelta(seconds=preroll_s)
        with self.db.reader() as session:
            bookings = list(session.scalars(query))
            candidates = [
                session.scalar(
                    select(func.min(Booking.start_time)).where(
                        Booking.state == State.CONFIRMED, Booking.start_time > horizon
                    )
                ),
                session.scalar(
                    select(func.min(Booking.end_time)).where(
                        Booking.state.in_((State.RECORDING, State.RECORDING_FAILED)),
                        Booking.end_time > now,
                    )
                ),
                session.scalar(
                    select(func.min(Booking.next_attempt_at)).where(
                        Booking.state.in_(FAILED), Booking.next_attempt_at > now
                    )
                ),
            ]
        next_start, next_end, next_retry = (_aware(t) for t in candidates)
        times = [t for t in (next_start and next_start - lead, next_end, next_retry) if t]
        return Due(bookings, min(times) if times else None)
