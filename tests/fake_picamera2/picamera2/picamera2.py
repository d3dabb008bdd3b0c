"""Fake `picamera2.Picamera2`, following the real class's signatures and behaviour.

Checked against raspberrypi/picamera2's picamera2/picamera2.py: global_camera_info() (sorted by
Id, USB cameras last, "Num" is libcamera's index), __init__(camera_num=0, verbose_console=None,
tuning=None, allocator=None) raising RuntimeError("Camera __init__ sequence did not complete.")
when the camera cannot be acquired, create_video_configuration / create_still_configuration
(keyword defaults, "Bad key" ValueError), configure (refused while started), start(config=None,
show_preview=False), start_encoder / stop_encoder, start_recording(encoder, output, pts=None,
config=None, quality=None, name=None), stop_recording() = stop() + stop_encoder(), close()
(which stops the camera but, like the real one, not the encoders), post_callback, capture_file.

Instead of libcamera, a thread per started camera makes "requests" at the configured frame rate
whose metadata carry a monotonic SensorTimestamp (and SyncReady under SyncMode), and hands them to
post_callback and each running encoder, as the real process_requests does.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from libcamera import Transform

from ._fake_hardware import HW
from .encoders import Encoder

_VALID_STREAM_KEYS = ("format", "size", "stride", "preserve_ar")


class _LibcameraRequest:
    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata


class CompletedRequest:
    """What callbacks and encoders receive; `request.metadata` as in libcamera."""

    def __init__(self, metadata: dict[str, Any], config: dict[str, Any]) -> None:
        self.request = _LibcameraRequest(metadata)
        self.config = config

    def get_metadata(self) -> dict[str, Any]:
        return dict(self.request.metadata)


class Picamera2:
    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        cameras = [
            {"Model": s.model, "Location": 2, "Rotation": 180, "Id": s.id, "Num": n}
            for n, s in enumerate(HW.sensors)
        ]
        return sorted(cameras, key=lambda cam: ("/usb" not in cam["Id"], cam["Id"]), reverse=True)

    def __init__(self, camera_num: int = 0, verbose_console: Any = None, tuning: Any = None,
                 allocator: Any = None) -> None:
        self.is_open = False
        self.started = False
        # Real: IndexError here for a camera that does not exist.
        camera_num = self.global_camera_info()[camera_num]["Num"]
        self.camera_idx = camera_num
        self._sensor = HW.sensors[camera_num]
        with HW.lock:
            if self._sensor.busy or camera_num in HW.acquired:
                raise RuntimeError("Camera __init__ sequence did not complete.")
            HW.acquired.add(camera_num)
            HW.opened_total += 1
        self.is_open = True
        self.camera_config: dict[str, Any] | None = None
        self.pre_callback: Any = None
        self.post_callback: Any = None
        self._encoders: set[Encoder] = set()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self.frames = 0
        self.encode_stream_name = "main"
        self.camera_properties = {"Model": self._sensor.model, "PixelArraySize": self._sensor.size,
                                  "Location": 2, "Rotation": 180}

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        controls: dict[str, tuple[Any, Any, Any]] = {
            "FrameDurationLimits": (33333, 120000000, None),
            "ExposureTime": (1, 66666, 20000),
            "NoiseReductionMode": (0, 4, 0),
        }
        if self._sensor.sync_capable:
            controls["SyncMode"] = (0, 2, 0)
            controls["SyncFrames"] = (1, 1000000, 100)
        return controls

    # --- configurations ----------------------------------------------------------------------

    @staticmethod
    def _stream(defaults: dict[str, Any], updates: dict[str, Any] | None) -> dict[str, Any] | None:
        if updates is None:
            return None
        out = dict(defaults)
        for key, value in updates.items():
            if key not in _VALID_STREAM_KEYS:
                raise ValueError(
                    f"Bad key {key!r}: valid stream configuration keys are {_VALID_STREAM_KEYS}"
                )
            out[key] = value
        return out

    def _config(self, use_case: str, main: dict[str, Any], main_defaults: dict[str, Any],
                lores: Any, raw: Any, transform: Any, colour_space: Any, buffer_count: int,
                controls: dict[str, Any], display: Any, encode: Any, queue: bool,
                sensor: Any) -> dict[str, Any]:
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        config = {
            "use_case": use_case,
            "transform": transform if transform is not None else Transform(),
            "colour_space": colour_space,
            "buffer_count": buffer_count,
            "queue": queue,
            "main": self._stream(main_defaults, main),
            "lores": self._stream({"format": "YUV420"}, lores),
            "raw": self._stream({"format": "SRGGB10_CSI2P"}, raw),
            "controls": dict(controls),
            "sensor": sensor,
            "display": display,
            "encode": encode,
        }
        return config

    def create_video_configuration(self, main: dict[str, Any] | None = None, lores: Any = None,
                                   raw: Any = None, transform: Any = None,
                                   colour_space: Any = None, buffer_count: int = 6,
                                   controls: dict[str, Any] | None = None, display: Any = "main",
                                   encode: Any = "main", queue: bool = True, sensor: Any = None,
                                   use_case: str = "video") -> dict[str, Any]:
        controls = {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333)} | (
            controls or {})
        return self._config(use_case, main or {},
                            {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True},
                            lores, raw or {}, transform, colour_space, buffer_count, controls,
                            display, encode, queue, sensor or {})

    def create_still_configuration(self, main: dict[str, Any] | None = None, lores: Any = None,
                                   raw: Any = None, transform: Any = None,
                                   colour_space: Any = None, buffer_count: int = 1,
                                   controls: dict[str, Any] | None = None, display: Any = None,
                                   encode: Any = None, queue: bool = True, sensor: Any = None,
                                   use_case: str = "still") -> dict[str, Any]:
        return self._config(use_case, main or {},
                            {"format": "BGR888", "size": self._sensor.size, "preserve_ar": True},
                            lores, raw or {}, transform, colour_space, buffer_count,
                            controls or {}, display, encode, queue, sensor or {})

    def configure(self, camera_config: Any = None) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if camera_config is None or isinstance(camera_config, str):
            camera_config = (self.create_video_configuration() if camera_config == "video"
                             else self.create_still_configuration())
        config = dict(camera_config)
        main = dict(config["main"])
        width, height = main["size"]
        if width % 2 or height % 2:
            raise RuntimeError("width and height should be even")
        if self._sensor.max_size is not None:  # what libcamera's validate() "Adjusted" does
            max_w, max_h = self._sensor.max_size
            width, height = min(width, max_w), min(height, max_h)
        main["size"] = (width, height)
        main["stride"] = width * (4 if main["format"].startswith("X") else 1)
        main["framesize"] = width * height * 3 // 2
        config["main"] = main
        self.camera_config = config

    def camera_configuration(self) -> dict[str, Any] | None:
        return self.camera_config

    # --- running -----------------------------------------------------------------------------

    def start(self, config: Any = None, show_preview: Any = False) -> None:
        if self.camera_config is None and config is None:
            config = "preview"
        if config is not None:
            self.configure(config)
        if self.started:
            return
        if self._sensor.fail_start:
            raise RuntimeError("Failed to start camera: Input/output error")
        assert self.camera_config is not None
        HW.started_controls[self.camera_idx] = dict(self.camera_config["controls"])
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run, name=f"fake-cam{self.camera_idx}",
                                        daemon=True)
        self.started = True
        self._thread.start()

    def _frame_interval(self) -> float:
        assert self.camera_config is not None
        limits = self.camera_config["controls"].get("FrameDurationLimits", (33333, 33333))
        return max(int(limits[0]), 1) / 1e6

    def _sync_ready(self, index: int, controls: dict[str, Any]) -> bool:
        mode = int(controls.get("SyncMode", 0))
        if mode == 0:
            return False
        if mode == 1:  # server: "go" after SyncFrames frames, for everyone
            if HW.sync_go is None and index >= int(controls.get("SyncFrames", 100)):
                HW.sync_go = time.monotonic()
            return HW.sync_go is not None
        return HW.sync_go is not None and time.monotonic() >= HW.sync_go  # client

    def _run(self) -> None:
        assert self.camera_config is not None
        interval = self._frame_interval()
        controls = dict(self.camera_config["controls"])
        began = time.monotonic()
        index = 0
        while not self._stop_event.is_set():
            due = began + index * interval
            if self._stop_event.wait(max(0.0, due - time.monotonic())):
                break
            late = time.monotonic() - due
            if late > interval:  # a slow consumer: the sensor drops frames, it never bursts
                index += int(late / interval)
                continue
            if self._sensor.no_frames:
                continue
            if self._sensor.die_after is not None and time.monotonic() - began >= \
                    self._sensor.die_after:
                return  # frames just stop, as when the ribbon cable comes out
            metadata = {"SensorTimestamp": time.monotonic_ns(), "FrameDuration":
                        int(interval * 1e6), "ExposureTime": 10000,
                        "SyncReady": self._sync_ready(index, controls)}
            request = CompletedRequest(metadata, self.camera_config)
            index += 1
            self.frames += 1
            if self.pre_callback:
                self.pre_callback(request)
            if self.post_callback:
                self.post_callback(request)
            for encoder in list(self._encoders):
                if encoder.name in ("main", "lores"):
                    encoder.encode(encoder.name, request)

    def stop(self) -> None:
        if not self.started:
            return
        self._stop_event.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self.started = False

    def start_encoder(self, encoder: Encoder | None = None, output: Any = None, pts: Any = None,
                      quality: Any = None, name: str | None = None) -> None:
        _encoder = encoder
        if _encoder is None:
            if len(self._encoders) > 1:
                raise RuntimeError("Multiple possible encoders, need to pass encoder")
            _encoder = next(iter(self._encoders), None)
        if _encoder is None:
            raise RuntimeError("No encoder specified")
        if output is not None:
            if isinstance(output, str):
                raise NotImplementedError("fake picamera2: pass an Output object")
            _encoder.output = output
        streams = self.camera_configuration()
        if name is None:
            name = self.encode_stream_name
        if streams is None or streams.get(name) is None:
            raise RuntimeError(f"Encode stream {name} was not defined")
        _encoder.name = name
        _encoder.width, _encoder.height = streams[name]["size"]
        _encoder.format = streams[name]["format"]
        _encoder.stride = streams[name]["stride"]
        min_frame_duration = max(int(self._frame_interval() * 1e6), 33333)
        if getattr(_encoder, "framerate", None) is None:
            _encoder.framerate = 1000000 / min_frame_duration
        _encoder.start(quality=quality)
        self._encoders.add(_encoder)

    def stop_encoder(self, encoders: Any = None) -> None:
        if encoders is None:
            remove = list(self._encoders)
        elif isinstance(encoders, Encoder):
            remove = [encoders]
        else:
            remove = list(encoders)
        for encoder in remove:
            encoder.stop()
        for encoder in remove:
            self._encoders.discard(encoder)

    @property
    def encoders(self) -> set[Encoder]:
        return self._encoders

    def start_recording(self, encoder: Encoder, output: Any, pts: Any = None, config: Any = None,
                        quality: Any = None, name: str | None = None) -> None:
        if self.camera_config is None and config is None:
            config = "video"
        if config is not None:
            self.configure(config)
        self.start_encoder(encoder, output, pts=pts, quality=quality, name=name)
        self.start()

    def stop_recording(self) -> None:
        self.stop()
        self.stop_encoder()

    def capture_file(self, file_output: Any, name: str = "main", format: str | None = None,
                     wait: Any = None, signal_function: Any = None,
                     exif_data: Any = None) -> dict[str, Any]:
        if not self.started or self.camera_config is None:
            # The real call would wait forever for a frame that never comes.
            raise RuntimeError("fake picamera2: capture_file on a camera that is not started")
        width, height = self.camera_config[name]["size"]
        if format is None and isinstance(file_output, str | Path):
            format = Path(file_output).suffix.lstrip(".")
        codec = {"jpg": "mjpeg", "jpeg": "mjpeg", "png": "png"}.get((format or "").lower())
        if codec is None:
            raise ValueError(f"fake picamera2: unsupported still format {format!r}")
        data = subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
             f"testsrc2=size={width}x{height}:rate=1", "-frames:v", "1", "-f", "image2pipe",
             "-c:v", codec, "-"], capture_output=True, check=True, timeout=20,
        ).stdout
        if isinstance(file_output, str | Path):
            Path(file_output).write_bytes(data)
        elif isinstance(file_output, io.IOBase) or hasattr(file_output, "write"):
            file_output.write(data)
        return {"SensorTimestamp": time.monotonic_ns()}

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        with HW.lock:
            HW.acquired.discard(self.camera_idx)
        self.is_open = False
        self.camera_config = None

    def __enter__(self) -> Picamera2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fake Picamera2 {self.camera_idx} pid={os.getpid()}>"
