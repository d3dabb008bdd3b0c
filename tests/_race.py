"""Writers that race on one booking so that only the database's version guard can stop them.

`BookingStore.fire` reads the booking, refuses a stale `expected_version` in Python, then writes
`UPDATE ... WHERE id = ? AND version = <the version it read>`. Writers started together still
mostly meet the Python pre-check, because the first to write is done before the others read.
So each writer here is *pinned*: the read inside `fire` (its first `get`) is followed by a
rendezvous with every other writer. All of them have then read the same version and passed the
pre-check before any of them writes; whoever loses can only be stopped by the conditional
UPDATE. The rendezvous is a thread barrier, or, for writers in separate OS processes
(`python -m tests._race URL`), a line on stdin from the parent once all of them have read.

`unguarded()` is a mutant store (the version clause dropped from fire's UPDATE), used only to
show that the checks here fail when the guard is missing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.db import Booking, Database
from controller.fsm import (
    TRIGGERS,
    BookingStore,
    InvalidTrigger,
    RetryPolicy,
    StaleVersion,
    next_state,
    replay,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def open_store(url: str) -> BookingStore:
    return BookingStore(
        Database(url),
        device_id="dev",
        policy=RetryPolicy(base_s=1, max_s=10, max_attempts=3),
        clock=lambda: T0 - timedelta(days=1),
    )


class PinnedWriter:
    """A store of its own (its own engine and connections, as a second process would have)
    whose next `fire` waits at `rendezvous` right after reading the booking."""

    def __init__(self, url: str, rendezvous: Callable[[int], None]) -> None:
        self.store = open_store(url)
        self.rendezvous = rendezvous
        self.read_version: int | None = None
        self._armed = False
        real_get = self.store.get

        def get(booking_id: str) -> Booking:
            booking = real_get(booking_id)
            if self._armed:
                self._armed = False
                self.read_version = booking.version
                self.rendezvous(booking.version)
            return booking

        # Only this instance: fire() calls self.get first, and again to return the result.
        self.store.get = get  # type: ignore[method-assign]

    def fire(self, booking_id: str, trigger: str, expected_version: int) -> str:
        """'won', 'stale' (the guard stopped it), 'invalid', or 'error: <type>'."""
        self._armed = True
        self.read_version = None
        try:
            self.store.fire(booking_id, trigger, expected_version=expected_version,
                            detail=f"race {trigger}", error="boom")
        except StaleVersion:
            return "stale"
        except InvalidTrigger:
            return "invalid"
        except Exception as exc:  # reported, not raised: the checker says what went wrong
            return f"error: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        finally:
            self._armed = False
        return "won"

    def close(self) -> None:
        self.store.db.dispose()


def race_threads(url: str, booking_id: str, triggers: list[str], version: int) -> list[str]:
    """One writer per trigger, each in its own thread with its own store, pinned together."""
    barrier = threading.Barrier(len(triggers), timeout=30)
    writers = [PinnedWriter(url, lambda _v: barrier.wait()) for _ in triggers]
    results: list[str] = [""] * len(triggers)
    read: list[int | None] = [None] * len(triggers)

    def write(i: int) -> None:
        results[i] = writers[i].fire(booking_id, triggers[i], version)
        read[i] = writers[i].read_version

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(triggers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for w in writers:
        w.close()
    # Every writer read the version the race is about, so each passed the pre-check.
    assert read == [version] * len(triggers), read
    return results


def check_race(store: BookingStore, booking_id: str, before: Booking, triggers: list[str],
               results: list[str]) -> str:
    """Exactly one valid writer won, every other valid one was stopped by the guard, invalid
    triggers changed nothing; the winner's transition is the one and only new history row.
    Returns the booking's state now."""
    valid = []
    for trigger, result in zip(triggers, results, strict=True):
        try:
            next_state(before.state, trigger)
        except InvalidTrigger:
            assert result == "invalid", (trigger, result)
            continue
        valid.append((trigger, result))
    after = store.get(booking_id)
    history = store.history(booking_id)
    if not valid:
        assert after.version == before.version and len(history) == before.version
        assert after.state == before.state
        return after.state
    outcomes = sorted(r for _, r in valid)
    assert outcomes == ["stale"] * (len(valid) - 1) + ["won"], (valid, outcomes)
    winner = next(t for t, r in valid if r == "won")
    assert after.version == before.version + 1
    assert after.state == next_state(before.state, winner)
    assert len(history) == after.version
    last = history[-1]
    assert (last.seq, last.trigger, last.from_state, last.to_state) == (
        after.version, winner, before.state, after.state)
    return after.state


def check_history(store: BookingStore, booking_id: str) -> None:
    """Versions dense from 1, and replaying the stored triggers gives the stored state."""
    booking = store.get(booking_id)
    history = store.history(booking_id)
    assert [h.seq for h in history] == list(range(1, booking.version + 1))
    assert replay([h.trigger for h in history]) == booking.state
    for prev, row in itertools.pairwise(history):
        assert row.from_state == prev.to_state  # no write was based on a lost state


@contextlib.contextmanager
def unguarded() -> Iterator[None]:
    """The mutant: fire's UPDATE without `version = <read>` (a lost-update bug)."""
    from controller.fsm import store as store_module

    real_update = store_module.update

    class Unguarded:
        def __init__(self, table: Any) -> None:
            self.stmt = real_update(table)

        def where(self, *criteria: Any) -> Any:
            kept = [c for c in criteria if str(getattr(c, "left", "")) != "bookings.version"]
            return self.stmt.where(*kept)

    store_module.update = Unguarded  # type: ignore[assignment]
    try:
        yield
    finally:
        store_module.update = real_update


def serve(url: str) -> None:
    """A writer process: one JSON request per line on stdin, {"booking", "trigger",
    "expected"}; prints {"read": version} after its read, waits for "go", then prints
    {"result": ...}."""

    def rendezvous(version: int) -> None:
        print(json.dumps({"read": version}), flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("expected go")

    writer = PinnedWriter(url, rendezvous)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        result = writer.fire(req["booking"], req["trigger"], req["expected"])
        print(json.dumps({"result": result, "read_version": writer.read_version}), flush=True)
    writer.close()


if __name__ == "__main__":
    serve(sys.argv[1])


__all__ = ["TRIGGERS", "PinnedWriter", "check_history", "check_race", "race_threads", "serve",
           "unguarded"]
