"""The synthetic camera driver and the shared raw layout, against real ffmpeg and real files."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.context import open_cameras
from controller.drivers.cameras import CameraError
from controller.drivers.cameras.synthetic import SyntheticDriver
from controller.drivers.cameras.template import Recording
from controller.recordings import RunManifest, next_run, read_runs
from tests._camera_helpers import (
    FPS,
    H,
    W,
    ffprobe,
    first_packet_is_keyframe,
    inject_camera_faults,
    jpeg_mean_diff,
    jpeg_size,
    small_settings,
    total_frames,
    wait_for,
)
from tests.fake_ffmpeg.inject import FAIL_ENV, parse_failures


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[SyntheticDriver]:
    d = SyntheticDriver(small_settings(tmp_path, camera_driver="synthetic"))
    yield d
    d.close()


def _record(driver: SyntheticDriver, booking: str, seconds: float) -> tuple[Any, Any]:
    handle = driver.start(booking, driver.settings.raw_dir / booking)
    time.sleep(seconds)
    return handle, driver.stop(handle)


@pytest.mark.slow
def test_two_cameras_record_playable_segments_in_real_time(driver: SyntheticDriver) -> None:
    out = driver.settings.raw_dir / "b1"
    before = time.time()
    handle = driver.start("b1", out)
    after = time.time()
    assert handle.cameras == [0, 1] and handle.run == 0
    first = wait_for(lambda: driver.bytes_written(handle), 2)
    time.sleep(2.5)
    assert driver.bytes_written(handle) > first  # the watchdog's "segments grow"
    assert driver.poll(handle) == []
    result = driver.stop(handle)

    assert result.notes == [] and sorted(result.files) == [0, 1]
    for cam, files in result.files.items():
        assert len(files) >= 2, f"camera {cam}: a new segment every SEGMENT_S=1"
        assert [f.name for f in files] == sorted(f.name for f in files)
        assert all(f.name.startswith("000-") for f in files)
        facts = [ffprobe(f) for f in files]
        assert {(x["codec"], x["width"], x["height"]) for x in facts} == {("h264", W, H)}
        assert all(first_packet_is_keyframe(f) for f in files)
        assert all(x["duration"] <= 1.5 for x in facts[:-1])
        # Paced like a camera: about as much video as wall-clock time recorded.
        frames = sum(x["frames"] for x in facts)
        assert 2.3 * FPS <= frames <= 4.5 * FPS, frames
    runs = read_runs(out)
    for cam in (0, 1):
        (manifest,) = runs[cam]
        assert (manifest.camera, manifest.driver, manifest.run) == (cam, "synthetic", 0)
        assert (manifest.width, manifest.height, manifest.fps) == (W, H, FPS)
        # started_at is the first frame's wall-clock: after we asked, before start() returned.
        assert before - 0.2 <= manifest.started_at <= after
        assert manifest.stopped_at is not None
        assert 2.3 <= manifest.stopped_at - manifest.started_at <= 5.0
        assert manifest.segments() == result.files[cam]
    assert driver.stop(handle) is result  # idempotent
    assert handle.cameras == []


@pytest.mark.slow
def test_cameras_show_different_patterns_and_snapshots(driver: SyntheticDriver) -> None:
    idle = [driver.snapshot(cam) for cam in (0, 1)]
    assert [jpeg_size(j) for j in idle] == [(W, H), (W, H)]
    assert jpeg_mean_diff(*idle) > 20  # testsrc2 vs smptebars: tell the feeds apart
    handle = driver.start("b2", driver.settings.raw_dir / "b2")
    try:
        wait_for(lambda: driver.bytes_written(handle) > 5000, 3)
        live = driver.snapshot(1, handle)  # read from the live recording's files
        assert jpeg_size(live) == (W, H)
        assert jpeg_mean_diff(live, idle[1]) < jpeg_mean_diff(live, idle[0])
        assert jpeg_size(driver.snapshot(0)) == (W, H)  # busy camera, no handle: its files
        assert driver.probe()[0].line == "camera 0 ok: recording now (synthetic testsrc2)"
    finally:
        driver.stop(handle)


@pytest.mark.slow
def test_restart_picks_the_next_run_and_keeps_the_old_one(driver: SyntheticDriver) -> None:
    h1, r1 = _record(driver, "b3", 1.2)
    h2, r2 = _record(driver, "b3", 1.2)
    assert (h1.run, h2.run) == (0, 1)
    assert all(f.name.startswith("001-") for f in r2.files[0])
    assert all(f.exists() for f in r1.files[0] + r2.files[0])
    runs = read_runs(driver.settings.raw_dir / "b3")
    assert [m.run for m in runs[0]] == [0, 1] == [m.run for m in runs[1]]
    assert runs[0][0].stopped_at <= runs[0][1].started_at


def test_next_run_counts_segments_without_manifest(tmp_path: Path) -> None:
    assert next_run(tmp_path / "missing") == 0
    cam = tmp_path / "cam1"
    cam.mkdir()
    (cam / "004-00000.ts").write_bytes(b"x")
    (tmp_path / "cam0").mkdir()
    (tmp_path / "cam0" / "run-002.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("ignored")
    assert next_run(tmp_path) == 5


@pytest.mark.slow
def test_sigkill_of_the_writer_leaves_readable_segments(tmp_path: Path) -> None:
    driver = SyntheticDriver(small_settings(tmp_path, segment_s=2))
    handle = driver.start("b4", driver.settings.raw_dir / "b4")
    assert isinstance(handle, Recording)
    time.sleep(3.3)  # one closed segment, and 1.3 s into the open one
    os.kill(handle.sources[0].proc.pid, signal.SIGKILL)
    events = wait_for(lambda: driver.poll(handle), 3)
    assert [(e.camera, e.kind) for e in events] == [(0, "died")]
    assert "killed by signal 9" in events[0].detail
    assert handle.cameras == [1]  # the other camera goes on
    time.sleep(0.5)
    result = driver.stop(handle)
    files = result.files[0]
    assert len(files) == 2
    closed, cut = ffprobe(files[0]), ffprobe(files[1])
    assert closed["frames"] >= 2 * FPS - 1
    # The open segment is readable up to (nearly) the kill: flush_packets=1.
    assert cut["frames"] >= 0.8 * FPS, cut
    assert total_frames(result.files[1]) > total_frames(files)
    # The history: the death came as an event, so the result does not repeat it.
    assert not any("died" in note for note in result.notes)
    (manifest,) = read_runs(driver.settings.raw_dir / "b4")[0]
    assert manifest.stopped_at is not None and any("died" in n for n in manifest.notes)


@pytest.mark.slow
def test_supervisor_sigkill_takes_ffmpeg_with_it(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a killed supervisor must not leave cameras' ffmpeg running forever."""
    script = textwrap.dedent(f"""
        import sys, time, threading
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parents[1])!r})
        from tests._camera_helpers import small_settings
        from controller.drivers.cameras.synthetic import SyntheticDriver
        d = SyntheticDriver(small_settings(Path({str(tmp_path)!r})))
        # Started from a short-lived thread: the children must survive the thread.
        box = {{}}
        t = threading.Thread(target=lambda: box.update(h=d.start("b5", d.settings.raw_dir / "b5")))
        t.start(); t.join()
        print(" ".join(str(p.proc.pid) for p in box["h"].sources.values()), flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=tmp_path)
    try:
        assert child.stdout is not None
        pids = [int(p) for p in child.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(1.0)
        assert all(_alive(pid) for pid in pids), "ffmpeg died with its starting thread"
        child.kill()
        child.wait()
        assert wait_for(lambda: not any(_alive(pid) for pid in pids), 5)
    finally:
        child.kill()
    # What they wrote is still readable.
    assert total_frames(sorted((tmp_path / "recordings/raw/b5/cam0").glob("*.ts"))) > 0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_injected_start_failure_is_an_event_not_an_exception(
    driver: SyntheticDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject_camera_faults(monkeypatch, "1:start")
    out = driver.settings.raw_dir / "b6"
    handle = driver.start("b6", out)
    assert handle.cameras == [0]
    events = driver.poll(handle)
    assert [(e.camera, e.kind) for e in events] == [(1, "failed_to_start")]
    assert "ffmpeg" in events[0].detail
    assert driver.poll(handle) == []  # reported once
    result = driver.stop(handle)
    assert result.files[1] == [] and result.files[0]
    assert list(read_runs(out)) == [0]  # no manifest for a camera that never recorded


def test_no_camera_starting_raises(
    driver: SyntheticDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject_camera_faults(monkeypatch, "0:start,1:start")
    with pytest.raises(CameraError, match="no camera could start: camera 0 failed to start"):
        driver.start("b7", driver.settings.raw_dir / "b7")


@pytest.mark.slow
def test_died_and_stalled_cameras_are_dropped_and_reported(
    driver: SyntheticDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject_camera_faults(monkeypatch, "0:stall_after=0.5,1:die_after=1")
    handle = driver.start("b8", driver.settings.raw_dir / "b8")
    seen: list[Any] = []
    deadline = time.monotonic() + 8
    while len(seen) < 2 and time.monotonic() < deadline:
        seen += driver.poll(handle)
        time.sleep(0.3)
    kinds = {e.camera: e.kind for e in seen}
    assert kinds == {0: "stalled", 1: "died"}
    assert "exit code 0" in next(e.detail for e in seen if e.camera == 1)
    assert handle.cameras == []
    result = driver.stop(handle)
    assert result.files[0] and result.files[1]
    assert all(ffprobe(f)["frames"] > 0 for f in result.files[0] + result.files[1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("1:start", {1: ("start", 0.0)}),
        (" 0:die_after=2.5 , 1:kill_after=1", {0: ("die_after", 2.5), 1: ("kill_after", 1.0)}),
        ("1:stall_after=0", {1: ("stall_after", 0.0)}),
    ],
)
def test_parse_failures(text: str, expected: dict[int, tuple[str, float]]) -> None:
    got = {cam: (i.kind, i.seconds) for cam, i in parse_failures(text).items()}
    assert got == expected


@pytest.mark.parametrize(
    "text", ["1", "x:start", "1:explode", "1:start=2", "1:die_after", "1:die_after=-1",
             "1:die_after=soon"]
)
def test_parse_failures_rejects_bad_entries(text: str) -> None:
    with pytest.raises(ValueError, match=FAIL_ENV):
        parse_failures(text)


def test_bad_injection_fails_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="bad entry '1:explode'"):
        inject_camera_faults(monkeypatch, "1:explode")


_floats = st.floats(min_value=1e9, max_value=4e9, allow_nan=False)


@given(
    camera=st.integers(0, 3), run=st.integers(0, 999), started=_floats,
    stopped=st.none() | _floats, notes=st.lists(st.text(max_size=30), max_size=3),
)
def test_manifest_round_trip(camera: int, run: int, started: float, stopped: float | None,
                             notes: list[str]) -> None:
    m = RunManifest(camera=camera, driver="synthetic", run=run, started_at=started, width=W,
                    height=H, fps=FPS, stopped_at=stopped, notes=notes, extra={"model": "x"})
    data = json.loads(json.dumps(m.to_dict()))
    assert RunManifest.from_dict(data) == m


def test_read_runs_survives_what_a_crash_leaves(tmp_path: Path) -> None:
    cam = tmp_path / "cam0"
    RunManifest(0, "synthetic", 0, 1700000000.0, W, H, FPS).write(cam)
    (cam / "000-00000.ts").write_bytes(b"ts")
    (cam / "001-00000.ts").write_bytes(b"ts")  # run 1: killed before its manifest
    (tmp_path / "cam1").mkdir()
    (tmp_path / "cam1" / "run-000.json").write_text("{ not json")
    (tmp_path / "cam1" / "000-00000.ts").write_bytes(b"ts")
    (tmp_path / "camX").mkdir()
    assert not list(cam.glob(".*tmp"))  # atomic write leaves no temporary behind
    runs = read_runs(tmp_path)
    assert sorted(runs) == [0, 1]
    assert [m.run for m in runs[0]] == [0, 1]
    assert runs[0][0].stopped_at is None and runs[0][0].segments() == [cam / "000-00000.ts"]
    assert "manifest missing" in runs[0][1].notes[0]
    assert runs[1][0].driver == "unknown"
    assert read_runs(tmp_path / "nothing") == {}


def test_discover_and_probe(driver: SyntheticDriver) -> None:
    infos = driver.discover()
    assert [(i.index, i.up, i.mode) for i in infos] == [(0, True, "160x120@15"),
                                                        (1, True, "160x120@15")]
    assert infos[1].model == "synthetic smptebars"
    probes = driver.probe()
    assert [p.ok for p in probes] == [True, True]
    assert probes[0].line == "camera 0 ok: 160x120@15 (synthetic testsrc2)"


def test_open_cameras(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_cameras(small_settings(tmp_path, camera_driver="synthetic")).name == \
        "synthetic"
    assert open_cameras(small_settings(tmp_path, camera_driver="v4l2")).name == "v4l2"
    # auto on a machine without picamera2: synthetic, loudly.
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail
    with caplog.at_level(logging.WARNING):
        chosen = open_cameras(small_settings(tmp_path, camera_driver="auto"))
    assert chosen.name == "synthetic"
    assert "SYNTHETIC" in caplog.text and "picamera2 does not import" in caplog.text
    with pytest.raises(CameraError, match="python3-picamera2"):
        open_cameras(small_settings(tmp_path, camera_driver="picamera2"))
