"""Random triggers, valid and invalid, against the real store; the database is reopened between
steps and two writers race on the same booking. The invariants hold at every step."""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from controller.db import Database
from controller.fsm import (
    STATES,
    TRIGGERS,
    BookingStore,
    InvalidTrigger,
    RetryPolicy,
    StaleVersion,
    next_state,
    replay,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class BookingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ezrec-fsm-"))
        self.url = f"sqlite:///{self.dir / 'state.db'}"
        self.store = self._open()
        self.expected: dict[str, str] = {}

    def _open(self) -> BookingStore:
        return BookingStore(
            Database(self.url),
            device_id="dev",
            policy=RetryPolicy(base_s=1, max_s=10, max_attempts=3),
            clock=lambda: T0 - timedelta(days=1),
        )

    @initialize()
    def first_booking(self) -> None:
        self.create()

    @rule()
    def create(self) -> None:
        n = len(self.expected)
        booking = self.store.create(
            T0 + timedelta(hours=n), T0 + timedelta(hours=n, minutes=30), booking_id=f"b{n}"
        )
        self.expected[booking.id] = "confirmed"

    @rule(data=st.data(), trigger=st.sampled_from([*TRIGGERS, "bogus", "teleport"]))
    def fire(self, data: st.DataObject, trigger: str) -> None:
        booking_id = data.draw(st.sampled_from(sorted(self.expected)))
        before = self.store.get(booking_id).to_dict()
        try:
            dest = next_state(before["state"], trigger)
        except InvalidTrigger:
            dest = None
        try:
            after = self.store.fire(booking_id, trigger, error="boom", detail="step")
        except InvalidTrigger:
            assert dest is None
            assert self.store.get(booking_id).to_dict() == before
            return
        assert dest is not None and after.state == dest
        assert after.version == before["version"] + 1
        self.expected[booking_id] = dest

    @rule()
    def reopen(self) -> None:
        self.store.db.dispose()
        self.store = self._open()

    @precondition(lambda self: bool(self.expected))
    @rule(data=st.data())
    def race(self, data: st.DataObject) -> None:
        booking_id = data.draw(st.sampled_from(sorted(self.expected)))
        current = self.store.get(booking_id)
        other = self._open()
        wins = 0
        for store in (self.store, other):
            try:
                # Both writers read the same version; only the first write may land.
                store.fire(booking_id, "note", expected_version=current.version, detail="race")
                wins += 1
            except StaleVersion:
                pass
        other.db.dispose()
        assert wins == 1

    @invariant()
    def consistent(self) -> None:
        for booking_id, expected in self.expected.items():
            booking = self.store.get(booking_id)
            history = self.store.history(booking_id)
            assert booking.state in STATES
            assert booking.state == expected
            assert booking.version == len(history)
            assert [h.seq for h in history] == list(range(1, len(history) + 1))
            assert replay([h.trigger for h in history]) == booking.state

    def teardown(self) -> None:
        self.store.db.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)


BookingMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None
)
TestBookingMachine = BookingMachine.TestCase
