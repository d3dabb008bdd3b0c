"""The V4L2 driver: its ffmpeg command line, device discovery, and real recordings with lavfi
standing in for the USB cameras (no camera is attached to the test machines)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from controller.drivers.cameras import v4l2
from controller.drivers.cameras.v4l2 import (
    V4L2Driver,
    choose_input_format,
    device_model,
    discover_devices,
    parse_formats,
)
from controller.recordings import camera_dir, read_runs
from tests._camera_helpers import FPS, H, W, ffprobe, small_settings

# What ffmpeg 5.1 prints for `-f v4l2 -list_formats all -i /dev/video0` with a Logitech C920.
C920_LISTING = """\
[video4linux2,v4l2 @ 0x5581c0a4e680] Raw       :     yuyv422 :           YUYV 4:2:2 : \
640x480 160x90 160x120 176x144 320x180 320x240 352x288 432x240 640x360 800x448 800x600 \
864x480 960x720 1024x576 1280x720 1600x896 1920x1080 2304x1296 2304x1536
[video4linux2,v4l2 @ 0x5581c0a4e680] Compressed:       h264 :                H.264 : \
640x480 160x90 160x120 176x144 320x180 320x240 352x288 432x240 640x360 800x448 800x600 \
864x480 960x720 1024x576 1280x720 1600x896 1920x1080
[video4linux2,v4l2 @ 0x5581c0a4e680] Compressed:      mjpeg :          Motion-JPEG : \
640x480 160x90 160x120 176x144 320x180 320x240 352x288 432x240 640x360 800x448 800x600 \
864x480 960x720 1024x576 1280x720 1600x896 1920x1080
/dev/video0: Immediate exit requested
"""


def test_parse_and_choose_input_format() -> None:
    formats = parse_formats(C920_LISTING)
    assert list(formats) == ["yuyv422", "h264", "mjpeg"]
    assert "1280x720" in formats["mjpeg"].split()
    assert choose_input_format(formats, 1280, 720) == "mjpeg"  # USB 2 cannot carry raw 720p30
    assert choose_input_format(formats, 2304, 1296) == "yuyv422"  # only raw offers it
    assert choose_input_format(formats, 4096, 2160) is None  # ffmpeg picks; probe will say
    stepwise = {"yuyv422": "{32-1920, 2}x{32-1080, 2}"}
    assert choose_input_format(stepwise, 1280, 720) == "yuyv422"
    assert parse_formats("nothing useful") == {}


def test_discover_devices_by_id(tmp_path: Path) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    for name in ("usb-Logitech_C920_B-video-index0", "usb-Logitech_C920_B-video-index1",
                 "usb-046d_HD_Webcam_A-video-index0"):
        (by_id / name).symlink_to("/dev/null")
    found = discover_devices(by_id)
    assert [Path(p).name for p in found] == ["usb-046d_HD_Webcam_A-video-index0",
                                             "usb-Logitech_C920_B-video-index0"]
    assert device_model(found[1]) == "Logitech C920 B"
    assert device_model("lavfi:testsrc2=size=4x4") == "lavfi testsrc2"
    assert discover_devices(tmp_path / "absent") == []


def test_command_line_for_a_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    device = tmp_path / "video0"
    device.write_bytes(b"")  # exists; ffmpeg cannot list its formats, so none is forced
    settings = small_settings(tmp_path, camera_driver="v4l2", v4l2_devices=[str(device)],
                              cameras=1, segment_s=4, camera_bitrate_kbps=3000)
    driver = V4L2Driver(settings)
    source = driver.camera_input(0, realtime=True)
    assert source.args == ["-f", "v4l2", "-thread_queue_size", "64", "-video_size",
                           f"{W}x{H}", "-framerate", str(FPS), "-i", str(device)]
    monkeypatch.setattr(V4L2Driver, "input_format", lambda self, dev: "mjpeg")
    source = driver.camera_input(0, realtime=True)
    assert source.args[4:6] == ["-input_format", "mjpeg"]
    assert "-re" not in source.args  # a real device paces itself
    cmd = driver.command(0, source, camera_dir(tmp_path, 0), 7)
    joined = " ".join(cmd)
    for part in ("-progress pipe:1", "-c:v libx264 -preset ultrafast -tune zerolatency",
                 f"-g {FPS} -keyint_min {FPS} -sc_threshold 0", "-maxrate 3000k",
                 "-f segment -segment_time 4 -segment_format mpegts",
                 "-segment_format_options flush_packets=1", "-reset_timestamps 0"):
        assert part in joined, part
    assert cmd[-1] == str(tmp_path / "cam0" / "007-%05d.ts")


def test_missing_devices_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v4l2, "BY_ID_DIR", tmp_path / "none")
    driver = V4L2Driver(small_settings(tmp_path, camera_driver="v4l2",
                                       v4l2_devices=["lavfi:testsrc2", "/dev/video97"]))
    infos = driver.discover()
    assert [(i.up, i.detail) for i in infos] == [(True, ""),
                                                 (False, "not found (/dev/video97)")]
    probes = driver.probe()
    assert probes[0].ok and probes[0].line == "camera 0 ok: 160x120@15 (lavfi testsrc2)"
    assert probes[1].line == "camera 1: not found (/dev/video97)"
    nothing = V4L2Driver(small_settings(tmp_path, camera_driver="v4l2", cameras=1))
    assert nothing.discover()[0].detail == "not found"
    assert "set EZREC_V4L2_DEVICES" in nothing.probe()[0].line


def test_explain_ffmpeg_v4l2_errors(tmp_path: Path) -> None:
    driver = V4L2Driver(small_settings(tmp_path, camera_driver="v4l2", width=1280, height=720,
                                       fps=30))
    busy = b"[video4linux2,v4l2 @ 0x1] ioctl(VIDIOC_STREAMON): Device or resource busy\n" \
           b"/dev/video0: Device or resource busy\n"
    assert driver.explain(busy).startswith("busy")
    changed = b"[video4linux2,v4l2 @ 0x1] The V4L2 driver changed the video from 1280x720 " \
              b"to 640x480\n"
    assert driver.mode_mismatch(changed) == "wrong mode (asked 1280x720@30, camera gives 640x480)"
    assert driver.mode_mismatch(b"all fine\n") is None
    gone = b"[video4linux2,v4l2 @ 0x1] Cannot open video device /dev/video0: No such device\n"
    assert driver.explain(gone).startswith("not found")
    other = b"[in#0] some info\n[video4linux2] Could not find codec parameters\nlast info\n"
    assert driver.explain(other) == "[video4linux2] Could not find codec parameters"


@pytest.mark.slow
def test_recording_with_lavfi_standing_in(tmp_path: Path) -> None:
    settings = small_settings(
        tmp_path, camera_driver="v4l2", v4l2_devices=["lavfi:testsrc2", "lavfi:smptebars"]
    )
    driver = V4L2Driver(settings)
    out = settings.raw_dir / "v1"
    handle = driver.start("v1", out)
    assert handle.cameras == [0, 1]
    time.sleep(2.2)
    assert driver.poll(handle) == []
    result = driver.stop(handle)
    for cam in (0, 1):
        files = result.files[cam]
        assert len(files) >= 2
        facts = [ffprobe(f) for f in files]
        assert {(x["codec"], x["width"], x["height"]) for x in facts} == {("h264", W, H)}
        assert 1.8 * FPS <= sum(x["frames"] for x in facts) <= 4 * FPS
        (manifest,) = read_runs(out)[cam]
        assert manifest.driver == "v4l2" and manifest.extra["model"].startswith("lavfi")
