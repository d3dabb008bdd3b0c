"""Local files go once they are safely stored: a booking's raw recording, finished video and
clips are deleted EZREC_RETENTION_GRACE_H after an upload whose every object was verified
(never before, never of a booking a running camera still writes into). The same round aborts
multipart uploads nobody will finish."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from controller import clips, recordings
from controller.config import Settings
from controller.db import Booking
from controller.drivers.storage import Storage
from controller.fsm import BookingStore

log = logging.getLogger("ezrec.supervisor")

RETENTION_EVERY_S = 300.0
# A multipart upload untouched this long belongs to nobody any more (a box that was off longer
# just starts that upload over).
STALE_UPLOAD_S = 7 * 24 * 3600.0


class Retention:
    def __init__(
        self,
        settings: Settings,
        store: BookingStore,
        storage: Storage,
        error: Callable[[str], None],
        wake: Callable[[], object],
    ) -> None:
        self.settings, self.store, self.storage = settings, store, storage
        self.error, self.wake = error, wake
        self.last_run = 0.0  # monotonic

    def run(self, now: datetime, in_use: set[str]) -> None:
        """One round, at most every RETENTION_EVERY_S; `in_use`: raw dirs cameras write into."""
        if time.monotonic() - self.last_run < RETENTION_EVERY_S:
            return
        self.last_run = time.monotonic()
        try:
            aborted = self.storage.abort_stale(STALE_UPLOAD_S)
            if aborted:
                log.info("aborted %d abandoned multipart upload(s)", aborted)
        except Exception as exc:  # storage unreachable: try again next round
            log.info("abort_stale: %s", exc)
        grace = timedelta(hours=self.settings.retention_grace_h)
        for booking in self.store.uploaded_with_files():
            if booking.id in in_use:
                continue  # a camera handed over from it still writes into its folder
            stored = _verified_at(booking)
            if stored is None or stored + grace > now:
                continue
            self._remove(booking)

    def _remove(self, booking: Booking) -> None:
        files = recordings.booking_files(self.settings, booking.id)
        shutil.rmtree(files.raw_dir, ignore_errors=True)
        outputs = recordings.outputs_of(booking.extra.get("outputs"), booking.processed_path)
        for path in outputs + clips.clip_files(booking):
            path.unlink(missing_ok=True)
            recordings.remove_working_files(path)
        detail = (f"local files removed {self.settings.retention_grace_h:g} h after the "
                  "verified upload")
        try:
            self.store.fire(booking.id, "note", detail=detail, changes={"raw_dir": None})
        except Exception as exc:  # the booking changed meanwhile; never kill the loop
            self.error(f"{booking.id}: could not note: {exc}")
        self.wake()


def _verified_at(booking: Booking) -> datetime | None:
    """When the last object of the booking's upload was stored, if every one was verified."""
    uploaded = booking.extra.get("uploaded") or []
    times = [datetime.fromisoformat(o["uploaded_at"]) for o in uploaded]
    if not times or not all(o.get("sha256") for o in uploaded):
        return None  # never delete what was not verified
    return max(times)
