"""Fake `PyavOutput`: muxes the encoder's packets with their timestamps into a real container.

Same signature and contract as the real one (output_name, format=None, pts=None, options=None):
the container is opened in start(), streams are declared by `_add_stream(encoder_stream,
codec_name, **kwargs)`, frames without a libav packet are timestamped in microseconds,
frames before the first keyframe are dropped, a mux failure closes the container and calls
`error_callback(exc)`. Where the real one calls libav in-process, this one pipes IVF (a tiny
container that carries a 64-bit timestamp per frame) into an ffmpeg child doing `-c copy`, so
the file on disk is written by real ffmpeg with the real timestamps.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Any

from .output import Output

_IVF_HEADER = struct.Struct("<4sHH4sHHIIII")  # 32 bytes
_IVF_FRAME = struct.Struct("<IQ")


class PyavOutput(Output):
    needs_add_stream = True

    def __init__(self, output_name: str, format: str | None = None, pts: Any = None,
                 options: dict[str, str] | None = None) -> None:
        super().__init__(pts=pts)
        self._output_name = output_name
        self._format = format
        self._options = options or {}
        self._streams: dict[Any, str] = {}
        self._container: subprocess.Popen[bytes] | None = None
        self._seen_keyframe = False
        self.error_callback: Any = None

    def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
        if self._container is None:
            raise RuntimeError("PyavOutput: stream added before start()")
        if codec_name != "h264":
            raise NotImplementedError("fake PyavOutput: h264 only")
        self._streams[encoder_stream] = codec_name

    def start(self) -> None:
        folder = Path(self._output_name).parent
        if not folder.is_dir():  # what av.open raises for a path it cannot create
            error = NotADirectoryError if folder.exists() else FileNotFoundError
            raise error(20 if folder.exists() else 2, "cannot open output", self._output_name)
        Path(self._output_name).touch()  # av.open creates the file at once; so do we
        # -copyts: keep the encoder's timestamps as they are, as libav muxing them directly does.
        # No input probing: libav in-process writes each packet at once, so must this.
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-probesize", "32",
               "-analyzeduration", "0", "-f", "ivf", "-i", "pipe:0", "-c", "copy", "-copyts"]
        for key, value in self._options.items():
            cmd += [f"-{key}", str(value)]
        if self._format:
            cmd += ["-f", self._format]
        cmd.append(self._output_name)
        self._container = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert self._container.stdin is not None
        # Time base 1/1000000: the encoder's timestamps are microseconds.
        self._container.stdin.write(_IVF_HEADER.pack(b"DKIF", 0, 32, b"H264", 0, 0, 1000000, 1,
                                                     0, 0))
        super().start()

    def stop(self) -> None:
        super().stop()
        container, self._container = self._container, None
        if container is not None:
            try:
                assert container.stdin is not None
                container.stdin.close()
                container.wait(timeout=10)
            except Exception:
                container.kill()
            self._streams = {}

    def outputframe(self, frame: Any, keyframe: bool = True, timestamp: int | None = None,
                    packet: Any = None, audio: bool = False) -> None:
        if not (self.recording and self._container):
            return
        if not self._seen_keyframe:
            if not keyframe:
                return
            self._seen_keyframe = True
        if "video" not in self._streams:  # the real one fails the same way
            raise KeyError("video")
        data = bytes(frame)
        try:
            assert self._container.stdin is not None
            self._container.stdin.write(_IVF_FRAME.pack(len(data), int(timestamp or 0)) + data)
            self._container.stdin.flush()
        except Exception as exc:
            container, self._container = self._container, None
            container.kill()
            if self.error_callback:
                self.error_callback(exc)
