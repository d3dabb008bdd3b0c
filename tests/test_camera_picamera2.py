"""The Picamera2 driver against a fake `picamera2` injected at the import boundary.

The fake (tests/fake_picamera2) follows the real library's signatures (checked below) and feeds
real H.264 from ffmpeg, so every segment asserted on here is real video on disk.
"""

from __future__ import annotations

import inspect
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.context import open_cameras
from controller.drivers.cameras import CameraError
from controller.drivers.cameras import picamera2 as driver_module
from controller.drivers.cameras.picamera2 import Picamera2Driver, picamera2_available
from controller.recordings import read_runs
from tests._camera_helpers import (
    FPS,
    H,
    W,
    ffprobe,
    first_packet_is_keyframe,
    jpeg_size,
    small_settings,
    wait_for,
)

FAKE_ROOT = Path(__file__).with_name("fake_picamera2")


def _purge_fake_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("picamera2", "libcamera"):
            del sys.modules[name]


@pytest.fixture
def hw(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    _purge_fake_modules()
    monkeypatch.syspath_prepend(str(FAKE_ROOT))
    from picamera2 import _fake_hardware

    yield _fake_hardware.reset(2)
    _purge_fake_modules()


@pytest.fixture
def driver(hw: Any, tmp_path: Path) -> Iterator[Picamera2Driver]:
    d = Picamera2Driver(small_settings(tmp_path, camera_driver="picamera2"))
    yield d
    d.close()
    assert hw.acquired == set(), "every camera is released"
    assert hw.encoder_processes == set()


def sensor(hw: Any, camera: int) -> Any:
    """The simulated sensor behind Picamera2(camera) (the real numbering is sorted by Id)."""
    from picamera2 import Picamera2

    return hw.sensors[Picamera2.global_camera_info()[camera]["Num"]]


def libcamera_index(camera: int) -> int:
    from picamera2 import Picamera2

    return int(Picamera2.global_camera_info()[camera]["Num"])


def test_discovery_and_auto_choice(hw: Any, tmp_path: Path) -> None:
    assert picamera2_available() is None
    chosen = open_cameras(small_settings(tmp_path, camera_driver="auto"))
    assert chosen.name == "picamera2"
    infos = chosen.discover()
    assert [(i.index, i.model, i.up, i.mode) for i in infos] == [
        (0, "imx708", True, f"{W}x{H}@{FPS}"), (1, "imx708", True, f"{W}x{H}@{FPS}")]
    hw.sensors.pop()
    assert [(i.up, i.detail) for i in chosen.discover()] == [(True, ""), (False, "not found")]
    hw.sensors.clear()
    assert picamera2_available() == "picamera2 sees no camera"
    assert open_cameras(small_settings(tmp_path, camera_driver="auto")).name == "synthetic"


@pytest.mark.slow
def test_two_cameras_record_rotating_segments(driver: Picamera2Driver, hw: Any) -> None:
    out = driver.settings.raw_dir / "p1"
    before = time.time()
    handle = driver.start("p1", out)
    after = time.time()
    assert handle.cameras == [0, 1] and handle.notes == []
    assert hw.acquired == {0, 1}
    frame_us = 1_000_000 // FPS
    assert all(c["FrameDurationLimits"] == (frame_us, frame_us)
               for c in hw.started_controls.values())
    time.sleep(2.6)
    assert driver.poll(handle) == []
    result = driver.stop(handle)
    assert hw.acquired == set() and hw.encoder_processes == set()
    for cam in (0, 1):
        files = result.files[cam]
        assert len(files) >= 2, "a new segment every SEGMENT_S=1"
        facts = [ffprobe(f) for f in files]
        assert {(x["codec"], x["width"], x["height"]) for x in facts} == {("h264", W, H)}
        assert all(first_packet_is_keyframe(f) for f in files)
        assert 2.0 * FPS <= sum(x["frames"] for x in facts) <= 4.0 * FPS
        # The encoder's own timestamps run on across segments (no reset, no gap).
        assert abs(facts[1]["start"] - (facts[0]["start"] + facts[0]["duration"])) < 0.15
        (manifest,) = read_runs(out)[cam]
        assert manifest.driver == "picamera2" and manifest.extra["sync"] is False
        assert manifest.extra["started_at_source"] == "sensor_timestamp"
        assert before <= manifest.started_at <= after
        assert manifest.stopped_at is not None and manifest.stopped_at > manifest.started_at
    assert driver.stop(handle) is result


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"fail_start": True}, "start_recording failed: RuntimeError: Failed to start camera"),
        ({"busy": True}, "could not open (busy or broken)"),
        ({"no_frames": True}, "no frame within 2 s"),
    ],
)
def test_one_camera_failing_at_start(
    driver: Picamera2Driver, hw: Any, monkeypatch: pytest.MonkeyPatch,
    fault: dict[str, bool], reason: str,
) -> None:
    monkeypatch.setattr(driver_module, "FIRST_FRAME_TIMEOUT_S", 2.0)
    for key, value in fault.items():
        setattr(sensor(hw, 1), key, value)
    handle = driver.start("p2", driver.settings.raw_dir / "p2")
    assert handle.cameras == [0]
    assert hw.acquired == {libcamera_index(0)}, "the failed camera is released at once"
    (event,) = driver.poll(handle)
    assert (event.camera, event.kind) == (1, "failed_to_start")
    assert reason in event.detail
    result = driver.stop(handle)
    assert result.files[1] == [] and result.files[0]
    assert not any("failed to start" in note for note in result.notes)  # said once, as event
    assert list(read_runs(driver.settings.raw_dir / "p2")) == [0]


def test_no_camera_starting_raises_and_releases(driver: Picamera2Driver, hw: Any) -> None:
    sensor(hw, 0).fail_start = True
    sensor(hw, 1).busy = True
    with pytest.raises(CameraError, match="no camera could start"):
        driver.start("p3", driver.settings.raw_dir / "p3")
    assert hw.acquired == set()


@pytest.mark.slow
def test_camera_dying_mid_recording_is_dropped(driver: Picamera2Driver, hw: Any) -> None:
    sensor(hw, 1).die_after = 1.5
    handle = driver.start("p4", driver.settings.raw_dir / "p4")
    events = wait_for(lambda: driver.poll(handle), 8)
    assert [(e.camera, e.kind) for e in events] == [(1, "stalled")]
    assert "no frame for" in events[0].detail
    assert handle.cameras == [0]
    assert hw.acquired == {libcamera_index(0)}, "the dead camera was released"
    grown = driver.bytes_written(handle)
    time.sleep(1.2)
    assert driver.bytes_written(handle) > grown, "the other camera goes on"
    result = driver.stop(handle)
    assert all(ffprobe(f)["frames"] > 0 for f in result.files[1])
    (manifest,) = read_runs(driver.settings.raw_dir / "p4")[1]
    assert manifest.stopped_at is not None and "stalled" in manifest.notes[0]


@pytest.mark.slow
def test_output_failure_is_reported_and_stop_still_works(driver: Picamera2Driver,
                                                         hw: Any) -> None:
    out = driver.settings.raw_dir / "p5"
    handle = driver.start("p5", out)
    time.sleep(0.5)
    shutil.rmtree(out / "cam1")
    (out / "cam1").write_text("the disk went away")  # the next segment cannot be created
    events = wait_for(lambda: driver.poll(handle), 8)
    assert [(e.camera, e.kind) for e in events] == [(1, "died")]
    assert "output failed" in events[0].detail
    result = driver.stop(handle)
    assert result.files[0] and result.files[1] == []
    assert any("manifest" in note for note in result.notes)


def test_close_stops_recordings_and_releases(driver: Picamera2Driver, hw: Any) -> None:
    handle = driver.start("p6", driver.settings.raw_dir / "p6")
    assert hw.acquired == {0, 1}
    driver.close()
    assert hw.acquired == set()
    assert handle.cameras == [] and handle.result is not None
    driver.close()  # idempotent


@pytest.mark.slow
def test_pi5_sync_server_and_client(hw: Any, tmp_path: Path) -> None:
    for s in hw.sensors:
        s.sync_capable = True
    driver = Picamera2Driver(small_settings(tmp_path, camera_driver="picamera2"))
    out = driver.settings.raw_dir / "p7"
    try:
        handle = driver.start("p7", out)
        modes = {cam: hw.started_controls[libcamera_index(cam)] for cam in (0, 1)}
        assert (int(modes[0]["SyncMode"]), int(modes[1]["SyncMode"])) == (1, 2)  # server, client
        assert modes[0]["SyncFrames"] == 2 * FPS
        assert all(pc.encoder.sync_enable and pc.encoder.sync.is_set()
                   for pc in handle.sources.values())
        time.sleep(1.0)
        result = driver.stop(handle)
    finally:
        driver.close()
    assert any("Pi 5 camera sync" in note for note in result.notes)
    runs = read_runs(out)
    starts = [runs[cam][0].started_at for cam in (0, 1)]
    assert all(runs[cam][0].extra["sync"] for cam in (0, 1))
    assert abs(starts[0] - starts[1]) < 1.5 / FPS, "both encoders began at the same frame"


def test_snapshots_and_probe(driver: Picamera2Driver, hw: Any) -> None:
    assert jpeg_size(driver.snapshot(0)) == (W, H)  # a still capture when idle
    assert hw.acquired == set()
    assert [p.line for p in driver.probe()] == [f"camera 0 ok: {W}x{H}@{FPS} (imx708)",
                                                f"camera 1 ok: {W}x{H}@{FPS} (imx708)"]
    sensor(hw, 0).busy = True
    sensor(hw, 1).max_size = (80, 60)
    lines = [p.line for p in driver.probe()]
    assert lines[0].startswith("camera 0: busy")
    assert lines[1] == f"camera 1: wrong mode (asked {W}x{H}@{FPS}, camera gives 80x60) (imx708)"
    hw.sensors.pop()
    assert driver.probe()[1].line == "camera 1: not found"
    assert hw.acquired == set()


@pytest.mark.slow
def test_snapshot_while_recording_reads_the_segments(driver: Picamera2Driver, hw: Any) -> None:
    handle = driver.start("p8", driver.settings.raw_dir / "p8")
    try:
        cams = handle.sources.values()
        assert wait_for(lambda: all(pc.output.frames > FPS for pc in cams), 5)
        assert jpeg_size(driver.snapshot(1, handle)) == (W, H)
        # No handle given: the camera is busy recording, so its files are used, not the sensor.
        assert jpeg_size(driver.snapshot(0)) == (W, H)
        assert hw.opened_total == 2
        assert driver.probe()[0].line == "camera 0 ok: recording now (imx708)"
    finally:
        driver.stop(handle)


# Transcribed from raspberrypi/picamera2 (picamera2/picamera2.py, encoders/h264_encoder.py,
# outputs/pyavoutput.py, outputs/output.py): the fake must not drift from these.
REAL_SIGNATURES = {
    "Picamera2.__init__": "(self, camera_num=0, verbose_console=None, tuning=None, "
                          "allocator=None)",
    "Picamera2.start": "(self, config=None, show_preview=False)",
    "Picamera2.configure": "(self, camera_config=None)",
    "Picamera2.start_recording": "(self, encoder, output, pts=None, config=None, quality=None, "
                                 "name=None)",
    "Picamera2.stop_recording": "(self)",
    "Picamera2.start_encoder": "(self, encoder=None, output=None, pts=None, quality=None, "
                               "name=None)",
    "Picamera2.capture_file": "(self, file_output, name='main', format=None, wait=None, "
                              "signal_function=None, exif_data=None)",
    "Picamera2.close": "(self)",
    "H264Encoder.__init__": "(self, bitrate=None, repeat=True, iperiod=None, framerate=None, "
                            "enable_sps_framerate=False, qp=None, profile=None)",
    "PyavOutput.__init__": "(self, output_name, format=None, pts=None, options=None)",
    "Output.outputframe": "(self, frame, keyframe=True, timestamp=None, packet=None, "
                          "audio=False)",
}


def test_fake_follows_real_signatures(hw: Any) -> None:
    from picamera2 import Picamera2
    from picamera2.encoders import H264Encoder
    from picamera2.outputs import Output, PyavOutput

    classes = {"Picamera2": Picamera2, "H264Encoder": H264Encoder, "PyavOutput": PyavOutput,
               "Output": Output}
    for dotted, expected in REAL_SIGNATURES.items():
        cls, method = dotted.split(".")
        sig = inspect.signature(getattr(classes[cls], method))
        plain = sig.replace(parameters=[p.replace(annotation=inspect.Parameter.empty)
                                        for p in sig.parameters.values()],
                            return_annotation=inspect.Signature.empty)
        assert str(plain) == expected, dotted
    assert callable(Picamera2.global_camera_info)
