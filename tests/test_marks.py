"""Replay marks: stored with the booking through the store, refused outside a recording,
repeated presses counted once; the GPIO button through gpiozero's mock pin factory."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from controller.db import Database
from controller.drivers.gpio_button import ButtonError, MarkButton, parse_pin
from controller.fsm import BookingStore
from controller.fsm.marks import SAME_MOMENT_S, MarkRefused, marks_of, record_mark

T0 = datetime(2030, 6, 1, 18, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + timedelta(minutes=10))


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> BookingStore:
    store = BookingStore(Database(f"sqlite:///{tmp_path / 'state.db'}"), device_id="court-1",
                         clock=clock)  # fmt: skip
    store.create(T0, T0 + timedelta(hours=1), booking_id="b1", allow_past=True)
    store.fire("b1", "start")
    return store


def test_a_mark_is_stored_with_a_history_row_and_a_version_bump(store: BookingStore) -> None:
    before = store.get("b1").version
    result = record_mark(store, source="api", booking_id="b1")
    assert not result.duplicate
    assert result.booking.version == before + 1
    marks = marks_of(store, "b1")
    assert [(m.at, m.source) for m in marks] == [(T0 + timedelta(minutes=10), "api")]
    last = store.history("b1")[-1]
    assert last.trigger == "note" and "replay mark" in (last.detail or "")
    assert "600 s into the booking" in (last.detail or "")


def test_mark_by_camera_finds_the_booking_recording_there(
    store: BookingStore, clock: Clock
) -> None:
    result = record_mark(store, source="cli", camera="court-1")
    assert result.booking.id == "b1"
    with pytest.raises(MarkRefused, match="no booking is recording on camera 'court-2'"):
        record_mark(store, source="cli", camera="court-2")


def test_repeated_presses_within_a_few_seconds_count_once(
    store: BookingStore, clock: Clock
) -> None:
    first = record_mark(store, source="button", booking_id="b1")
    clock.now += timedelta(seconds=SAME_MOMENT_S - 1)
    again = record_mark(store, source="button", booking_id="b1")
    assert again.duplicate and again.mark.id == first.mark.id
    clock.now += timedelta(seconds=SAME_MOMENT_S + 1)
    later = record_mark(store, source="button", booking_id="b1")
    assert not later.duplicate
    assert len(marks_of(store, "b1")) == 2


def test_presses_racing_each_other_are_counted_once(store: BookingStore) -> None:
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def press() -> None:
        barrier.wait()
        results.append(record_mark(store, source="button", booking_id="b1").duplicate)

    threads = [threading.Thread(target=press) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True, True, True]
    assert len(marks_of(store, "b1")) == 1


@pytest.mark.parametrize(
    ("at", "message"),
    [
        (T0 - timedelta(seconds=5), "is before booking b1 started"),
        (T0 + timedelta(hours=2), "is after booking b1 ends"),
        (T0 + timedelta(minutes=30), "is in the future"),
    ],
)
def test_a_mark_outside_the_recording_is_refused_and_changes_nothing(
    store: BookingStore, at: datetime, message: str
) -> None:
    before = store.get("b1").to_dict()
    with pytest.raises(MarkRefused, match=message):
        record_mark(store, source="api", booking_id="b1", at=at)
    assert marks_of(store, "b1") == []
    assert store.get("b1").to_dict() == before


def test_a_mark_on_a_booking_that_is_not_recording_is_refused(store: BookingStore) -> None:
    store.create(T0 + timedelta(hours=2), T0 + timedelta(hours=3), booking_id="b2")
    with pytest.raises(MarkRefused, match="b2 is confirmed, not recording"):
        record_mark(store, source="api", booking_id="b2", at=T0 + timedelta(hours=2))
    store.fire("b1", "finish")
    with pytest.raises(MarkRefused, match="no booking is recording"):
        record_mark(store, source="button", camera="court-1")


def test_the_gpio_button_marks_through_the_mock_pin_factory(store: BookingStore) -> None:
    factory = MockFactory()
    pressed = threading.Event()

    def on_press() -> None:
        record_mark(store, source="button", camera="court-1")
        pressed.set()

    button = MarkButton("GPIO17", on_press, pin_factory=factory)
    try:
        pin = factory.pin(17)
        assert not button.is_pressed  # the pull-up holds it high
        pin.drive_low()  # the button connects the pin to ground
        assert pressed.wait(5)
        pin.drive_high()
        assert button.is_pressed is False
        assert [m.source for m in marks_of(store, "b1")] == ["button"]
    finally:
        button.stop()


def test_a_refused_press_is_logged_and_the_button_keeps_working(
    store: BookingStore, caplog: pytest.LogCaptureFixture
) -> None:
    factory = MockFactory()
    calls: list[int] = []

    def on_press() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise MarkRefused("no booking is recording")

    button = MarkButton("17", on_press, pin_factory=factory, bounce_s=0.001)
    try:
        pin = factory.pin(17)
        for _ in range(2):
            pin.drive_low()
            time.sleep(0.05)
            pin.drive_high()
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(calls) == 2
        assert "press not handled" in caplog.text
    finally:
        button.stop()


def test_bad_pin_names_are_one_clear_line() -> None:
    assert parse_pin("gpio4") == "GPIO4" and parse_pin("27") == 27
    with pytest.raises(ButtonError, match="is not a GPIO pin"):
        parse_pin("pin seventeen")


def test_mark_routes_need_the_token_store_refuse_and_merge(tmp_path: Path) -> None:
    from pydantic import SecretStr
    from starlette.testclient import TestClient

    from api.app import create_app
    from controller.config import load_settings
    from controller.context import open_context

    token = "marks-token-0123456789abcdef"
    auth = {"Authorization": f"Bearer {token}"}
    ctx = open_context(load_settings(data_dir=tmp_path, device_id="court-1",
                                     api_token=SecretStr(token)))  # fmt: skip
    now = datetime.now(UTC).replace(microsecond=0)
    ctx.store.create(now - timedelta(minutes=5), now + timedelta(minutes=55), booking_id="b1")
    ctx.store.fire("b1", "start")
    ctx.store.create(now + timedelta(hours=2), now + timedelta(hours=3), booking_id="b2")
    try:
        with TestClient(create_app(context=ctx)) as client:
            assert client.post("/cameras/court-1/mark").status_code == 401
            first = client.post("/cameras/court-1/mark", headers=auth)
            assert first.status_code == 201, first.text
            assert first.json()["booking_id"] == "b1" and not first.json()["duplicate"]
            again = client.post("/bookings/b1/marks", headers=auth, json={})
            assert again.status_code == 200 and again.json()["duplicate"]
            at = (now - timedelta(minutes=2)).isoformat()
            earlier = client.post("/bookings/b1/marks", headers=auth, json={"at": at})
            assert earlier.status_code == 201
            assert [m["source"] for m in client.get("/bookings/b1/marks").json()] == ["api"] * 2
            before = (now - timedelta(minutes=10)).isoformat()
            refused = client.post("/bookings/b1/marks", headers=auth, json={"at": before})
            assert refused.status_code == 409 and "before booking b1 started" in refused.text
            assert refused.json()["error"] == "not_recording"
            idle = client.post("/bookings/b2/marks", headers=auth)
            assert idle.status_code == 409 and "not recording" in idle.json()["detail"]
            nothing = client.post("/cameras/court-9/mark", headers=auth)
            assert nothing.status_code == 409
            naive = client.post("/bookings/b1/marks", headers=auth, json={"at": "2030-01-01T10:00"})
            assert naive.status_code == 422
            assert client.post("/bookings/zz/marks", headers=auth).status_code == 404
            assert client.post("/bookings/b1/marks", headers=auth, json={"x": 1}).status_code == 422
    finally:
        ctx.close()


def test_the_staff_page_offers_a_mark_button_only_while_recording(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from api.app import create_app
    from controller.config import load_settings
    from controller.context import open_context

    ctx = open_context(load_settings(data_dir=tmp_path, device_id="court-1"))
    now = datetime.now(UTC).replace(microsecond=0)
    ctx.store.create(now - timedelta(minutes=5), now + timedelta(minutes=55), booking_id="b1")
    ctx.store.fire("b1", "start")
    ctx.store.create(now + timedelta(hours=2), now + timedelta(hours=3), booking_id="b2")
    try:
        with TestClient(create_app(context=ctx)) as client:
            page = client.get("/").text
        assert 'id="mark-b1"' in page and 'id="mark-b2"' not in page
    finally:
        ctx.close()
