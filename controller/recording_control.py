"""The cameras for a booking: started at its pre-roll, watched while it records, stopped (or
handed over running to the next booking on exclusive cameras) at its end, and the booking
finalised from the footage on disk.

The loop calls in here for bookings in `confirmed`, `recording` and `recording_failed`, and once
a pass for the recordings in progress (`watch`, then `drain`). A booking's files come from
`recordings.booking_files`; whether its slot fits on the disk from `DiskGuard`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controller import heartbeat, recordings
from controller.config import Settings
from controller.db import Booking
from controller.dbhealth import is_unavailable
from controller.disk_guard import DiskGuard
from controller.drivers.cameras import CameraDriver, CameraError, RecordingHandle
from controller.fsm import BookingStore, InvalidTrigger, StaleVersion
from controller.fsm.states import State
from controller.heartbeat import Heartbeat

log = logging.getLogger("ezrec.supervisor")

# What a write attempted on a booking read a moment ago can meet when an operator (API, CLI)
# changed it meanwhile: a newer version, or a state the trigger no longer applies to.
CHANGED_MEANWHILE = (StaleVersion, InvalidTrigger)

# How long after a booking's end (beyond the pre-roll) the next one on exclusive cameras may
# start and still take them over running: stopping and reopening a real camera takes seconds.
HANDOVER_GAP_S = 5.0
# After a hand-over, how much longer than a segment the encoder may take to write past the end.
DRAIN_MARGIN_S = 5.0


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
class Draining:
    """Handed over at its end, waiting for the encoder to write past it."""

    holder: str  # the booking now holding the cameras
    end: datetime
    deadline: float  # monotonic


class RecordingControl:
    def __init__(
        self,
        settings: Settings,
        store: BookingStore,
        cameras: CameraDriver,
        disk: DiskGuard,
        health: Heartbeat,
        wake: Callable[[], object],
    ) -> None:
        self.settings, self.store, self.cameras = settings, store, cameras
        self.disk, self.health, self.wake = disk, health, wake
        self.active: dict[str, Active] = {}
        self.draining: dict[str, Draining] = {}

    def busy(self, booking_id: str) -> bool:
        return booking_id in self.active or booking_id in self.draining

    def in_use(self) -> set[str]:
        """The bookings whose raw dir a running camera still writes into."""
        return {active.origin for active in self.active.values()}

    # -- per state -------------------------------------------------------------------------

    def confirmed(self, booking: Booking, now: datetime) -> None:
        """Its pre-roll has come: start the cameras (or settle a slot that passed meanwhile)."""
        files = recordings.booking_files(self.settings, booking.id)
        if booking.end_time <= now:
            if files.has_footage(_slot(booking)):
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
            self.fail(booking.id, problem)
            return
        lead = (booking.start_time - now).total_seconds()
        detail = f"cameras starting {lead:.1f} s before the slot" if lead > 0 else None
        self.store.fire(booking.id, "start", detail=detail, changes={"raw_dir": str(files.raw_dir)})
        self._start(booking.id, booking.end_time, resumed=False)

    def recording(self, booking: Booking, now: datetime) -> None:
        """`recording` with nobody recording it: we restarted, or every camera failed."""
        if self.busy(booking.id):
            return  # watch() stops it at its end; drain() finishes a handed-over one
        if booking.end_time > now:
            # Record on into a new run; earlier runs stay on disk.
            problem = self.disk.problem(booking, now)
            if problem:
                self.fail(booking.id, problem)
                return
            self._start(booking.id, booking.end_time, resumed=True)
        else:
            self._finalise(booking.id, "finalised from the segments on disk after a restart")

    def settle_failed(self, booking: Booking) -> None:
        """The slot of a failed recording is over: deliver what it recorded, or call it missed."""
        files = recordings.booking_files(self.settings, booking.id)
        files.relay_all()
        why = booking.last_error or "the recording failed"
        if files.has_footage(_slot(booking)):
            self.store.fire(
                booking.id, "finish", changes={"raw_dir": str(files.raw_dir)},
                detail=f"partial recording delivered: {why}; finalised from the footage on disk",
            )
            self.wake()
        else:
            detail = f"the slot ended with nothing recorded: {why}"
            self.store.fire(booking.id, "miss", detail=detail)

    def fail(self, booking_id: str, reason: str) -> None:
        self.health.error(f"{booking_id}: {reason}")
        # A recording retry after the slot is pointless, but one AT its end finalises what
        # was recorded, so the backoff is capped at the slot's end.
        end = self.store.get(booking_id).end_time
        self.store.fire(booking_id, "fail", error=reason, retry_by=end)
        self.wake()  # its retry may fall due before what this pass planned to wake for

    def _start(self, booking_id: str, end_time: datetime, *, resumed: bool) -> None:
        folder = recordings.booking_files(self.settings, booking_id).raw_dir
        try:
            handle = self.cameras.start(booking_id, folder)
        except Exception as exc:
            self.fail(booking_id, f"no camera could start: {exc}")
            return
        self.active[booking_id] = Active(booking_id, handle, end_time, origin=booking_id)
        cams = ", ".join(str(c) for c in handle.cameras)
        what = "resumed recording" if resumed else "recording"
        self.store.note(booking_id, f"{what} with camera(s) {cams} (run {handle.run})")
        for line in handle.notes:
            self.store.note(booking_id, line)

    def _finalise(self, booking_id: str, detail: str) -> None:
        files = recordings.booking_files(self.settings, booking_id)
        # Links a hand-over had not made yet when we were killed are made now.
        files.relay_all()
        # Footage of the pre-roll only (killed before the slot began) is no recording of it.
        if files.has_footage(_slot(self.store.get(booking_id))):
            self.store.fire(booking_id, "finish", detail=detail,
                            changes={"raw_dir": str(files.raw_dir)})  # fmt: skip
            self.wake()
        else:
            self.fail(booking_id, "nothing was recorded")

    def _preflight(self, booking: Booking, now: datetime) -> str | None:
        problem = self.disk.problem(booking, now)
        if problem:
            return problem
        try:
            cameras = self.cameras.discover()
        except Exception as exc:
            return f"camera discovery failed: {exc}"
        if not any(c.up for c in cameras):
            return "no camera present"
        return None

    # -- recordings in progress ------------------------------------------------------------

    def watch(self, now: datetime) -> None:
        """Camera events to the history, stalls to the health, and every slot ended on time."""
        for booking_id, active in list(self.active.items()):
            try:
                self._watch(booking_id, active, now)
            except CHANGED_MEANWHILE as exc:
                # An operator changed it right now: the next pass sees the new state.
                log.info("%s: %s", booking_id, exc)

    def _watch(self, booking_id: str, active: Active, now: datetime) -> None:
        state: str | None
        try:
            state = self.store.get(booking_id).state
        except Exception as exc:
            # The database gone is not the booking changed: record on, the files are on disk.
            state = State.RECORDING if is_unavailable(exc) else None
        if state != State.RECORDING:
            # Cancelled (or changed) while recording: close the files, keep them.
            self.stop(active, f"recording stopped: booking is now {state}")
            return
        for event in self.cameras.poll(active.handle):
            full = f" (disk full: {self.disk.free_mb():.0f} MB free)" if self.disk.low else ""
            self.store.note(booking_id, f"camera {event.camera} {event.kind}: {event.detail}{full}")
        written = self.cameras.bytes_written(active.handle)
        if written > active.bytes:
            active.bytes, active.grew_at = written, time.monotonic()
        elif time.monotonic() - active.grew_at > heartbeat.STALL_S:
            self.health.stuck()
        if active.end_time <= now:
            self.end_recording(active, now)
        elif not active.handle.cameras:
            self.stop(active, None)
            why = " (the disk is full)" if self.disk.low else ""
            self.fail(booking_id, f"every camera stopped delivering{why}")

    def end_recording(self, active: Active, now: datetime) -> None:
        """The slot is over: stop the cameras, or hand them running to the next booking."""
        following = None
        if self.cameras.exclusive:
            try:
                following = self._following(active, now)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # The database is away: no hand-over, but the slot still ends now.
        if following is not None and self._hand_over(active, following):
            # The cameras go on: the end of this slot is in a segment still being written.
            # Built now, it would miss the frames the encoder has not written yet.
            deadline = time.monotonic() + self.settings.segment_s + DRAIN_MARGIN_S
            self.draining[active.booking_id] = Draining(following.id, active.end_time, deadline)
            return
        self.stop(active, None)
        self._finalise(active.booking_id, "slot ended")

    def drain(self) -> None:
        """Finish the bookings handed over once their last frame is on disk."""
        for booking_id, draining in list(self.draining.items()):
            active = self.active.get(draining.holder)
            written = self.cameras.written_until(active.handle) if active else None
            done = written is not None and written >= draining.end.timestamp()
            if done or active is None or time.monotonic() > draining.deadline:
                del self.draining[booking_id]
                try:
                    self._finalise(booking_id, "slot ended")
                except CHANGED_MEANWHILE as exc:
                    log.info("%s: %s", booking_id, exc)

    def _following(self, active: Active, now: datetime) -> Booking | None:
        """The booking that would open these cameras before they could be free again."""
        soon = active.end_time + timedelta(seconds=self.settings.preroll_s + HANDOVER_GAP_S)
        for booking in self.store.list(state=State.CONFIRMED, start_from=now, start_to=soon):
            if booking.id != active.booking_id and self._preflight(booking, now) is None:
                return booking
        return None

    def _hand_over(self, active: Active, following: Booking) -> bool:
        """Keep the cameras running into `following`'s recording: no frame lost between them."""
        folder = recordings.booking_files(self.settings, following.id).raw_dir
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

    def stop(self, active: Active, note: str | None) -> None:
        self.active.pop(active.booking_id, None)
        try:
            result = self.cameras.stop(active.handle)
            for line in result.notes:
                self.store.note(active.booking_id, line)
        except Exception as exc:
            self.health.error(f"{active.booking_id}: stopping cameras failed: {exc}")
        if note:
            self.store.note(active.booking_id, note)

    def stop_for_full_disk(self, free_mb: float) -> None:
        """They cannot write anyway; stopped now, their last segments close cleanly and the
        reserve's room goes to the database, not to them."""
        for active in list(self.active.values()):
            self.stop(active, None)
            try:
                self.fail(
                    active.booking_id, f"the disk is full ({free_mb:.0f} MB free): cameras "
                    "stopped; recording resumes when there is room again",
                )
            except CHANGED_MEANWHILE as exc:
                log.info("%s: %s", active.booking_id, exc)

    def stop_all(self, note: str) -> None:
        for active in list(self.active.values()):
            try:
                self.stop(active, note)
            except Exception as exc:  # the note, with the database gone: stop the others
                log.warning("%s: %s", active.booking_id, exc)


def _slot(booking: Booking) -> tuple[datetime, datetime]:
    return booking.start_time, booking.end_time
