"""The loop that advances every booking: records, hands finished recordings to the build
worker and built videos to the upload worker, retries failures, and pets the watchdog.

It sleeps until the next thing that is due (a booking's pre-roll or end, a retry, the watchdog
interval, a nudge from the CLI/API or a worker) instead of polling. Recording never waits for a
build or an upload: those run in worker threads with a bounded queue and their outcomes come
back here, where they become transitions. Every step is idempotent, so a restart after a crash
at any instant reconciles each booking with what is on disk and carries on.

What a pass does, by the booking's state (`_advance`), and who does it:
`recording_control` starts, watches, hands over and stops the cameras and finalises a
recording; `job_runner` runs the jobs of `video_jobs` (build, upload) and turns their outcomes
into transitions; `disk_guard` keeps recordings off a full disk; `retention` removes what is
safely stored; `heartbeat` tells systemd and `ezrec status` how the loop is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from controller import booking_media, disk_guard, video_jobs
from controller.config import Settings
from controller.db import Booking, utcnow
from controller.dbhealth import Outage, is_unavailable
from controller.disk_guard import DiskGuard
from controller.drivers.cameras import CameraDriver
from controller.drivers.disk_reserve import DiskReserve
from controller.drivers.media_cache import MediaCache
from controller.drivers.storage import Storage
from controller.fsm import BookingStore
from controller.fsm.states import FAILED, State
from controller.heartbeat import Heartbeat, Notifier
from controller.job_runner import JobFn, JobRunner
from controller.recording_control import CHANGED_MEANWHILE, RecordingControl
from controller.retention import Retention

log = logging.getLogger("ezrec.supervisor")

# Below this a real-time clock is certainly wrong (a Pi without RTC boots in 1970).
SANE_CLOCK_AFTER = datetime(2025, 1, 1).astimezone()
POLL_WHILE_BUSY_S = 1.0
IDLE_WAKE_S = 60.0


class Waiter(Protocol):
    def wait(self, timeout: float) -> bool: ...
    def close(self) -> None: ...


class Sidecar(Protocol):
    """A thread that lives as long as the loop (the booking-system sync, the replay keeper)."""

    def wake(self) -> None:
        """A booking changed elsewhere (API, CLI): act on it now, not at the next round."""

    def stop(self) -> None: ...


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


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        store: BookingStore,
        cameras: CameraDriver,
        storage: Storage,
        media: MediaCache,
        notifier: Notifier,
        *,
        waiter: Waiter | None = None,
        wake: Callable[[], object] | None = None,
        free_disk_mb: Callable[[Path], float] = disk_guard.free_disk_mb,
        reserve: DiskReserve | None = None,
        clock: Callable[[], datetime] = utcnow,
        queue_limit: int = 4,
        build_fn: JobFn[MediaCache] = video_jobs.build_video,
        upload_fn: JobFn[Storage] = video_jobs.upload_video,
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
        self.build_fn, self.upload_fn = build_fn, upload_fn
        # Threads that live as long as the loop (the booking-system sync): stopped with it.
        self.sidecars: list[Sidecar] = []
        self.stop_event = threading.Event()
        self.db_outage = Outage()
        self.heartbeat = Heartbeat(store, cameras, notifier, clock)
        error = self.heartbeat.error
        self.disk = DiskGuard(settings, store, free_disk_mb=free_disk_mb, reserve=reserve,
                              error=error, wake=self._wake)  # fmt: skip
        self.recording = RecordingControl(settings, store, cameras, self.disk, self.heartbeat,
                                          self._wake)  # fmt: skip
        self.workers = JobRunner(settings, store, self.heartbeat, self._wake, self.stop_event,
                                 queue_limit)  # fmt: skip
        self.retention = Retention(settings, store, storage, error, self._wake)

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
                    for sidecar in self.sidecars:
                        sidecar.wake()
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
                self.disk.release_reserve("the database found the disk full")
            away = self.db_outage.age_s()
            active = self.recording.active
            self.heartbeat.outage(
                f"database unreachable for {away:.0f} s ({self.db_outage.last_reason}); "
                + (f"recording {', '.join(sorted(active))}" if active else "idle"),
                pet=bool(active) or away < self.settings.db_outage_s,
            )
            interval = self.notifier.watchdog_interval()
            if interval:
                delay = min(delay, interval)
            return min(delay, POLL_WHILE_BUSY_S) if active else delay
        self.db_outage.recovered()
        return sleep

    def request_stop(self) -> None:
        self.stop_event.set()
        self._wake()

    def step(self) -> float:
        """One pass over everything due; returns how long the loop may sleep."""
        now = self.clock()
        self.heartbeat.begin_pass()
        full = self.disk.check(now)
        if full is not None:
            self.recording.stop_for_full_disk(full)
        # Time-critical work first (stopping and starting recordings), bookkeeping after.
        self.recording.watch(now)
        self.recording.drain()
        if now < SANE_CLOCK_AFTER:
            self.heartbeat.error(f"clock not synchronised ({now.isoformat()}): no recording "
                                 "starts")  # fmt: skip
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
        self.workers.collect()
        self.retention.run(now, self.recording.in_use())
        self.heartbeat.write(now, sorted(self.recording.active), self.workers.busy())
        self.heartbeat.pet()
        return self._sleep_for(next_wakeup)

    def _sleep_for(self, next_wakeup: datetime | None) -> float:
        sleep = IDLE_WAKE_S
        interval = self.notifier.watchdog_interval()
        if interval:
            sleep = min(sleep, interval)
        if self.recording.active or self.workers.jobs or self.disk.waiting:
            sleep = min(sleep, POLL_WHILE_BUSY_S)
        if next_wakeup is not None:
            sleep = min(sleep, (next_wakeup - self.clock()).total_seconds())
        return max(0.0, sleep)

    def _advance(self, booking: Booking, now: datetime) -> None:
        """Who moves a due booking on, by its state."""
        if booking.state == State.CONFIRMED:
            self.recording.confirmed(booking, now)
        elif booking.state == State.RECORDING:
            self.recording.recording(booking, now)
        elif booking.state == State.COMPLETED:
            self.workers.submit(booking, "build", self.build_fn, self.media)
        elif booking.state == State.VIDEO_PROCESSED:
            self.workers.submit(booking, "upload", self.upload_fn, self.storage)
        elif booking.state == State.RECORDING_FAILED and booking.end_time <= now:
            self.recording.settle_failed(booking)
        elif booking.state in FAILED:
            self._auto_retry(booking)

    def _auto_retry(self, booking: Booking) -> None:
        self.store.fire(
            booking.id,
            "retry",
            detail=f"automatic retry after attempt {booking.attempts}/"
            f"{self.settings.max_attempts}",
        )
        self._wake()

    def shutdown(self) -> None:
        """Close segments and stop workers; states stay as they are, so a restart resumes."""
        self.notifier.stopping()
        self.stop_event.set()
        self.recording.stop_all("recording interrupted: controller stopping")
        for sidecar in self.sidecars:
            sidecar.stop()
        self.workers.shutdown()
        self.waiter.close()


def create_supervisor(settings: Settings, store: BookingStore) -> Supervisor:
    """The supervisor with the real drivers chosen by the settings."""
    from controller import health
    from controller.context import open_cameras, open_storage
    from controller.drivers.nudge import NudgeListener, send_nudge
    from controller.drivers.watchdog import SdNotifier
    from controller.sync import start_sync

    listener = NudgeListener(settings.data_dir)
    try:
        cameras = open_cameras(settings)
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
        supervisor.workers.builds.submit(
            booking_media.forget_stale_media, settings, store, supervisor.media
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
        if settings.chunk_s > 0:
            # The video built, and its upload begun, while the slot is recorded.
            from controller.live_build import LiveBuilder

            live = LiveBuilder(settings, store, supervisor.media, supervisor.storage)
            supervisor.sidecars.append(live.start())
        return supervisor
    except Exception:
        listener.close()
        raise
