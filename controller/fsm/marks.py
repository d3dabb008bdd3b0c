"""Replay marks: "that was good" during a booking, from the court's button, the API or the CLI.

A mark is a change of its booking like any other: one transaction writes the mark row, a
history row and the version bump (through `BookingStore.fire`), conditional on the version that
was read, so two presses racing each other cannot both be counted. A mark is accepted only for
a booking that is recording, at a time inside its slot that has already happened; presses
within `SAME_MOMENT_S` of a stored mark are the same moment and count once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db import Booking, MarkRow
from controller.fsm.errors import BookingError, StaleVersion
from controller.fsm.states import State
from controller.fsm.store import BookingStore

# A button is pressed two or three times in a row by an excited player; a second moment worth
# its own clip is rarely this close to the first (and overlapping clips merge anyway).
SAME_MOMENT_S = 3.0
# A clock a little ahead of the camera's (or a press at the very end of the slot) is still
# the moment the player meant; further in the future it is a mistake.
FUTURE_TOLERANCE_S = 2.0
SOURCES = ("button", "api", "cli")
_RACE_TRIES = 5


class MarkRefused(BookingError):
    """The mark cannot be stored (nothing recording, time outside the recording)."""


@dataclass(frozen=True)
class MarkResult:
    mark: MarkRow
    booking: Booking
    duplicate: bool  # True: an earlier mark within SAME_MOMENT_S stands for this one

    def to_dict(self) -> dict[str, object]:
        return {
            "booking_id": self.booking.id,
            "mark": self.mark.to_dict(),
            "duplicate": self.duplicate,
        }


def marks_of(store: BookingStore, booking_id: str) -> list[MarkRow]:
    with store.db.reader() as session:
        rows = session.scalars(
            select(MarkRow).where(MarkRow.booking_id == booking_id).order_by(MarkRow.at)
        )
        return list(rows)


def recording_on(store: BookingStore, camera: str, at: datetime) -> Booking:
    """The booking recording on `camera` at `at`, or MarkRefused saying why there is none."""
    found = [
        b
        for b in store.list(state=State.RECORDING, start_from=at - timedelta(seconds=1))
        if b.camera_id == camera and b.start_time <= at <= b.end_time
    ]
    if not found:
        raise MarkRefused(
            f"no booking is recording on camera {camera!r} at {at.isoformat(timespec='seconds')}"
        )
    return found[0]


def record_mark(
    store: BookingStore,
    *,
    source: str,
    booking_id: str | None = None,
    camera: str | None = None,
    at: datetime | None = None,
) -> MarkResult:
    """Store a mark on `booking_id` (or on whatever records on `camera`) at `at` (now)."""
    if source not in SOURCES:
        raise ValueError(f"unknown mark source {source!r}")
    now = store.clock()
    when = at or now
    if when.tzinfo is None:
        raise MarkRefused("the mark's time must carry a UTC offset; naive times are refused")
    if booking_id is None:
        booking_id = recording_on(store, camera or store.device_id, when).id
    for attempt in range(_RACE_TRIES):
        booking = store.get(booking_id)
        _check(booking, when, now)
        same = [m for m in marks_of(store, booking_id) if _close(m.at, when)]
        if same:
            return MarkResult(same[0], booking, duplicate=True)
        row = MarkRow(booking_id=booking_id, at=when, source=source, created_at=now)

        def add(session: Session, row: MarkRow = row) -> None:
            session.add(row)
            session.flush()  # the id, for the answer

        offset = (when - booking.start_time).total_seconds()
        try:
            updated = store.fire(
                booking_id,
                "note",
                expected_version=booking.version,
                detail=f"replay mark at {when.isoformat(timespec='seconds')} "
                f"({offset:.0f} s into the booking, {source})",
                within=add,
            )
        except StaleVersion:
            if attempt == _RACE_TRIES - 1:
                raise
            continue  # another press (or the supervisor) wrote first: look again
        return MarkResult(row, updated, duplicate=False)
    raise AssertionError("unreachable")  # pragma: no cover


def _close(a: datetime, b: datetime) -> bool:
    return abs((a - b).total_seconds()) < SAME_MOMENT_S


def _check(booking: Booking, when: datetime, now: datetime) -> None:
    if booking.state != State.RECORDING:
        raise MarkRefused(
            f"booking {booking.id} is {booking.state}, not recording: marks are taken only "
            "while it records"
        )
    if when < booking.start_time:
        raise MarkRefused(
            f"{when.isoformat(timespec='seconds')} is before booking {booking.id} started "
            f"({booking.start_time.isoformat(timespec='seconds')})"
        )
    if when > booking.end_time:
        raise MarkRefused(
            f"{when.isoformat(timespec='seconds')} is after booking {booking.id} ends "
            f"({booking.end_time.isoformat(timespec='seconds')})"
        )
    if (when - now).total_seconds() > FUTURE_TOLERANCE_S:
        raise MarkRefused(
            f"{when.isoformat(timespec='seconds')} is in the future: a mark is for a moment "
            "that happened"
        )
