"""The supervisor's decisions with in-memory drivers and a hand-driven clock: fast, no ffmpeg.
(The real drivers, real time and SIGKILL are in test_supervisor_e2e.py.)"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller import video_jobs
from controller.context import Context
from controller.recordings import booking_files
from controller.supervisor import Supervisor

T0 = datetime(2030, 6, 1, 18, 0, tzinfo=UTC)


@dataclass
class Handle:
    booking_id: str
    out_dir: Path
    run: int
    cameras: list[int]
    notes: list[str] = field(default_factory=list)


@dataclass
class Event:
    camera: int
    kind: str
    detail: str


@dataclass
class Result:
    files: dict[int, list[Path]]
    notes: list[str]


class FakeCameras:
    name = "fake"
    exclusive = False

    def __init__(self) -> None:
        self.started: list[tuple[str, datetime]] = []
        self.stopped: list[str] = []
        self.fail_start = False
        self.present = True
        self.pending: list[Event] = []
        self.clock: Any = None

    def discover(self) -> list[Any]:
        return [type("Info", (), {"up": self.present})()]

    def start(self, booking_id: str, out_dir: Path) -> Handle:
        if self.fail_start:
            raise RuntimeError("camera 0: not found; camera 1: not found")
        run = len(list(out_dir.glob("cam0/*.ts"))) if out_dir.exists() else 0
        (out_dir / "cam0").mkdir(parents=True, exist_ok=True)
        (out_dir / "cam0" / f"{run:03d}-00000.ts").write_bytes(b"\x47" * 188)
        self.started.append((booking_id, self.clock()))
        return Handle(booking_id, out_dir, run, [0, 1])

    def poll(self, handle: Handle) -> list[Event]:
        events, self.pending = self.pending, []
        for e in events:
            handle.cameras.remove(e.camera)
        return events

    def bytes_written(self, handle: Handle) -> int:
        return 188

    def stop(self, handle: Handle, timeout: float = 5.0) -> Result:
        self.stopped.append(handle.booking_id)
        return Result({0: list(handle.out_dir.glob("cam0/*.ts"))}, [])

    def close(self) -> None:
        pass


class Notifier:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.interval: float | None = 5.0

    def ready(self) -> None:
        self.sent.append("READY=1")

    def status(self, text: str) -> None:
        self.sent.append(f"STATUS={text}")

    def stopping(self) -> None:
        self.sent.append("STOPPING=1")

    def watchdog(self) -> None:
        self.sent.append("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        return self.interval


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def world(ctx: Context) -> Any:
    clock = Clock(T0 - timedelta(minutes=1))
    ctx.store.clock = clock
    cameras = FakeCameras()
    cameras.clock = clock
    state: dict[str, Any] = {"build_error": None, "upload_error": None, "free": 10_000.0}

    def build(settings, booking, media, progress, stop):  # type: ignore[no-untyped-def]
        progress(0.5)
        if state["build_error"]:
            raise RuntimeError(state["build_error"])
        out = booking_files(settings, booking.id).processed_path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"video")
        return video_jobs.Built([out], 60.0, ["intro unreadable: built without it"])

    def upload(settings, booking, storage, progress, stop):  # type: ignore[no-untyped-def]
        if state["upload_error"]:
            raise RuntimeError(state["upload_error"])
        progress(1.0)
        return video_jobs.Uploaded(
            [{"url": "file:///x", "key": "k", "size": 5, "sha256": "ab",
              "uploaded_at": clock().isoformat()}], "file:///x")

    notifier = Notifier()
    sup = Supervisor(
        ctx.settings, ctx.store, cameras, storage=None, media=None, notifier=notifier,
        clock=clock, build_fn=build, upload_fn=upload,
        free_disk_mb=lambda _p: state["free"],
    )
    yield type("World", (), {"sup": sup, "clock": clock, "cams": cameras, "store": ctx.store,
                             "state": state, "notifier": notifier})
    sup.shutdown()


def settle(world: Any, steps: int = 6) -> None:
    """Let worker results come back: step, and wait for the workers in between."""
    for _ in range(steps):
        world.sup.step()
        futures.wait([job.future for job in world.sup.workers.jobs.values()], timeout=10)


def test_happy_path_with_preroll(world: Any) -> None:
    s = world.store
    world.notifier.interval = None  # no watchdog: only the booking bounds the sleep
    s.create(T0, T0 + timedelta(minutes=30), booking_id="b1")
    sleep = world.sup.step()
    assert s.get("b1").state == "confirmed"
    # It wakes exactly at the pre-roll, not on a polling tick.
    assert sleep == pytest.approx(60 - world.sup.settings.preroll_s, abs=0.01)
    world.clock.advance(sleep)
    world.sup.step()
    b = s.get("b1")
    assert b.state == "recording" and world.cams.started[0][1] < b.start_time
    world.clock.now = b.end_time
    settle(world)
    b = s.get("b1")
    assert b.state == "video_uploaded", b.to_dict()
    triggers = [h.trigger for h in s.history("b1")]
    assert triggers[0] == "start" and triggers[-1] == "upload"
    assert "process" in triggers and "finish" in triggers
    assert any("intro unreadable" in (h.detail or "") for h in s.history("b1"))
    assert "READY=1" not in world.notifier.sent  # only run() says READY
    assert "WATCHDOG=1" in world.notifier.sent


def test_missed_when_slot_passed_while_down(world: Any) -> None:
    world.store.create(T0, T0 + timedelta(minutes=1), booking_id="gone")
    world.clock.advance(3600)
    world.sup.step()
    b = world.store.get("gone")
    assert b.state == "missed" and world.cams.started == []


def test_disk_guard_refuses_and_says_why(world: Any) -> None:
    world.state["free"] = 50.0
    world.store.create(T0, T0 + timedelta(minutes=30), booking_id="b1")
    world.clock.advance(60)
    world.sup.step()
    b = world.store.get("b1")
    assert b.state == "recording_failed"
    assert "not enough disk" in (b.last_error or "")
    assert "EZREC_MIN_FREE_DISK_MB" in (b.last_error or "")
    assert world.cams.started == []
    assert any("not enough disk" in e for e in world.sup.heartbeat.last_errors)
    # Retries are capped at the slot's end; with disk back, the retry records the rest.
    assert b.next_attempt_at is not None and b.next_attempt_at <= b.end_time
    world.state["free"] = 10_000.0
    world.clock.now = b.next_attempt_at
    world.sup.step()
    world.sup.step()
    assert world.store.get("b1").state == "recording"


def test_all_cameras_dead_then_retry_resumes_and_keeps_segments(world: Any) -> None:
    world.store.create(T0, T0 + timedelta(minutes=30), booking_id="b1")
    world.clock.advance(60)
    world.sup.step()
    world.cams.pending = [Event(0, "died", "ffmpeg exited"), Event(1, "died", "ffmpeg exited")]
    world.clock.advance(60)
    world.sup.step()
    b = world.store.get("b1")
    assert b.state == "recording_failed" and "every camera" in (b.last_error or "")
    notes = [h.detail for h in world.store.history("b1") if h.trigger == "note"]
    assert any("camera 0 died" in (n or "") for n in notes)
    world.clock.now = b.next_attempt_at
    settle(world, 3)
    assert world.store.get("b1").state == "recording"
    assert len(world.cams.started) == 2
    world.clock.now = T0 + timedelta(minutes=31)
    settle(world)
    assert world.store.get("b1").state == "video_uploaded"


def test_restart_finds_recording_and_resumes_or_finalises(world: Any, ctx: Context) -> None:
    s = world.store
    s.create(T0, T0 + timedelta(minutes=30), booking_id="open")
    s.create(T0 - timedelta(minutes=40), T0 - timedelta(minutes=5), booking_id="closed",
             allow_past=True)
    for booking_id in ("open", "closed"):
        s.fire(booking_id, "start")
    # "closed" has segments on disk from before the crash; "open" is still in its slot.
    seg = booking_files(ctx.settings, "closed").raw_dir / "cam0" / "000-00000.ts"
    seg.parent.mkdir(parents=True)
    seg.write_bytes(b"\x47" * 188)
    world.clock.now = T0 + timedelta(minutes=1)
    world.sup.step()
    assert s.get("open").state == "recording" and "open" in world.sup.recording.active
    assert any("resumed recording" in (h.detail or "") for h in s.history("open"))
    assert s.get("closed").state in ("completed", "video_processed", "video_uploaded")


def test_recording_with_nothing_on_disk_fails(world: Any) -> None:
    s = world.store
    s.create(T0 - timedelta(minutes=40), T0 - timedelta(minutes=5), booking_id="empty",
             allow_past=True)
    s.fire("empty", "start")
    world.clock.now = T0
    world.sup.step()
    b = s.get("empty")
    assert b.state == "recording_failed" and b.last_error == "nothing was recorded"


def test_footage_of_the_preroll_only_is_no_recording_of_the_slot(world: Any, ctx: Context) -> None:
    """Killed during the pre-roll and back after the slot: the one run on disk ended before the
    slot began, so there is nothing to build (the builder would fail on every retry): the
    booking is missed, and says why; the files stay."""
    import json
    import os

    s = world.store
    s.create(T0, T0 + timedelta(minutes=5), booking_id="pre", allow_past=True)
    s.fire("pre", "start", detail="cameras starting 0.5 s before the slot")
    cam = booking_files(ctx.settings, "pre").raw_dir / "cam0"
    cam.mkdir(parents=True)
    seg = cam / "000-00000.ts"
    seg.write_bytes(b"\x47" * 188)
    began = T0.timestamp() - 0.5
    os.utime(seg, (began + 0.3, began + 0.3))  # its last write: still in the pre-roll
    (cam / "run-000.json").write_text(json.dumps({
        "camera": 0, "driver": "synthetic", "run": 0, "started_at": began, "stopped_at": None,
        "width": 320, "height": 240, "fps": 10, "notes": []}))
    world.clock.now = T0 + timedelta(minutes=6)
    settle(world)
    b = s.get("pre")
    assert b.state == "missed", [(h.trigger, h.detail, h.error) for h in s.history("pre")]
    assert [h.trigger for h in s.history("pre")] == ["start", "fail", "miss"]
    assert "nothing recorded: nothing was recorded" in (s.history("pre")[-1].detail or "")
    assert seg.exists()


def test_build_failure_backs_off_then_succeeds(world: Any) -> None:
    s = world.store
    s.create(T0, T0 + timedelta(minutes=5), booking_id="b1")
    world.clock.advance(60)
    world.sup.step()
    world.state["build_error"] = "validation failed: duration 3.0 s, expected 300 s"
    world.clock.advance(5 * 60)
    settle(world)
    b = s.get("b1")
    assert b.state == "processing_failed" and "validation failed" in (b.last_error or "")
    assert b.attempts == 1 and b.next_attempt_at is not None
    world.state["build_error"] = None
    world.clock.now = b.next_attempt_at
    settle(world)
    assert s.get("b1").state == "video_uploaded"


def test_cancel_while_recording_stops_cameras(world: Any) -> None:
    s = world.store
    s.create(T0, T0 + timedelta(minutes=30), booking_id="b1")
    world.clock.advance(60)
    world.sup.step()
    s.fire("b1", "cancel")
    world.sup.step()
    assert world.cams.stopped == ["b1"] and "b1" not in world.sup.recording.active
    assert s.get("b1").state == "cancelled"


def test_retention_deletes_only_after_verified_upload_and_grace(world: Any, ctx: Context) -> None:
    s = world.store
    s.create(T0, T0 + timedelta(minutes=5), booking_id="b1")
    world.clock.advance(60)
    world.sup.step()
    world.clock.advance(5 * 60)
    settle(world)
    assert s.get("b1").state == "video_uploaded"
    raw = booking_files(ctx.settings, "b1").raw_dir
    assert raw.exists()
    world.sup.retention.last_run = 0.0
    world.sup.step()
    assert raw.exists()  # grace period not over
    world.clock.advance(ctx.settings.retention_grace_h * 3600 + 1)
    world.sup.retention.last_run = -1e9
    world.sup.step()
    assert not raw.exists() and not booking_files(ctx.settings, "b1").processed_path.exists()
    assert s.get("b1").raw_dir is None


def test_watchdog_not_petted_when_database_fails(world: Any) -> None:
    world.sup.step()
    assert world.notifier.sent[-1] == "WATCHDOG=1"

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("disk I/O error")

    world.store.kv_set = broken
    world.notifier.sent.clear()
    world.sup.step()
    assert "WATCHDOG=1" not in world.notifier.sent


def test_idle_sleep_is_long_and_nudge_wakes(world: Any) -> None:
    sleep = world.sup.step()
    assert sleep == pytest.approx(5.0)  # the watchdog interval bounds an idle sleep
    woke = threading.Event()

    def wait() -> None:
        world.sup.waiter.wait(30)
        woke.set()

    t = threading.Thread(target=wait)
    t.start()
    world.sup.request_stop()
    t.join(5)
    assert woke.is_set()


def test_a_nudge_wakes_the_sync_so_a_change_is_pushed_now(world: Any) -> None:
    class Sidecar:
        def __init__(self) -> None:
            self.woken = threading.Event()
            self.stopped = False

        def wake(self) -> None:
            self.woken.set()

        def stop(self) -> None:
            self.stopped = True

    sidecar = Sidecar()
    world.sup.sidecars.append(sidecar)
    loop = threading.Thread(target=world.sup.run)
    loop.start()
    try:
        assert not sidecar.woken.wait(0.3)  # an idle loop leaves the sync to its own pace
        world.sup._wake()  # what the API and the CLI send after they change a booking
        assert sidecar.woken.wait(5)
    finally:
        world.sup.request_stop()
        loop.join(10)
    assert not loop.is_alive() and sidecar.stopped


def test_footage_of_a_recording_out_of_attempts_is_delivered(world: Any) -> None:
    from controller.fsm import RetryPolicy

    world.store.policy = RetryPolicy(max_attempts=1)
    world.store.create(T0, T0 + timedelta(minutes=30), booking_id="b1")
    world.clock.advance(60)
    world.sup.step()
    world.cams.pending = [Event(0, "died", "cable out"), Event(1, "died", "cable out")]
    world.clock.advance(60)
    world.sup.step()
    b = world.store.get("b1")
    assert b.state == "recording_failed" and b.next_attempt_at is None  # no attempt left
    world.clock.now = b.end_time
    settle(world)
    b = world.store.get("b1")
    assert b.state == "video_uploaded", b.to_dict()
    partial = [h for h in world.store.history("b1") if h.trigger == "finish"]
    assert partial and "partial recording delivered: every camera" in (partial[0].detail or "")


def test_a_failed_recording_without_footage_is_missed_at_its_end(world: Any) -> None:
    world.cams.fail_start = True
    world.store.create(T0, T0 + timedelta(minutes=2), booking_id="b1")
    world.clock.advance(60)
    world.sup.step()
    assert world.store.get("b1").state == "recording_failed"
    world.clock.now = T0 + timedelta(minutes=2)
    world.sup.step()
    b = world.store.get("b1")
    assert b.state == "missed" and "nothing recorded" in (world.store.history("b1")[-1].detail
                                                          or "")


def test_a_vanished_video_is_built_again_not_failed_forever(world: Any) -> None:
    real_upload = world.sup.upload_fn
    calls: list[str] = []

    def upload(settings, booking, storage, progress, stop):  # type: ignore[no-untyped-def]
        calls.append(booking.id)
        if len(calls) == 1:
            booking_files(settings, booking.id).processed_path.unlink()
            return video_jobs.upload_video(settings, booking, storage, progress, stop)
        return real_upload(settings, booking, storage, progress, stop)

    world.sup.upload_fn = upload
    world.store.create(T0, T0 + timedelta(minutes=1), booking_id="b1")
    world.clock.advance(60)
    world.sup.step()
    world.clock.now = T0 + timedelta(minutes=1)
    settle(world, 10)
    b = world.store.get("b1")
    assert b.state == "video_uploaded", b.to_dict()
    triggers = [h.trigger for h in world.store.history("b1")]
    assert "rebuild" in triggers and "fail" not in triggers
    assert triggers.count("process") == 2


def test_a_storage_error_no_retry_can_fix_waits_for_an_operator(world: Any, ctx: Context) -> None:
    from controller.drivers.storage import StorageError
    from controller.health import collect

    world.state["upload_error"] = None

    class NoBucket:
        url = "s3://gone"

        def key_for(self, booking_id: str, start: datetime, suffix: str = "") -> str:
            return f"{booking_id}{suffix}.mp4"

        def upload(self, *_a: Any, **_k: Any) -> Any:
            raise StorageError("S3 upload failed: NoSuchBucket (the bucket does not exist)",
                               retryable=False)

    def upload(settings, booking, storage, progress, stop):  # type: ignore[no-untyped-def]
        return video_jobs.upload_video(settings, booking, NoBucket(), progress, stop)

    world.sup.upload_fn = upload
    world.store.create(T0, T0 + timedelta(minutes=1), booking_id="b1")
    world.clock.advance(60)
    world.sup.step()
    world.clock.now = T0 + timedelta(minutes=1)
    settle(world)
    b = world.store.get("b1")
    assert b.state == "upload_failed" and b.next_attempt_at is None and b.attempts == 1
    assert "needs an operator" in (b.last_error or "")
    report = collect(ctx.settings, world.store, now=world.clock())
    assert [x["id"] for x in report["needs_operator"]] == ["b1"]
    assert "ezrec retry b1" in report["needs_operator"][0]["fix"]


def test_an_upload_that_reports_nothing_for_long_never_silences_the_watchdog(
    world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One 8 MiB part on a venue uplink can take minutes without a report: the uplink is not
    the box's health, so the loop keeps petting (a hung call ends by its own timeout)."""
    from controller import heartbeat

    monkeypatch.setattr(heartbeat, "STALL_S", 0.05)
    release = threading.Event()

    def upload(settings, booking, storage, progress, stop):  # type: ignore[no-untyped-def]
        release.wait(10)
        progress(1.0)
        return video_jobs.Uploaded([{"url": "file:///x", "key": "k", "size": 5, "sha256": "ab",
                                    "uploaded_at": world.clock().isoformat()}], "file:///x")

    world.sup.upload_fn = upload
    world.store.create(T0, T0 + timedelta(minutes=1), booking_id="b1")
    world.clock.advance(60)
    world.sup.step()
    world.clock.now = T0 + timedelta(minutes=1)
    for _ in range(10):  # until the upload is running (the build comes first)
        world.sup.step()
        if any(j.kind == "upload" for j in world.sup.workers.jobs.values()):
            break
        futures.wait([j.future for j in world.sup.workers.jobs.values()], timeout=10)
    assert any(j.kind == "upload" for j in world.sup.workers.jobs.values()), "the upload is running"
    time.sleep(0.3)  # > STALL_S * 4 without a report
    world.notifier.sent.clear()
    world.sup.step()
    assert "WATCHDOG=1" in world.notifier.sent
    release.set()
    settle(world)
    assert world.store.get("b1").state == "video_uploaded"
