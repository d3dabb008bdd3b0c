"""The live builder's two threads (chunks, parts) and its cheap idle rounds, with the build and
the storage replaced at their boundary: the chunk work by counters, the storage by a fake
GrowingUpload that can hang like a slow uplink."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller import live_build
from controller.context import Context
from controller.db import utcnow
from controller.drivers.builder import BuildError, incremental
from controller.drivers.storage import Checkpoint
from controller.fsm import State
from controller.live_build import LiveBuilder, raw_fingerprint
from controller.recordings import booking_files


class HangingUplink:
    """upload_growing blocks until `release` is set, as a 5 MiB part on a slow link does."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[int] = []

    def key_for(self, booking_id: str, start: Any) -> str:
        return f"venue/{booking_id}.mp4"

    def upload_growing(self, path: Path, key: str, *, checkpoint: Checkpoint, stable_below: int,
                       on_progress: Any = None, stop: Any = None) -> int:  # fmt: skip
        self.calls.append(stable_below)
        self.release.wait(30)
        return stable_below


def recording(ctx: Context, booking_id: str = "b1") -> None:
    now = utcnow()
    ctx.store.create(now, now + timedelta(minutes=5), booking_id=booking_id)
    ctx.store.fire(booking_id, "start")


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_slow_upload_does_not_hold_back_the_chunks(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording(ctx)
    built: list[float] = []
    size = {"joined": 0}

    def build(self: LiveBuilder, booking: Any) -> bool:
        built.append(time.monotonic())
        size["joined"] += 1000  # a chunk joined
        return False

    monkeypatch.setattr(LiveBuilder, "_build", build)
    monkeypatch.setattr(incremental, "joined_size", lambda output: size["joined"])
    uplink = HangingUplink()
    live = LiveBuilder(ctx.settings, ctx.store, None, uplink,  # type: ignore[arg-type]
                       build_every_s=0.01, upload_every_s=0.01).start()  # fmt: skip
    try:
        wait_until(lambda: len(uplink.calls) == 1)  # the uplink hangs on a part
        during = len(built)
        wait_until(lambda: len(built) >= during + 5)  # the chunks go on meanwhile
        assert len(uplink.calls) == 1
        uplink.release.set()
        wait_until(lambda: len(uplink.calls) >= 2)  # then it sends what was joined since
        assert uplink.calls[-1] > uplink.calls[0]
    finally:
        uplink.release.set()
        live.stop()
    assert ctx.store.get("b1").progress_detail["bytes_uploaded"] > 0


def test_an_upload_round_with_nothing_new_sends_nothing(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording(ctx)
    monkeypatch.setattr(incremental, "joined_size", lambda output: 7000)
    uplink = HangingUplink()
    uplink.release.set()
    live = LiveBuilder(ctx.settings, ctx.store, None, uplink)  # type: ignore[arg-type]
    for _ in range(3):
        live.upload_round()
    assert uplink.calls == [7000]  # asked once: the joined file has not grown since


@pytest.mark.parametrize("fails", [False, True], ids=["nothing-to-make", "plan-fails"])
def test_a_round_with_no_new_segment_plans_nothing(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    recording(ctx)
    raw = booking_files(ctx.settings, "b1").raw_dir / "cam0"
    raw.mkdir(parents=True)
    (raw / "000-00000.ts").write_bytes(b"x")
    planned: list[str] = []

    def plan(settings: Any, booking: Any, cache: Any) -> Any:
        planned.append(booking.id)
        if fails:
            raise BuildError("cam0/000-00000.ts: unreadable")
        return type("Spec", (), {"feeds": []})()  # no camera has a closed segment yet

    monkeypatch.setattr(live_build, "live_plan", plan)
    live = LiveBuilder(ctx.settings, ctx.store, None, HangingUplink())  # type: ignore[arg-type]
    live.build_round()
    with (raw / "000-00000.ts").open("ab") as fh:
        fh.write(b"more")  # the open segment grows: nothing closed
    live.build_round()
    assert planned == ["b1"]
    (raw / "000-00001.ts").write_bytes(b"x")  # the camera moved on to the next segment
    live.build_round()
    assert planned == ["b1", "b1"]


def test_the_fingerprint_sees_closed_segments_and_stopped_runs(tmp_path: Path) -> None:
    cam = tmp_path / "cam0"
    cam.mkdir()
    (cam / "000-00000.ts").write_bytes(b"a")
    (cam / "run-000.json").write_text('{"run": 0}')
    first = raw_fingerprint(tmp_path)
    (cam / "000-00000.ts").write_bytes(b"abc")
    assert raw_fingerprint(tmp_path) == first  # a segment being written
    (cam / "run-000.json").write_text('{"run": 0, "stopped_at": 1.0}')
    second = raw_fingerprint(tmp_path)
    assert second != first  # the run stopped: its last segment is closed
    (cam / "000-00001.ts").write_bytes(b"a")
    assert raw_fingerprint(tmp_path) != second
    assert raw_fingerprint(tmp_path / "missing") == ()


def test_an_idle_box_is_looked_at_rarely(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing recorded: the build thread asks the database every IDLE_EVERY_S, not at its
    recording pace (an idle supervisor spent 0.43 % of a core on it)."""
    asked: list[object] = []
    real = ctx.store.list

    def listing(*args: Any, **kw: Any) -> Any:
        asked.append(kw.get("state"))
        return real(*args, **kw)

    monkeypatch.setattr(ctx.store, "list", listing)
    live = LiveBuilder(ctx.settings, ctx.store, None, HangingUplink(),  # type: ignore[arg-type]
                       build_every_s=0.01, upload_every_s=3600).start()  # fmt: skip
    time.sleep(0.5)
    live.stop()
    assert 1 <= sum(1 for s in asked if s == [State.RECORDING]) <= 2
