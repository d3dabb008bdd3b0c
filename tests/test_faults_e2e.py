"""The real-venue fault matrix, each row with a real `ezrec run` (killed and restarted where
the fault kills it): exclusive cameras back to back, operators racing the loop, footage that
must be delivered, storage that refuses, a disk that fills (docs/reliability.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.db import utcnow
from controller.recordings import read_runs
from tests._camera_helpers import camera_faults
from tests._e2e import ROOT, ffmpeg_children_of, probe, state_of, wait_for

pytestmark = pytest.mark.slow
FAKE_PICAMERA2 = ROOT / "tests" / "fake_picamera2"


def history_text(store: Any, booking_id: str) -> str:
    return " | ".join(f"{h.trigger}: {h.detail or ''} {h.error or ''}"
                      for h in store.history(booking_id))


def test_back_to_back_on_exclusive_cameras_lose_no_start(world: Any) -> None:
    """Picamera2 (the fake refuses a second open, as libcamera does): the next booking takes
    the running cameras over at the boundary instead of failing to open them."""
    store = world.ctx.store
    world.start(extra_env={
        "EZREC_CAMERA_DRIVER": "picamera2", "EZRECTEST_FAKE_PICAMERAS": "2",
        "PYTHONPATH": f"{ROOT}:{FAKE_PICAMERA2}",
    }, ready=True)  # booked once the loop is up: a cold start under load can take seconds
    now = utcnow()
    a_start, boundary = now + timedelta(seconds=2), now + timedelta(seconds=6)
    store.create(a_start, boundary, booking_id="first")
    store.create(boundary, boundary + timedelta(seconds=4), booking_id="second")
    for booking_id in ("first", "second"):
        wait_for(lambda b=booking_id: state_of(world.ctx, b) == "video_uploaded", 120,
                 f"{booking_id} uploaded")
        triggers = [h.trigger for h in store.history(booking_id)]
        assert "fail" not in triggers, history_text(store, booking_id)
    assert "taken over running from booking first" in history_text(store, "second")
    raw = world.dir / "recordings" / "raw"
    for cam in (0, 1):
        (first,) = read_runs(raw / "first")[cam]
        (second,) = read_runs(raw / "second")[cam]
        assert first.stopped_at == pytest.approx(boundary.timestamp())
        # The second booking's footage starts at or before its slot: nothing lost.
        assert second.started_at <= boundary.timestamp() + 0.1
        assert second.extra["continued_from_booking"] == "first"
    for booking_id in ("first", "second"):
        duration = probe(Path(store.get(booking_id).processed_path or ""))["duration"]
        assert duration == pytest.approx(4.0, abs=0.5), booking_id


def test_an_encoder_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """The builder's ffmpeg goes through the same spawner as the cameras: when the supervisor
    is SIGKILLed, the kernel kills the encode too, so it cannot race a restarted build."""
    script = tmp_path / "encode.py"
    script.write_text(
        "import threading\n"
        "from controller.drivers.builder.ffmpeg_run import run_ffmpeg\n"
        "argv = ['ffmpeg', '-nostdin', '-f', 'lavfi', '-i', 'testsrc=size=640x480:rate=30',\n"
        f"        '-t', '600', '-c:v', 'libx264', '-y', {str(tmp_path / 'out.mp4')!r}]\n"
        "run_ffmpeg(argv, 600.0, lambda s: print('AT', s, flush=True), threading.Event())\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("AT")  # the encode is running
        wait_for(lambda: bool(ffmpeg_children_of(tmp_path)), 10, "the encoder")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not ffmpeg_children_of(tmp_path), 5, "the encoder to die with it")
    finally:
        proc.kill()


def building(world: Any, booking_id: str) -> Callable[[], bool]:
    """The booking's build job has started. A chunked build may have little left to do after
    the slot (the chunks made while recording), so this does not wait for a progress report:
    --slow build pauses only the thread that reports it, and the kill that follows may hit the
    build at any instant, which is the point."""

    def check() -> bool:
        booking = world.ctx.store.get(booking_id)
        return booking.state == "completed" and booking.progress_stage == "processing"

    return check


@pytest.mark.parametrize("chunk_s", ["0", "1"], ids=["one-pass", "chunks"])
def test_sigkill_during_an_encode_then_restart(world: Any, chunk_s: str) -> None:
    """Killed mid-build and restarted: the new attempt builds in a scratch folder of its own
    (stale ones are cleared), or goes on from the chunks joined so far, and the booking reaches
    video_uploaded."""
    store = world.ctx.store
    env = {"EZREC_CHUNK_S": chunk_s}
    proc = world.start("--slow", "build", "--pause", "60", extra_env=env, ready=True)
    now = utcnow()
    store.create(now, now + timedelta(seconds=4), booking_id="enc")
    processed = world.dir / "recordings" / "processed"
    wait_for(building(world, "enc"), 120, "a build under way")
    proc.kill()
    proc.wait(10)
    wait_for(lambda: not ffmpeg_children_of(world.dir), 10, "no child left")
    # Killed while building, or (a chunked build with one chunk left is quick) just after.
    assert state_of(world.ctx, "enc") in ("completed", "video_processed")
    world.start(extra_env=env)
    wait_for(lambda: state_of(world.ctx, "enc") == "video_uploaded", 120, "video_uploaded")
    assert not list(processed.glob(".enc.work*")), "scratch folders are cleaned up"
    assert not list(processed.glob(".enc.chunks")), "the chunk folder goes once stored"
    booking = store.get("enc")
    assert booking.extra["chunks"] in ((4, 5) if chunk_s == "1" else (0,))


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 64 MB filesystem for the data dir (tmpfs; the tests run as root in CI)."""
    where = tmp_path / "disk"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> Path:
    """Write until the filesystem says ENOSPC; returns the filler to delete."""
    filler = path / "filler.bin"
    with open(filler, "wb") as fh:
        block = b"\0" * (1 << 20)
        try:
            while True:
                fh.write(block)
                fh.flush()
        except OSError:
            pass
    return filler


def test_disk_full_during_a_recording(small_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC mid-slot: cameras stop cleanly, state.db stays intact, the history and status
    say the disk is full, recording resumes when space returns, all footage is delivered."""
    import sqlite3

    from controller.config import load_settings
    from controller.context import open_context
    from tests._e2e import env_for

    env = env_for(small_disk, EZREC_MIN_FREE_DISK_MB="4", EZREC_DISK_RESERVE_MB="8")
    for key, value in env.items():
        if key.startswith("EZREC"):
            monkeypatch.setenv(key, value)
    ctx = open_context(load_settings())
    store = ctx.store
    now = utcnow()
    store.create(now + timedelta(seconds=1), now + timedelta(seconds=24), booking_id="full")
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "_run_supervisor.py")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        raw = small_disk / "recordings" / "raw" / "full"
        wait_for(lambda: len(list(raw.glob("cam0/*.ts"))) >= 3, 30, "recording")
        filler = fill(small_disk)
        wait_for(lambda: state_of(ctx, "full") == "recording_failed", 30, "the failure")
        history = history_text(store, "full")
        assert "the disk is full" in history, history
        assert "the disk is full" in (store.get("full").last_error or "")
        status = subprocess.run([str(Path(sys.executable).with_name("ezrec")), "status"],
                                env=env, capture_output=True, text=True, timeout=30)
        assert "FULL" in status.stdout, status.stdout + status.stderr
        filler.unlink()
        try:
            wait_for(lambda: state_of(ctx, "full") == "recording", 20, "recording to resume")
        except AssertionError:
            print(history_text(store, "full"), store.get("full").to_dict())
            raise
        wait_for(lambda: state_of(ctx, "full") == "video_uploaded", 120, "video_uploaded")
        runs = {p.name.split("-")[0] for p in raw.glob("cam0/*.ts")}
        assert len(runs) >= 2, runs
        assert probe(Path(store.get("full").processed_path or ""))["duration"] >= 15
        check = sqlite3.connect(small_disk / "state.db").execute("PRAGMA integrity_check")
        assert check.fetchone()[0] == "ok"
        assert proc.poll() is None, "the supervisor survived"
    finally:
        proc.kill()
        out = proc.communicate(timeout=10)[0]
        ctx.close()
        print(out[-3000:])


# -- SIGKILL in every state ----------------------------------------------------------------


def _killed_at(world: Any, booking_id: str, args: tuple[str, ...], slot: tuple[float, float],
               when: Callable[[datetime], bool], what: str) -> None:
    """`ezrec run` killed once `when(booked_at)` holds, then restarted. The booking (`slot`:
    seconds from now to its start, and its length) is made once the loop is up: a cold start
    on a loaded machine can outlast a short slot, which is then rightly missed."""
    proc = world.start(*args, ready=True)
    now = utcnow()
    start = now + timedelta(seconds=slot[0])
    world.ctx.store.create(start, start + timedelta(seconds=slot[1]), booking_id=booking_id)
    wait_for(lambda: when(now), 120, what)
    proc.kill()
    proc.wait(10)
    wait_for(lambda: not ffmpeg_children_of(world.dir), 10, "no child left")
    world.start()
    wait_for(lambda: state_of(world.ctx, booking_id) == "video_uploaded", 120, "video_uploaded")


def test_sigkill_just_before_the_start_then_restart(world: Any) -> None:
    # Killed while still `confirmed`, a moment before its pre-roll.
    _killed_at(world, "pre", (), (3, 4), lambda now: utcnow() >= now + timedelta(seconds=2),
               "the moment")  # fmt: skip
    assert probe(Path(world.ctx.store.get("pre").processed_path or ""))["duration"] >= 3.5


def test_sigkill_in_completed_then_restart(world: Any) -> None:
    _killed_at(world, "done", ("--slow", "build", "--pause", "60"), (0, 4),
               lambda now: state_of(world.ctx, "done") == "completed", "completed")
    assert probe(Path(world.ctx.store.get("done").processed_path or ""))["duration"] >= 3.5


def test_sigkill_in_video_processed_then_restart(world: Any) -> None:
    _killed_at(world, "built", ("--slow", "upload", "--pause", "60"), (0, 4),
               lambda now: state_of(world.ctx, "built") == "video_processed", "video_processed")
    assert probe(Path(world.ctx.store.get("built").processed_path or ""))["duration"] >= 3.5


def test_power_cut_with_a_torn_last_segment(world: Any) -> None:
    """SIGKILL, then the last segment cut mid-packet as a power cut leaves it: the video is
    built from what plays, and the history says which file was damaged."""
    store = world.ctx.store
    raw = world.dir / "recordings" / "raw" / "cut"
    proc = world.start(ready=True)
    now = utcnow()
    store.create(now, now + timedelta(seconds=10), booking_id="cut")
    wait_for(lambda: len(list(raw.glob("cam0/*.ts"))) >= 3, 30, "segments")
    proc.kill()
    proc.wait(10)
    last = sorted(raw.glob("cam0/*.ts"))[-1]
    size = last.stat().st_size
    with open(last, "r+b") as fh:
        fh.truncate(size - size // 3 - 77)  # mid-packet
    world.start()
    wait_for(lambda: state_of(world.ctx, "cut") == "video_uploaded", 120, "video_uploaded")
    assert f"{last.name} ends mid-packet" in history_text(store, "cut")
    # The restart recorded the rest of the slot (however late it came on a loaded machine),
    # and the video runs from the slot's start to the last frame recorded.
    runs = read_runs(raw)[0]
    assert len(runs) == 2, runs
    recorded_to = min(runs[-1].stopped_at or 0, (now + timedelta(seconds=10)).timestamp())
    duration = probe(Path(store.get("cut").processed_path or ""))["duration"]
    assert duration == pytest.approx(recorded_to - now.timestamp(), abs=0.5)


# -- cameras ---------------------------------------------------------------------------------


def test_one_camera_dying_mid_slot_gives_the_other_and_a_note(world: Any) -> None:
    store = world.ctx.store
    world.start(extra_env=camera_faults("1:kill_after=2"), ready=True)
    now = utcnow()
    store.create(now, now + timedelta(seconds=6), booking_id="half")
    wait_for(lambda: state_of(world.ctx, "half") == "video_uploaded", 120, "video_uploaded")
    assert "camera 1 died" in history_text(store, "half")
    info = probe(Path(store.get("half").processed_path or ""))
    assert info["duration"] >= 5.0  # the camera that lived covers the whole slot


def test_every_camera_dying_delivers_the_partial_footage(world: Any) -> None:
    store = world.ctx.store
    # Both die after 2 s and every restart fails: what was recorded is still delivered.
    world.start(extra_env={**camera_faults("0:kill_after=2,1:kill_after=2"),
                           "EZREC_MAX_ATTEMPTS": "1"}, ready=True)  # fmt: skip
    now = utcnow()
    store.create(now, now + timedelta(seconds=8), booking_id="dead")
    wait_for(lambda: state_of(world.ctx, "dead") == "video_uploaded", 120, "video_uploaded")
    text = history_text(store, "dead")
    assert "every camera stopped delivering" in text and "partial recording delivered" in text
    assert probe(Path(store.get("dead").processed_path or ""))["duration"] >= 1.5


# -- ffmpeg ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_s", ["0", "10"], ids=["one-pass", "chunks"])
def test_a_killed_encoder_is_retried_with_backoff(world: Any, chunk_s: str) -> None:
    store = world.ctx.store
    # With 10 s chunks a 4 s booking is one chunk, made only once the slot is over (its last
    # segment is open until then): the encoder killed is the build job's.
    slow = {"EZREC_WIDTH": "1280", "EZREC_HEIGHT": "720", "EZREC_X264_PRESET": "veryslow",
            "EZREC_CHUNK_S": chunk_s}  # fmt: skip
    world.start(extra_env=slow, ready=True)
    now = utcnow()
    store.create(now, now + timedelta(seconds=4), booking_id="enc2")
    processed = world.dir / "recordings" / "processed"

    def encoder() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                ours = f"{processed}/.enc2.work" in cmd or f"{processed}/.enc2.chunks" in cmd
                if cmd.startswith("ffmpeg") and ours:
                    pids.append(int(entry.name))
        return pids

    wait_for(lambda: bool(encoder()), 120, "the encoder")
    for pid in encoder():
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: state_of(world.ctx, "enc2") == "processing_failed", 30, "the failure")
    assert "ffmpeg failed" in (store.get("enc2").last_error or "")
    wait_for(lambda: state_of(world.ctx, "enc2") == "video_uploaded", 180, "retried and done")
    triggers = [h.trigger for h in store.history("enc2")]
    assert triggers.count("fail") >= 1 and "retry" in triggers


def test_sigterm_during_an_encode(world: Any) -> None:
    store = world.ctx.store
    proc = world.start("--slow", "build", "--pause", "60", ready=True)
    now = utcnow()
    store.create(now, now + timedelta(seconds=4), booking_id="termenc")
    wait_for(building(world, "termenc"), 120, "a build under way")
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert time.monotonic() - began < 5.0
    assert not ffmpeg_children_of(world.dir)
    # Built again after a restart (or, if the build had just finished, uploaded then).
    assert state_of(world.ctx, "termenc") in ("completed", "video_processed")


# -- storage ---------------------------------------------------------------------------------


@pytest.fixture
def s3_link(s3_server: Any, s3_bucket: str) -> Any:
    """The session's S3 server behind an uplink proxy the test can break: (proxy, env)."""
    from tests._s3server import FAKE_AWS_ENV
    from tests._throttle import UplinkProxy

    proxy = UplinkProxy(("127.0.0.1", s3_server.port))
    env = FAKE_AWS_ENV | {"EZREC_STORAGE_URL": f"s3://{s3_bucket}/venue",
                          "EZREC_S3_ENDPOINT_URL": proxy.url, "EZREC_S3_TIMEOUT_S": "5"}
    yield proxy, env
    proxy.close()


def test_storage_answering_500_is_retried_until_it_recovers(world: Any, s3_link: Any) -> None:
    proxy, env = s3_link
    proxy.answer_500 = True
    store = world.ctx.store
    world.start(extra_env=env, ready=True)
    now = utcnow()
    store.create(now, now + timedelta(seconds=3), booking_id="s500")
    try:
        wait_for(lambda: state_of(world.ctx, "s500") == "upload_failed", 120, "upload_failed")
    except AssertionError:
        print(history_text(store, "s500"), store.get("s500").to_dict())
        raise
    booking = store.get("s500")
    assert "500" in (booking.last_error or "") and booking.next_attempt_at is not None
    proxy.answer_500 = False
    wait_for(lambda: state_of(world.ctx, "s500") == "video_uploaded", 120, "video_uploaded")


def test_a_crawling_uplink_never_interrupts_recordings_or_the_watchdog(
    world: Any, s3_link: Any, tmp_path: Path
) -> None:
    """1 KB/s up: the next booking records undisturbed and the watchdog keeps coming; when
    the link is fast again the upload completes."""
    import contextlib
    import socket

    proxy, env = s3_link
    proxy.rate_bps = 1024
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    store = world.ctx.store
    world.start(extra_env=env | {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"},
                ready=True)
    now = utcnow()
    store.create(now, now + timedelta(seconds=3), booking_id="slow1")
    store.create(now + timedelta(seconds=8), now + timedelta(seconds=12), booking_id="slow2")
    try:
        # (That progress counts bytes, not parts, is test_storage_s3's slow-uplink test.)
        wait_for(lambda: store.get("slow1").progress_stage == "uploading", 60, "uploading")
        pets, began = 0, time.monotonic()
        while time.monotonic() - began < 8:
            with contextlib.suppress(TimeoutError):
                pets += sock.recv(4096).decode().count("WATCHDOG=1")
        assert pets >= 10, f"only {pets} WATCHDOG=1 in 8 s while the uplink crawled"
        assert state_of(world.ctx, "slow1") == "video_processed"
        wait_for(lambda: state_of(world.ctx, "slow2") in ("completed", "video_processed"),
                 30, "the next booking recorded")
        assert "fail" not in [h.trigger for h in store.history("slow2")]
        proxy.rate_bps = None
        for booking_id in ("slow1", "slow2"):
            wait_for(lambda b=booking_id: state_of(world.ctx, b) == "video_uploaded", 120,
                     f"{booking_id} uploaded")
    finally:
        sock.close()


def test_a_missing_bucket_waits_for_the_operator_and_says_what_to_fix(
    world: Any, s3_link: Any
) -> None:
    _proxy, env = s3_link
    env = env | {"EZREC_STORAGE_URL": "s3://no-such-bucket/venue"}
    store = world.ctx.store
    world.start(extra_env=env, ready=True)
    now = utcnow()
    store.create(now, now + timedelta(seconds=3), booking_id="nob")
    wait_for(lambda: state_of(world.ctx, "nob") == "upload_failed", 120, "upload_failed")
    booking = store.get("nob")
    assert booking.next_attempt_at is None, "a missing bucket is not retried as if transient"
    assert "does not exist" in (booking.last_error or "")
    ezrec = str(Path(sys.executable).with_name("ezrec"))
    full_env = world.env | env
    status = subprocess.run([ezrec, "status"], env=full_env, capture_output=True, text=True,
                            timeout=30).stdout
    assert "NEEDS YOU" in status and "ezrec retry nob" in status, status
    doctor = subprocess.run([ezrec, "doctor"], env=full_env, capture_output=True, text=True,
                            timeout=120).stdout
    assert "the bucket does not exist" in doctor, doctor


# -- the booking system ----------------------------------------------------------------------


def test_booking_system_away_recording_goes_on_and_changes_arrive_in_order(world: Any) -> None:
    from datetime import UTC, datetime

    from tests._postgrest import FakeSupabase

    fake = FakeSupabase()
    try:
        start = datetime.now(UTC) + timedelta(seconds=3)
        fake.add("bookings", id="far-1", user_id="u-9", camera_id="e2e",
                 start_time=start.isoformat(),
                 end_time=(start + timedelta(seconds=3)).isoformat(), status="confirmed")
        world.start(extra_env={"EZREC_SUPABASE_URL": fake.url, "EZREC_SUPABASE_KEY": fake.key,
                               "EZREC_SUPABASE_SYNC_S": "2"})
        wait_for(lambda: "far-1" in [b.id for b in world.ctx.store.list()], 30, "the pull")
        fake.down("refuse")  # the venue's internet is gone for the rest of the booking
        before = (fake.row("bookings", id="far-1") or {}).get("status")
        wait_for(lambda: state_of(world.ctx, "far-1") == "video_uploaded", 120, "done locally")
        assert (fake.row("bookings", id="far-1") or {}).get("status") == before
        assert before != "video_uploaded"
        fake.up()
        wait_for(lambda: (fake.row("bookings", id="far-1") or {}).get("status")
                 == "video_uploaded", 120, "the booking system to catch up")
        told = [r.body.get("status") for r in fake.requests
                if r.method == "PATCH" and r.table == "bookings" and isinstance(r.body, dict)]
        order = ["recording", "completed", "video_processed", "video_uploaded"]
        seen = [s for i, s in enumerate(told) if s in order and (i == 0 or told[i - 1] != s)]
        assert seen == order, told  # each change once, in the order it happened
        assert fake.row("videos", booking_id="far-1") is not None
    finally:
        fake.close()
