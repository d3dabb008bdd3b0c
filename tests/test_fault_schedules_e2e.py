"""Fault matrix rows with randomised schedules against a real `ezrec run` (issue 10): SIGKILLs
at random instants across back-to-back bookings, and operators cancelling, retrying and
rescheduling while the loop works. Each run prints its seed; rerun one with
EZRECTEST_SEED=<seed>."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.db import utcnow
from controller.drivers.nudge import send_nudge
from controller.fsm import Conflict, InvalidBooking, InvalidTrigger, StaleVersion, replay
from controller.fsm.states import TERMINAL
from tests._e2e import ffmpeg_processes

pytestmark = pytest.mark.slow

SEEDS = [int(os.environ["EZRECTEST_SEED"])] if os.environ.get("EZRECTEST_SEED") else [7, 2026]
# Time a freshly started loop needs before footage of a slot is on disk (camera start-up).
UP_FOR_FOOTAGE_S = 1.5


def ffmpeg_pids(data_dir: Path) -> set[int]:
    """PIDs of camera/encoder processes writing into this data dir."""
    return set(ffmpeg_processes(data_dir))


def segments(raw: Path, booking_id: str = "*") -> set[Path]:
    """Raw segment files with footage in them (empty ones are dropped by design)."""
    found = set()
    for path in raw.glob(f"{booking_id}/cam*/*.ts"):
        try:
            if path.stat().st_size > 0:
                found.add(path)
        except FileNotFoundError:
            pass
    return found


def check_history(store: Any, booking_id: str) -> list[str]:
    """The history's triggers replay to the stored state, one row per version."""
    booking = store.get(booking_id)
    triggers = [h.trigger for h in store.history(booking_id)]
    assert replay(triggers) == booking.state, (booking_id, triggers, booking.state)
    assert len(triggers) == booking.version, (booking_id, triggers, booking.version)
    return triggers


def history_text(store: Any, booking_id: str) -> str:
    return " | ".join(f"{h.trigger}: {h.detail or ''} {h.error or ''}"
                      for h in store.history(booking_id))


def overlap_s(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)


def wait_terminal(store: Any, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(store.get(b).state in TERMINAL for b in ids):
            return
        time.sleep(0.2)
    raise AssertionError({b: history_text(store, b) for b in ids})


@pytest.mark.parametrize("seed", SEEDS)
def test_random_sigkill_schedule_across_back_to_back_bookings(world: Any, seed: int) -> None:
    print(f"seed {seed} (rerun with EZRECTEST_SEED={seed})")
    rng = random.Random(seed)
    store = world.ctx.store
    raw = world.dir / "recordings" / "raw"
    t0 = utcnow() + timedelta(seconds=2)
    ids = [f"b{n}" for n in range(4)]
    slots: dict[str, tuple[datetime, datetime]] = {}
    for n, booking_id in enumerate(ids):
        start = t0 + timedelta(seconds=3.5 * n)
        slots[booking_id] = (start, start + timedelta(seconds=3.5))
        store.create(*slots[booking_id], booking_id=booking_id)
    last_end = slots[ids[-1]][1].timestamp()

    # The schedule: up for a random while, SIGKILL, down for a random while (sometimes long
    # enough for a whole slot to pass), until the last slot is over; then up for good.
    up_since: list[tuple[float, float]] = []  # wall-clock spans in which a loop ran
    seen: set[Path] = set()
    kills = 0
    while time.time() < last_end:
        proc = world.start()
        spawned = time.time()
        beat = None
        # Mostly at a random instant of the loop's life; sometimes while it is starting up.
        in_startup = rng.random() < 0.2
        alive_for = rng.uniform(0.2, 1.5) if in_startup else rng.uniform(0.0, 3.0)
        while True:
            if beat is None:
                got = store.kv_get("supervisor")
                if got is not None and got[0].get("pid") == proc.pid:
                    beat = time.time()
            if in_startup and time.time() - spawned >= alive_for:
                break
            if beat is not None and time.time() - beat >= alive_for:
                break
            assert time.time() - spawned < 20, "the loop never started"
            seen |= segments(raw)
            time.sleep(0.05)
        children = ffmpeg_pids(world.dir)  # only this process has any now
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
        if beat is not None:
            up_since.append((beat, time.time()))
        # The kernel kills the camera/encoder children with it (parent-death signal).
        deadline = time.monotonic() + 5
        while children & ffmpeg_pids(world.dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not children & ffmpeg_pids(world.dir), "children outlived a SIGKILL"
        seen |= segments(raw)
        time.sleep(rng.choice([rng.uniform(0.1, 1.0), rng.uniform(2.0, 5.0)]))
    proc = world.start()
    up_since.append((time.time(), float("inf")))
    print(f"{kills} kills; loop up (relative to the first slot): "
          f"{[(round(a - t0.timestamp(), 1), round(b - t0.timestamp(), 1)) for a, b in up_since]}")
    wait_terminal(store, ids, 90)

    for booking_id in ids:
        booking = store.get(booking_id)
        triggers = check_history(store, booking_id)
        history = history_text(store, booking_id)
        print(booking_id, booking.state, history)
        start, end = (t.timestamp() for t in slots[booking_id])
        if booking.state == "missed":
            # Only when no loop ran long enough in the slot to record anything; and the
            # history says so.
            assert overlap_s(up_since, start, end) < UP_FOR_FOOTAGE_S, history
            # (What it recorded of the pre-roll, if anything, stays on disk: checked below.)
            assert triggers[-1] == "miss" and "nothing recorded" in history, history
        else:
            assert booking.state == "video_uploaded", history
            uploaded = booking.extra["uploaded"]
            assert uploaded and all(o.get("sha256") for o in uploaded), uploaded
            assert segments(raw, booking_id), "raw files kept until the retention grace"
            assert booking.raw_dir is not None
    # No raw file with footage was deleted (every upload is well within RETENTION_GRACE_H).
    gone = sorted(str(p) for p in seen if not p.exists())
    assert not gone, gone
    assert proc.poll() is None
    assert not ffmpeg_pids(world.dir), "no camera or encoder left running"


def test_operators_racing_the_loop(world: Any) -> None:
    """Cancel / retry / reschedule fired at random instants on several bookings while a real
    `ezrec run` records, builds and uploads them: the loop never exits, every history replays
    to its state, what was cancelled is cancelled, the others are delivered."""
    seed = SEEDS[0]
    print(f"seed {seed} (rerun with EZRECTEST_SEED={seed})")
    rng = random.Random(seed)
    store = world.ctx.store
    # The loop is up before the first slot: on a loaded machine the start-up alone can outlast
    # a 3 s slot, which is then rightly `missed` (seen in a full run).
    proc = world.start(ready=True)
    t0 = utcnow() + timedelta(seconds=2)
    ids = [f"op{n}" for n in range(5)]
    for n, booking_id in enumerate(ids):
        start = t0 + timedelta(seconds=3 * n)
        store.create(start, start + timedelta(seconds=3), booking_id=booking_id)
    send_nudge(world.dir)
    cancelled: set[str] = set()
    refused: dict[str, int] = {}
    done: dict[str, int] = {}
    stop = threading.Event()

    def operator() -> None:
        while not stop.is_set():
            action = rng.choices(["reschedule", "retry", "cancel"], [0.6, 0.3, 0.1])[0]
            if action == "cancel" and len(cancelled) >= 2:
                action = "reschedule"  # two cancelled; the others are to be delivered
            booking_id = rng.choice(ids)
            if action == "cancel" and rng.random() < 0.5:
                # Often the one recording now: its cameras must stop, its files stay.
                now_recording = [b for b in ids if store.get(b).state == "recording"]
                booking_id = rng.choice(now_recording or ids)
            kwargs: dict[str, Any] = {"detail": f"operator {action}"}
            if action == "retry":
                kwargs["admin"] = True
            elif action == "reschedule":
                start = utcnow() + timedelta(seconds=rng.uniform(-0.5, 8.0))
                kwargs["changes"] = {"start_time": start,
                                     "end_time": start + timedelta(seconds=rng.uniform(2.5, 3.5))}
            try:
                # As an operator does: act on what was read a moment ago (a stale version
                # is refused, not applied over the loop's change).
                kwargs["expected_version"] = store.get(booking_id).version
                time.sleep(rng.uniform(0.0, 0.05))
                after = store.fire(booking_id, action, **kwargs)
            except (InvalidTrigger, StaleVersion, Conflict, InvalidBooking) as exc:
                refused[type(exc).__name__] = refused.get(type(exc).__name__, 0) + 1
            else:
                done[action] = done.get(action, 0) + 1
                if after.state == "cancelled":
                    cancelled.add(booking_id)
            send_nudge(world.dir)
            time.sleep(rng.uniform(0.0, 0.15))

    thread = threading.Thread(target=operator)
    thread.start()
    try:
        time.sleep(12)
    finally:
        stop.set()
        thread.join(10)
    print("done", done, "refused", refused, "cancelled", sorted(cancelled))
    assert done.get("reschedule") and refused, "the schedule raced nothing"
    wait_terminal(store, ids, 90)
    assert proc.poll() is None, "the loop exited"
    for booking_id in ids:
        booking = store.get(booking_id)
        triggers = check_history(store, booking_id)
        history = history_text(store, booking_id)
        print(booking_id, booking.state, history)
        if booking_id in cancelled:
            assert booking.state == "cancelled", history
        else:
            assert "cancel" not in triggers, history
            assert booking.state == "video_uploaded", history
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    out = world.output(proc)
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert not ffmpeg_pids(world.dir)
