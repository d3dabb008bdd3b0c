"""The V4L2 camera driver: USB webcams read by ffmpeg's `v4l2` input, encoded to H.264 segments.

Devices come from the V4L2_DEVICES setting (in camera order) or, when it is empty, from
`/dev/v4l/by-id/*-video-index0` sorted by name: by-id names are stable across reboots and USB
ports, unlike /dev/videoN. Per device, the driver asks ffmpeg for the formats the camera offers
(`-list_formats all`) and prefers MJPEG at the configured size, because raw YUYV over USB 2 cannot
carry 720p30. Recording, health and the segment layout are the shared ffmpeg ones
(ffmpeg_source.py).

Test mode: a device spec `lavfi:<source>` (e.g. `lavfi:testsrc2`) makes ffmpeg's lavfi stand in
for the device, paced in real time, with size and rate from the settings unless the spec gives
its own options (`lavfi:testsrc2=size=320x240:rate=15`). Everything else runs as for a camera.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

from controller.drivers.cameras import CameraError, CameraInfo
from controller.drivers.cameras.ffmpeg_source import FfmpegDriver, FfmpegInput
from controller.drivers.cameras.ffmpeg_tools import ffmpeg_binary

BY_ID_DIR = Path("/dev/v4l/by-id")
LAVFI_PREFIX = "lavfi:"
# Logged at info level by ffmpeg's v4l2 input when the camera refused the requested size.
_CHANGED = re.compile(r"changed the video from (\S+) to (\S+)")
_FORMAT_LINE = re.compile(r"\b(Compressed|Raw)\s*:\s*(\S+)\s*:\s*(.*?)\s*:\s*(.*)$")


def discover_devices(by_id_dir: Path | None = None) -> list[str]:
    """Capture nodes of USB cameras, stable names, sorted (index0 is the video node)."""
    by_id_dir = by_id_dir or BY_ID_DIR
    if not by_id_dir.is_dir():
        return []
    return sorted(str(path) for path in by_id_dir.glob("*-video-index0"))


def device_model(device: str) -> str:
    """`usb-046d_HD_Pro_Webcam_C920_ABC-video-index0` -> `046d HD Pro Webcam C920 ABC`."""
    if device.startswith(LAVFI_PREFIX):
        return f"lavfi {device[len(LAVFI_PREFIX):].split('=')[0]}"
    name = Path(device).name
    name = re.sub(r"^usb-", "", re.sub(r"-video-index\d+$", "", name))
    return name.replace("_", " ") or device


def parse_formats(listing: str) -> dict[str, str]:
    """ffmpeg `-list_formats all` output -> {format: sizes text}, in the camera's order."""
    out: dict[str, str] = {}
    for line in listing.splitlines():
        match = _FORMAT_LINE.search(line)
        if match:
            out[match.group(2)] = match.group(4).strip()
    return out


def _offers_size(sizes: str, width: int, height: int) -> bool:
    if "{" in sizes:  # stepwise ranges like {32-1920, 2}x{32-1080, 2}: assume any size fits
        return True
    return f"{width}x{height}" in sizes.split()


def choose_input_format(formats: dict[str, str], width: int, height: int) -> str | None:
    """MJPEG when the camera offers it at this size, else the first format that does.

    None lets ffmpeg pick (and `probe()` then reports a wrong mode if the size is off).
    """
    if "mjpeg" in formats and _offers_size(formats["mjpeg"], width, height):
        return "mjpeg"
    for name, sizes in formats.items():
        if _offers_size(sizes, width, height):
            return name
    return None


class V4L2Driver(FfmpegDriver):
    name = "v4l2"
    realtime_input = True  # only lavfi stand-ins need -re; a real device paces itself
    probe_loglevel = "info"  # for the "changed the video from ... to ..." line

    def devices(self) -> list[str]:
        return list(self.settings.v4l2_devices) or discover_devices()

    def device(self, camera: int) -> str:
        devices = self.devices()
        if camera >= len(devices):
            raise CameraError(
                f"not found (no device for camera {camera}: {len(devices)} found under "
                f"{BY_ID_DIR}; set EZREC_V4L2_DEVICES)"
            )
        return devices[camera]

    @functools.cache  # noqa: B019 - one listing per device per driver is the point
    def input_format(self, device: str) -> str | None:
        try:
            listing = subprocess.run(
                [ffmpeg_binary(), "-hide_banner", "-f", "v4l2", "-list_formats", "all",
                 "-i", device],
                capture_output=True, timeout=10, check=False,
            ).stderr.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            return None
        return choose_input_format(parse_formats(listing), self.settings.width,
                                   self.settings.height)

    def camera_input(self, camera: int, *, realtime: bool) -> FfmpegInput:
        s = self.settings
        device = self.device(camera)
        model = device_model(device)
        if device.startswith(LAVFI_PREFIX):
            source = device[len(LAVFI_PREFIX):]
            if "=" not in source:
                source += f"=size={s.width}x{s.height}:rate={s.fps}"
            args = ["-re"] if realtime else []
            return FfmpegInput([*args, "-f", "lavfi", "-i", source], model=model)
        if not Path(device).exists():
            raise CameraError(f"not found ({device})")
        fmt = self.input_format(device)
        args = ["-f", "v4l2", "-thread_queue_size", "64"]
        if fmt:
            args += ["-input_format", fmt]
        args += ["-video_size", f"{s.width}x{s.height}", "-framerate", str(s.fps), "-i", device]
        return FfmpegInput(args, model=model)

    def mode_mismatch(self, stderr: bytes) -> str | None:
        changed = _CHANGED.search(stderr.decode(errors="replace"))
        if changed:
            return f"wrong mode (asked {self.mode}, camera gives {changed.group(2)})"
        return None

    def explain(self, stderr: bytes) -> str:
        text = stderr.decode(errors="replace")
        if "Device or resource busy" in text:
            return "busy (another program is using the camera)"
        if "No such file or directory" in text or "No such device" in text:
            return "not found (device disappeared)"
        changed = _CHANGED.search(text)
        if changed or "Invalid argument" in text or "not supported" in text:
            got = f", camera gives {changed.group(2)}" if changed else ""
            return f"wrong mode (asked {self.mode}{got})"
        return super().explain(stderr)

    def discover(self) -> list[CameraInfo]:
        devices = self.devices()
        out = []
        for cam in range(self.settings.cameras):
            if cam >= len(devices):
                out.append(CameraInfo(cam, self.name, "", self.mode, False, "not found"))
                continue
            device = devices[cam]
            present = device.startswith(LAVFI_PREFIX) or Path(device).exists()
            out.append(CameraInfo(cam, self.name, device_model(device), self.mode, present,
                                  "" if present else f"not found ({device})"))
        return out
