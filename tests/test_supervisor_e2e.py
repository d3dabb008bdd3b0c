"""End to end with real processes, real ffmpeg, real files and real time (kept short):
`ezrec demo`, SIGKILL during recording / processing / upload then restart, one camera failing,
the disk guard, SIGTERM, and the sd_notify messages on a datagram socket."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.db import utcnow
from tests._camera_helpers import camera_faults
from tests._e2e import EZREC, env_for, ffmpeg_children_of, probe, state_of, wait_for

pytestmark = pytest.mark.slow


def test_demo_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [EZREC, "demo", "--seconds", "3"], env=env_for(tmp_path), capture_output=True,
        text=True, timeout=180, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("finished video:"))
    video = Path(line.split(":", 1)[1].strip())
    info = probe(video)
    assert (info["width"], info["height"]) == (640, 240)  # side_by_side of two 320x240
    assert 2.0 <= info["duration"] <= 3.6
    stored = list((tmp_path / "uploads").rglob("*.mp4"))
    assert len(stored) == 1 and stored[0].stat().st_size == video.stat().st_size
    assert "stored at:" in proc.stdout


def test_one_camera_failing_gives_single_layout_and_a_note(tmp_path: Path) -> None:
    env = env_for(tmp_path, **camera_faults("1:start"))
    proc = subprocess.run([EZREC, "demo", "--seconds", "3"], env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("finished video:"))
    info = probe(Path(line.split(":", 1)[1].strip()))
    assert (info["width"], info["height"]) == (320, 240)
    shown = subprocess.run([EZREC, "bookings", "--json"], env=env, capture_output=True,
                           text=True, check=True).stdout
    booking_id = json.loads(shown)[0]["id"]
    history = json.loads(subprocess.run([EZREC, "show", booking_id, "--json"], env=env,
                                        capture_output=True, text=True, check=True).stdout)
    text = " ".join(str(h["detail"]) for h in history["history"])
    assert "camera 1" in text


def test_disk_guard_refuses_to_record(tmp_path: Path) -> None:
    env = env_for(tmp_path, EZREC_MIN_FREE_DISK_MB=str(10**9))
    proc = subprocess.run([EZREC, "demo", "--seconds", "2"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "not enough disk" in proc.stdout + proc.stderr
    assert "EZREC_MIN_FREE_DISK_MB" in proc.stdout + proc.stderr
    assert not list((tmp_path / "recordings").rglob("*.ts"))


def test_sigkill_during_recording_then_restart(world: Any) -> None:
    store = world.ctx.store
    proc = world.start(ready=True)  # booked once the loop is up: a cold start can be slow
    now = utcnow()
    store.create(now + timedelta(seconds=1), now + timedelta(seconds=10), booking_id="rec")
    raw = world.dir / "recordings" / "raw" / "rec"
    wait_for(lambda: state_of(world.ctx, "rec") == "recording"
             and len(list(raw.glob("cam0/*.ts"))) >= 2, 30, "recording with segments")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: not ffmpeg_children_of(world.dir), 10, "camera processes to die")
    world.start()
    wait_for(lambda: state_of(world.ctx, "rec") == "video_uploaded", 90, "video_uploaded")
    runs = {p.name.split("-")[0] for p in raw.glob("cam0/*.ts")}
    assert {"000", "001"} <= runs  # the partial recording is kept, a new run resumed
    details = " ".join(h.detail or "" for h in store.history("rec"))
    assert "resumed recording" in details
    booking = store.get("rec")
    assert probe(Path(booking.processed_path or ""))["duration"] >= 2.0


def test_sigkill_during_processing_then_restart(world: Any) -> None:
    store = world.ctx.store
    proc = world.start("--slow", "build", "--pause", "60", ready=True)
    now = utcnow()
    store.create(now, now + timedelta(seconds=6), booking_id="proc")
    wait_for(lambda: store.get("proc").progress_stage == "processing"
             and (store.get("proc").progress or 0) > 0, 120, "encode progress")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert state_of(world.ctx, "proc") == "completed"
    world.start()
    wait_for(lambda: state_of(world.ctx, "proc") == "video_uploaded", 90, "video_uploaded")
    assert probe(Path(store.get("proc").processed_path or ""))["duration"] >= 1.0


def test_sigkill_during_upload_then_restart(world: Any) -> None:
    store = world.ctx.store
    proc = world.start("--slow", "upload", "--pause", "60", ready=True)
    now = utcnow()
    store.create(now, now + timedelta(seconds=6), booking_id="up")
    wait_for(lambda: store.get("up").progress_stage == "uploading"
             and (store.get("up").progress or 0) > 0, 90, "upload in progress")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert state_of(world.ctx, "up") == "video_processed"
    world.start()
    wait_for(lambda: state_of(world.ctx, "up") == "video_uploaded", 60, "video_uploaded")
    booking = store.get("up")
    stored = [o["url"] for o in booking.extra["uploaded"]]
    assert stored and all(u.startswith("file://") for u in stored)
    assert Path(stored[0].removeprefix("file://")).stat().st_size == Path(
        booking.processed_path or "").stat().st_size


def test_sigterm_closes_segments_and_keeps_state(world: Any) -> None:
    store = world.ctx.store
    now = utcnow()
    store.create(now, now + timedelta(seconds=60), booking_id="term")
    proc = world.start()
    raw = world.dir / "recordings" / "raw" / "term"
    wait_for(lambda: len(list(raw.glob("cam0/*.ts"))) >= 2, 30, "segments")
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert time.monotonic() - t < 10
    assert state_of(world.ctx, "term") == "recording"  # a restart resumes it
    assert not ffmpeg_children_of(world.dir)
    for seg in raw.glob("cam*/*.ts"):
        probe(seg)  # every segment, the last one included, is readable


def test_watchdog_messages_on_notify_socket(world: Any, tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    proc = world.start(extra_env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"})
    messages: list[str] = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            messages.append(sock.recv(4096).decode())
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except TimeoutError:
        pass
    sock.close()
    joined = "\n".join(messages)
    assert "READY=1" in joined
    assert joined.count("WATCHDOG=1") >= 4  # every half of WATCHDOG_USEC, from the loop
    assert "STATUS=" in joined
    assert "STOPPING=1" in joined


def test_booking_from_the_booking_system_comes_back_uploaded(world: Any) -> None:
    from datetime import UTC, datetime

    from tests._postgrest import FakeSupabase

    fake = FakeSupabase()
    try:
        start = datetime.now(UTC) + timedelta(seconds=4)
        fake.add("bookings", id="remote-1", user_id="u-1", camera_id="e2e",
                 start_time=start.isoformat(), end_time=(start + timedelta(seconds=4))
                 .isoformat(), status="confirmed")
        # One sync round at start pulls the booking; with a 300 s tick every later push is
        # one the supervisor's state changes woke.
        world.start(extra_env={"EZREC_SUPABASE_URL": fake.url,
                               "EZREC_SUPABASE_KEY": fake.key, "EZREC_SUPABASE_SYNC_S": "300"})
        wait_for(lambda: (fake.row("bookings", id="remote-1") or {}).get("status")
                 == "video_uploaded", 120, "the booking system to hear video_uploaded")
        video = fake.row("videos", booking_id="remote-1")
        assert video is not None and video["user_id"] == "u-1"
        assert video["video_url"] and video["size"] > 0
        assert state_of(world.ctx, "remote-1") == "video_uploaded"
        assert fake.row("system_status", device_id="e2e") is not None
    finally:
        fake.close()


def test_s3_down_then_back_upload_failed_then_retried(world: Any) -> None:
    import httpx

    from tests._s3server import FAKE_AWS_ENV, MotoServer

    server = MotoServer()
    server.start()
    try:
        import os as _os

        saved = {k: _os.environ.get(k) for k in FAKE_AWS_ENV}
        _os.environ.update(FAKE_AWS_ENV)
        bucket = server.new_bucket()
        server.stop()  # the network is down when the first upload is tried
        env = FAKE_AWS_ENV | {
            "EZREC_STORAGE_URL": f"s3://{bucket}/venue",
            "EZREC_S3_ENDPOINT_URL": server.endpoint_url,
            "EZREC_S3_PRESIGN_S": "600",
        }
        store = world.ctx.store
        world.start(extra_env=env, ready=True)  # booked once the loop is up
        now = utcnow()
        store.create(now, now + timedelta(seconds=5), booking_id="s3")
        wait_for(lambda: state_of(world.ctx, "s3") == "upload_failed", 120, "upload_failed")
        assert store.get("s3").last_error
        server.start()
        wait_for(lambda: state_of(world.ctx, "s3") == "video_uploaded", 120, "video_uploaded")
        booking = store.get("s3")
        assert (booking.video_url or "").startswith(f"s3://{bucket}/venue/e2e/")
        triggers = [h.trigger for h in store.history("s3")]
        assert triggers.count("fail") >= 1 and "retry" in triggers and triggers[-1] == "upload"
        obj = booking.extra["uploaded"][0]
        local = Path(booking.processed_path or "")
        head = server.client().head_object(Bucket=bucket, Key=obj["key"])  # type: ignore[attr-defined]
        assert head["ContentLength"] == local.stat().st_size == obj["size"]
        presigned = booking.extra.get("presigned_url")
        assert presigned and httpx.get(presigned).content == local.read_bytes()
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                _os.environ.pop(k, None)
            else:
                _os.environ[k] = v
