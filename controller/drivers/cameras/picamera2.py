"""The Picamera2 driver: Raspberry Pi CSI cameras through the picamera2 library.

picamera2 is imported lazily, on first use: it only installs on a Raspberry Pi (Raspberry Pi OS's
`python3-picamera2`; on other machines `import picamera2` fails on libcamera), and the package
must work without it. `picamera2_available()` is what `CAMERA_DRIVER=auto` asks.

Recording, per camera: `Picamera2(n)`, a video configuration at WIDTHxHEIGHT (YUV420, the
encoder's native input) with the frame duration pinned to FPS, an `H264Encoder` with a keyframe
every second (hardware on a Pi 4, libx264 inside picamera2 on a Pi 5), and our `SegmentOutput`
(picamera2_output.py), which writes rotating MPEG-TS segments. The lifecycle (start, poll, stop,
hand-over) is the template's; this module opens, starts and releases the cameras.

Alignment. Each encoder rebases its timestamps to its own first frame (`encoder.firsttimestamp`,
the sensor timestamp in microseconds, on the clock picamera2 itself compares with
time.monotonic_ns), so each run's manifest records the wall-clock of that first frame as
started_at, plus the raw sensor timestamp; the builder aligns the feeds with started_at. On a
Pi 5, where the cameras expose the `SyncMode` control, the first camera is the sync server and
the others clients, with `encoder.sync_enable` so that every encoder starts at the same frame;
elsewhere the cameras start back to back and started_at carries the offset.

Health: every packet the encoder hands us is counted; a camera whose output stops for
max(3 s, 3 frames) is reported `stalled`, one whose muxer fails `died`; either way it is released
and the other camera goes on. Cameras are released (stop_recording, close) on stop(), on a start
error and on close(), which the supervisor calls on SIGTERM; each release runs in a helper
thread with a time limit, because a camera whose cable came out can hang in libcamera.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.drivers.cameras import CameraError, CameraInfo, CameraProbe
from controller.drivers.cameras.picamera2_output import segment_output_class
from controller.drivers.cameras.template import (
    CameraSource,
    Loss,
    Recording,
    RecordingDriver,
    Split,
)
from controller.recordings import RunManifest, camera_dir, run_segments

if TYPE_CHECKING:
    from controller.config import Settings

FIRST_FRAME_TIMEOUT_S = 10.0
RELEASE_TIMEOUT_S = 5.0


def picamera2_available() -> str | None:
    """None when picamera2 imports and sees a camera; otherwise why not, in one line."""
    try:
        lib = _Lib.load()
        cameras = lib.Picamera2.global_camera_info()
    except CameraError as exc:
        return str(exc)
    except Exception as exc:  # libcamera raises whatever it likes when there is no camera stack
        return f"picamera2 cannot list cameras ({type(exc).__name__}: {exc})"
    return None if cameras else "picamera2 sees no camera"


@dataclass
class _Lib:
    """The parts of picamera2 (and libcamera) this driver uses, imported once."""

    Picamera2: Any
    H264Encoder: Any
    Output: type
    PyavOutput: Any
    sync_modes: Any  # libcamera.controls.rpi.SyncModeEnum, or None on older libcamera
    segment_output: type = field(init=False)

    def __post_init__(self) -> None:
        self.segment_output = segment_output_class(self.Output, self.PyavOutput)

    @classmethod
    def load(cls) -> _Lib:
        try:
            core = importlib.import_module("picamera2")
            encoders = importlib.import_module("picamera2.encoders")
            outputs = importlib.import_module("picamera2.outputs")
        except Exception as exc:  # ImportError, or libcamera's own errors at import
            raise CameraError(
                f"picamera2 does not import ({type(exc).__name__}: {exc}); on Raspberry Pi OS "
                "install python3-picamera2 and use a venv with --system-site-packages"
            ) from None
        if not hasattr(outputs, "PyavOutput"):
            raise CameraError("picamera2 is too old (no outputs.PyavOutput); apt upgrade it")
        sync_modes = None
        with contextlib.suppress(Exception):
            sync_modes = importlib.import_module("libcamera").controls.rpi.SyncModeEnum
        return cls(core.Picamera2, encoders.H264Encoder, outputs.Output, outputs.PyavOutput,
                   sync_modes)


@dataclass
class _PiCam(CameraSource):
    """One opened camera: its Picamera2 object, encoder and segment output."""

    camera: int
    picam: Any
    model: str = ""
    encoder: Any = None
    output: Any = None
    sync: bool = False  # started with Pi 5 camera sync
    began: float = 0.0  # monotonic
    origin: float = 0.0  # wall clock of the encoder's first frame: its timestamps count from it
    released: bool = False
    _stopper: threading.Thread | None = field(default=None, repr=False)
    _errors: list[str] = field(default_factory=list, repr=False)

    def first_frame_failure(self, deadline: float, timeout_s: float) -> str | None:
        if not self.output.first_frame.wait(max(0.0, deadline - time.monotonic())):
            return f"no frame within {timeout_s:.0f} s"
        if self.output.error:
            return f"output failed: {self.output.error}"
        return None

    def first_frame(self, written_at: float) -> tuple[float, dict[str, object]]:
        """Wall-clock of the encoder's first frame: from its sensor timestamp when plausible."""
        seen = self.output.first_frame_wall or time.time()
        started_at, source, first_us = seen, "first_packet", None
        sensor_us = getattr(self.encoder, "firsttimestamp", None)
        if isinstance(sensor_us, int | float) and sensor_us > 0:
            estimate = time.time() - (time.monotonic_ns() / 1000 - sensor_us) / 1e6
            # The sensor clock is monotonic on a Pi; if it is not comparable (another clock,
            # or a suspend in between), the time we saw the first packet is the honest answer.
            if seen - 2.0 <= estimate <= seen + 0.05:
                started_at, source, first_us = estimate, "sensor_timestamp", int(sensor_us)
        self.origin = started_at
        return started_at, {"started_at_source": source, "first_sensor_timestamp_us": first_us}

    def trouble(self, now: float, stall_s: float) -> tuple[Loss, str] | None:
        if self.output.error:
            return "died", f"output failed: {self.output.error}; camera released"
        idle = now - self.output.last_frame
        if idle > stall_s:
            return "stalled", f"no frame for {idle:.1f} s; camera released"
        return None

    def written_until(self) -> float | None:
        last = self.output.last_timestamp
        return None if last is None else self.origin + last / 1e6

    def stopped_at(self) -> float | None:
        return self.output.last_frame_wall  # type: ignore[no-any-return]

    def segments(self) -> list[Path]:
        return run_segments(self.output.cam_dir, self.output.run)

    def request_stop(self) -> None:
        # In a helper thread: a camera whose cable came out can hang in libcamera.
        if self.released:
            return
        self.released = True
        self._stopper = threading.Thread(target=self._release_now, daemon=True,
                                         name=f"ezrec-release-cam{self.camera}")
        self._stopper.start()

    def _release_now(self) -> None:
        try:
            self.picam.stop_recording()
        except Exception as exc:
            self._errors.append(f"stop_recording: {exc}")
        try:
            self.picam.close()
        except Exception as exc:
            self._errors.append(f"close: {exc}")

    def wait_stopped(self, deadline: float, timeout: float) -> list[str]:
        if self._stopper is None:
            return []
        self._stopper.join(max(0.0, deadline - time.monotonic()))
        errors, self._errors = list(self._errors), []
        if self._stopper.is_alive():
            errors.append(f"did not release within {timeout:g} s")
        self._stopper = None
        return [f"camera {self.camera}: {error}" for error in errors]

    def release(self) -> list[str]:
        self.request_stop()
        return self.wait_stopped(time.monotonic() + RELEASE_TIMEOUT_S, RELEASE_TIMEOUT_S)

    def split_at(self, at: float, manifest: RunManifest, cam_dir: Path, run: int) -> Split:
        # A camera is held by one Picamera2 object only: releasing and reopening it for the
        # next booking loses the frames of the restart, so the output switches folders.
        at_us = int((at - self.origin) * 1_000_000)
        try:
            last, first_us = self.output.continue_into(cam_dir, run, at_us)
        except (OSError, RuntimeError) as exc:
            raise CameraError(f"camera {self.camera}: cannot go on recording: {exc}") from None
        return Split(last, self.origin + first_us / 1e6, None)


class Picamera2Driver(RecordingDriver):
    name = "picamera2"
    exclusive = True  # libcamera lets one process, one Picamera2 object, hold a camera

    def __init__(self, settings: Settings) -> None:
        self.lib = _Lib.load()
        super().__init__(settings)

    def _infos(self) -> list[dict[str, Any]]:
        return list(self.lib.Picamera2.global_camera_info())

    def discover(self) -> list[CameraInfo]:
        try:
            infos = self._infos()
        except Exception as exc:
            line = f"cannot list cameras: {exc}"
            return [CameraInfo(cam, self.name, "", self.mode, False, line)
                    for cam in range(self.settings.cameras)]
        out = []
        for cam in range(self.settings.cameras):
            if cam < len(infos):
                out.append(CameraInfo(cam, self.name, str(infos[cam].get("Model", "")),
                                      self.mode, True))
            else:
                out.append(CameraInfo(cam, self.name, "", self.mode, False, "not found"))
        return out

    # --- recording ---------------------------------------------------------------------------

    def _video_config(self, picam: Any, sync: Any = None) -> Any:
        s = self.settings
        frame_us = int(1_000_000 / s.fps)
        controls: dict[str, Any] = {"FrameDurationLimits": (frame_us, frame_us)}
        if sync is not None:
            # Two seconds for the cameras to lock before the server says "go".
            controls.update({"SyncMode": sync, "SyncFrames": 2 * s.fps})
        return picam.create_video_configuration(
            main={"size": (s.width, s.height), "format": "YUV420"}, controls=controls
        )

    def launch(self, handle: Recording) -> dict[int, str]:
        s = self.settings
        failures: dict[int, str] = {}
        try:
            infos = self._infos()
        except Exception as exc:
            raise CameraError(f"picamera2 cannot list cameras: {exc}") from None
        cams: dict[int, _PiCam] = {}
        for cam in handle.attempted:
            if cam >= len(infos):
                failures[cam] = f"not found ({len(infos)} camera(s) attached)"
                continue
            try:
                picam = self.lib.Picamera2(cam)
            except Exception as exc:
                failures[cam] = f"could not open (busy or broken): {exc}"
                continue
            cams[cam] = _PiCam(cam, picam, model=str(infos[cam].get("Model", "")))
        handle.sources.update(cams)
        sync_server = self._sync_server(cams)
        for cam, pc in cams.items():
            try:
                sync = None
                if sync_server is not None:
                    modes = self.lib.sync_modes
                    sync = modes.Server if cam == sync_server else modes.Client
                pc.picam.configure(self._video_config(pc.picam, sync))
                pc.encoder = self.lib.H264Encoder(
                    bitrate=s.camera_bitrate_kbps * 1000, repeat=True, iperiod=s.fps,
                    framerate=s.fps,
                )
                if sync is not None:
                    pc.encoder.sync_enable = True
                    pc.sync = True
                cam_dir = camera_dir(handle.out_dir, cam)
                pc.output = self.lib.segment_output(cam_dir, handle.run, s.segment_s)
                manifest = RunManifest(
                    camera=cam, driver=self.name, run=handle.run, started_at=time.time(),
                    width=s.width, height=s.height, fps=s.fps,
                    extra={"model": pc.model, "sync": sync is not None},
                )
                manifest.write(cam_dir)
                handle.manifests[cam] = manifest
            except Exception as exc:
                failures[cam] = f"configure failed: {type(exc).__name__}: {exc}"
        # Clients first: they wait for the server's "go", which must not come before they listen.
        for cam in sorted((c for c in cams if c not in failures), key=lambda c: c == sync_server):
            pc = cams[cam]
            try:
                pc.picam.start_recording(pc.encoder, pc.output)
                pc.began = time.monotonic()
            except Exception as exc:
                failures[cam] = f"start_recording failed: {type(exc).__name__}: {exc}"
        return failures

    def first_frame_timeout(self, handle: Recording) -> float:
        synced = any(isinstance(pc, _PiCam) and pc.sync for pc in handle.sources.values())
        return FIRST_FRAME_TIMEOUT_S + (2.0 if synced else 0.0)

    def started(self, handle: Recording) -> None:
        synced = all(isinstance(pc, _PiCam) and pc.sync for pc in handle.sources.values())
        if synced and len(handle.sources) > 1:
            handle.notes.append(f"cameras {sorted(handle.sources)} started with Pi 5 camera sync")

    def _sync_server(self, cams: dict[int, _PiCam]) -> int | None:
        """The sync server's camera number when every camera can sync (Pi 5), else None."""
        if self.lib.sync_modes is None or len(cams) < 2:
            return None
        for pc in cams.values():
            try:
                if "SyncMode" not in pc.picam.camera_controls:
                    return None
            except Exception:
                return None
        return min(cams)

    # --- stills and checks -------------------------------------------------------------------

    def still(self, camera: int) -> bytes:
        if camera >= len(self._infos()):
            raise CameraError(f"camera {camera}: not found")
        picam = self.lib.Picamera2(camera)
        try:
            s = self.settings
            picam.configure(picam.create_still_configuration(main={"size": (s.width, s.height)}))
            picam.start()
            time.sleep(0.5)  # let exposure and white balance settle a little
            buffer = io.BytesIO()
            picam.capture_file(buffer, format="jpeg")
            return buffer.getvalue()
        finally:
            with contextlib.suppress(Exception):
                picam.stop()
            with contextlib.suppress(Exception):
                picam.close()

    def probe(self) -> list[CameraProbe]:
        try:
            infos = self._infos()
        except Exception as exc:
            return [CameraProbe(cam, False, f"camera {cam}: cannot list cameras: {exc}")
                    for cam in range(self.settings.cameras)]
        return [self._probe_one(cam, infos) for cam in range(self.settings.cameras)]

    def _probe_one(self, cam: int, infos: list[dict[str, Any]]) -> CameraProbe:
        s = self.settings
        if cam >= len(infos):
            return CameraProbe(cam, False, f"camera {cam}: not found")
        model = str(infos[cam].get("Model", ""))
        if self.recording_source(cam) is not None:
            return CameraProbe(cam, True, f"camera {cam} ok: recording now ({model})")
        try:
            picam = self.lib.Picamera2(cam)
        except Exception as exc:
            return CameraProbe(cam, False, f"camera {cam}: busy (could not open: {exc})")
        frames = 0

        def count(_request: Any) -> None:
            nonlocal frames
            frames += 1

        try:
            picam.configure(self._video_config(picam))
            size = tuple(picam.camera_configuration()["main"]["size"])
            if size != (s.width, s.height):
                return CameraProbe(cam, False, f"camera {cam}: wrong mode (asked {self.mode}, "
                                   f"camera gives {size[0]}x{size[1]}) ({model})")
            picam.post_callback = count
            began = time.monotonic()
            picam.start()
            time.sleep(1.0)
            picam.stop()
            rate = frames / max(time.monotonic() - began, 1e-3)
        except Exception as exc:
            return CameraProbe(cam, False, f"camera {cam}: capture failed: {exc}")
        finally:
            with contextlib.suppress(Exception):
                picam.close()
        if frames == 0:
            return CameraProbe(cam, False, f"camera {cam}: no frames in 1 s ({model})")
        if rate < 0.7 * s.fps:
            return CameraProbe(cam, False, f"camera {cam}: wrong mode (asked {self.mode}, "
                               f"delivers {rate:.0f} fps) ({model})")
        return CameraProbe(cam, True, f"camera {cam} ok: {self.mode} ({model})")


__all__ = ["Picamera2Driver", "picamera2_available"]
