"""The real-venue fault matrix, each row with a real `ezrec run` (killed and restarted where
the fault kills it): exclusive cameras back to back, operators racing the loop, footage that
must be delivered, storage that refuses, a disk that fills (docs/reliability.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.db import utcnow
from controller.recordings import read_runs
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
    now = utcnow()
    a_start, boundary = now + timedelta(seconds=2), now + timedelta(seconds=6)
    store.create(a_start, boundary, booking_id="first")
    store.create(boundary, boundary + timedelta(seconds=4), booking_id="second")
    world.start(extra_env={
        "EZREC_CAMERA_DRIVER": "picamera2", "EZRECTEST_FAKE_PICAMERAS": "2",
        "PYTHONPATH": f"{ROOT}:{FAKE_PICAMERA2}",
    })
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


def test_sigkill_during_an_encode_then_restart(world: Any) -> None:
    """Killed mid-build and restarted: the new attempt builds in a scratch folder of its own
    (stale ones are cleared) and the booking reaches video_uploaded."""
    store = world.ctx.store
    now = utcnow()
    store.create(now, now + timedelta(seconds=4), booking_id="enc")
    proc = world.start("--slow", "build", "--pause", "60")
    processed = world.dir / "recordings" / "processed"
    wait_for(lambda: bool(list(processed.glob(".enc.work*"))), 120, "a build under way")
    proc.kill()
    proc.wait(10)
    wait_for(lambda: not ffmpeg_children_of(world.dir), 10, "no child left")
    assert state_of(world.ctx, "enc") == "completed"
    world.start()
    wait_for(lambda: state_of(world.ctx, "enc") == "video_uploaded", 120, "video_uploaded")
    assert not list(processed.glob(".enc.work*")), "scratch folders are cleaned up"


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
