"""Random triggers, valid and invalid, against the real store; the database is reopened between
steps and two to four writers in threads race on the same booking with state-changing
triggers, read at the same version, so that the database's version guard (not the Python
pre-check) decides. The invariants hold at every step."""

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
    allowed_triggers,
    next_state,
)
from tests._race import check_history, check_race, race_threads

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
    @rule(data=st.data(), writers=st.integers(min_value=2, max_value=4))
    def race(self, data: st.DataObject, writers: int) -> None:
        """Writers in threads, each with its own engine, fire triggers (mostly ones that change
        the state) on one booking; all have read the same version and passed fire's pre-check
        before any writes (tests/_race.py), so only the conditional UPDATE can stop the
        losers."""
        booking_id = data.draw(st.sampled_from(sorted(self.expected)))
        before = self.store.get(booking_id)
        # Which writer wins is up to the database, so the state here differs between runs
        # of one example: draw plain numbers (the same draws every run) and map them onto
        # the triggers of this state, mostly ones it allows.
        allowed = allowed_triggers(before.state)
        every = [*TRIGGERS, "bogus"]
        triggers = []
        for n in data.draw(st.lists(st.integers(0, 999), min_size=writers, max_size=writers)):
            pool = allowed if allowed and n % 4 else every
            triggers.append(pool[n // 4 % len(pool)])
        results = race_threads(self.url, booking_id, triggers, before.version)
        self.expected[booking_id] = check_race(
            self.store, booking_id, before, triggers, results
        )

    @invariant()
    def consistent(self) -> None:
        for booking_id, expected in self.expected.items():
            booking = self.store.get(booking_id)
            history = self.store.history(booking_id)
            assert booking.state in STATES
            assert booking.state == expected
            assert booking.version == len(history)
            check_history(self.store, booking_id)

    def teardown(self) -> None:
        self.store.db.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)


BookingMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None
)
TestBookingMachine = BookingMachine.TestCase
