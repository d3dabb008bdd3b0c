"""The build and upload workers: one thread per kind with a bounded queue, each job's progress
to the store (throttled), and each outcome turned into its booking's transition (`transition`,
the one place where that is decided).

Recording never waits for a build or an upload: the loop submits a job and goes on; a finished
job wakes the loop, and its next pass collects the outcome.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from controller import clips, heartbeat
from controller.config import Settings
from controller.db import Booking
from controller.fsm import BookingStore
from controller.heartbeat import Heartbeat
from controller.video_jobs import (
    Built,
    NeedsOperator,
    Outcome,
    Progress,
    Rebuild,
    RetryLater,
    Uploaded,
    reason_of,
)

log = logging.getLogger("ezrec.supervisor")

Kind = Literal["build", "upload"]
D = TypeVar("D")
# A job: (settings, booking, its driver, progress, stop) -> outcome (video_jobs.build_video, ...).
JobFn = Callable[[Settings, Booking, D, Progress, threading.Event], Outcome]

PROGRESS_EVERY_S = 0.25
# An encode may stand still this many times heartbeat.STALL_S before the loop counts as stuck.
BUILD_STALL_FACTOR = 4


@dataclass
class Job:
    kind: Kind
    booking_id: str
    future: Future[Outcome]
    moved_at: float = field(default_factory=time.monotonic)
    stored_at: float = 0.0  # when progress last went to the database
    unstored: float | None = None  # the latest report, held back by the throttle
    detail: dict[str, int] = field(default_factory=dict)  # chunks and bytes not stored yet

    @property
    def stage(self) -> str:
        return "processing" if self.kind == "build" else "uploading"


@dataclass(frozen=True)
class Transition:
    trigger: str
    fields: dict[str, Any]  # BookingStore.fire's keyword arguments
    error: str | None = None  # for the loop's recent errors


def transition(booking_id: str, kind: Kind, outcome: Outcome, extra: dict[str, Any]) -> Transition:
    """What a job's outcome does to its booking. `extra` is what a finished build adds to the
    booking's `extra` besides its outputs (the clips planned from its marks)."""
    match outcome:
        case Built(outputs=outputs, duration_s=duration_s, notes=notes, cpu_s=cpu_s,
                   chunks=chunks):
            detail = f"built {len(outputs)} file(s), {duration_s:.1f} s"
            if chunks:
                detail += f" from {chunks} chunk(s)"
            if notes:
                detail += "; " + "; ".join(notes)
            return Transition("process", {"detail": detail, "changes": {
                "processed_path": str(outputs[0]),
                "extra": {"outputs": [str(p) for p in outputs], "duration_s": duration_s,
                          "build_cpu_s": cpu_s, "chunks": chunks, **extra},
            }})  # fmt: skip
        case Uploaded(video_url=url, objects=objects, presigned_url=presigned, notes=notes):
            more = "".join(f"; {note}" for note in notes)
            return Transition("upload", {
                "detail": f"uploaded and verified: {url}{more}",
                "changes": {"video_url": url,
                            "extra": {"uploaded": objects, "presigned_url": presigned}},
            })  # fmt: skip
        case Rebuild(reason=reason):
            return Transition("rebuild", {"detail": f"{reason}: building it again"},
                              f"{booking_id}: {kind} failed: {reason}")  # fmt: skip
        case NeedsOperator(reason=reason):
            # Bad credentials, no such bucket, access denied: retrying changes nothing.
            error = f"{reason} (needs an operator: fix the setting, then `ezrec retry`)"
            return Transition("fail", {"error": error, "permanent": True},
                              f"{booking_id}: {kind} failed: {reason}")  # fmt: skip
        case RetryLater(reason=reason):
            return Transition("fail", {"error": reason}, f"{booking_id}: {kind} failed: {reason}")
    raise TypeError(f"not a job outcome: {outcome!r}")


class JobRunner:
    def __init__(
        self,
        settings: Settings,
        store: BookingStore,
        health: Heartbeat,
        wake: Callable[[], object],
        stop: threading.Event,
        queue_limit: int = 4,
    ) -> None:
        self.settings, self.store, self.health, self.wake = settings, store, health, wake
        self.stop_event = stop
        self.queue_limit = queue_limit
        self.jobs: dict[str, Job] = {}
        self.builds = ThreadPoolExecutor(max_workers=1, thread_name_prefix="build")
        self.uploads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")

    def busy(self) -> dict[str, str]:
        return {j.booking_id: j.kind for j in self.jobs.values()}

    def submit(self, booking: Booking, kind: Kind, fn: JobFn[D], driver: D) -> None:
        """Run `fn` for `booking` in the worker of its kind, unless it runs or the queue is full
        (then a later pass submits it)."""
        if booking.id in self.jobs:
            return
        if sum(1 for j in self.jobs.values() if j.kind == kind) >= self.queue_limit:
            return
        job = Job(kind, booking.id, Future())

        def progress(fraction: float, **detail: int) -> None:
            now = time.monotonic()
            job.moved_at = now
            job.detail.update(detail)
            # Uploads report every few KiB: the database hears of it a few times a second,
            # and a report held back is written by the loop's next pass, never dropped.
            if fraction < 1.0 and now - job.stored_at < PROGRESS_EVERY_S:
                job.unstored = fraction
                return
            job.stored_at, job.unstored = now, None
            self._store_progress(booking.id, job.stage, fraction, job)

        # Before the job starts: written after, it could overwrite the worker's first report.
        self.store.set_progress(booking.id, job.stage, 0.0)
        pool = self.builds if kind == "build" else self.uploads
        job.future = pool.submit(fn, self.settings, booking, driver, progress, self.stop_event)
        self.jobs[booking.id] = job
        job.future.add_done_callback(lambda _future: self.wake())

    def _store_progress(self, booking_id: str, stage: str, fraction: float, job: Job) -> None:
        try:
            self.store.set_progress(booking_id, stage, fraction)
            detail, job.detail = job.detail, {}
            if detail:
                self.store.set_progress_detail(booking_id, **detail)
        except Exception as exc:  # progress is best effort; the job must go on
            log.warning("%s: progress not stored: %s", booking_id, exc)

    def collect(self) -> None:
        """Held-back progress written, stalled encodes reported, finished jobs settled."""
        for booking_id, job in list(self.jobs.items()):
            held, job.unstored = job.unstored, None
            if held is not None and not job.future.done():
                job.stored_at = time.monotonic()
                self._store_progress(booking_id, job.stage, held, job)
            if not job.future.done():
                stalled = time.monotonic() - job.moved_at > heartbeat.STALL_S * BUILD_STALL_FACTOR
                if job.kind == "build" and stalled:
                    # An encode that stopped moving is ours to fix by a restart. An upload is
                    # not: the uplink is not the box's health, and a hung call ends with its
                    # socket timeout (EZREC_S3_TIMEOUT_S), failing the job, which is retried.
                    self.health.stuck()
                continue
            del self.jobs[booking_id]
            if self.stop_event.is_set():
                continue  # interrupted by shutdown: redone from the same state on restart
            try:
                outcome = job.future.result()
            except Exception as exc:  # a job that crashed is tried again, like one that failed
                outcome = RetryLater(reason_of(exc))
            self._settle(booking_id, job.kind, outcome)

    def _settle(self, booking_id: str, kind: Kind, outcome: Outcome) -> None:
        extra: dict[str, Any] = {}
        if isinstance(outcome, Built):
            # The replay clips to cut from it, planned from the booking's marks.
            extra = clips.build_extra(self.settings, self.store, booking_id, outcome.timeline)
        step = transition(booking_id, kind, outcome, extra)
        if step.error:
            self.health.error(step.error)
        try:
            self.store.fire(booking_id, step.trigger, **step.fields)
        except Exception as exc:  # the booking changed meanwhile; never kill the loop
            self.health.error(f"{booking_id}: could not {step.trigger}: {exc}")
        self.wake()

    def shutdown(self) -> None:
        self.builds.shutdown(wait=True, cancel_futures=True)
        self.uploads.shutdown(wait=True, cancel_futures=True)
