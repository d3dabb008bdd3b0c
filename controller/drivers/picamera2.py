"""The Picamera2 driver: Raspberry Pi CSI cameras through the picamera2 library.

picamera2 is imported lazily, on first use: it only installs on a Raspberry Pi (Raspberry Pi OS's
`python3-picamera2`; on other machines `import picamera2` fails on libcamera), and the package
must work without it. `picamera2_available()` is what `CAMERA_DRIVER=auto` asks.

Recording, per camera: `Picamera2(n)`, a video configuration at WIDTHxHEIGHT (YUV420, the
encoder's native input) with the frame duration pinned to FPS, an `H264Encoder` with a keyframe
every second (hardware on a Pi 4, libx264 inside picamera2 on a Pi 5), and our `SegmentOutput`,
a picamera2 `Output` that hands the packets to one `PyavOutput(..., format="mpegts")` per segment
and switches to a new file at the first keyframe SEGMENT_S after the current one began. MPEG-TS
keeps the encoder's per-frame timestamps and stays readable after a kill at any instant (a plain
MP4 does not).

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
import dataclasses
import importlib
import inspect
import io
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from controller.drivers.camera import (
    STALL_MIN_S,
    CameraError,
    CameraEvent,
    CameraInfo,
    CameraProbe,
    OpenRecordings,
    Recording,
    RecordingHandle,
    RecordingResult,
    open_run,
    snapshot_from_segments,
    take_pending,
)
from controller.recordings import (
    RunManifest,
    camera_dir,
    drop_empty_but_open,
    drop_empty_segments,
    end_run_at,
    manifest_path,
    run_segments,
    segment_path,
)

if TYPE_CHECKING:
    from controller.config import Settings

log = logging.getLogger(__name__)

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
        self.segment_output = _segment_output_class(self.Output, self.PyavOutput)

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


def _segment_output_class(output_base: type, pyav_output: Any) -> type:
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


@dataclass
class _PiCam:
    camera: int
    picam: Any
    cam_dir: Path
    model: str = ""
    encoder: Any = None
    output: Any = None
    manifest: RunManifest | None = None
    started: float = 0.0  # monotonic
    released: bool = False
    origin: float = 0.0  # wall clock of the encoder's first frame: its timestamps count from it


@dataclass
class Picamera2Recording(Recording):
    """The handle returned by Picamera2Driver.start()."""

    cams: dict[int, _PiCam] = field(default_factory=dict, repr=False)


def _in_thread(work: Callable[[], None], timeout: float, name: str) -> bool:
    """Run `work` with a time limit; False if it is still stuck (it is left behind, daemon)."""
    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


class Picamera2Driver:
    name = "picamera2"
    exclusive = True  # libcamera lets one process, one Picamera2 object, hold a camera

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lib = _Lib.load()
        self._open = OpenRecordings(Picamera2Recording, self.name)

    @property
    def mode(self) -> str:
        s = self.settings
        return f"{s.width}x{s.height}@{s.fps}"

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

    def start(self, booking_id: str, out_dir: Path) -> Picamera2Recording:
        s = self.settings
        run = open_run(out_dir)
        handle = Picamera2Recording(booking_id=booking_id, out_dir=out_dir, run=run)
        failures: dict[int, str] = {}
        try:
            infos = self._infos()
        except Exception as exc:
            raise CameraError(f"picamera2 cannot list cameras: {exc}") from None
        for cam in range(s.cameras):
            handle.attempted.append(cam)
            if cam >= len(infos):
                failures[cam] = f"not found ({len(infos)} camera(s) attached)"
                continue
            try:
                picam = self.lib.Picamera2(cam)
            except Exception as exc:
                failures[cam] = f"could not open (busy or broken): {exc}"
                continue
            handle.cams[cam] = _PiCam(cam, picam, camera_dir(out_dir, cam),
                                      model=str(infos[cam].get("Model", "")))
        sync_server = self._sync_server(handle)
        for cam, pc in list(handle.cams.items()):
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
                pc.output = self.lib.segment_output(pc.cam_dir, run, s.segment_s)
                pc.manifest = RunManifest(
                    camera=cam, driver=self.name, run=run, started_at=time.time(),
                    width=s.width, height=s.height, fps=s.fps,
                    extra={"model": pc.model, "sync": sync is not None},
                )
                pc.manifest.write(pc.cam_dir)
            except Exception as exc:
                failures[cam] = f"configure failed: {type(exc).__name__}: {exc}"
        # Clients first: they wait for the server's "go", which must not come before they listen.
        order = sorted(
            (cam for cam in handle.cams if cam not in failures),
            key=lambda cam: cam == sync_server,
        )
        for cam in order:
            pc = handle.cams[cam]
            try:
                pc.picam.start_recording(pc.encoder, pc.output)
                pc.started = time.monotonic()
            except Exception as exc:
                failures[cam] = f"start_recording failed: {type(exc).__name__}: {exc}"
        timeout = FIRST_FRAME_TIMEOUT_S + (2.0 if sync_server is not None else 0.0)
        deadline = time.monotonic() + timeout
        for cam in order:
            if cam in failures:
                continue
            pc = handle.cams[cam]
            if not pc.output.first_frame.wait(max(0.0, deadline - time.monotonic())):
                failures[cam] = f"no frame within {timeout:.0f} s"
            elif pc.output.error:
                failures[cam] = f"output failed: {pc.output.error}"
        for cam in sorted(failures):
            pc = handle.cams.pop(cam, None)
            if pc is not None:
                self._release(pc, handle)
                if not drop_empty_segments(run_segments(pc.cam_dir, run)):
                    with contextlib.suppress(FileNotFoundError):
                        manifest_path(pc.cam_dir, run).unlink()
            handle.failed_to_start(cam, failures[cam])
        if not handle.cams:
            raise CameraError("no camera could start: " + "; ".join(handle.notes))
        if sync_server is not None and len(handle.cams) > 1:
            handle.notes.append(f"cameras {sorted(handle.cams)} started with Pi 5 camera sync")
        for cam, pc in sorted(handle.cams.items()):
            handle.cameras.append(cam)
            assert pc.manifest is not None
            started_at, source, first_us = self._first_frame_wall(pc)
            pc.origin = started_at
            pc.manifest.started_at = started_at
            pc.manifest.extra.update({"started_at_source": source,
                                      "first_sensor_timestamp_us": first_us})
            pc.manifest.write(pc.cam_dir)
        return self._open.add(handle)

    def _sync_server(self, handle: Picamera2Recording) -> int | None:
        """The sync server's camera number when every camera can sync (Pi 5), else None."""
        if self.lib.sync_modes is None or len(handle.cams) < 2:
            return None
        for pc in handle.cams.values():
            try:
                if "SyncMode" not in pc.picam.camera_controls:
                    return None
            except Exception:
                return None
        return min(handle.cams)

    def _first_frame_wall(self, pc: _PiCam) -> tuple[float, str, int | None]:
        """Wall-clock of the encoder's first frame: from its sensor timestamp when plausible."""
        seen = pc.output.first_frame_wall or time.time()
        first_us = getattr(pc.encoder, "firsttimestamp", None)
        if isinstance(first_us, int | float) and first_us > 0:
            estimate = time.time() - (time.monotonic_ns() / 1000 - first_us) / 1e6
            # The sensor clock is monotonic on a Pi; if it is not comparable (another clock,
            # or a suspend in between), the time we saw the first packet is the honest answer.
            if seen - 2.0 <= estimate <= seen + 0.05:
                return estimate, "sensor_timestamp", int(first_us)
        return seen, "first_packet", None

    def _release(self, pc: _PiCam, handle: Picamera2Recording,
                 timeout: float = RELEASE_TIMEOUT_S) -> None:
        if pc.released:
            return
        pc.released = True
        errors: list[str] = []

        def work() -> None:
            try:
                pc.picam.stop_recording()
            except Exception as exc:
                errors.append(f"stop_recording: {exc}")
            try:
                pc.picam.close()
            except Exception as exc:
                errors.append(f"close: {exc}")

        if not _in_thread(work, timeout, f"ezrec-release-cam{pc.camera}"):
            errors.append(f"did not release within {timeout:g} s")
        for error in errors:
            line = f"camera {pc.camera}: {error}"
            handle.notes.append(line)
            log.warning("%s (booking %s)", line, handle.booking_id)

    def _finish_manifest(self, pc: _PiCam, handle: Picamera2Recording,
                         note: str | None = None) -> None:
        stopped_at = pc.output.last_frame_wall or time.time()
        handle.close_manifest(pc.camera, pc.manifest, pc.cam_dir, stopped_at, note)

    def poll(self, handle: RecordingHandle) -> list[CameraEvent]:
        h = self._own(handle)
        with h.lock:
            events = take_pending(h.pending, h.reported)
            if h.result is not None:
                return events
            stall_s = max(STALL_MIN_S, 3.0 / max(self.settings.fps, 1))
            now = time.monotonic()
            for cam in list(h.cameras):
                pc = h.cams[cam]
                kind: Literal["died", "stalled"]
                if pc.output.error:
                    kind, why = "died", f"output failed: {pc.output.error}"
                elif now - pc.output.last_frame > stall_s:
                    kind, why = "stalled", f"no frame for {now - pc.output.last_frame:.1f} s"
                else:
                    continue
                detail = f"after {now - pc.started:.1f} s: {why}; camera released"
                event, line = h.lose(cam, kind, detail)
                events.append(event)
                self._release(pc, h)
                self._finish_manifest(pc, h, line)
        return events

    def written_until(self, handle: RecordingHandle) -> float | None:
        h = self._own(handle)
        walls = [h.cams[cam].origin + h.cams[cam].output.last_timestamp / 1e6
                 for cam in h.cameras if h.cams[cam].output.last_timestamp is not None]
        return min(walls, default=None)

    def bytes_written(self, handle: RecordingHandle) -> int:
        h = self._own(handle)
        total = 0
        for pc in h.cams.values():
            for path in run_segments(pc.cam_dir, h.run):
                with contextlib.suppress(FileNotFoundError):
                    total += path.stat().st_size
        return total

    def stop(self, handle: RecordingHandle, timeout: float = 5.0) -> RecordingResult:
        h = self._own(handle)
        with h.lock:
            if h.result is not None:
                return h.result
            live = [h.cams[cam] for cam in h.cameras]
            threads = [
                threading.Thread(target=self._release, args=(pc, h, timeout), daemon=True)
                for pc in live
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout + 1.0)
            for pc in live:
                self._finish_manifest(pc, h)
            files: dict[int, list[Path]] = {cam: [] for cam in h.attempted}
            for cam, pc in h.cams.items():
                files[cam] = drop_empty_segments(run_segments(pc.cam_dir, h.run))
            return self._open.finish(h, files)

    def hand_over(
        self, handle: RecordingHandle, booking_id: str, out_dir: Path, at: float
    ) -> tuple[RecordingResult, Picamera2Recording]:
        """End `handle`'s booking at wall time `at`; the cameras go on for the next booking.

        A camera can be held by one Picamera2 object only: releasing it and opening it again
        for the next booking loses the frames of the restart (seconds), or fails outright if
        the release is slow. So the encoder keeps running and our output switches folders.
        """
        h = self._own(handle)
        with h.lock:
            if h.result is not None or not h.cameras:
                raise CameraError("the recording to hand over has stopped")
            run = open_run(out_dir)
            new = Picamera2Recording(booking_id=booking_id, out_dir=out_dir, run=run)
            for cam in list(h.cameras):
                pc = h.cams[cam]
                assert pc.manifest is not None
                at_us = int((at - pc.manifest.started_at) * 1_000_000)
                cam_dir = camera_dir(out_dir, cam)
                try:
                    last, first_us = pc.output.continue_into(cam_dir, run, at_us)
                except (OSError, RuntimeError) as exc:
                    raise CameraError(f"camera {cam}: cannot go on recording: {exc}") from None
                manifest = RunManifest(
                    camera=cam, driver=self.name, run=run,
                    started_at=pc.manifest.started_at + first_us / 1e6,
                    width=pc.manifest.width, height=pc.manifest.height, fps=pc.manifest.fps,
                    extra={k: v for k, v in pc.manifest.extra.items() if k != "last_seq"}
                    | {"continued_for": booking_id, "continued_from_booking": h.booking_id},
                )
                manifest.write(cam_dir)
                end_run_at(pc.manifest, pc.cam_dir, last, stopped_at=at)
                new.cams[cam] = dataclasses.replace(pc, cam_dir=cam_dir, manifest=manifest)
                pc.released = True  # the camera now belongs to the new handle
                new.attempted.append(cam)
                new.cameras.append(cam)
            files: dict[int, list[Path]] = {cam: [] for cam in h.attempted}
            for cam, pc in h.cams.items():
                keep = drop_empty_but_open if cam in new.cameras else drop_empty_segments
                files[cam] = keep(run_segments(pc.cam_dir, h.run))
            result = self._open.finish(h, files)
        return result, self._open.add(new)

    # --- stills and checks -------------------------------------------------------------------

    def _recording(self, camera: int) -> _PiCam | None:
        h = self._open.holding(camera)
        return h.cams[camera] if h is not None else None

    def snapshot(self, camera: int, handle: RecordingHandle | None = None) -> bytes:
        if handle is not None:
            pc = self._own(handle).cams.get(camera)
            if pc is not None:
                return snapshot_from_segments(run_segments(pc.cam_dir, handle.run))
        live = self._recording(camera)
        if live is not None:  # the camera is busy recording: read its files instead
            return snapshot_from_segments(run_segments(live.cam_dir, live.output.run))
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
        if self._recording(cam) is not None:
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

    def close(self) -> None:
        for handle in self._open.all():
            self.stop(handle)

    def _own(self, handle: RecordingHandle) -> Picamera2Recording:
        return self._open.own(handle)


__all__ = ["Picamera2Driver", "Picamera2Recording", "picamera2_available"]
