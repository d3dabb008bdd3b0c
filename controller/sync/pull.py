"""Down: the booking system's bookings into the local state machine.

New bookings are created with their id kept, rescheduled ones rescheduled while the machine
allows it, cancelled ones cancelled while nothing is recording them. The user's own media
(`user_settings`) are resolved once, when the booking is created, into `extra["media"]`.
The local database stays the source of truth for what the box is doing: a pull never
touches a booking that has started recording.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from controller.drivers.supabase import BookingSystem, RemoteBooking
from controller.fsm import allowed_triggers
from controller.fsm.states import State, valid_booking_id

if TYPE_CHECKING:
    from controller.db import Booking
    from controller.fsm.store import BookingStore

log = logging.getLogger("ezrec.sync")

PULL_LIMIT = 500
# States the box itself pushes after `confirmed`. A remote row in one of them that the local
# database does not know (a wiped SD card) is history, not a new booking to record again.
PUSHED_STATES = frozenset(State) - {State.CONFIRMED, State.CANCELLED}
# What a cancellation up there may cancel here: the machine's cancel sources without
# `recording`, because a recording under way belongs to the box (the local database decides
# what happens once recording started); `recording_failed` waits between attempts.
REMOTE_CANCELLABLE = frozenset({State.CONFIRMED, State.RECORDING_FAILED})
# A signed media URL must outlive the booking's build, which may be days after the pull.
MEDIA_URL_SLACK = timedelta(days=7)


@dataclass
class PullResult:
    seen: int = 0
    created: list[str] = field(default_factory=list)
    rescheduled: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    # Remote rows the local machine refused (overlap, slot over, bad id...), with the reason.
    refused: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Pull:
    """Brings one camera's remote bookings into the store; remembers what it already logged."""

    def __init__(
        self,
        remote: BookingSystem,
        store: BookingStore,
        camera_id: str,
        clock: Callable[[], datetime],
    ) -> None:
        self.remote = remote
        self.store = store
        self.camera_id = camera_id
        self.clock = clock
        # Refusals already logged, so that a booking refused on every pull is logged once.
        self._told: set[tuple[str, str]] = set()

    def __call__(self) -> PullResult:
        """Network or server errors raise (the whole pull is retried next round); a single
        row that the local machine refuses is reported in `refused` and skipped."""
        now = self.clock()
        result = PullResult()
        rows = [RemoteBooking.from_row(r) for r in self.remote.bookings(
            self.camera_id, now, PULL_LIMIT)]
        result.seen = len(rows)
        local = {b.id: b for b in self.store.list(start_from=now)}
        new_rows: list[tuple[RemoteBooking, datetime, datetime]] = []
        for row in rows:
            if not valid_booking_id(row.id):
                self._refuse(result, row.id or "?", "id is not 1-64 of A-Z a-z 0-9 _ -")
                continue
            mine = local.get(row.id)
            if row.cancelled:
                if mine is not None:
                    self._cancel(result, mine)
                continue
            try:
                start, end = row.times()
            except ValueError as exc:
                self._refuse(result, row.id, f"bad time: {exc}")
                continue
            if mine is None:
                if row.status not in PUSHED_STATES:
                    new_rows.append((row, start, end))
            elif (start, end) != (mine.start_time, mine.end_time):
                self._reschedule(result, mine, start, end)
        if new_rows:
            media = self._user_media(
                {r.user_id for r, _, _ in new_rows if r.user_id},
                max(end for _, _, end in new_rows),
                result,
            )
            for row, start, end in new_rows:
                self._create(result, row, start, end, media.get(row.user_id or "", {}))
        return result

    def _user_media(
        self, user_ids: set[str], valid_until: datetime, result: PullResult
    ) -> dict[str, dict[str, Any]]:
        """Signed for a week past `valid_until`; an item that cannot be had is noted."""
        expires = valid_until + MEDIA_URL_SLACK - self.clock()
        media, notes = self.remote.user_media(user_ids, max(3600, int(expires.total_seconds())))
        for line in notes:
            self._note(result, line)
        return media

    def _create(
        self,
        result: PullResult,
        row: RemoteBooking,
        start: datetime,
        end: datetime,
        media: dict[str, Any],
    ) -> None:
        extra: dict[str, Any] = {"source": "supabase"}
        if media:
            extra["media"] = media
        try:
            self.store.create(start, end, booking_id=row.id, user_id=row.user_id, extra=extra)
        except Exception as exc:  # the machine's own refusals: overlap, slot over, bad input
            self._refuse(result, row.id, str(exc))
            return
        result.created.append(row.id)
        log.info("booking %s pulled from the booking system", row.id)

    def _reschedule(
        self, result: PullResult, mine: Booking, start: datetime, end: datetime
    ) -> None:
        if "reschedule" not in allowed_triggers(mine.state):
            self._refuse(result, mine.id, f"not rescheduled: it is {mine.state} here")
        elif self._fire(result, mine, "reschedule", "rescheduled",
                        changes={"start_time": start, "end_time": end}):
            result.rescheduled.append(mine.id)

    def _cancel(self, result: PullResult, mine: Booking) -> None:
        if mine.state == State.CANCELLED:
            return
        if mine.state not in REMOTE_CANCELLABLE:
            self._refuse(result, mine.id, f"not cancelled: it is {mine.state} here")
        elif self._fire(result, mine, "cancel", "cancelled"):
            result.cancelled.append(mine.id)

    def _fire(
        self, result: PullResult, mine: Booking, trigger: str, done: str, **kwargs: Any
    ) -> bool:
        try:
            self.store.fire(
                mine.id,
                trigger,
                expected_version=mine.version,
                detail=f"{done} by the booking system",
                **kwargs,
            )
        except Exception as exc:  # overlap, or the supervisor started it meanwhile
            self._refuse(result, mine.id, f"not {done}: {exc}")
            return False
        return True

    def _refuse(self, result: PullResult, booking_id: str, reason: str) -> None:
        result.refused[booking_id] = reason
        if (booking_id, reason) not in self._told:
            self._told.add((booking_id, reason))
            log.warning("booking %s from the booking system: %s", booking_id, reason)

    def _note(self, result: PullResult, line: str) -> None:
        result.notes.append(line)
        if ("", line) not in self._told:
            self._told.add(("", line))
            log.warning("%s", line)
