"""The video built while its slot is recorded, and its upload started: a sidecar of the loop.

Twice a second, for each booking being recorded, the build thread looks whether a camera has
closed a segment; when one has, the closed segments are planned like a finished recording
(`video_jobs.build_spec`, the open segment of each running camera left out) and the next chunk
whose segments are all there is encoded and joined (`builder.incremental.advance`, at the
build's low CPU priority: the cameras always win). The upload thread, woken by every chunk,
sends every whole part of the joined file where the storage can take a file that still grows
(`GrowingUpload`: S3). They are two threads so that a slow uplink never delays a chunk: on one
thread, every 5 MiB part at 8 Mbit/s held the next chunk back by 6 s, and the build fell
behind the slot. When the slot ends, the build job finds only the last chunk to make, and the
upload job only the last part to send.

Nothing here changes a booking's state: if this falls behind (a Pi 5 busy with two camera
encoders) or fails, the jobs after the slot do what is left, exactly as they would have done
it all. Only one chunk is made per booking and round, so the build job waits for the live
side at most one chunk (the chunk folder's lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

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

BUILD_EVERY_S = 0.5  # how often the closed segments are looked at (cheap when none is new)
IDLE_EVERY_S = 2.0  # how often the build thread looks for a booking recording, when none is
UPLOAD_EVERY_S = 2.0  # how often the joined files are looked at besides a chunk's news


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


def raw_fingerprint(raw_dir: Path) -> tuple[tuple[str, int], ...]:
    """What changes when a camera closes a segment or its run stops: the names in the raw
    folder, and the size of each run's manifest (not of the open segment, which grows)."""
    found: list[tuple[str, int]] = []
    with contextlib.suppress(OSError), os.scandir(raw_dir) as cams:
        for cam in cams:
            if not cam.is_dir():
                continue
            with os.scandir(cam.path) as entries:
                for entry in entries:
                    size = entry.stat().st_size if entry.name.endswith(".json") else 0
                    found.append((f"{cam.name}/{entry.name}", size))
    return tuple(sorted(found))


class _Loop:
    """A daemon thread calling `round` every `every_s()` seconds, at once again when it did
    something, sooner when woken."""

    def __init__(self, name: str, round_fn: Callable[[], bool], every_s: Callable[[], float],
                 stop: threading.Event) -> None:  # fmt: skip
        self.round, self.every_s, self.stop_event = round_fn, every_s, stop
        self.woken = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            busy = False
            try:
                busy = self.round()
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("%s round failed: %s", self.thread.name, str(exc).splitlines()[0])
            if not busy:
                self.woken.wait(self.every_s())
                self.woken.clear()


class LiveBuilder:
    """Two threads: one makes the chunks, one sends the parts, so that a slow uplink never
    holds back the build (nor a busy CPU the upload)."""

    def __init__(
        self,
        settings: Settings,
        store: BookingStore,
        cache: MediaCache,
        storage: Storage,
        *,
        build_every_s: float = BUILD_EVERY_S,
        upload_every_s: float = UPLOAD_EVERY_S,
    ) -> None:
        self.settings, self.store, self.cache, self.storage = settings, store, cache, storage
        self._stop = threading.Event()
        # Twice a second only while a booking is recorded: an idle box asks its database
        # every IDLE_EVERY_S (0.43 % of a core idle at 0.5 s, in bench/latency.py).
        self._recording = False
        self._builds = _Loop(
            "live-build", self.build_round,
            lambda: build_every_s if self._recording else max(build_every_s, IDLE_EVERY_S),
            self._stop,
        )  # fmt: skip
        self._uploads = _Loop("live-upload", self.upload_round, lambda: upload_every_s,
                              self._stop)  # fmt: skip
        self._lock = threading.Lock()  # _warned and _told are shared by the two threads
        self._warned: set[str] = set()
        self._told: dict[str, dict[str, int]] = {}  # the detail last written, per booking
        # Per booking: the raw folder when a build round last found nothing to make (the
        # build thread's), and the joined bytes an upload last looked at (the upload
        # thread's): a round with neither changed does nothing.
        self._idle_at: dict[str, tuple[tuple[str, int], ...]] = {}
        self._offered: dict[str, int] = {}

    def start(self) -> LiveBuilder:
        self._builds.thread.start()
        self._uploads.thread.start()
        return self

    def wake(self) -> None:
        self._builds.woken.set()
        self._uploads.woken.set()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        self.wake()
        for loop in (self._builds, self._uploads):
            if loop.thread.is_alive():
                loop.thread.join(timeout)

    def build_round(self) -> bool:
        """One chunk per booking being recorded; True if any was made."""
        made = False
        bookings = self.store.list(state=[State.RECORDING])
        self._recording = bool(bookings)
        for booking in bookings:
            if self._stop.is_set():
                break
            made |= self._build(booking)
        current = {b.id for b in bookings}
        self._idle_at = {k: v for k, v in self._idle_at.items() if k in current}
        if made:
            self._uploads.woken.set()
        return made

    def upload_round(self) -> bool:
        """The whole parts of every recorded booking's joined file that are not sent yet."""
        bookings = self.store.list(state=[State.RECORDING, State.COMPLETED])
        for booking in bookings:
            if self._stop.is_set():
                break
            self._upload(booking)
        # What was said of bookings that are over is of no more use (the box runs for months).
        current = {b.id for b in bookings}
        with self._lock:
            self._told = {k: v for k, v in self._told.items() if k in current}
            self._warned = {w for w in self._warned if w.split(": ", 1)[0] in current}
        self._offered = {k: v for k, v in self._offered.items() if k in current}
        return False

    def _build(self, booking: Booking) -> bool:
        raw_dir = recordings.booking_files(self.settings, booking.id).raw_dir
        seen = raw_fingerprint(raw_dir)
        if self._idle_at.get(booking.id) == seen:
            return False  # no segment closed since a round that found nothing to make
        try:
            spec = live_plan(self.settings, booking, self.cache)
            if not spec.feeds or len(spec.feeds) < self.settings.cameras:
                self._idle_at[booking.id] = seen
                return False  # not every camera has a closed segment yet
            plan = decide(spec)
            if not in_chunks(plan) or plan.layout != spec.layout:
                self._idle_at[booking.id] = seen
                return False
            before = incremental.joined_size(spec.output)
            status = incremental.advance(plan, live=True, stop=self._stop, max_chunks=1)
        except builder.BuildError as exc:
            self._warn(booking.id, f"not built while recording yet: {exc}")
            if str(exc) != "stopped":
                self._idle_at[booking.id] = seen  # tried again once a segment closes
            return False
        if status is None:
            return False  # the build job holds it: look again next round
        self._tell(booking.id, chunks_built=status.joined, chunks_total=status.total)
        made = status.size > before
        if not made:
            self._idle_at[booking.id] = seen
        return made

    def _upload(self, booking: Booking) -> None:
        if not isinstance(self.storage, GrowingUpload):
            return
        output = recordings.booking_files(self.settings, booking.id).processed_path
        stable = incremental.joined_size(output)
        if stable <= 0 or self._offered.get(booking.id) == stable:
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
        self._offered[booking.id] = stable
        self._tell(booking.id, bytes_uploaded=sent)

    def _tell(self, booking_id: str, **counts: int) -> None:
        """Progress detail written when it changed: the database is shared with the loop."""
        with self._lock:
            told = dict(self._told.get(booking_id, {}))
        if all(told.get(k) == v for k, v in counts.items()):
            return
        self.store.set_progress_detail(booking_id, **counts)
        with self._lock:
            self._told.setdefault(booking_id, {}).update(counts)

    def _warn(self, booking_id: str, message: str) -> None:
        line = f"{booking_id}: {message}"
        with self._lock:
            new = line not in self._warned  # once: it is retried every round
            self._warned.add(line)
        if new:
            log.info("%s", line)
