"""The loop that advances every booking: records, hands finished recordings to the build
worker and built videos to the upload worker, retries failures, and pets the watchdog.

It sleeps until the next thing that is due (a booking's pre-roll or end, a retry, the watchdog
interval, a nudge from the CLI/API or a worker) instead of polling. Recording never waits for a
build or an upload: those run in worker threads with a bounded queue and their outcomes come
back here, where they become transitions. Every step is idempotent, so a restart after a crash
at any instant reconciles each booking with what is on disk and carries on.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from controller import clips, jobs, recordings
from controller.config import Settings
from controller.db import Booking, utcnow
from controller.dbhealth import Outage, is_unavailable
from controller.drivers.camera import CameraDriver, CameraError, RecordingHandle
from controller.drivers.disk_reserve import DiskReserve
from controller.drivers.storage import StorageError
from controller.fsm import BookingStore, InvalidTrigger, StaleVersion
from controller.fsm.machine import (
    COMPLETED,
    CONFIRMED,
    FAILED_STATES,
    RECORDING,
    RECORDING_FAILED,
    VIDEO_PROCESSED,
)

log = logging.getLogger("ezrec.supervisor")

# What a write attempted on a booking read a moment ago can meet when an operator (API, CLI)
# changed it meanwhile: a newer version, or a state the trigger no longer applies to.
CHANGED_MEANWHILE = (StaleVersion, InvalidTrigger)

# Below this a real-time clock is certainly wrong (a Pi without RTC boots in 1970).
SANE_CLOCK_AFTER = datetime(2025, 1, 1).astimezone()
POLL_WHILE_BUSY_S = 1.0
IDLE_WAKE_S = 60.0
STALL_S = 30.0
# How long after a booking's end (beyond the pre-roll) the next one on exclusive cameras may
# start and still take them over running: stopping and reopening a real camera takes seconds.
HANDOVER_GAP_S = 5.0
PROGRESS_EVERY_S = 0.25
# After a hand-over, how much longer than a segment the encoder may take to write past the end.
DRAIN_MARGIN_S = 5.0
# Free space below which the disk counts as out of room (the database's reserve is given back).
DISK_CRITICAL_MB = 1.0
RETENTION_EVERY_S = 300.0
CAMERAS_EVERY_S = 60.0
# A multipart upload untouched this long belongs to nobody any more (a box that was off longer
# just starts that upload over).
STALE_UPLOAD_S = 7 * 24 * 3600.0


class Notifier(Protocol):
    def ready(self) -> None: ...
    def status(self, text: str) -> None: ...
    def stopping(self) -> None: ...
    def watchdog(self) -> None: ...
    def watchdog_interval(self) -> float | None: ...


class Waiter(Protocol):
    def wait(self, timeout: float) -> bool: ...
    def close(self) -> None: ...


class _Sleep:
    """Used when no nudge socket is wanted (tests): a plain interruptible sleep."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def wait(self, timeout: float) -> bool:
        woken = self.event.wait(timeout)
        self.event.clear()
        return woken

    def close(self) -> None:
        pass


@dataclass
class Active:
    """A recording in progress, owned by the loop."""

    booking_id: str
    handle: RecordingHandle
    end_time: datetime
    bytes: int = 0
    grew_at: float = field(default_factory=time.monotonic)
    # The booking whose raw dir the cameras were started in: after hand-overs a camera may
    # still write there for a later booking, so that folder is not removed meanwhile.
    origin: str = ""


@dataclass
class Job:
    kind: str  # "build" | "upload"
    booking_id: str
    future: Future[Any]
    moved_at: float = field(default_factory=time.monotonic)
    stored_at: float = 0.0  # when progress last went to the database
    unstored: float | None = None  # the latest report, held back by the throttle

    @property
    def stage(self) -> str:
        return "processing" if self.kind == "build" else "uploading"


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        store: BookingStore,
        cameras: CameraDriver,
        storage: Any,
        media: Any,
        notifier: Notifier,
        *,
        waiter: Waiter | None = None,
        wake: Callable[[], None] | None = None,
        free_disk_mb: Callable[[Path], float] | None = None,
        reserve: DiskReserve | None = None,
        clock: Callable[[], datetime] = utcnow,
        queue_limit: int = 4,
        build_fn: Callable[..., jobs.BuildOutcome] = jobs.build_video,
        upload_fn: Callable[..., jobs.UploadOutcome] = jobs.upload_video,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cameras = cameras
        self.storage = storage
        self.media = media
        self.notifier = notifier
        self.clock = clock
        sleeper = _Sleep()
        self.waiter = waiter or sleeper
        self._wake = wake or sleeper.event.set
        self.free_disk_mb = free_disk_mb or _free_disk_mb
        self.reserve = reserve
        self._disk_low = False
        self._disk_waiting = False  # something stopped for a full disk and waits for room
        self.queue_limit = queue_limit
        self.build_fn, self.upload_fn = build_fn, upload_fn
        # Threads that live as long as the loop (the booking-system sync): stopped with it.
        self.sidecars: list[Any] = []
        self.stop_event = threading.Event()
        self.active: dict[str, Active] = {}
        # Handed over at their end, waiting for the encoder to write past it:
        # booking -> (the booking now holding the cameras, the end, a monotonic deadline).
        self.draining: dict[str, tuple[str, datetime, float]] = {}
        self.jobs: dict[str, Job] = {}
        self.builds = ThreadPoolExecutor(max_workers=1, thread_name_prefix="build")
        self.uploads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        self.last_errors: list[str] = []
        self.status_line = "starting"
        self._last_pet = 0.0
        self._last_retention = 0.0
        self._healthy = True
        self._cameras: list[Any] = []
        self._cameras_at = -1e9
        self.db_outage = Outage()

    # -- the loop --------------------------------------------------------------------------

    def run(self, until: Callable[[], bool] | None = None) -> None:
        self.notifier.ready()
        try:
            while not self.stop_event.is_set():
                sleep = self._step_riding_out_db_outages()
                if until is not None and until():
                    break
                if self.stop_event.is_set():
                    break
                if self.waiter.wait(sleep):
                    # A nudge means a booking changed elsewhere (API, CLI): push it out now.
                    self._wake_sidecars()
        finally:
            self.shutdown()

    def _step_riding_out_db_outages(self) -> float:
        """step(), except that a database which stops answering does not end the loop: the
        recordings (camera child processes) go on, the step is retried with backoff (each
        retry also watches the recordings, so they still stop at their slot's end), and
        the watchdog is petted for EZREC_DB_OUTAGE_S, or as long as a recording still grows;
        past that systemd restarts us."""
        try:
            sleep = self.step()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            delay = self.db_outage.failed(exc, self.settings.db_url)
            if "full" in self.db_outage.last_reason:  # SQLite's "database or disk is full"
                self._release_reserve("the database found the disk full")
            away = self.db_outage.age_s()
            self.status_line = (
                f"database unreachable for {away:.0f} s ({self.db_outage.last_reason}); "
                + (f"recording {', '.join(sorted(self.active))}" if self.active else "idle")
            )
            self.notifier.status(self.status_line)
            if self._healthy and (self.active or away < self.settings.db_outage_s):
                self.notifier.watchdog()
            interval = self.notifier.watchdog_interval()
            if interval:
                delay = min(delay, interval)
            return min(delay, POLL_WHILE_BUSY_S) if self.active else delay
        self.db_outage.recovered()
        return sleep

    def _wake_sidecars(self) -> None:
        for sidecar in self.sidecars:
            wake = getattr(sidecar, "wake", None)
            if wake is not None:
                wake()

    def request_stop(self) -> None:
        self.stop_event.set()
        self._wake()

    def step(self) -> float:
        """One pass over everything due; returns how long the loop may sleep."""
        now = self.clock()
        self._healthy = True
        self._guard_disk(now)
        # Time-critical work first (stopping and starting recordings), bookkeeping after.
        self._watch_recordings(now)
        self._drain()
        if now < SANE_CLOCK_AFTER:
            self._error(f"clock not synchronised ({now.isoformat()}): no recording starts")
            due_bookings: list[Booking] = []
            next_wakeup = None
        else:
            due = self.store.due(now, self.settings.preroll_s)
            due_bookings, next_wakeup = due.bookings, due.next_wakeup
        for booking in due_bookings:
            if self.stop_event.is_set():
                break
            try:
                self._advance(booking, now)
            except CHANGED_MEANWHILE as exc:
                # Someone else (API, CLI, a worker) changed it between our read and our write:
                # normal, not an error. Look again next pass.
                log.info("%s: %s", booking.id, exc)
        self._collect_jobs()
        self._retention(now)
        self._heartbeat(now)
        self._pet()
        return self._sleep_for(next_wakeup)

    def _sleep_for(self, next_wakeup: datetime | None) -> float:
        sleep = IDLE_WAKE_S
        interval = self.notifier.watchdog_interval()
        if interval:
            sleep = min(sleep, interval)
        if self.active or self.jobs or self._disk_waiting:
            sleep = min(sleep, POLL_WHILE_BUSY_S)
        if next_wakeup is not None:
            sleep = min(sleep, (next_wakeup - self.clock()).total_seconds())
        return max(0.0, sleep)

    # -- per state -------------------------------------------------------------------------

    def _advance(self, booking: Booking, now: datetime) -> None:
        if booking.state == CONFIRMED:
            self._confirmed(booking, now)
        elif booking.state == RECORDING:
            self._recording(booking, now)
        elif booking.state == COMPLETED:
            self._submit(booking, "build")
        elif booking.state == VIDEO_PROCESSED:
            self._submit(booking, "upload")
        elif booking.state == RECORDING_FAILED and booking.end_time <= now:
            self._settle_failed_recording(booking)
        elif booking.state in FAILED_STATES:
            self._auto_retry(booking)

    def _confirmed(self, booking: Booking, now: datetime) -> None:
        if booking.end_time <= now:
            if jobs.has_recording(self.settings, booking.id, _slot(booking)):
                # A retried recording whose slot is over: keep what was recorded.
                self.store.fire(booking.id, "start", detail="slot over: finalising segments")
                self._finalise(booking.id, "finalised from the segments on disk")
            else:
                self.store.fire(booking.id, "miss", detail="the slot ended with nothing recorded")
            return
        if self.cameras.exclusive and any(a.end_time > now for a in self.active.values()):
            return  # the previous booking hands the running cameras over at its end
        problem = self._preflight(booking, now)
        if problem:
            self._fail_recording(booking.id, problem)
            return
        folder = jobs.raw_dir(self.settings, booking.id)
        lead = (booking.start_time - now).total_seconds()
        detail = f"cameras starting {lead:.1f} s before the slot" if lead > 0 else None
        self.store.fire(booking.id, "start", detail=detail, changes={"raw_dir": str(folder)})
        self._start_cameras(booking.id, booking.end_time, resumed=False)

    def _recording(self, booking: Booking, now: datetime) -> None:
        if booking.id in self.active or booking.id in self.draining:
            return  # _watch_recordings stops it at its end; _drain finishes a handed-over one
        if booking.end_time > now:
            # Found `recording` with nobody recording it: we restarted, or every camera
            # failed. Record on into a new run; earlier runs stay on disk.
            problem = self._disk_problem(booking, now)
            if problem:
                self._fail_recording(booking.id, problem)
                return
            self._start_cameras(booking.id, booking.end_time, resumed=True)
        else:
            self._finalise(booking.id, "finalised from the segments on disk after a restart")

    def _start_cameras(self, booking_id: str, end_time: datetime, *, resumed: bool) -> None:
        folder = jobs.raw_dir(self.settings, booking_id)
        try:
            handle = self.cameras.start(booking_id, folder)
        except Exception as exc:
            self._fail_recording(booking_id, f"no camera could start: {exc}")
            return
        self.active[booking_id] = Active(booking_id, handle, end_time, origin=booking_id)
        cams = ", ".join(str(c) for c in handle.cameras)
        what = "resumed recording" if resumed else "recording"
        self.store.note(booking_id, f"{what} with camera(s) {cams} (run {handle.run})")
        for line in handle.notes:
            self.store.note(booking_id, line)

    def _finalise(self, booking_id: str, detail: str) -> None:
        # Links a hand-over had not made yet when we were killed are made now.
        recordings.relay_all(jobs.raw_dir(self.settings, booking_id))
        # Footage of the pre-roll only (killed before the slot began) is no recording of it.
        slot = _slot(self.store.get(booking_id))
        if jobs.has_recording(self.settings, booking_id, slot):
            self.store.fire(
                booking_id,
                "finish",
                detail=detail,
                changes={"raw_dir": str(jobs.raw_dir(self.settings, booking_id))},
            )
            self._wake()
        else:
            self._fail_recording(booking_id, "nothing was recorded")

    def _settle_failed_recording(self, booking: Booking) -> None:
        """The slot of a failed recording is over: deliver what it recorded, or call it missed."""
        folder = jobs.raw_dir(self.settings, booking.id)
        recordings.relay_all(folder)
        why = booking.last_error or "the recording failed"
        if jobs.has_recording(self.settings, booking.id, _slot(booking)):
            self.store.fire(
                booking.id, "finish", changes={"raw_dir": str(folder)},
                detail=f"partial recording delivered: {why}; finalised from the footage on disk",
            )
            self._wake()
        else:
            detail = f"the slot ended with nothing recorded: {why}"
            self.store.fire(booking.id, "miss", detail=detail)

    def _fail_recording(self, booking_id: str, reason: str) -> None:
        self._error(f"{booking_id}: {reason}")
        # A recording retry after the slot is pointless, but one AT its end finalises what
        # was recorded, so the backoff is capped at the slot's end.
        end = self.store.get(booking_id).end_time
        self.store.fire(booking_id, "fail", error=reason, retry_by=end)
        self._wake()  # its retry may fall due before what this pass planned to wake for

    def _auto_retry(self, booking: Booking) -> None:
        self.store.fire(
            booking.id,
            "retry",
            detail=f"automatic retry after attempt {booking.attempts}/"
            f"{self.settings.max_attempts}",
        )
        self._wake()

    def _preflight(self, booking: Booking, now: datetime) -> str | None:
        problem = self._disk_problem(booking, now)
        if problem:
            return problem
        try:
            cameras = self.cameras.discover()
        except Exception as exc:
            return f"camera discovery failed: {exc}"
        if not any(getattr(c, "up", True) for c in cameras):
            return "no camera present"
        return None

    def _disk_problem(self, booking: Booking, now: datetime) -> str | None:
        if self.reserve is not None and not self.reserve.present and not self.reserve.restore():
            free = self.free_disk_mb(self.settings.data_dir)
            return (f"not enough disk: {free:.0f} MB free, not even room for the database's "
                    f"reserve (EZREC_DISK_RESERVE_MB={self.reserve.size >> 20})")
        free = self.free_disk_mb(self.settings.data_dir)
        seconds = (booking.end_time - max(now, booking.start_time)).total_seconds()
        needed = (
            self.settings.camera_bitrate_kbps * self.settings.cameras * seconds / 8 / 1024 * 1.2
        )
        if free - needed < self.settings.min_free_disk_mb:
            return (
                f"not enough disk: {free:.0f} MB free, the slot needs ~{needed:.0f} MB and "
                f"EZREC_MIN_FREE_DISK_MB={self.settings.min_free_disk_mb} must stay free"
            )
        return None

    def _guard_disk(self, now: datetime) -> None:
        """A full disk: free the database's reserve at once (so the failure can be written),
        and once there is room again, restore it and resume what waited for the disk."""
        free = self.free_disk_mb(self.settings.data_dir)
        low = free < self.settings.min_free_disk_mb
        if low:
            # The reserve goes only when the disk is really out of room: given back earlier,
            # whatever is filling the disk would take it before the database could.
            if free < DISK_CRITICAL_MB:
                self._release_reserve(f"disk full ({free:.1f} MB free)")
            if not self._disk_low:
                self._error(f"disk full ({free:.0f} MB free, "
                            f"EZREC_MIN_FREE_DISK_MB={self.settings.min_free_disk_mb})")
            for active in list(self.active.values()):
                # They cannot write anyway; stopped now, their last segments close cleanly and
                # the reserve's room goes to the database, not to them.
                self._stop(active, None)
                try:
                    self._fail_recording(
                        active.booking_id, f"the disk is full ({free:.0f} MB free): cameras "
                        "stopped; recording resumes when there is room again",
                    )
                except CHANGED_MEANWHILE as exc:
                    log.info("%s: %s", active.booking_id, exc)
            self._disk_waiting = True
        elif self._disk_waiting and self._disk_back(now):
            self._disk_waiting = False
        self._disk_low = low

    def _release_reserve(self, why: str) -> None:
        if self.reserve is not None and self.reserve.release():
            self._error(f"{why}: released the database's reserve")

    def _disk_back(self, now: datetime) -> bool:
        """Room again: restore the reserve, then record on for whoever stopped for the disk."""
        if self.reserve is not None and not self.reserve.restore():
            return False
        for booking in self.store.list(state=RECORDING_FAILED, start_from=now):
            if booking.start_time <= now and "disk" in (booking.last_error or ""):
                try:
                    self.store.fire(booking.id, "retry", detail="disk space is back: recording on")
                except CHANGED_MEANWHILE as exc:
                    log.info("%s: %s", booking.id, exc)
        self._wake()
        return True

    # -- recordings in progress ------------------------------------------------------------

    def _watch_recordings(self, now: datetime) -> None:
        for booking_id, active in list(self.active.items()):
            try:
                self._watch(booking_id, active, now)
            except CHANGED_MEANWHILE as exc:
                # An operator changed it right now: the next pass sees the new state.
                log.info("%s: %s", booking_id, exc)

    def _watch(self, booking_id: str, active: Active, now: datetime) -> None:
        try:
            state = self.store.get(booking_id).state
        except Exception as exc:
            # The database gone is not the booking changed: record on, the files are on disk.
            state = RECORDING if is_unavailable(exc) else None
        if state != RECORDING:
            # Cancelled (or changed) while recording: close the files, keep them.
            self._stop(active, f"recording stopped: booking is now {state}")
            return
        for event in self.cameras.poll(active.handle):
            full = f" (disk full: {self._free_mb():.0f} MB free)" if self._disk_low else ""
            self.store.note(booking_id, f"camera {event.camera} {event.kind}: {event.detail}{full}")
        written = self.cameras.bytes_written(active.handle)
        if written > active.bytes:
            active.bytes, active.grew_at = written, time.monotonic()
        elif time.monotonic() - active.grew_at > STALL_S:
            self._healthy = False
        if active.end_time <= now:
            self._end_recording(active, now)
        elif not active.handle.cameras:
            self._stop(active, None)
            why = " (the disk is full)" if self._disk_low else ""
            self._fail_recording(booking_id, f"every camera stopped delivering{why}")

    def _end_recording(self, active: Active, now: datetime) -> None:
        """The slot is over: stop the cameras, or hand them running to the next booking."""
        following = None
        if self.cameras.exclusive:
            try:
                following = self._following(active, now)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # The database is away: no hand-over, but the slot still ends now.
        if following is not None and self._hand_over(active, following, now):
            # The cameras go on: the end of this slot is in a segment still being written.
            # Built now, it would miss the frames the encoder has not written yet.
            deadline = time.monotonic() + self.settings.segment_s + DRAIN_MARGIN_S
            self.draining[active.booking_id] = (following.id, active.end_time, deadline)
            return
        self._stop(active, None)
        self._finalise(active.booking_id, "slot ended")

    def _drain(self) -> None:
        """Finish the bookings handed over once their last frame is on disk."""
        for booking_id, (holder, end, deadline) in list(self.draining.items()):
            active = self.active.get(holder)
            written = self.cameras.written_until(active.handle) if active else None
            done = written is not None and written >= end.timestamp()
            if done or active is None or time.monotonic() > deadline:
                del self.draining[booking_id]
                try:
                    self._finalise(booking_id, "slot ended")
                except CHANGED_MEANWHILE as exc:
                    log.info("%s: %s", booking_id, exc)

    def _following(self, active: Active, now: datetime) -> Booking | None:
        """The booking that would open these cameras before they could be free again."""
        soon = active.end_time + timedelta(seconds=self.settings.preroll_s + HANDOVER_GAP_S)
        for booking in self.store.list(state=CONFIRMED, start_from=now, start_to=soon):
            if booking.id != active.booking_id and self._preflight(booking, now) is None:
                return booking
        return None

    def _hand_over(self, active: Active, following: Booking, now: datetime) -> bool:
        """Keep the cameras running into `following`'s recording: no frame lost between them."""
        folder = jobs.raw_dir(self.settings, following.id)
        try:
            self.store.fire(
                following.id, "start", changes={"raw_dir": str(folder)},
                detail=f"cameras taken over running from booking {active.booking_id}",
            )
        except CHANGED_MEANWHILE as exc:
            log.info("%s: no hand-over: %s", following.id, exc)
            return False
        at = active.end_time.timestamp()
        try:
            result, handle = self.cameras.hand_over(active.handle, following.id, folder, at)
        except CameraError as exc:
            # The new booking is `recording` with nothing recording it: the next pass starts
            # its cameras the ordinary way, once these are stopped.
            self.store.note(following.id, f"hand-over failed ({exc}): cameras restart")
            return False
        self.active.pop(active.booking_id, None)
        for line in result.notes:
            self.store.note(active.booking_id, line)
        self.store.note(active.booking_id, f"cameras handed over running to {following.id}")
        self.active[following.id] = Active(
            following.id, handle, following.end_time, origin=active.origin
        )
        cams = ", ".join(str(c) for c in handle.cameras)
        self.store.note(following.id, f"recording with camera(s) {cams} (run {handle.run}), "
                        f"continued from booking {active.booking_id} without a restart")
        return True

    def _stop(self, active: Active, note: str | None) -> None:
        self.active.pop(active.booking_id, None)
        try:
            result = self.cameras.stop(active.handle)
            for line in result.notes:
                self.store.note(active.booking_id, line)
        except Exception as exc:
            self._error(f"{active.booking_id}: stopping cameras failed: {exc}")
        if note:
            self.store.note(active.booking_id, note)

    # -- workers ---------------------------------------------------------------------------

    def _submit(self, booking: Booking, kind: str) -> None:
        if booking.id in self.jobs:
            return
        if sum(1 for j in self.jobs.values() if j.kind == kind) >= self.queue_limit:
            return  # bounded queue: picked up on a later pass
        job = Job(kind, booking.id, Future())
        stage = job.stage

        def progress(fraction: float) -> None:
            now = time.monotonic()
            job.moved_at = now
            # Uploads report every few KiB: the database hears of it a few times a second,
            # and a report held back is written by the loop's next pass, never dropped.
            if fraction < 1.0 and now - job.stored_at < PROGRESS_EVERY_S:
                job.unstored = fraction
                return
            job.stored_at, job.unstored = now, None
            self._store_progress(booking.id, stage, fraction)

        def done(_future: Future[Any]) -> None:
            self._wake()

        # Before the job starts: written after, it could overwrite the worker's first report.
        self.store.set_progress(booking.id, stage, 0.0)
        if kind == "build":
            future = self.builds.submit(
                self.build_fn, self.settings, booking, self.media, progress, self.stop_event
            )
        else:
            future = self.uploads.submit(
                self.upload_fn, self.settings, booking, self.storage, progress,
                self.stop_event,
            )
        job.future = future
        self.jobs[booking.id] = job
        future.add_done_callback(done)

    def _store_progress(self, booking_id: str, stage: str, fraction: float) -> None:
        try:
            self.store.set_progress(booking_id, stage, fraction)
        except Exception as exc:  # progress is best effort; the job must go on
            log.warning("%s: progress not stored: %s", booking_id, exc)

    def _collect_jobs(self) -> None:
        for booking_id, job in list(self.jobs.items()):
            held, job.unstored = job.unstored, None
            if held is not None and not job.future.done():
                job.stored_at = time.monotonic()
                self._store_progress(booking_id, job.stage, held)
            if not job.future.done():
                if job.kind == "build" and time.monotonic() - job.moved_at > STALL_S * 4:
                    # An encode that stopped moving is ours to fix by a restart. An upload is
                    # not: the uplink is not the box's health, and a hung call ends with its
                    # socket timeout (EZREC_S3_TIMEOUT_S), failing the job, which is retried.
                    self._healthy = False
                continue
            del self.jobs[booking_id]
            if self.stop_event.is_set():
                continue  # interrupted by shutdown: redone from the same state on restart
            try:
                outcome = job.future.result()
            except Exception as exc:
                self._job_failed(booking_id, job.kind, exc)
                continue
            if job.kind == "build":
                self._built(booking_id, outcome)
            else:
                self._uploaded(booking_id, outcome)

    def _job_failed(self, booking_id: str, kind: str, exc: Exception) -> None:
        """What a failed job means for its booking: the one place failures become triggers."""
        reason = str(exc) or type(exc).__name__
        self._error(f"{booking_id}: {kind} failed: {reason}")
        if isinstance(exc, jobs.OutputMissing):
            self._fire_quietly(booking_id, "rebuild", detail=f"{reason}: building it again")
        elif isinstance(exc, StorageError) and not exc.retryable:
            # Bad credentials, no such bucket, access denied: retrying changes nothing.
            self._fire_quietly(booking_id, "fail", error=f"{reason} (needs an operator: fix the "
                               "setting, then `ezrec retry`)", permanent=True)
        else:
            self._fire_quietly(booking_id, "fail", error=reason)

    def _built(self, booking_id: str, outcome: jobs.BuildOutcome) -> None:
        detail = f"built {len(outcome.outputs)} file(s), {outcome.duration_s:.1f} s"
        if outcome.notes:
            detail += "; " + "; ".join(outcome.notes)
        self._fire_quietly(
            booking_id,
            "process",
            detail=detail,
            changes={
                "processed_path": str(outcome.outputs[0]),
                "extra": {
                    "outputs": [str(p) for p in outcome.outputs],
                    "duration_s": outcome.duration_s,
                    # The replay clips to cut from it, planned from the booking's marks.
                    **clips.build_extra(self.settings, self.store, booking_id, outcome.timeline),
                },
            },
        )

    def _uploaded(self, booking_id: str, outcome: jobs.UploadOutcome) -> None:
        notes = "".join(f"; {note}" for note in outcome.notes)
        self._fire_quietly(
            booking_id,
            "upload",
            detail=f"uploaded and verified: {outcome.video_url}{notes}",
            changes={
                "video_url": outcome.video_url,
                "extra": {"uploaded": outcome.objects, "presigned_url": outcome.presigned_url},
            },
        )

    def _fire_quietly(self, booking_id: str, trigger: str, **kwargs: Any) -> None:
        try:
            self.store.fire(booking_id, trigger, **kwargs)
        except Exception as exc:  # the booking changed meanwhile; never kill the loop
            self._error(f"{booking_id}: could not {trigger}: {exc}")
        self._wake()

    # -- housekeeping ----------------------------------------------------------------------

    def _retention(self, now: datetime) -> None:
        if time.monotonic() - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = time.monotonic()
        abort_stale = getattr(self.storage, "abort_stale", None)
        if abort_stale is not None:
            try:
                aborted = abort_stale(STALE_UPLOAD_S)
                if aborted:
                    log.info("aborted %d abandoned multipart upload(s)", aborted)
            except Exception as exc:  # storage unreachable: try again next round
                log.info("abort_stale: %s", exc)
        grace = timedelta(hours=self.settings.retention_grace_h)
        in_use = {active.origin for active in self.active.values()}
        for booking in self.store.uploaded_with_files():
            if booking.id in in_use:
                continue  # a camera handed over from it still writes into its folder
            uploaded = booking.extra.get("uploaded") or []
            times = [datetime.fromisoformat(o["uploaded_at"]) for o in uploaded]
            if not times or not all(o.get("sha256") for o in uploaded):
                continue  # never delete what was not verified
            if max(times) + grace > now:
                continue
            shutil.rmtree(jobs.raw_dir(self.settings, booking.id), ignore_errors=True)
            for path in jobs.outputs_of(booking) + clips.clip_files(booking):
                path.unlink(missing_ok=True)
            self._fire_quietly(
                booking.id,
                "note",
                detail=f"local files removed {self.settings.retention_grace_h:g} h after the "
                "verified upload",
                changes={"raw_dir": None},
            )

    def _free_mb(self) -> float:
        return self.free_disk_mb(self.settings.data_dir)

    def _error(self, line: str) -> None:
        log.warning("%s", line)
        stamp = self.clock().strftime("%Y-%m-%d %H:%M:%S")
        self.last_errors = [*self.last_errors[-9:], f"{stamp} {line}"]

    def _heartbeat(self, now: datetime) -> None:
        recording = sorted(self.active)
        busy = {j.booking_id: j.kind for j in self.jobs.values()}
        self.status_line = (
            f"recording {', '.join(recording)}" if recording else "idle"
        ) + (f"; {len(busy)} job(s)" if busy else "")
        if time.monotonic() - self._cameras_at > CAMERAS_EVERY_S:
            self._cameras_at = time.monotonic()
            try:
                self._cameras = [_plain(c) for c in self.cameras.discover()]
            except Exception as exc:
                self._cameras = [{"index": None, "up": False, "detail": str(exc)}]
        try:
            self.store.kv_set(
                "supervisor",
                {
                    "at": now.isoformat(),
                    "pid": os.getpid(),
                    "cameras": self._cameras,
                    "recording": recording,
                    "jobs": busy,
                    "camera_driver": getattr(self.cameras, "name", "?"),
                    "last_errors": self.last_errors,
                    "status": self.status_line,
                },
            )
        except Exception as exc:
            self._healthy = False  # the database does not commit: let systemd restart us
            log.error("heartbeat not written: %s", exc)

    def _pet(self) -> None:
        self.notifier.status(self.status_line)
        if self._healthy:
            self.notifier.watchdog()

    def shutdown(self) -> None:
        """Close segments and stop workers; states stay as they are, so a restart resumes."""
        self.notifier.stopping()
        self.stop_event.set()
        for active in list(self.active.values()):
            try:
                self._stop(active, "recording interrupted: controller stopping")
            except Exception as exc:  # the note, with the database gone: stop the others
                log.warning("%s: %s", active.booking_id, exc)
        for sidecar in self.sidecars:
            sidecar.stop()
        self.builds.shutdown(wait=True, cancel_futures=True)
        self.uploads.shutdown(wait=True, cancel_futures=True)
        self.waiter.close()


def _slot(booking: Booking) -> tuple[datetime, datetime]:
    return booking.start_time, booking.end_time


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value if isinstance(value, dict) else {"detail": str(value)}


def _free_disk_mb(path: Path) -> float:
    return shutil.disk_usage(path).free / (1024 * 1024)


def create_supervisor(settings: Settings, store: BookingStore) -> Supervisor:
    """The supervisor with the real drivers chosen by the settings."""
    from controller import health
    from controller.drivers.camera import open_camera_driver
    from controller.drivers.cloud_sync import start_sync
    from controller.drivers.media import MediaCache
    from controller.drivers.nudge import NudgeListener, send_nudge
    from controller.drivers.storage import open_storage
    from controller.drivers.watchdog import SdNotifier

    listener = NudgeListener(settings.data_dir)
    try:
        cameras = open_camera_driver(settings)
        supervisor = Supervisor(
            settings,
            store,
            cameras,
            open_storage(settings),
            MediaCache(settings.media_dir),
            SdNotifier(),
            waiter=listener,
            wake=lambda: send_nudge(settings.data_dir),
            reserve=DiskReserve(settings.data_dir, settings.disk_reserve_mb),
        )
        # Settings may have changed since the last run: drop cached media nothing uses now.
        supervisor.builds.submit(
            jobs.forget_stale_media, settings, store, supervisor.media
        )
        sync = start_sync(
            settings,
            store,
            status_fn=lambda: health.collect(settings, store),
            on_change=lambda: send_nudge(settings.data_dir),
        )
        if sync is not None:
            supervisor.sidecars.append(sync)
            # The booking system hears of a change when it happens, not at the next tick.
            store.on_outbox.append(sync.wake)
        # The replay button, share links and the players' email (docs/replays.md).
        from controller import replay_service

        supervisor.sidecars.extend(replay_service.start(settings, store, supervisor.storage))
        return supervisor
    except Exception:
        listener.close()
        raise
