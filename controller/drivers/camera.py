"""Camera drivers: the small interface the supervisor records through, and what drivers share.

The supervisor only ever talks to a `CameraDriver` (see the Protocol below): `start()` a booking's
recording, `poll()` it about once a second, `stop()` it, take a `snapshot()` for aiming, `probe()`
for `ezrec doctor`. Three drivers implement it: `synthetic` (ffmpeg test patterns), `v4l2` (USB
cameras through ffmpeg) and `picamera2` (Raspberry Pi CSI cameras); `open_camera_driver()` picks
one from the settings.

The raw recording layout that drivers write is owned by `controller.recordings`.

The two ffmpeg-based drivers share `FfmpegDriver`: one ffmpeg process per camera writing with the
segment muxer, watched through `-progress`, started so that it dies with the supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

from controller.drivers.children import spawn_child
from controller.recordings import (
    LayoutError,
    RunManifest,
    Source,
    camera_dir,
    continue_run,
    drop_empty_but_open,
    drop_empty_segments,
    end_run_at,
    manifest_path,
    next_run,
    relay,
    run_segments,
    segment_template,
)

if TYPE_CHECKING:
    from controller.config import Settings

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraInfo:
    index: int
    driver: str
    model: str
    mode: str  # like "1280x720@30"
    up: bool
    detail: str = ""  # why it is down, one line


@dataclass(frozen=True)
class CameraEvent:
    camera: int
    kind: Literal["failed_to_start", "died", "stalled"]
    detail: str  # one line for the booking history


@dataclass(frozen=True)
class CameraProbe:
    camera: int
    ok: bool
    line: str  # "camera 0 ok: 1280x720@30 (...)", "camera 1: not found", ...


@dataclass
class RecordingResult:
    booking_id: str
    run: int
    files: dict[int, list[Path]]  # camera -> segments of this run, in order (may be empty)
    notes: list[str]  # lines for the booking history


class RecordingHandle(Protocol):
    booking_id: str
    out_dir: Path
    run: int
    cameras: list[int]  # cameras recording right now
    notes: list[str]  # what happened so far (start failures, drops), for the history


class CameraError(Exception):
    """No camera could record (start), or a driver cannot be used at all (open)."""


class CameraDriver(Protocol):
    name: str
    # A real sensor or device can be opened by one recording at a time: the next booking on
    # it takes the running camera over (hand_over) instead of opening it during the pre-roll.
    exclusive: bool

    def discover(self) -> list[CameraInfo]: ...

    def start(self, booking_id: str, out_dir: Path) -> RecordingHandle: ...

    def hand_over(
        self, handle: RecordingHandle, booking_id: str, out_dir: Path, at: float
    ) -> tuple[RecordingResult, RecordingHandle]: ...

    def poll(self, handle: RecordingHandle) -> list[CameraEvent]: ...

    def bytes_written(self, handle: RecordingHandle) -> int: ...

    def written_until(self, handle: RecordingHandle) -> float | None:
        """Wall time up to which every camera of `handle` has its frames on disk, if known."""
        ...

    def stop(self, handle: RecordingHandle, timeout: float = 5.0) -> RecordingResult: ...

    def snapshot(self, camera: int, handle: RecordingHandle | None = None) -> bytes: ...

    def probe(self) -> list[CameraProbe]: ...

    def close(self) -> None: ...


def open_camera_driver(settings: Settings) -> CameraDriver:
    """The driver named by CAMERA_DRIVER; `auto` is Picamera2 when it imports and sees cameras.

    Imports are local so that importing this module never drags in picamera2 or ffmpeg checks.
    """
    choice = settings.camera_driver
    if choice == "synthetic":
        from controller.drivers.synthetic import SyntheticDriver

        return SyntheticDriver(settings)
    if choice == "v4l2":
        from controller.drivers.v4l2 import V4L2Driver

        return V4L2Driver(settings)
    from controller.drivers.picamera2 import Picamera2Driver, picamera2_available

    if choice == "picamera2":
        return Picamera2Driver(settings)
    why = picamera2_available()
    if why is None:
        return Picamera2Driver(settings)
    # Loud on purpose: on a venue box this means the customers' videos will be test patterns.
    log.warning(
        "CAMERA_DRIVER=auto: no usable Picamera2 camera (%s); recording SYNTHETIC test patterns "
        "instead. Set EZREC_CAMERA_DRIVER=picamera2 or v4l2 on a real installation.",
        why,
    )
    from controller.drivers.synthetic import SyntheticDriver

    return SyntheticDriver(settings)


def first_timestamp(path: Path, timeout: float = 10.0) -> float | None:
    """The first presentation timestamp in a segment (s), or None when it has none yet."""
    cmd = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-read_intervals", "%+#1",
           "-show_entries", "packet=pts_time", "-of", "csv=p=0", str(path)]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in done.stdout.decode(errors="replace").split():
        with contextlib.suppress(ValueError):
            return float(line.strip().strip(","))
    return None


def open_run(out_dir: Path) -> int:
    """The number of a new run in a booking's raw dir (created), or CameraError."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return next_run(out_dir)
    except (OSError, LayoutError) as exc:
        raise CameraError(f"cannot record into {out_dir}: {exc}") from None


def snapshot_from_segments(segments: Sequence[Path], timeout: float = 10.0) -> bytes:
    """A JPEG of the first frame of the newest decodable segment.

    Reads the files only, so the live recording is never disturbed. Segments start on a
    keyframe, so the still is at most SEGMENT_S old: fine for aiming a camera.
    """
    for path in sorted(segments, reverse=True)[:3]:
        if not path.exists() or path.stat().st_size == 0:
            continue
        jpeg = ffmpeg_jpeg(["-i", str(path)], timeout=timeout)
        if jpeg:
            return jpeg
    raise CameraError("no decodable segment yet for a snapshot")


def ffmpeg_jpeg(input_args: Sequence[str], timeout: float = 10.0) -> bytes | None:
    """One JPEG frame from an ffmpeg input, or None when ffmpeg could not decode one."""
    cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", *input_args,
           "-frames:v", "1", "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "4", "-"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    data = done.stdout
    return data if done.returncode == 0 and data.startswith(b"\xff\xd8") else None


def ffmpeg_binary() -> str:
    found = shutil.which("ffmpeg")
    if not found:
        raise CameraError("ffmpeg not found on PATH (Debian: apt install ffmpeg)")
    return found


# ---------------------------------------------------------------------------------------------
# ffmpeg-based drivers (synthetic, v4l2)
# ---------------------------------------------------------------------------------------------

STALL_MIN_S = 3.0
FIRST_FRAME_TIMEOUT_S = 15.0
ESTIMATE_WINDOW_S = 5.0  # refine started_at over the first seconds of progress reports


@dataclass
class FfmpegInput:
    """How one camera is read: ffmpeg input arguments and an optional filter chain."""

    args: list[str]
    video_filter: str | None = None
    model: str = ""


InjectionKind = Literal["start", "die_after", "kill_after", "stall_after"]


@dataclass
class Injection:
    """A test-only failure (see synthetic.py's EZRECTEST_SYNTHETIC_FAIL)."""

    kind: InjectionKind
    seconds: float = 0.0


class FfmpegCamera:
    """One camera's ffmpeg process, watched through `-progress` on its stdout."""

    def __init__(self, camera: int, cam_dir: Path, run: int, cmd: list[str], fps: int) -> None:
        self.camera = camera
        self.cam_dir = cam_dir
        self.run = run
        self.cmd = cmd
        self.fps = fps
        self.log_path = cam_dir / f"run-{run:03d}.ffmpeg.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.frames = 0
        self.out_time_s = 0.0
        self.spawned_at = 0.0  # monotonic
        self.last_progress = 0.0  # monotonic time the frame count last moved
        self.started_at: float | None = None  # wall-clock of the first frame, estimated
        self.first_frame = threading.Event()
        self.ended = threading.Event()
        self.stopping = False
        self.manifest: RunManifest | None = None
        self._timers: list[threading.Timer] = []

    def spawn(self) -> None:
        self.cam_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.proc = spawn_child(
                self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file
            )
        self.spawned_at = self.last_progress = time.monotonic()
        threading.Thread(
            target=self._read_progress, name=f"ezrec-cam{self.camera}-progress", daemon=True
        ).start()

    def _read_progress(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        block: dict[str, str] = {}
        for raw in self.proc.stdout:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            block[key] = value
            if key != "progress":
                continue
            self._take(block)
            block = {}
        self.ended.set()
        self.first_frame.set()  # wake anyone waiting: the process is gone

    def _take(self, block: dict[str, str]) -> None:
        try:
            frames = int(block.get("frame", "0"))
            out_us = int(block.get("out_time_us", "0"))
        except ValueError:
            return  # "N/A" before the first packet
        now_wall, now = time.time(), time.monotonic()
        if frames > self.frames:
            self.frames = frames
            self.last_progress = now
        self.out_time_s = max(out_us, 0) / 1e6
        if frames <= 0:
            return
        # The output is paced in real time (-re, or a live device), so the first frame was
        # written about out_time seconds before this report. Reporting delay only makes the
        # estimate later, never earlier: the minimum over the first reports is the best one.
        estimate = now_wall - self.out_time_s
        if self.started_at is None or (
            now - self.spawned_at < ESTIMATE_WINDOW_S and estimate < self.started_at
        ):
            self.started_at = estimate
        self.first_frame.set()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def add_timer(self, seconds: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        timer.start()
        self._timers.append(timer)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def request_stop(self) -> None:
        """Ask ffmpeg to finish the open segment and exit (SIGINT is its clean quit)."""
        self.stopping = True
        for timer in self._timers:
            timer.cancel()
        self.signal(signal.SIGCONT)  # a stopped (frozen) process cannot handle SIGINT
        self.signal(signal.SIGINT)

    def wait(self, deadline: float) -> bool:
        """Wait until the monotonic deadline; kill if still running. True if it exited itself."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            clean = True
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait()
            clean = False
        self.ended.wait(2.0)  # let the progress reader drain
        return clean

    def kill(self) -> None:
        self.stopping = True
        for timer in self._timers:
            timer.cancel()
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def last_log_line(self) -> str:
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines()]
        except OSError:
            return ""
        lines = [ln for ln in lines if ln]
        return lines[-1][:200] if lines else ""

    def exit_detail(self) -> str:
        code = self.proc.returncode if self.proc else None
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        last = self.last_log_line()
        return f"ffmpeg {how}" + (f": {last}" if last else "")

    def segments(self) -> list[Path]:
        return run_segments(self.cam_dir, self.run)

    def tidy_log(self) -> None:
        """ffmpeg's stderr is kept next to the segments only when it has something to say."""
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size == 0:
                self.log_path.unlink()

    def last_frame_wall(self) -> float | None:
        if self.started_at is None or self.frames == 0:
            return None
        return self.started_at + self.out_time_s + 1.0 / max(self.fps, 1)


@dataclass
class Recording:
    """What every driver's handle keeps: who records, what happened, what is still to report."""

    booking_id: str
    out_dir: Path
    run: int
    cameras: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    attempted: list[int] = field(default_factory=list)
    # Events not yet returned by poll(), with their history line; lines already returned as
    # events are left out of RecordingResult.notes so the history does not say them twice.
    pending: list[tuple[CameraEvent, str]] = field(default_factory=list, repr=False)
    reported: set[str] = field(default_factory=set, repr=False)
    result: RecordingResult | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def failed_to_start(self, camera: int, why: str) -> None:
        """Note a camera that did not start; poll() reports it once."""
        line = f"camera {camera} failed to start: {why}"
        self.notes.append(line)
        self.pending.append((CameraEvent(camera, "failed_to_start", why), line))
        log.warning("%s (booking %s)", line, self.booking_id)

    def lose(
        self, camera: int, kind: Literal["died", "stalled"], detail: str
    ) -> tuple[CameraEvent, str]:
        """Take a camera that stopped mid-slot out of the recording; the others go on."""
        self.cameras.remove(camera)
        line = f"camera {camera} {kind} {detail}"
        self.notes.append(line)
        self.reported.add(line)
        log.warning("%s (booking %s)", line, self.booking_id)
        return CameraEvent(camera, kind, detail), line

    def close_manifest(
        self, camera: int, manifest: RunManifest | None, cam_dir: Path, stopped_at: float,
        note: str | None = None,
    ) -> None:
        """Write the run's end (and why, if it ended early) into its manifest."""
        if manifest is None:
            return
        manifest.stopped_at = stopped_at
        if note:
            manifest.notes.append(note)
        try:
            manifest.write(cam_dir)
        except OSError as exc:  # the disk failing must not stop the other camera's stop
            self.notes.append(f"camera {camera}: could not update its run manifest ({exc})")


HandleT = TypeVar("HandleT", bound=Recording)


class OpenRecordings(Generic[HandleT]):
    """A driver's open recordings, so stills, stop() and close() can find them."""

    def __init__(self, kind: type[HandleT], driver: str) -> None:
        self._kind = kind
        self._driver = driver
        self._open: dict[int, HandleT] = {}
        self._lock = threading.Lock()

    def add(self, handle: HandleT) -> HandleT:
        with self._lock:
            self._open[id(handle)] = handle
        return handle

    def own(self, handle: RecordingHandle) -> HandleT:
        if not isinstance(handle, self._kind):
            raise TypeError(f"{self._driver} driver got a foreign handle: {handle!r}")
        return handle

    def all(self) -> list[HandleT]:
        with self._lock:
            return list(self._open.values())

    def holding(self, camera: int) -> HandleT | None:
        """The open recording this camera is busy with, if any."""
        return next((h for h in self.all() if camera in h.cameras), None)

    def finish(self, h: HandleT, files: dict[int, list[Path]]) -> RecordingResult:
        """The result of a stopped recording; called once, under ``h.lock``."""
        h.cameras.clear()
        notes = [line for line in h.notes if line not in h.reported]
        h.result = RecordingResult(h.booking_id, h.run, files, notes)
        with self._lock:
            self._open.pop(id(h), None)
        return h.result


@dataclass
class FfmpegRecording(Recording):
    """The handle an ffmpeg-based driver returns from start()."""

    procs: dict[int, FfmpegCamera] = field(default_factory=dict, repr=False)
    # This booking's run per camera: the process's own, or one continued from the previous
    # booking's run when the camera was handed over without stopping (see hand_over).
    manifests: dict[int, RunManifest] = field(default_factory=dict, repr=False)

    def files(self, camera: int) -> list[Path]:
        manifest = self.manifests.get(camera)
        if manifest is None:
            return []
        relay(manifest)  # a continued run links what the camera wrote since the last look
        return manifest.segments()


_ERROR_HINT = re.compile(r"rror|nvalid|No such|ould not|ailed|not supported|busy")


def take_pending(
    pending: list[tuple[CameraEvent, str]], reported: set[str]
) -> list[CameraEvent]:
    """Hand out the queued events once, remembering their history lines as reported."""
    events = [event for event, _ in pending]
    reported.update(line for _, line in pending)
    pending.clear()
    return events


class FfmpegDriver:
    """Base of the synthetic and v4l2 drivers: everything except how a camera is read."""

    name = "ffmpeg"
    exclusive = True
    realtime_input = True  # lavfi needs -re to be paced like a camera; a device paces itself
    probe_loglevel = "error"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._active: set[int] = set()
        self._open = OpenRecordings(FfmpegRecording, self.name)

    # --- what subclasses provide -------------------------------------------------------------

    def camera_input(self, camera: int, *, realtime: bool) -> FfmpegInput:
        """Raise CameraError (one line) when the camera cannot be read at all."""
        raise NotImplementedError

    def injection(self, camera: int) -> Injection | None:
        return None

    def discover(self) -> list[CameraInfo]:
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        s = self.settings
        return f"{s.width}x{s.height}@{s.fps}"

    def encode_args(self) -> list[str]:
        s = self.settings
        fps = str(s.fps)
        # A keyframe every second (and never elsewhere: no scene-cut keyframes) so the segment
        # muxer can cut close to SEGMENT_S and a crash loses at most the open segment's tail.
        return [
            "-an", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-pix_fmt", "yuv420p", "-g", fps, "-keyint_min", fps, "-sc_threshold", "0",
            "-crf", "23", "-maxrate", f"{s.camera_bitrate_kbps}k",
            "-bufsize", f"{2 * s.camera_bitrate_kbps}k",
        ]

    def command(self, camera: int, source: FfmpegInput, cam_dir: Path, run: int) -> list[str]:
        s = self.settings
        cmd = [
            ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats",
            "-progress", "pipe:1", "-stats_period", "0.25",
            *source.args,
        ]
        if source.video_filter:
            cmd += ["-vf", source.video_filter]
        cmd += self.encode_args()
        cmd += [
            "-f", "segment", "-segment_time", str(s.segment_s), "-segment_format", "mpegts",
            # flush every packet of the inner TS muxer: a SIGKILL then loses nothing written.
            "-segment_format_options", "flush_packets=1",
            "-reset_timestamps", "0", "-segment_start_number", "0",
            segment_template(cam_dir, run),
        ]
        return cmd

    def start(self, booking_id: str, out_dir: Path) -> FfmpegRecording:
        s = self.settings
        run = open_run(out_dir)
        handle = FfmpegRecording(booking_id=booking_id, out_dir=out_dir, run=run)
        failures: dict[int, str] = {}
        for cam in range(s.cameras):
            handle.attempted.append(cam)
            cam_dir = camera_dir(out_dir, cam)
            try:
                source = self.camera_input(cam, realtime=self.realtime_input)
                inject = self.injection(cam)
                if inject and inject.kind == "start":
                    # A filter that does not exist: ffmpeg itself fails, like a real bad start.
                    source = FfmpegInput(["-f", "lavfi", "-i", "ezrec_injected_start_failure"])
                proc = FfmpegCamera(cam, cam_dir, run, self.command(cam, source, cam_dir, run),
                                    s.fps)
                # Written before the first frame so that a crash right now still leaves a run
                # the builder can read; started_at is corrected once the first frame is out.
                proc.manifest = RunManifest(
                    camera=cam, driver=self.name, run=run, started_at=time.time(),
                    width=s.width, height=s.height, fps=s.fps,
                    extra={"model": source.model} if source.model else {},
                )
                proc.manifest.write(cam_dir)
                proc.spawn()
            except (CameraError, OSError) as exc:
                failures[cam] = str(exc)
                continue
            handle.procs[cam] = proc
            if inject and inject.kind != "start":
                self._arm(proc, inject)
        deadline = time.monotonic() + FIRST_FRAME_TIMEOUT_S
        for cam, proc in handle.procs.items():
            proc.first_frame.wait(max(0.0, deadline - time.monotonic()))
            if proc.frames > 0 and proc.alive():
                continue
            if proc.ended.is_set() or not proc.alive():
                # Its output closed: it is exiting (on a loaded machine the exit status can
                # come a moment after the pipe's end), and its log says why.
                proc.wait(time.monotonic() + 2.0)
                failures[cam] = proc.exit_detail()
            else:
                failures[cam] = f"no frame within {FIRST_FRAME_TIMEOUT_S:.0f} s"
                proc.kill()
        for cam in sorted(failures):
            proc = handle.procs.pop(cam, None)
            if proc is not None:
                self._discard_failed(proc)
            handle.failed_to_start(cam, failures[cam])
        if not handle.procs:
            raise CameraError("no camera could start: " + "; ".join(handle.notes))
        for cam, proc in sorted(handle.procs.items()):
            handle.cameras.append(cam)
            assert proc.manifest is not None
            proc.manifest.started_at = proc.started_at or proc.manifest.started_at
            proc.manifest.write(proc.cam_dir)
            handle.manifests[cam] = proc.manifest
        return self._open.add(handle)

    def _arm(self, proc: FfmpegCamera, inject: Injection) -> None:
        if inject.kind == "kill_after":
            proc.add_timer(inject.seconds, lambda: proc.signal(signal.SIGKILL))
        elif inject.kind == "stall_after":
            proc.add_timer(inject.seconds, lambda: proc.signal(signal.SIGSTOP))
        # die_after is an input duration (-t) set by the subclass: ffmpeg exits by itself.

    def _discard_failed(self, proc: FfmpegCamera) -> None:
        if proc.alive():
            proc.kill()
        left = drop_empty_segments(proc.segments())
        if not left:
            with contextlib.suppress(FileNotFoundError):
                manifest_path(proc.cam_dir, proc.run).unlink()

    def poll(self, handle: RecordingHandle) -> list[CameraEvent]:
        h = self._own(handle)
        with h.lock:
            events = take_pending(h.pending, h.reported)
            if h.result is not None:
                return events
            stall_s = max(STALL_MIN_S, 3.0 / max(self.settings.fps, 1))
            now = time.monotonic()
            for cam in list(h.cameras):
                proc = h.procs[cam]
                if not proc.alive():
                    proc.wait(now + 1.0)
                    kind: Literal["died", "stalled"] = "died"
                    why = proc.exit_detail()
                elif now - proc.last_progress > stall_s:
                    proc.kill()
                    kind = "stalled"
                    why = f"no new frame for {now - proc.last_progress:.1f} s; process killed"
                else:
                    continue
                event, line = h.lose(cam, kind, f"after {now - proc.spawned_at:.1f} s: {why}")
                events.append(event)
                self._finish_manifest(proc, h, line)
        return events

    def _finish_manifest(self, proc: FfmpegCamera, handle: FfmpegRecording,
                         note: str | None = None) -> None:
        stopped_at = proc.last_frame_wall() or time.time()
        manifest = handle.manifests.get(proc.camera)
        cam_dir = camera_dir(handle.out_dir, proc.camera)
        handle.close_manifest(proc.camera, manifest, cam_dir, stopped_at, note)

    def written_until(self, handle: RecordingHandle) -> float | None:
        h = self._own(handle)
        walls = [h.procs[cam].last_frame_wall() for cam in h.cameras]
        return min((w for w in walls if w is not None), default=None) if walls else None

    def bytes_written(self, handle: RecordingHandle) -> int:
        h = self._own(handle)
        total = 0
        for cam in h.procs:
            for path in h.files(cam):
                with contextlib.suppress(FileNotFoundError):
                    total += path.stat().st_size
        return total

    def stop(self, handle: RecordingHandle, timeout: float = 5.0) -> RecordingResult:
        h = self._own(handle)
        with h.lock:
            if h.result is not None:
                return h.result
            live = [h.procs[cam] for cam in h.cameras]
            for proc in live:
                proc.request_stop()
            deadline = time.monotonic() + timeout
            for proc in live:
                if not proc.wait(deadline):
                    line = (f"camera {proc.camera} did not stop within {timeout:g} s and was "
                            "killed; its last segment may end early")
                    h.notes.append(line)
                    if proc.camera in h.manifests:
                        h.manifests[proc.camera].notes.append(line)
                self._finish_manifest(proc, h)
            files: dict[int, list[Path]] = {cam: [] for cam in h.attempted}
            for cam, proc in h.procs.items():
                files[cam] = drop_empty_segments(h.files(cam))
                proc.tidy_log()
            return self._open.finish(h, files)

    def hand_over(
        self, handle: RecordingHandle, booking_id: str, out_dir: Path, at: float
    ) -> tuple[RecordingResult, FfmpegRecording]:
        """End `handle`'s booking at wall time `at` and go on recording for the next one.

        The cameras are not stopped: a device that cannot be opened twice would otherwise be
        busy when the next booking starts, and the frames of the restart would be lost. The
        segment holding `at` belongs to both bookings; each build cuts its own slot from it.
        """
        h = self._own(handle)
        with h.lock:
            if h.result is not None or not h.cameras:
                raise CameraError("the recording to hand over has stopped")
            run = open_run(out_dir)
            new = FfmpegRecording(booking_id=booking_id, out_dir=out_dir, run=run)
            for cam in list(h.cameras):
                proc = h.procs[cam]
                seq, wall = self._segment_holding(proc, at)
                old = h.manifests[cam]
                before = Source.from_dict(old.extra.get("continued_from"))
                end_run_at(old, camera_dir(h.out_dir, cam), seq - (before.seq if before else 0),
                           stopped_at=at)
                new.manifests[cam] = continue_run(
                    Source(proc.cam_dir, proc.run, seq), camera_dir(out_dir, cam), run, wall,
                    old, booking_id,
                )
                new.procs[cam] = proc
                new.attempted.append(cam)
                new.cameras.append(cam)
            files: dict[int, list[Path]] = {cam: [] for cam in h.attempted}
            for cam in h.procs:
                keep = drop_empty_but_open if cam in new.cameras else drop_empty_segments
                files[cam] = keep(h.files(cam))
            result = self._open.finish(h, files)
        return result, self._open.add(new)

    def _segment_holding(self, proc: FfmpegCamera, at: float) -> tuple[int, float]:
        """The process's segment that holds wall time `at`, and that segment's wall start.

        Within one ffmpeg run the timestamps are continuous, so a segment's wall start is the
        run's first frame plus the difference of first timestamps.
        """
        segments = proc.segments()
        if not segments or proc.manifest is None:
            raise CameraError(f"camera {proc.camera} has written no segment yet")
        origin = first_timestamp(segments[0])
        for path in reversed(segments):
            start = first_timestamp(path)
            if origin is None or start is None:
                continue  # just opened, nothing to read yet: the one before holds `at`
            wall = proc.manifest.started_at + (start - origin)
            if wall <= at or path == segments[0]:
                return int(path.name[4:9]), wall
        return int(segments[0].name[4:9]), proc.manifest.started_at

    def _recording(self, camera: int) -> FfmpegCamera | None:
        h = self._open.holding(camera)
        return h.procs[camera] if h is not None else None

    def snapshot(self, camera: int, handle: RecordingHandle | None = None) -> bytes:
        proc = self._own(handle).procs.get(camera) if handle is not None else None
        # A camera that is recording is busy: its newest segment is the still, never a second
        # capture that would fail on a real device (and disturb nothing here).
        proc = proc or self._recording(camera)
        if proc is not None:
            return snapshot_from_segments(proc.segments())
        source = self.camera_input(camera, realtime=False)
        args = list(source.args)
        if source.video_filter:
            args += ["-vf", source.video_filter]
        jpeg = ffmpeg_jpeg(args)
        if jpeg is None:
            raise CameraError(f"camera {camera}: could not capture a still")
        return jpeg

    def probe(self) -> list[CameraProbe]:
        return [self._probe_one(cam) for cam in range(self.settings.cameras)]

    def _probe_one(self, cam: int) -> CameraProbe:
        try:
            source = self.camera_input(cam, realtime=self.realtime_input)
        except CameraError as exc:
            return CameraProbe(cam, False, f"camera {cam}: {exc}")
        model = f" ({source.model})" if source.model else ""
        if self._recording(cam) is not None:
            return CameraProbe(cam, True, f"camera {cam} ok: recording now{model}")
        cmd = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", self.probe_loglevel,
               "-nostats", "-progress", "pipe:1", *source.args]
        if source.video_filter:
            cmd += ["-vf", source.video_filter]
        cmd += ["-t", "1", *self.encode_args(), "-f", "null", "-"]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=15, check=False)
        except subprocess.TimeoutExpired:
            return CameraProbe(cam, False, f"camera {cam}: no frames within 15 s")
        frames = 0
        for line in done.stdout.decode(errors="replace").splitlines():
            if line.startswith("frame="):
                with contextlib.suppress(ValueError):
                    frames = int(line[6:])
        if done.returncode != 0 or frames == 0:
            return CameraProbe(cam, False, f"camera {cam}: {self.explain(done.stderr)}")
        mismatch = self.mode_mismatch(done.stderr)
        if mismatch:
            return CameraProbe(cam, False, f"camera {cam}: {mismatch}{model}")
        if frames < 0.7 * self.settings.fps:
            return CameraProbe(
                cam, False, f"camera {cam}: wrong mode: {frames} frames in 1 s, "
                f"asked {self.mode}{model}"
            )
        return CameraProbe(cam, True, f"camera {cam} ok: {self.mode}{model}")

    def explain(self, stderr: bytes) -> str:
        """One line saying why ffmpeg could not read the camera."""
        lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if _ERROR_HINT.search(ln)]
        chosen = errors or lines
        return chosen[-1][:200] if chosen else "ffmpeg failed without a message"

    def mode_mismatch(self, stderr: bytes) -> str | None:
        """Why a capture that worked is still not in the configured mode, if it is not."""
        return None

    def close(self) -> None:
        for handle in self._open.all():
            self.stop(handle)

    def _own(self, handle: RecordingHandle) -> FfmpegRecording:
        return self._open.own(handle)
