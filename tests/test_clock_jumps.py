"""The wall clock jumping forward or backward by minutes (NTP stepping a clock that drifted, an
RTC battery swapped): no booking is recorded twice, a skipped one becomes `missed` with a note.
The loop with in-memory drivers and a hand-driven clock (tests/test_supervisor_logic.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from controller.fsm import replay
from tests import test_supervisor_logic as logic

T0 = logic.T0
world = logic.world  # the same fixture: FakeCameras, a Notifier, a hand-driven Clock
settle = logic.settle


def triggers(world: Any, booking_id: str) -> list[str]:
    found = [h.trigger for h in world.store.history(booking_id)]
    assert replay(found) == world.store.get(booking_id).state
    return found


def starts_of(world: Any, booking_id: str) -> int:
    return sum(1 for b, _ in world.cams.started if b == booking_id)


def test_a_jump_forward_past_whole_bookings_marks_them_missed_with_a_note(world: Any) -> None:
    s = world.store
    s.create(T0, T0 + timedelta(minutes=5), booking_id="a")
    s.create(T0 + timedelta(minutes=10), T0 + timedelta(minutes=15), booking_id="b")
    world.sup.step()
    assert s.get("a").state == "confirmed"
    world.clock.advance(20 * 60)  # the clock steps 20 minutes forward
    settle(world)
    for booking_id in ("a", "b"):
        assert s.get(booking_id).state == "missed"
        assert triggers(world, booking_id) == ["miss"]
        assert "the slot ended with nothing recorded" in (s.history(booking_id)[-1].detail or "")
    assert world.cams.started == []


def test_a_jump_forward_during_a_recording_ends_it_and_starts_the_next_once(world: Any) -> None:
    s = world.store
    s.create(T0, T0 + timedelta(minutes=5), booking_id="a")
    s.create(T0 + timedelta(minutes=5), T0 + timedelta(minutes=10), booking_id="b")
    s.create(T0 + timedelta(minutes=10), T0 + timedelta(minutes=12), booking_id="c")
    world.clock.now = T0 + timedelta(minutes=1)
    world.sup.step()
    assert s.get("a").state == "recording"
    world.clock.now = T0 + timedelta(minutes=7)  # forward into the middle of b
    settle(world)
    assert s.get("a").state == "video_uploaded"  # what it recorded is delivered
    assert s.get("b").state == "recording"
    world.clock.now = T0 + timedelta(minutes=2)  # and back into a's slot
    settle(world)
    world.clock.now = T0 + timedelta(minutes=13)  # forward past c's whole slot
    settle(world)
    assert s.get("b").state == "video_uploaded"
    assert s.get("c").state == "missed" and triggers(world, "c") == ["miss"]
    assert (starts_of(world, "a"), starts_of(world, "b"), starts_of(world, "c")) == (1, 1, 0)
    for booking_id in ("a", "b"):
        assert triggers(world, booking_id).count("start") == 1


def test_a_jump_backward_during_a_recording_does_not_start_it_again(world: Any) -> None:
    s = world.store
    s.create(T0, T0 + timedelta(minutes=30), booking_id="a")
    world.clock.now = T0 + timedelta(minutes=5)
    world.sup.step()
    assert s.get("a").state == "recording" and starts_of(world, "a") == 1
    world.clock.now = T0 - timedelta(minutes=10)  # back to before the slot and its pre-roll
    settle(world)
    assert s.get("a").state == "recording" and "a" in world.sup.recording.active
    assert starts_of(world, "a") == 1 and world.cams.stopped == []
    world.clock.now = T0 + timedelta(minutes=30)
    settle(world)
    assert s.get("a").state == "video_uploaded"
    assert starts_of(world, "a") == 1 and world.cams.stopped == ["a"]
    assert triggers(world, "a").count("start") == 1


def test_a_jump_backward_after_a_recording_does_not_reopen_its_slot(world: Any) -> None:
    s = world.store
    s.create(T0, T0 + timedelta(minutes=5), booking_id="a")
    s.create(T0 + timedelta(minutes=6), T0 + timedelta(minutes=8), booking_id="gone")
    world.clock.now = T0 + timedelta(minutes=1)
    world.sup.step()
    world.clock.now = T0 + timedelta(minutes=5)
    settle(world)
    assert s.get("a").state == "video_uploaded"
    world.clock.now = T0 + timedelta(minutes=9)
    settle(world)
    assert s.get("gone").state == "missed"
    before = {b: triggers(world, b) for b in ("a", "gone")}
    for back in (T0 + timedelta(minutes=2), T0 - timedelta(minutes=1), T0 + timedelta(minutes=7)):
        world.clock.now = back  # into a's slot, before it, into the missed one's
        settle(world)
        assert world.sup.recording.active == {} and world.sup.workers.jobs == {}
    assert {b: triggers(world, b) for b in ("a", "gone")} == before
    assert starts_of(world, "a") == 1 and starts_of(world, "gone") == 0


def test_a_jump_backward_while_a_failed_recording_waits_for_its_retry(world: Any) -> None:
    """Every camera died; the clock then goes back: the retry waits for its time (it is not
    lost), and the booking records once more in its slot, never a second time after it."""
    s = world.store
    s.create(T0, T0 + timedelta(minutes=10), booking_id="a")
    world.clock.now = T0 + timedelta(minutes=1)
    world.sup.step()
    world.cams.pending = [logic.Event(0, "died", "cable out"), logic.Event(1, "died", "cable out")]
    world.clock.now = T0 + timedelta(minutes=2)
    world.sup.step()
    b = s.get("a")
    assert b.state == "recording_failed" and b.next_attempt_at is not None
    world.clock.now = T0 - timedelta(minutes=5)
    settle(world)
    assert s.get("a").state == "recording_failed" and starts_of(world, "a") == 1
    world.clock.now = b.next_attempt_at
    settle(world)
    assert s.get("a").state == "recording" and starts_of(world, "a") == 2
    world.clock.now = T0 + timedelta(minutes=10)
    settle(world)
    assert s.get("a").state == "video_uploaded"
    world.clock.now = T0 + timedelta(minutes=3)
    settle(world)
    assert s.get("a").state == "video_uploaded" and starts_of(world, "a") == 2
