"""The watchdog is the loop's own health (issue 10): stalled segments, an encode that stopped
moving, or the loop itself stuck stop `WATCHDOG=1` so systemd restarts the service; a slow but
moving upload or encode keeps it going. In-memory drivers, the real loop, real monotonic time
with STALL_S made small."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from controller import heartbeat, video_jobs
from controller.recordings import booking_files
from tests import test_supervisor_logic as logic

T0 = logic.T0
world = logic.world
STALL = 0.1


@pytest.fixture(autouse=True)
def _small_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heartbeat, "STALL_S", STALL)


def petted(world: Any) -> bool:
    """One pass: did it pet the watchdog?"""
    world.notifier.sent.clear()
    world.sup.step()
    return "WATCHDOG=1" in world.notifier.sent


def recording(world: Any, booking_id: str = "a") -> None:
    world.store.create(T0, T0 + timedelta(minutes=30), booking_id=booking_id)
    world.clock.now = T0 + timedelta(minutes=1)
    world.sup.step()
    assert world.store.get(booking_id).state == "recording"


def test_segments_that_stop_growing_stop_the_watchdog(world: Any) -> None:
    written = [188]
    world.cams.bytes_written = lambda _handle: written[0]
    recording(world)
    for _ in range(3):  # growing: petted at every pass, however long it takes
        written[0] += 188
        time.sleep(STALL * 0.6)
        assert petted(world)
    time.sleep(STALL * 1.5)  # no byte for longer than STALL_S
    assert not petted(world)
    assert not petted(world)
    written[0] += 188  # the camera writes again: healthy again
    assert petted(world)


def completed(world: Any, booking_id: str = "a") -> None:
    """A booking whose recording is over, left to the build worker."""
    world.store.create(T0, T0 + timedelta(minutes=2), booking_id=booking_id)
    world.clock.now = T0 + timedelta(minutes=1)
    world.sup.step()
    world.clock.now = T0 + timedelta(minutes=2)


def test_an_encode_that_stops_moving_stops_the_watchdog(world: Any) -> None:
    release = threading.Event()

    def stuck_build(settings, booking, media, progress, stop):  # type: ignore[no-untyped-def]
        progress(0.1)
        release.wait(10)  # ffmpeg hung: no progress
        out = booking_files(settings, booking.id).processed_path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"video")
        return video_jobs.Built([out], 60.0, [])

    world.sup.build_fn = stuck_build
    completed(world)
    assert petted(world)  # the build has just started
    assert world.sup.workers.jobs["a"].kind == "build"
    time.sleep(STALL * 4 + 0.15)
    assert not petted(world)
    release.set()
    logic.settle(world)
    assert world.store.get("a").state == "video_uploaded"
    assert petted(world)


@pytest.mark.parametrize("kind", ["build", "upload"])
def test_a_slow_but_moving_job_keeps_the_watchdog_going(world: Any, kind: str) -> None:
    """It takes five times the stall bound, but its progress moves: never a missed pet."""
    steps = 25

    def crawl(progress: Any, stop: threading.Event) -> None:
        for n in range(steps):
            progress(n / steps)
            stop.wait(STALL * 4 * 5 / steps)

    real_build, real_upload = world.sup.build_fn, world.sup.upload_fn

    def slow_build(settings, booking, media, progress, stop):  # type: ignore[no-untyped-def]
        crawl(progress, stop)
        return real_build(settings, booking, media, progress, stop)

    def slow_upload(settings, booking, storage, progress, stop):  # type: ignore[no-untyped-def]
        crawl(progress, stop)
        return real_upload(settings, booking, storage, progress, stop)

    if kind == "build":
        world.sup.build_fn = slow_build
    else:
        world.sup.upload_fn = slow_upload
    completed(world)
    seen_job = began = time.monotonic()
    pets: list[bool] = []
    while world.store.get("a").state != "video_uploaded" and time.monotonic() - began < 20:
        pets.append(petted(world))
        if any(j.kind == kind for j in world.sup.workers.jobs.values()):
            seen_job = time.monotonic()
        time.sleep(STALL / 2)
    assert world.store.get("a").state == "video_uploaded"
    assert seen_job - began > STALL * 4 * 2, "the job was not slow enough to prove anything"
    assert all(pets), pets


def test_only_the_loop_pets_the_watchdog_so_a_stuck_loop_is_restarted(world: Any) -> None:
    """A driver call that hangs in the loop (here the cameras' poll for 1 s) means no pet for
    that long, even while an upload worker moves along and reports progress meanwhile: no
    other thread pets on the loop's behalf."""
    pets: list[tuple[float, str]] = []

    def watchdog() -> None:
        pets.append((time.monotonic(), threading.current_thread().name))

    world.notifier.interval = 0.05
    s = world.store
    # One booking uploading slowly (its worker reports progress all along) ...
    s.create(T0 - timedelta(minutes=10), T0 - timedelta(minutes=5), booking_id="up",
             allow_past=True)
    for trigger in ("start", "finish", "process"):
        s.fire("up", trigger)
    progress_at: list[float] = []
    real_upload = world.sup.upload_fn

    def slow_upload(settings, booking, storage, progress, stop):  # type: ignore[no-untyped-def]
        for n in range(40):
            progress(n / 40)
            progress_at.append(time.monotonic())
            if stop.wait(0.05):
                break
        return real_upload(settings, booking, storage, progress, stop)

    world.sup.upload_fn = slow_upload
    # ... and one recording (its segments grow), whose camera poll hangs once.
    grown = itertools.count(188, 188)
    world.cams.bytes_written = lambda _handle: next(grown)
    recording(world, "rec")
    hang: dict[str, float] = {}
    real_poll = world.cams.poll

    def poll(handle: Any) -> list[Any]:
        if "from" not in hang and progress_at and len(pets) >= 3:
            hang["from"] = time.monotonic()
            time.sleep(1.0)
            hang["to"] = time.monotonic()
        return real_poll(handle)

    world.cams.poll = poll
    world.notifier.watchdog = watchdog
    loop = threading.Thread(target=world.sup.run, name="the-loop")
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while "to" not in hang and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        world.sup.request_stop()
        loop.join(10)
    assert not loop.is_alive()
    assert "to" in hang, "the poll never hung"
    during = [t for t, _ in pets if hang["from"] < t < hang["to"]]
    assert not during, "petted while the loop was stuck"
    assert any(hang["from"] < t < hang["to"] for t in progress_at), "no worker ran meanwhile"
    assert any(t < hang["from"] for t, _ in pets) and any(t > hang["to"] for t, _ in pets)
    assert {name for _, name in pets} == {"the-loop"}
