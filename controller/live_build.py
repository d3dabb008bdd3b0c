"""The video built while its slot is recorded, and its upload started: a sidecar of the loop.

Every few seconds, for each booking being recorded, the segments that have closed are planned
like a finished recording (`video_jobs.build_spec`, the open segment of each running camera
left out) and the next chunk whose segments are all there is encoded and joined
(`builder.incremental.advance`, at the build's low CPU priority: the cameras always win). Then,
where the storage can take a file that still grows (`GrowingUpload`: S3), every whole part of
the joined file goes up. When the slot ends, the build job finds only the last chunk to make,
and the upload job only the last part to send.

Nothing here changes a booking's state: if this falls behind (a Pi 5 busy with two camera
encoders) or fails, the jobs after the slot do what is left, exactly as they would have done
it all. Only one chunk is made per booking and round, so the build job waits for the live
side at most one chunk (the chunk folder's lock).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from controller import recordings, video_jobs
from controller.config import Settings
from controller.db import Booking
from controller.drivers import builder
from controller.drivers.builder import incremental
from controller.drivers.builder.runner import decide, in_chunks
from controller.drivers.media_cache import MediaCache
from controller.drivers.storage import FileCheckpoint, GrowingUpload, Storage, StorageError
from controller.fileio import flocked
from controller.fsm import BookingStore, State

log = logging.getLogger("ezrec.live")

ROUND_S = 2.0  # how often the closed segments are looked at (a segment lasts EZREC_SEGMENT_S)


def live_plan(settings: Settings, booking: Booking, cache: MediaCache) -> builder.BuildSpec:
    """The booking's build spec with only the segments that will not change any more."""
    spec, _ = video_jobs.build_spec(settings, booking, cache)
    runs = recordings.read_runs(recordings.booking_files(settings, booking.id).raw_dir)
    feeds = []
    for feed in spec.feeds:
        running = {m.run for m in runs.get(feed.camera, []) if m.stopped_at is None}
        segments = list(feed.segments)
        last = recordings.segment_run_seq(segments[-1]) if segments else None
        if last is not None and last[0] in running:
            segments = segments[:-1]  # the camera is writing it
        feeds.append(replace(feed, segments=segments))
    return replace(spec, feeds=[f for f in feeds if f.segments])


class LiveBuilder:
    def __init__(
        self,
        settings: Settings,
        store: BookingStore,
        cache: MediaCache,
        storage: Storage,
        *,
        every_s: float = ROUND_S,
    ) -> None:
        self.settings, self.store, self.cache, self.storage = settings, store, cache, storage
        self.every_s = every_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-build", daemon=True)
        self._warned: set[str] = set()
        self._told: dict[str, dict[str, int]] = {}  # the detail last written, per booking

    def start(self) -> LiveBuilder:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.run_once()
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("live build round failed: %s", str(exc).splitlines()[0])
            if not busy:
                self._wake.wait(self.every_s)
                self._wake.clear()

    def run_once(self) -> bool:
        """One chunk per recorded booking and the parts it completed; True if any was made."""
        made = False
        bookings = self.store.list(state=[State.RECORDING, State.COMPLETED])
        for booking in bookings:
            if self._stop.is_set():
                break
            if booking.state == State.RECORDING:
                made |= self._build(booking)
            self._upload(booking)
        # What was said of bookings that are over is of no more use (the box runs for months).
        current = {b.id for b in bookings}
        self._told = {k: v for k, v in self._told.items() if k in current}
        self._warned = {w for w in self._warned if w.split(": ", 1)[0] in current}
        return made

    def _build(self, booking: Booking) -> bool:
        try:
            spec = live_plan(self.settings, booking, self.cache)
            if not spec.feeds or len(spec.feeds) < self.settings.cameras:
                return False  # not every camera has a closed segment yet
            plan = decide(spec)
            if not in_chunks(plan) or plan.layout != spec.layout:
                return False
            before = incremental.joined_size(spec.output)
            status = incremental.advance(plan, live=True, stop=self._stop, max_chunks=1)
        except builder.BuildError as exc:
            self._warn(booking.id, f"not built while recording yet: {exc}")
            return False
        if status is None:
            return False
        self._tell(booking.id, chunks_built=status.joined, chunks_total=status.total)
        return status.size > before

    def _upload(self, booking: Booking) -> None:
        if not isinstance(self.storage, GrowingUpload):
            return
        output = recordings.booking_files(self.settings, booking.id).processed_path
        stable = incremental.joined_size(output)
        if stable <= 0:
            return
        joined = incremental.joined_path(output)
        key = self.storage.key_for(booking.id, booking.start_time)
        try:
            with flocked(recordings.upload_lock(output), wait=False) as held:
                if not held:
                    return
                sent = self.storage.upload_growing(
                    joined,
                    key,
                    checkpoint=FileCheckpoint(recordings.upload_checkpoint(output)),
                    stable_below=stable,
                    stop=self._stop,
                )
        except (StorageError, OSError) as exc:
            # The upload job after the build sends whatever is not there yet.
            self._warn(booking.id, f"not uploaded while recording: {exc}")
            return
        self._tell(booking.id, bytes_uploaded=sent)

    def _tell(self, booking_id: str, **counts: int) -> None:
        """Progress detail written when it changed: the database is shared with the loop."""
        told = self._told.setdefault(booking_id, {})
        if all(told.get(k) == v for k, v in counts.items()):
            return
        self.store.set_progress_detail(booking_id, **counts)
        told.update(counts)

    def _warn(self, booking_id: str, message: str) -> None:
        line = f"{booking_id}: {message}"
        if line not in self._warned:  # once: it is retried every round
            self._warned.add(line)
            log.info("%s", line)
