"""Disk space for recordings: whether a booking's slot fits on the disk before its cameras start,
and what a full disk means while they run.

A full disk frees the database's reserve (drivers/disk_reserve) at once, so the failure can still
be written; the loop then stops the cameras (they cannot write anyway). Once there is room again
the reserve is restored first, then the bookings that stopped for the disk record on.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from controller.config import Settings
from controller.db import Booking
from controller.drivers.disk_reserve import DiskReserve
from controller.fsm import BookingStore, InvalidTrigger, StaleVersion
from controller.fsm.states import State

log = logging.getLogger("ezrec.supervisor")

# Free space below which the disk counts as out of room (the database's reserve is given back).
DISK_CRITICAL_MB = 1.0
# Recorded bytes are estimated from the bitrate; this much more is asked for.
HEADROOM = 1.2


def free_disk_mb(path: Path) -> float:
    return shutil.disk_usage(path).free / (1024 * 1024)


class DiskGuard:
    def __init__(
        self,
        settings: Settings,
        store: BookingStore,
        *,
        free_disk_mb: Callable[[Path], float],
        reserve: DiskReserve | None,
        error: Callable[[str], None],
        wake: Callable[[], object],
    ) -> None:
        self.settings, self.store = settings, store
        self.free_disk_mb, self.reserve = free_disk_mb, reserve
        self.error, self.wake = error, wake
        self.low = False  # the last check found less than EZREC_MIN_FREE_DISK_MB
        self.waiting = False  # something stopped for a full disk and waits for room

    def free_mb(self) -> float:
        return self.free_disk_mb(self.settings.data_dir)

    def problem(self, booking: Booking, now: datetime) -> str | None:
        """Why the rest of `booking`'s slot cannot be recorded on this disk, if it cannot."""
        if self.reserve is not None and not self.reserve.present and not self.reserve.restore():
            free = self.free_mb()
            return (f"not enough disk: {free:.0f} MB free, not even room for the database's "
                    f"reserve (EZREC_DISK_RESERVE_MB={self.reserve.size >> 20})")
        free = self.free_mb()
        seconds = (booking.end_time - max(now, booking.start_time)).total_seconds()
        s = self.settings
        needed = s.camera_bitrate_kbps * s.cameras * seconds / 8 / 1024 * HEADROOM
        if free - needed < s.min_free_disk_mb:
            return (
                f"not enough disk: {free:.0f} MB free, the slot needs ~{needed:.0f} MB and "
                f"EZREC_MIN_FREE_DISK_MB={s.min_free_disk_mb} must stay free"
            )
        return None

    def check(self, now: datetime) -> float | None:
        """The free MB if the disk is out of room (the caller stops the cameras), else None;
        with room again after a full disk, restores the reserve and resumes what waited."""
        free = self.free_mb()
        low = free < self.settings.min_free_disk_mb
        if low:
            # The reserve goes only when the disk is really out of room: given back earlier,
            # whatever is filling the disk would take it before the database could.
            if free < DISK_CRITICAL_MB:
                self.release_reserve(f"disk full ({free:.1f} MB free)")
            if not self.low:
                self.error(f"disk full ({free:.0f} MB free, "
                           f"EZREC_MIN_FREE_DISK_MB={self.settings.min_free_disk_mb})")
            self.waiting = True
        elif self.waiting and self._room_again(now):
            self.waiting = False
        self.low = low
        return free if low else None

    def release_reserve(self, why: str) -> None:
        if self.reserve is not None and self.reserve.release():
            self.error(f"{why}: released the database's reserve")

    def _room_again(self, now: datetime) -> bool:
        """Room again: restore the reserve, then record on for whoever stopped for the disk."""
        if self.reserve is not None and not self.reserve.restore():
            return False
        for booking in self.store.list(state=State.RECORDING_FAILED, start_from=now):
            if booking.start_time <= now and "disk" in (booking.last_error or ""):
                try:
                    self.store.fire(booking.id, "retry", detail="disk space is back: recording on")
                except (StaleVersion, InvalidTrigger) as exc:  # an operator was quicker
                    log.info("%s: %s", booking.id, exc)
        self.wake()
        return True
