"""The picamera2 `Output` that writes an encoder's packets as rotating MPEG-TS segments.

One `PyavOutput(..., format="mpegts")` per segment, switching to a new file at the first
keyframe SEGMENT_S after the current one began. MPEG-TS keeps the encoder's per-frame
timestamps and stays readable after a kill at any instant (a plain MP4 does not). The class is
built on picamera2's own `Output`, which only imports on a Raspberry Pi (or the tests' fake).
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from pathlib import Path
from typing import Any

from controller.recordings import segment_path


def segment_output_class(output_base: type, pyav_output: Any) -> type:
    """Build SegmentOutput on picamera2's own Output class (only importable on a Pi)."""
    takes_options = "options" in inspect.signature(pyav_output).parameters

    class SegmentOutput(output_base):  # type: ignore[misc, valid-type]
        """Encoder packets -> `<run>-<seq>.ts`, a new file at the first keyframe SEGMENT_S on.

        Rotation happens in the encoder's own thread, between two packets, so no frame is lost
        or duplicated and each segment starts on a keyframe (with SPS/PPS: `repeat=True`).
        """

        needs_add_stream = True  # tell the encoder to describe its stream to us

        def __init__(self, cam_dir: Path, run: int, segment_s: float) -> None:
            super().__init__()
            self.cam_dir = cam_dir
            self.run = run
            self.segment_us = int(segment_s * 1_000_000)
            self.seq = -1
            self.frames = 0
            self.first_frame = threading.Event()
            self.first_frame_wall: float | None = None
            self.last_frame_wall: float | None = None
            self.last_timestamp: int | None = None  # µs since the encoder's first frame
            self.last_frame = time.monotonic()
            self.error: str | None = None
            self._streams: list[tuple[Any, str, dict[str, Any]]] = []
            self._current: Any = None
            self._segment_start: int | None = None
            # First timestamp of the recent segments, by seq: where a booking boundary falls.
            self.starts: dict[int, int] = {}
            # The encoder's thread writes, the supervisor's thread may redirect: one at a time.
            self._lock = threading.Lock()

        def _open_next(self) -> Any:
            self.seq += 1
            name = str(segment_path(self.cam_dir, self.run, self.seq))
            if takes_options:
                # Flush every packet: a kill then loses nothing already handed to us.
                out = pyav_output(name, format="mpegts", options={"flush_packets": "1"})
            else:
                out = pyav_output(name, format="mpegts")
            out.error_callback = self._on_error
            out.start()
            for stream, codec, kwargs in self._streams:
                out._add_stream(stream, codec, **kwargs)
            return out

        def start(self) -> None:
            super().start()
            self.cam_dir.mkdir(parents=True, exist_ok=True)
            self._current = self._open_next()

        def stop(self) -> None:
            super().stop()
            current, self._current = self._current, None
            if current is not None:
                current.stop()

        def _add_stream(self, encoder_stream: Any, codec_name: str, **kwargs: Any) -> None:
            self._streams.append((encoder_stream, codec_name, kwargs))
            if self._current is not None:
                self._current._add_stream(encoder_stream, codec_name, **kwargs)

        def _started_segment(self, timestamp: int) -> None:
            self.starts[self.seq] = timestamp
            self.starts.pop(self.seq - 8, None)  # a boundary is never that far back

        def _on_error(self, exc: BaseException) -> None:
            self.error = f"{type(exc).__name__}: {exc}"

        def outputframe(
            self,
            frame: Any,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            with self._lock:
                self._output(frame, keyframe, timestamp, packet, audio)

        def continue_into(self, cam_dir: Path, run: int, at_us: int) -> tuple[int, int]:
            """Write the next segments into another booking's run, from now on.

            The segments from the one holding `at_us` (µs since the first frame) to the open
            one are hard-linked into the new run, so they belong to both bookings; the open
            one goes on growing under both names. Returns (its seq in the old run, its first
            timestamp).
            """
            with self._lock:
                if self._current is None or not self.starts:
                    raise RuntimeError("the camera is not writing")
                holding = max((q for q, t in self.starts.items() if t <= at_us),
                              default=min(self.starts))
                first_us = self.starts[holding]
                cam_dir.mkdir(parents=True, exist_ok=True)
                for seq in range(holding, self.seq + 1):
                    os.link(segment_path(self.cam_dir, self.run, seq),
                            segment_path(cam_dir, run, seq - holding))
                last = self.seq
                self.cam_dir, self.run, self.seq = cam_dir, run, self.seq - holding
                self.starts = {q - holding: t for q, t in self.starts.items() if q >= holding}
                return last, first_us

        def _output(self, frame: Any, keyframe: bool, timestamp: int | None, packet: Any,
                    audio: bool) -> None:
            if not self.recording or self._current is None:
                return
            if (
                keyframe
                and not audio
                and timestamp is not None
                and self._segment_start is not None
                and timestamp - self._segment_start >= self.segment_us
            ):
                old = self._current
                try:
                    self._current = self._open_next()
                except Exception as exc:  # never into the camera's thread: report and stop
                    self._current = None
                    self._on_error(exc)
                    old.stop()
                    return
                old.stop()
                self._segment_start = timestamp
                self._started_segment(timestamp)
            if self._segment_start is None and timestamp is not None:
                self._segment_start = timestamp
                self._started_segment(timestamp)
            self._current.outputframe(frame, keyframe, timestamp, packet, audio)
            if audio:
                return
            now = time.time()
            if timestamp is not None:
                self.last_timestamp = timestamp
            self.frames += 1
            self.last_frame = time.monotonic()
            self.last_frame_wall = now
            if self.first_frame_wall is None:
                self.first_frame_wall = now
                self.first_frame.set()

    return SegmentOutput
