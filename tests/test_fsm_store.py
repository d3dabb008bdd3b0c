from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from controller.db import Database
from controller.fsm import (
    BookingStore,
    Conflict,
    InvalidBooking,
    InvalidTrigger,
    NotFound,
    RetryPolicy,
    StaleVersion,
    replay,
)

T0 = datetime(2030, 6, 1, 18, 0, tzinfo=UTC)


def make_store(url: str, clock: datetime = T0 - timedelta(hours=1)) -> BookingStore:
    return BookingStore(
        Database(url),
        device_id="dev",
        policy=RetryPolicy(base_s=10, max_s=100, max_attempts=2),
        clock=lambda: clock,
    )


def run_together(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path) -> BookingStore:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return make_store(f"sqlite:///{tmp_path / 'state.db'}")
    return make_store(request.getfixturevalue("postgres_url"))


def test_lifecycle_history_and_versions(store: BookingStore) -> None:
    b = store.create(T0, T0 + timedelta(minutes=30), booking_id="b1", user_id="u-1")
    assert (b.state, b.version, b.camera_id) == ("confirmed", 0, "dev")
    for trigger in ("start", "finish", "process", "upload"):
        b = store.fire("b1", trigger, detail=f"did {trigger}")
    assert b.state == "video_uploaded" and b.version == 4
    history = store.history("b1")
    assert [h.seq for h in history] == [1, 2, 3, 4]
    assert replay([h.trigger for h in history]) == b.state
    assert history[0].from_state == "confirmed" and history[-1].to_state == "video_uploaded"
    assert b.start_time == T0 and b.start_time.tzinfo is not None


def test_invalid_trigger_changes_nothing(store: BookingStore) -> None:
    store.create(T0, T0 + timedelta(minutes=30), booking_id="b1")
    before = store.get("b1").to_dict()
    with pytest.raises(InvalidTrigger):
        store.fire("b1", "upload")
    assert store.get("b1").to_dict() == before
    assert store.history("b1") == []


def test_stale_version_changes_nothing(store: BookingStore) -> None:
    store.create(T0, T0 + timedelta(minutes=30), booking_id="b1")
    store.fire("b1", "start")
    with pytest.raises(StaleVersion, match="nothing was written"):
        store.fire("b1", "finish", expected_version=0)
    b = store.get("b1")
    assert b.state == "recording" and b.version == 1 and len(store.history("b1")) == 1


def test_two_racing_writers_exactly_one_wins(store: BookingStore) -> None:
    store.create(T0, T0 + timedelta(minutes=30), booking_id="b1")
    other = make_store(store.db.url)
    barrier = threading.Barrier(2)
    results: list[str] = []

    def write(s: BookingStore, trigger: str) -> None:
        barrier.wait()
        try:
            s.fire("b1", trigger, expected_version=0)
            results.append("won")
        except StaleVersion:
            results.append("lost")

    threads = [
        threading.Thread(target=write, args=(store, "start")),
        threading.Thread(target=write, args=(other, "cancel")),
    ]
    run_together(threads)
    assert sorted(results) == ["lost", "won"]
    b = store.get("b1")
    assert b.version == 1 and b.state in ("recording", "cancelled")
    assert len(store.history("b1")) == 1


def test_failures_back_off_then_stop_until_admin_retry(store: BookingStore) -> None:
    store.create(T0, T0 + timedelta(minutes=30), booking_id="b1")
    for trigger in ("start", "finish"):
        store.fire("b1", trigger)
    b = store.fire("b1", "fail", error="ffmpeg exploded")
    assert b.state == "processing_failed" and b.attempts == 1
    assert b.last_error == "ffmpeg exploded"
    assert b.next_attempt_at is not None and b.next_attempt_at > store.clock()
    b = store.fire("b1", "retry")
    assert b.state == "completed" and b.attempts == 1
    b = store.fire("b1", "fail", error="again")
    assert b.attempts == 2 and b.next_attempt_at is None  # max_attempts used up
    b = store.fire("b1", "retry", admin=True)
    assert b.state == "completed" and b.attempts == 0
    b = store.fire("b1", "process")
    assert b.last_error is None


def test_overlap_on_same_camera_is_refused(store: BookingStore) -> None:
    store.create(T0, T0 + timedelta(hours=1), booking_id="a")
    with pytest.raises(Conflict, match="overlaps booking a") as info:
        store.create(T0 + timedelta(minutes=30), T0 + timedelta(hours=2), booking_id="b")
    assert info.value.other_id == "a"
    # Another camera, or back-to-back, is fine.
    store.create(T0 + timedelta(minutes=30), T0 + timedelta(hours=2), camera_id="court2")
    store.create(T0 + timedelta(hours=1), T0 + timedelta(hours=2), booking_id="c")
    # A cancelled booking frees its slot.
    store.fire("a", "cancel")
    store.create(T0, T0 + timedelta(minutes=30), booking_id="d")
    with pytest.raises(Conflict, match="exists already"):
        store.create(T0 + timedelta(hours=5), T0 + timedelta(hours=6), booking_id="d")


def test_concurrent_creates_never_double_book(store: BookingStore) -> None:
    stores = [store, make_store(store.db.url), make_store(store.db.url)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def create(s: BookingStore, i: int) -> None:
        barrier.wait()
        try:
            s.create(T0 + timedelta(minutes=i), T0 + timedelta(minutes=60 + i))
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=create, args=(s, i)) for i, s in enumerate(stores)]
    run_together(threads)
    assert outcomes.count("ok") == 1 and outcomes.count("conflict") == 2


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (T0, T0, "is not after start"),
        (T0, T0 - timedelta(minutes=1), "is not after start"),
        (T0.replace(tzinfo=None), T0 + timedelta(hours=1), "UTC offset"),
        (T0, T0 + timedelta(hours=13), "maximum"),
        (T0 - timedelta(hours=5), T0 - timedelta(hours=4), "ended already"),
    ],
)
def test_bad_times(store: BookingStore, start: datetime, end: datetime, message: str) -> None:
    with pytest.raises(InvalidBooking, match=message):
        store.create(start, end)


def test_bad_ids_and_unknown(store: BookingStore) -> None:
    with pytest.raises(InvalidBooking, match="id must be"):
        store.create(T0, T0 + timedelta(hours=1), booking_id="../etc")
    with pytest.raises(InvalidBooking, match="user_id"):
        store.create(T0, T0 + timedelta(hours=1), user_id="x/y")
    with pytest.raises(NotFound):
        store.get("nope")
    with pytest.raises(NotFound):
        store.fire("nope", "start")


def test_reschedule_only_while_confirmed(store: BookingStore) -> None:
    store.create(T0, T0 + timedelta(hours=1), booking_id="a")
    store.create(T0 + timedelta(hours=2), T0 + timedelta(hours=3), booking_id="b")
    new_start = T0 + timedelta(minutes=10)
    b = store.fire("a", "reschedule", changes={"start_time": new_start})
    assert b.start_time == new_start and b.state == "confirmed" and b.version == 1
    with pytest.raises(Conflict, match="overlaps booking b"):
        store.fire("a", "reschedule", changes={"end_time": T0 + timedelta(hours=2, minutes=5)})
    assert store.get("a").version == 1
    store.fire("a", "start")
    with pytest.raises(InvalidTrigger):
        store.fire("a", "reschedule", changes={"start_time": T0})


def test_due_work_and_next_wakeup(store: BookingStore) -> None:
    now = T0 - timedelta(hours=1)
    store.create(T0, T0 + timedelta(hours=1), booking_id="later")
    store.create(now - timedelta(minutes=1), now + timedelta(minutes=5), booking_id="nowish",
                 allow_past=True)
    due = store.due(now, preroll_s=3)
    assert [b.id for b in due.bookings] == ["nowish"]
    assert due.next_wakeup == T0 - timedelta(seconds=3)
    store.fire("nowish", "start")
    due = store.due(now, preroll_s=3)
    assert [b.id for b in due.bookings] == ["nowish"]
    assert due.next_wakeup == now + timedelta(minutes=5)


def test_progress_and_kv_do_not_bump_version(store: BookingStore) -> None:
    store.create(T0, T0 + timedelta(hours=1), booking_id="a")
    store.set_progress("a", "processing", 0.5)
    b = store.get("a")
    assert (b.progress, b.progress_stage, b.version) == (0.5, "processing", 0)
    store.kv_set("heartbeat", {"pid": 1})
    store.kv_set("heartbeat", {"pid": 2})
    value, _at = store.kv_get("heartbeat") or (None, None)
    assert value == {"pid": 2}


def test_progress_detail_writers_in_two_threads_lose_nothing(store: BookingStore) -> None:
    # The live builder and the live uploader each merge their own count from their own thread
    # and their own connection: neither may put back a stale value of the other's key.
    store.create(T0, T0 + timedelta(hours=1), booking_id="a")
    other = make_store(store.db.url)
    errors: list[BaseException] = []

    def write(target: BookingStore, key: str) -> None:
        try:
            for n in range(1, 61):
                target.set_progress_detail("a", **{key: n})
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(store, "chunks_built")),
        threading.Thread(target=write, args=(other, "bytes_uploaded")),
    ]
    run_together(threads)
    assert errors == []
    assert store.get("a").progress_detail == {"bytes_uploaded": 60, "chunks_built": 60}
    store.set_progress_detail("nobody", chunks_built=1)  # a booking that is gone: nothing


def test_counts(store: BookingStore) -> None:
    store.create(T0, T0 + timedelta(hours=1), booking_id="a")
    store.create(T0 + timedelta(hours=1), T0 + timedelta(hours=2), booking_id="b")
    store.fire("b", "cancel")
    counts = store.counts()
    assert counts["confirmed"] == 1 and counts["cancelled"] == 1 and sum(counts.values()) == 2


def test_every_change_lands_in_the_outbox_in_order(store: BookingStore) -> None:
    store.create(T0, T0 + timedelta(hours=1), booking_id="a")
    store.fire("a", "start")
    store.fire("a", "note", detail="camera 1 died")  # notes are local detail, not pushed
    store.fire("a", "finish", changes={"raw_dir": "/data/raw/a"})
    rows = store.outbox_pending()
    assert [(r.kind, r.seq) for r in rows] == [("booking", 0), ("transition", 1), ("transition", 3)]
    last = rows[-1].data
    assert last["booking"]["state"] == "completed" and last["booking"]["raw_dir"] == "/data/raw/a"
    assert last["change"] == {"from": "recording", "to": "completed", "trigger": "finish",
                              "detail": None, "error": None}
    store.outbox_delivered(rows[0].id)
    store.outbox_failed(rows[1].id, "network down")
    pending = store.outbox_pending()
    assert [r.seq for r in pending] == [1, 3] and pending[0].attempts == 1
    assert pending[0].last_error == "network down"


def test_invalid_or_stale_writes_leave_no_outbox_row(store: BookingStore) -> None:
    store.create(T0, T0 + timedelta(hours=1), booking_id="a")
    with pytest.raises(InvalidTrigger):
        store.fire("a", "upload")
    with pytest.raises(StaleVersion):
        store.fire("a", "start", expected_version=7)
    assert [r.kind for r in store.outbox_pending()] == ["booking"]


def test_ids_with_a_trailing_newline_are_refused(store: BookingStore) -> None:
    with pytest.raises(InvalidBooking, match="id must be"):
        store.create(T0, T0 + timedelta(hours=1), booking_id="abc\n")


def test_schema_is_at_the_newest_migration_and_matches_the_models(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from controller.db import Base

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_outbox_listeners_hear_every_queued_change_and_cannot_break_it(
    store: BookingStore,
) -> None:
    heard: list[str] = []

    def broken() -> None:
        raise RuntimeError("listener bug")

    store.on_outbox.extend([broken, lambda: heard.append("x")])
    store.create(T0, T0 + timedelta(minutes=30), booking_id="b1")
    store.fire("b1", "start")
    store.note("b1", "camera 1 is slow")  # history only, nothing for the booking system
    with pytest.raises(InvalidTrigger):
        store.fire("b1", "upload")
    assert heard == ["x", "x"]
    assert store.get("b1").state == "recording"
    assert len(store.outbox_pending()) == 2


def test_cancel_is_idempotent(store: BookingStore) -> None:
    store.create(T0, T0 + timedelta(hours=1), booking_id="a")
    first = store.cancel("a", detail="by hand")
    assert first.state == "cancelled" and first.version == 1
    again = store.cancel("a", detail="by hand")
    assert again.to_dict() == first.to_dict() and len(store.history("a")) == 1
    store.create(T0 + timedelta(hours=1), T0 + timedelta(hours=2), booking_id="b")
    for trigger in ("start", "finish"):
        store.fire("b", trigger)
    with pytest.raises(InvalidTrigger, match="cannot cancel"):
        store.cancel("b")


def test_a_drawn_id_that_clashes_is_drawn_again(
    store: BookingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create(T0, T0 + timedelta(hours=1), booking_id="bk-dup")
    drawn = iter(["bk-dup", "bk-dup", "bk-fresh"])
    monkeypatch.setattr("controller.fsm.store.new_booking_id", lambda now: next(drawn))
    later = T0 + timedelta(hours=2)
    assert store.create(later, later + timedelta(hours=1)).id == "bk-fresh"
    with pytest.raises(Conflict, match="exists already"):  # an id the caller chose
        store.create(later + timedelta(hours=2), later + timedelta(hours=3), booking_id="bk-dup")


def test_every_trigger_declares_its_effects() -> None:
    from controller.fsm.machine import RULES, TRIGGERS, effects_of

    assert tuple(RULES) == TRIGGERS
    assert effects_of("fail").attempts == "count" and effects_of("fail").next_attempt == "backoff"
    assert not effects_of("note").pushed and effects_of("reschedule").checks_slot
