"""The one recording lifecycle every camera driver shares: start, poll, stop, hand over, stills.

A driver is a `RecordingDriver` that supplies only what differs between sources: how its
cameras are opened and started (`launch`), a still of an idle camera (`still`), discovery and
probing. Each started camera is a `CameraSource` (one ffmpeg process, one Picamera2 encoder)
that answers for itself: did its first frame come, is it still delivering, when was its last
frame, how it stops, and how it goes on into the next booking's folder. Everything else (the
handle, the run manifests, events said once, the files of a result, the hand-over of running
cameras to the next booking) is done here, the same way for every driver.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from controller.drivers.cameras import (
    CameraError,
    CameraEvent,
    CameraInfo,
    CameraProbe,
    RecordingHandle,
    RecordingResult,
)
from controller.drivers.cameras.ffmpeg_tools import snapshot_from_segments
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
)

if TYPE_CHECKING:
    from controller.config import Settings

log = logging.getLogger(__name__)

STALL_MIN_S = 3.0
Loss = Literal["died", "stalled"]


@dataclass(frozen=True)
class Split:
    """Where a running camera's recording is cut for a hand-over (see `CameraSource.split_at`)."""

    last_seq: int  # the last segment of the old booking's run, in that run's numbering
    started_at: float  # wall clock of the new run's first segment (the one holding the cut)
    relay_from: Source | None  # where the camera goes on writing, if not the new folder


class CameraSource:
    """One started camera of a driver: what the template asks of it."""

    camera: int
    began: float = 0.0  # monotonic time it was started

    def first_frame_failure(self, deadline: float, timeout_s: float) -> str | None:
        """Wait (until the monotonic deadline) for the first frame; why it failed, or None."""
        raise NotImplementedError

    def first_frame(self, written_at: float) -> tuple[float, dict[str, object]]:
        """Wall clock of the first frame (`written_at` if unknown) and manifest extras."""
        raise NotImplementedError

    def trouble(self, now: float, stall_s: float) -> tuple[Loss, str] | None:
        """Why the camera stopped delivering mid-recording, if it did (`now` is monotonic)."""
        raise NotImplementedError

    def written_until(self) -> float | None:
        """Wall time up to which its frames are on disk, if known."""
        raise NotImplementedError

    def stopped_at(self) -> float | None:
        """Wall clock of its last frame, if known."""
        raise NotImplementedError

    def segments(self) -> list[Path]:
        """The segments of the run it is writing now (for stills)."""
        raise NotImplementedError

    def request_stop(self) -> None:
        """Ask it to finish cleanly; `wait_stopped` waits for that."""
        raise NotImplementedError

    def wait_stopped(self, deadline: float, timeout: float) -> list[str]:
        """Wait until the monotonic deadline; lines for the history if it did not stop well."""
        raise NotImplementedError

    def release(self) -> list[str]:
        """Let go of the camera now (a failed start, a camera lost mid-slot)."""
        raise NotImplementedError

    def split_at(self, at: float, manifest: RunManifest, cam_dir: Path, run: int) -> Split:
        """Go on recording into run `run` of `cam_dir` from the segment holding wall time `at`
        (the old booking's run is `manifest`); raise CameraError if it cannot."""
        raise NotImplementedError

    def tidy(self) -> None:
        """After the recording stopped: remove what is left only for debugging, if empty."""


@dataclass
class Recording:
    """The handle every driver returns: who records, what happened, what is still to report."""

    booking_id: str
    out_dir: Path
    run: int
    owner: str = ""  # the driver's name: a foreign handle is refused
    cameras: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    attempted: list[int] = field(default_factory=list)
    sources: dict[int, CameraSource] = field(default_factory=dict, repr=False)
    # This booking's run per camera: the camera's own, or one continued from the previous
    # booking's run when the camera was handed over without stopping (see hand_over).
    manifests: dict[int, RunManifest] = field(default_factory=dict, repr=False)
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

    def lose(self, camera: int, kind: Loss, detail: str) -> tuple[CameraEvent, str]:
        """Take a camera that stopped mid-slot out of the recording; the others go on."""
        self.cameras.remove(camera)
        line = f"camera {camera} {kind} {detail}"
        self.notes.append(line)
        self.reported.add(line)
        log.warning("%s (booking %s)", line, self.booking_id)
        return CameraEvent(camera, kind, detail), line

    def warn(self, lines: list[str], camera: int | None = None) -> None:
        """History lines about a camera's trouble (also in its run's manifest, with `camera`)."""
        for line in lines:
            self.notes.append(line)
            if camera is not None and camera in self.manifests:
                self.manifests[camera].notes.append(line)
            log.warning("%s (booking %s)", line, self.booking_id)

    def take_pending(self) -> list[CameraEvent]:
        """Hand out the queued events once, remembering their history lines as reported."""
        events = [event for event, _ in self.pending]
        self.reported.update(line for _, line in self.pending)
        self.pending.clear()
        return events

    def close_manifest(self, camera: int, stopped_at: float, note: str | None = None) -> None:
        """Write the run's end (and why, if it ended early) into its manifest."""
        manifest = self.manifests.get(camera)
        if manifest is None:
            return
        manifest.stopped_at = stopped_at
        if note:
            manifest.notes.append(note)
        try:
            manifest.write(camera_dir(self.out_dir, camera))
        except OSError as exc:  # the disk failing must not stop the other camera's stop
            self.notes.append(f"camera {camera}: could not update its run manifest ({exc})")

    def files(self, camera: int) -> list[Path]:
        manifest = self.manifests.get(camera)
        if manifest is None:
            return []
        relay(manifest)  # a continued run links what the camera wrote since the last look
        return manifest.segments()


class OpenRecordings:
    """A driver's open recordings, so stills, stop() and close() can find them."""

    def __init__(self, driver: str) -> None:
        self._driver = driver
        self._open: dict[int, Recording] = {}
        self._lock = threading.Lock()

    def add(self, handle: Recording) -> Recording:
        with self._lock:
            self._open[id(handle)] = handle
        return handle

    def own(self, handle: RecordingHandle) -> Recording:
        if not isinstance(handle, Recording) or handle.owner != self._driver:
            raise TypeError(f"{self._driver} driver got a foreign handle: {handle!r}")
        return handle

    def all(self) -> list[Recording]:
        with self._lock:
            return list(self._open.values())

    def holding(self, camera: int) -> Recording | None:
        """The open recording this camera is busy with, if any."""
        return next((h for h in self.all() if camera in h.cameras), None)

    def finish(self, h: Recording, files: dict[int, list[Path]]) -> RecordingResult:
        """The result of a stopped recording; called once, under ``h.lock``."""
        h.cameras.clear()
        notes = [line for line in h.notes if line not in h.reported]
        h.result = RecordingResult(h.booking_id, h.run, files, notes)
        with self._lock:
            self._open.pop(id(h), None)
        return h.result


def open_run(out_dir: Path) -> int:
    """The number of a new run in a booking's raw dir (created), or CameraError."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return next_run(out_dir)
    except (OSError, LayoutError) as exc:
        raise CameraError(f"cannot record into {out_dir}: {exc}") from None


class RecordingDriver:
    """A `CameraDriver` built on the shared lifecycle; subclasses supply the sources."""

    name = "camera"
    exclusive = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._open = OpenRecordings(self.name)

    @property
    def mode(self) -> str:
        s = self.settings
        return f"{s.width}x{s.height}@{s.fps}"

    # --- what a driver supplies -------------------------------------------------------------

    def launch(self, handle: Recording) -> dict[int, str]:
        """Open and start every camera into `handle.sources` (with its run manifest written in
        `handle.manifests`); returns why each camera that could not start failed."""
        raise NotImplementedError

    def first_frame_timeout(self, handle: Recording) -> float:
        raise NotImplementedError

    def started(self, handle: Recording) -> None:
        """After a start, before the manifests get their first frame: notes about it."""

    def still(self, camera: int) -> bytes:
        """A JPEG of a camera that is not recording."""
        raise NotImplementedError

    def discover(self) -> list[CameraInfo]:
        raise NotImplementedError

    def probe(self) -> list[CameraProbe]:
        raise NotImplementedError

    # --- the lifecycle ------------------------------------------------------------------------

    def start(self, booking_id: str, out_dir: Path) -> Recording:
        h = Recording(booking_id, out_dir, open_run(out_dir), owner=self.name)
        h.attempted = list(range(self.settings.cameras))
        failures = self.launch(h)
        timeout = self.first_frame_timeout(h)
        deadline = time.monotonic() + timeout
        for cam, src in sorted(h.sources.items()):
            if cam not in failures and (why := src.first_frame_failure(deadline, timeout)):
                failures[cam] = why
        for cam in sorted(failures):
            src = h.sources.pop(cam, None)
            h.manifests.pop(cam, None)
            if src is not None:
                self._discard(h, cam, src)
            h.failed_to_start(cam, failures[cam])
        if not h.sources:
            raise CameraError("no camera could start: " + "; ".join(h.notes))
        self.started(h)
        for cam, src in sorted(h.sources.items()):
            h.cameras.append(cam)
            manifest = h.manifests[cam]
            manifest.started_at, extra = src.first_frame(manifest.started_at)
            manifest.extra.update(extra)
            manifest.write(camera_dir(out_dir, cam))
        return self._open.add(h)

    def _discard(self, h: Recording, cam: int, src: CameraSource) -> None:
        """A camera that failed to start: released, and no run left behind without footage."""
        h.warn(src.release())
        cam_dir = camera_dir(h.out_dir, cam)
        if not drop_empty_segments(run_segments(cam_dir, h.run)):
            with contextlib.suppress(FileNotFoundError):
                manifest_path(cam_dir, h.run).unlink()

    def poll(self, handle: RecordingHandle) -> list[CameraEvent]:
        h = self._open.own(handle)
        with h.lock:
            events = h.take_pending()
            if h.result is not None:
                return events
            stall_s = max(STALL_MIN_S, 3.0 / max(self.settings.fps, 1))
            now = time.monotonic()
            for cam in list(h.cameras):
                src = h.sources[cam]
                trouble = src.trouble(now, stall_s)
                if trouble is None:
                    continue
                kind, why = trouble
                event, line = h.lose(cam, kind, f"after {now - src.began:.1f} s: {why}")
                events.append(event)
                h.warn(src.release())
                h.close_manifest(cam, src.stopped_at() or time.time(), line)
        return events

    def written_until(self, handle: RecordingHandle) -> float | None:
        h = self._open.own(handle)
        walls = [h.sources[cam].written_until() for cam in h.cameras]
        return min((w for w in walls if w is not None), default=None)

    def bytes_written(self, handle: RecordingHandle) -> int:
        h = self._open.own(handle)
        total = 0
        for cam in h.sources:
            for path in h.files(cam):
                with contextlib.suppress(FileNotFoundError):
                    total += path.stat().st_size
        return total

    def stop(self, handle: RecordingHandle, timeout: float = 5.0) -> RecordingResult:
        h = self._open.own(handle)
        with h.lock:
            if h.result is not None:
                return h.result
            live = [(cam, h.sources[cam]) for cam in h.cameras]
            for _, src in live:
                src.request_stop()
            deadline = time.monotonic() + timeout
            for cam, src in live:
                h.warn(src.wait_stopped(deadline, timeout), cam)
                h.close_manifest(cam, src.stopped_at() or time.time())
            files: dict[int, list[Path]] = {cam: [] for cam in h.attempted}
            for cam, src in h.sources.items():
                files[cam] = drop_empty_segments(h.files(cam))
                src.tidy()
            return self._open.finish(h, files)

    def hand_over(
        self, handle: RecordingHandle, booking_id: str, out_dir: Path, at: float
    ) -> tuple[RecordingResult, Recording]:
        """End `handle`'s booking at wall time `at` and go on recording for the next one.

        The cameras are not stopped: a camera that cannot be opened twice would otherwise be
        busy when the next booking starts, and the frames of the restart would be lost. The
        segment holding `at` belongs to both bookings; each build cuts its own slot from it.
        """
        h = self._open.own(handle)
        with h.lock:
            if h.result is not None or not h.cameras:
                raise CameraError("the recording to hand over has stopped")
            new = Recording(booking_id, out_dir, open_run(out_dir), owner=self.name)
            for cam in list(h.cameras):
                src, old = h.sources[cam], h.manifests[cam]
                cam_dir = camera_dir(out_dir, cam)
                split = src.split_at(at, old, cam_dir, new.run)
                # The new run first: a crash between the two writes then loses no frame of
                # the next booking (the old one's build cuts its slot by time anyway).
                new.manifests[cam] = continue_run(old, cam_dir, new.run, split.started_at,
                                                  booking_id, h.booking_id, split.relay_from)
                end_run_at(old, split.last_seq, stopped_at=at)
                new.sources[cam] = src
                new.attempted.append(cam)
                new.cameras.append(cam)
            files: dict[int, list[Path]] = {cam: [] for cam in h.attempted}
            for cam in h.sources:
                keep = drop_empty_but_open if cam in new.cameras else drop_empty_segments
                files[cam] = keep(h.files(cam))
            result = self._open.finish(h, files)
        return result, self._open.add(new)

    def recording_source(self, camera: int) -> CameraSource | None:
        """The source of a camera that is recording now, if it is."""
        h = self._open.holding(camera)
        return h.sources[camera] if h is not None else None

    def snapshot(self, camera: int, handle: RecordingHandle | None = None) -> bytes:
        src = self._open.own(handle).sources.get(camera) if handle is not None else None
        # A camera that is recording is busy: its newest segment is the still, never a second
        # capture that would fail on a real device.
        src = src or self.recording_source(camera)
        if src is not None:
            return snapshot_from_segments(src.segments())
        return self.still(camera)

    def close(self) -> None:
        for handle in self._open.all():
            self.stop(handle)
