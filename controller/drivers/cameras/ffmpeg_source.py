"""Cameras read by ffmpeg (the synthetic and v4l2 drivers): one process per camera.

Each camera is one ffmpeg process writing H.264 with the segment muxer into the booking's
folder, watched through `-progress` on its stdout, started so that it dies with the supervisor
(`children.spawn_child`). A subclass says only how a camera is read (`camera_input`) and what
it has: the lifecycle is the template's.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from controller.drivers.cameras import CameraError, CameraProbe
from controller.drivers.cameras.children import spawn_child
from controller.drivers.cameras.ffmpeg_tools import ffmpeg_binary, ffmpeg_jpeg, first_timestamp
from controller.drivers.cameras.template import (
    CameraSource,
    Loss,
    Recording,
    RecordingDriver,
    Split,
)
from controller.recordings import (
    RunManifest,
    Source,
    camera_dir,
    run_segments,
    segment_run_seq,
    segment_template,
    source_of,
)

FIRST_FRAME_TIMEOUT_S = 15.0
ESTIMATE_WINDOW_S = 5.0  # refine started_at over the first seconds of progress reports
_ERROR_HINT = re.compile(r"rror|nvalid|No such|ould not|ailed|not supported|busy")


@dataclass
class FfmpegInput:
    """How one camera is read: ffmpeg input arguments and an optional filter chain."""

    args: list[str]
    video_filter: str | None = None
    model: str = ""


class FfmpegCamera(CameraSource):
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
        self.began = 0.0  # monotonic time of the spawn
        self.last_progress = 0.0  # monotonic time the frame count last moved
        self.started_at: float | None = None  # wall-clock of the first frame, estimated
        self.origin = 0.0  # the wall clock its timestamps count from (set once started)
        self.first_frame_seen = threading.Event()
        self.ended = threading.Event()

    def spawn(self) -> None:
        self.cam_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.proc = spawn_child(
                self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file
            )
        self.began = self.last_progress = time.monotonic()
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
        self.first_frame_seen.set()  # wake anyone waiting: the process is gone

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
            now - self.began < ESTIMATE_WINDOW_S and estimate < self.started_at
        ):
            self.started_at = estimate
        self.first_frame_seen.set()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

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
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def exit_detail(self) -> str:
        code = self.proc.returncode if self.proc else None
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        try:
            lines = [ln.strip() for ln in self.log_path.read_text(errors="replace").splitlines()]
        except OSError:
            lines = []
        last = next((ln[:200] for ln in reversed(lines) if ln), "")
        return f"ffmpeg {how}" + (f": {last}" if last else "")

    def last_frame_wall(self) -> float | None:
        if self.started_at is None or self.frames == 0:
            return None
        return self.started_at + self.out_time_s + 1.0 / max(self.fps, 1)

    # --- what the template asks ---------------------------------------------------------------

    def first_frame_failure(self, deadline: float, timeout_s: float) -> str | None:
        self.first_frame_seen.wait(max(0.0, deadline - time.monotonic()))
        if self.frames > 0 and self.alive():
            return None
        if self.ended.is_set() or not self.alive():
            # Its output closed: it is exiting (on a loaded machine the exit status can come
            # a moment after the pipe's end), and its log says why.
            self.wait(time.monotonic() + 2.0)
            return self.exit_detail()
        self.kill()
        return f"no frame within {timeout_s:.0f} s"

    def first_frame(self, written_at: float) -> tuple[float, dict[str, object]]:
        self.origin = self.started_at or written_at
        return self.origin, {}

    def trouble(self, now: float, stall_s: float) -> tuple[Loss, str] | None:
        if not self.alive():
            self.wait(now + 1.0)
            return "died", self.exit_detail()
        idle = now - self.last_progress
        if idle > stall_s:
            self.kill()
            return "stalled", f"no new frame for {idle:.1f} s; process killed"
        return None

    def written_until(self) -> float | None:
        return self.last_frame_wall()

    def stopped_at(self) -> float | None:
        return self.last_frame_wall()

    def segments(self) -> list[Path]:
        return run_segments(self.cam_dir, self.run)

    def request_stop(self) -> None:
        """Ask ffmpeg to finish the open segment and exit (SIGINT is its clean quit)."""
        self.signal(signal.SIGCONT)  # a stopped (frozen) process cannot handle SIGINT
        self.signal(signal.SIGINT)

    def wait_stopped(self, deadline: float, timeout: float) -> list[str]:
        if self.wait(deadline):
            return []
        return [f"camera {self.camera} did not stop within {timeout:g} s and was killed; "
                "its last segment may end early"]

    def release(self) -> list[str]:
        if self.alive():
            self.kill()
        return []

    def split_at(self, at: float, manifest: RunManifest, cam_dir: Path, run: int) -> Split:
        # The process goes on writing into its own folder: the new run links its segments.
        seq, wall = self._segment_holding(at)
        before = source_of(manifest)
        return Split(seq - (before.seq if before else 0), wall, Source(self.cam_dir, self.run, seq))

    def _segment_holding(self, at: float) -> tuple[int, float]:
        """The process's segment that holds wall time `at`, and that segment's wall start.

        Within one ffmpeg run the timestamps are continuous, so a segment's wall start is the
        run's first frame plus the difference of first timestamps.
        """
        segments = self.segments()
        if not segments:
            raise CameraError(f"camera {self.camera} has written no segment yet")
        origin = first_timestamp(segments[0])
        for path in reversed(segments):
            start = first_timestamp(path)
            if origin is None or start is None:
                continue  # just opened, nothing to read yet: the one before holds `at`
            wall = self.origin + (start - origin)
            if wall <= at or path == segments[0]:
                return segment_run_seq(path)[1], wall  # type: ignore[index]
        return segment_run_seq(segments[0])[1], self.origin  # type: ignore[index]

    def tidy(self) -> None:
        """ffmpeg's stderr is kept next to the segments only when it has something to say."""
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size == 0:
                self.log_path.unlink()


class FfmpegDriver(RecordingDriver):
    """Base of the synthetic and v4l2 drivers: everything except how a camera is read."""

    name = "ffmpeg"
    exclusive = True
    realtime_input = True  # lavfi needs -re to be paced like a camera; a device paces itself
    probe_loglevel = "error"

    def camera_input(self, camera: int, *, realtime: bool) -> FfmpegInput:
        """Raise CameraError (one line) when the camera cannot be read at all."""
        raise NotImplementedError

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

    def launch(self, handle: Recording) -> dict[int, str]:
        s = self.settings
        failures: dict[int, str] = {}
        for cam in handle.attempted:
            cam_dir = camera_dir(handle.out_dir, cam)
            try:
                source = self.camera_input(cam, realtime=self.realtime_input)
                proc = FfmpegCamera(cam, cam_dir, handle.run,
                                    self.command(cam, source, cam_dir, handle.run), s.fps)
                # Written before the first frame so that a crash right now still leaves a run
                # the builder can read; started_at is corrected once the first frame is out.
                manifest = RunManifest(
                    camera=cam, driver=self.name, run=handle.run, started_at=time.time(),
                    width=s.width, height=s.height, fps=s.fps,
                    extra={"model": source.model} if source.model else {},
                )
                manifest.write(cam_dir)
                proc.spawn()
            except (CameraError, OSError) as exc:
                failures[cam] = str(exc)
                continue
            handle.sources[cam] = proc
            handle.manifests[cam] = manifest
        return failures

    def first_frame_timeout(self, handle: Recording) -> float:
        return FIRST_FRAME_TIMEOUT_S

    def still(self, camera: int) -> bytes:
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
        if self.recording_source(cam) is not None:
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
