"""Fake `H264Encoder`: real H.264 bytes, made by an ffmpeg child, one access unit per frame.

Signature as the real (V4L2, Pi 4) H264Encoder: (bitrate=None, repeat=True, iperiod=None,
framerate=None, enable_sps_framerate=False, qp=None, profile=None); like it, _start() tells each
output `_add_stream("video", "h264")` and frames go out as `outputframe(bytes, keyframe,
timestamp=µs since the first frame)` with no packet. The picture is ffmpeg's testsrc2 at the
configured size; the pace and the timestamps are the fake camera's, as with the real encoder.
"""

from __future__ import annotations

import queue
import subprocess
import threading
from typing import Any

from .._fake_hardware import HW
from .encoder import Encoder

_AUD = b"\x00\x00\x00\x01\x09"


def _is_idr(access_unit: bytes) -> bool:
    start = 0
    while (pos := access_unit.find(b"\x00\x00\x01", start)) >= 0 and pos + 3 < len(access_unit):
        if access_unit[pos + 3] & 0x1F == 5:
            return True
        start = pos + 3
    return False


class H264Encoder(Encoder):
    def __init__(self, bitrate: int | None = None, repeat: bool = True, iperiod: int | None = None,
                 framerate: float | None = None, enable_sps_framerate: bool = False,
                 qp: int | None = None, profile: str | None = None) -> None:
        super().__init__()
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod
        self.framerate = framerate
        self._enable_framerate = enable_sps_framerate
        self.qp = qp
        self.profile = profile
        self._proc: subprocess.Popen[bytes] | None = None
        self._units: queue.Queue[bytes] = queue.Queue(maxsize=8)

    def _start(self) -> None:
        for out in self._output:
            out._add_stream("video", "h264")
        rate = float(self.framerate or 30)
        gop = int(self.iperiod or 60)
        params = "aud=1" + (":repeat-headers=1" if self.repeat else "")
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
               f"testsrc2=size={self.width}x{self.height}:rate={rate:g}", "-c:v", "libx264",
               "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
               "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
               "-x264-params", params]
        if self.bitrate:
            cmd += ["-b:v", str(self.bitrate)]
        cmd += ["-f", "h264", "-"]
        self._units = queue.Queue(maxsize=8)
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL)
        HW.encoder_processes.add(self._proc)
        threading.Thread(target=self._split, args=(self._proc,), daemon=True).start()

    def _split(self, proc: subprocess.Popen[bytes]) -> None:
        """Cut the Annex B byte stream into access units at each access unit delimiter."""
        assert proc.stdout is not None
        buffer = b""
        while chunk := proc.stdout.read1(65536):
            buffer += chunk
            while (cut := buffer.find(_AUD, 1)) > 0:
                unit, buffer = buffer[:cut], buffer[cut:]
                while proc.poll() is None:
                    try:
                        self._units.put(unit, timeout=0.2)
                        break
                    except queue.Full:
                        continue

    def _encode(self, stream: Any, request: Any) -> None:
        if self.sync_enable:
            if not request.get_metadata().get("SyncReady", False):
                return  # not synchronised yet: the real encoder drops these frames too
            self.sync.set()
        try:
            unit = self._units.get(timeout=5)
        except queue.Empty:
            return
        timestamp_us = self._timestamp(request)
        self.outputframe(unit, _is_idr(unit), timestamp=timestamp_us)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            HW.encoder_processes.discard(proc)
