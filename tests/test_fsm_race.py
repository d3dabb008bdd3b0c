"""Stale-version writes that only the database's guard can stop (see tests/_race.py).

Every state-changing edge of the machine is raced against every other one from the same state:
by threads with engines of their own, and by two OS processes, on SQLite (one file) and on
PostgreSQL. All writers have read the same version and passed fire's pre-check before any
writes; exactly one wins, every other gets StaleVersion from the conditional UPDATE, nothing of
theirs lands (history, outbox), versions stay dense and replaying the history gives the state.
The last test shows these checks fail against a store whose UPDATE lacks the version clause.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from controller.db import OutboxRow
from controller.fsm import STATES, BookingStore, allowed_triggers
from tests._race import T0, check_history, check_race, open_store, race_threads, unguarded

# A way into each state from `confirmed`.
PATHS: dict[str, list[str]] = {
    "confirmed": [],
    "recording": ["start"],
    "completed": ["start", "finish"],
    "video_processed": ["start", "finish", "process"],
    "video_uploaded": ["start", "finish", "process", "upload"],
    "recording_failed": ["fail"],
    "processing_failed": ["start", "finish", "fail"],
    "upload_failed": ["start", "finish", "process", "fail"],
    "cancelled": ["cancel"],
    "missed": ["miss"],
}
assert set(PATHS) == set(STATES)


def races() -> list[tuple[str, tuple[str, ...]]]:
    """(state, triggers): every pair of triggers allowed in the state (a state-changing one
    against another, or against a note), each state's full set at once, and one invalid
    trigger against a valid one."""
    found: list[tuple[str, tuple[str, ...]]] = []
    for state in STATES:
        allowed = allowed_triggers(state)
        found += [(state, pair) for pair in itertools.combinations_with_replacement(allowed, 2)]
        if len(allowed) > 2:
            found.append((state, tuple(allowed[:4])))
        found.append((state, ("bogus" if state == "confirmed" else "start", allowed[0])))
    return found


RACES = races()


class Bookings:
    """Fresh bookings, each driven to the state a race starts from (one camera, no overlap)."""

    def __init__(self, store: BookingStore) -> None:
        self.store = store
        self.n = 0

    def at(self, state: str) -> str:
        self.n += 1
        start = T0 + timedelta(hours=self.n)
        booking = self.store.create(start, start + timedelta(minutes=30), booking_id=f"r{self.n}")
        for trigger in PATHS[state]:
            self.store.fire(booking.id, trigger)
        assert self.store.get(booking.id).state == state
        return booking.id


def check_outbox(store: BookingStore, booking_id: str) -> None:
    """Losers queued nothing: one outbox row for the creation, one per state change."""
    history = store.history(booking_id)
    with store.db.reader() as session:
        queued = session.scalar(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.booking_id == booking_id)
        )
    assert queued == 1 + sum(1 for h in history if h.trigger != "note")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(url: str) -> Iterator[BookingStore]:
    s = open_store(url)
    yield s
    s.db.dispose()


def test_threads_read_at_one_version_only_the_guard_stops_the_losers(
    url: str, store: BookingStore
) -> None:
    bookings = Bookings(store)
    for state, triggers in RACES:
        booking_id = bookings.at(state)
        before = store.get(booking_id)
        results = race_threads(url, booking_id, list(triggers), before.version)
        check_race(store, booking_id, before, list(triggers), results)
        check_history(store, booking_id)
        check_outbox(store, booking_id)


class WriterProcess:
    """`python -m tests._race URL`: a pinned writer in an OS process of its own."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests._race", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).parent.parent,
        )
        assert self.receive() == {"ready": True}

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, object]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"writer process exited ({self.proc.poll()})"
        value: dict[str, object] = json.loads(line)
        return value

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_two_processes_read_at_one_version_only_the_guard_stops_the_loser(
    url: str, store: BookingStore
) -> None:
    writers = [WriterProcess(url), WriterProcess(url)]
    bookings = Bookings(store)
    try:
        for state, triggers in RACES:
            pair = list(triggers[:2])
            booking_id = bookings.at(state)
            before = store.get(booking_id)
            for writer, trigger in zip(writers, pair, strict=True):
                writer.send(json.dumps(
                    {"booking": booking_id, "trigger": trigger, "expected": before.version}
                ))
            # Both processes have read this version (and so passed the pre-check) before
            # either is told to write.
            assert [w.receive() for w in writers] == [{"read": before.version}] * 2
            for writer in writers:
                writer.send("go")
            answers = [w.receive() for w in writers]
            assert [a["read_version"] for a in answers] == [before.version] * 2
            results = [str(a["result"]) for a in answers]
            check_race(store, booking_id, before, pair, results)
            check_history(store, booking_id)
            check_outbox(store, booking_id)
    finally:
        for writer in writers:
            writer.close()


def test_the_checks_fail_against_a_store_without_the_version_guard(
    url: str, store: BookingStore
) -> None:
    # With `AND version = <read>` gone, the second writer's UPDATE lands on the first one's
    # row (a lost update), and only the history's unique (booking, seq) stops it, with an
    # IntegrityError instead of StaleVersion. The race checks must call that a failure.
    bookings = Bookings(store)
    booking_id = bookings.at("confirmed")
    before = store.get(booking_id)
    with unguarded():
        results = race_threads(url, booking_id, ["start", "cancel"], before.version)
    assert any(r.startswith("error: IntegrityError") for r in results), results
    with pytest.raises(AssertionError):
        check_race(store, booking_id, before, ["start", "cancel"], results)
