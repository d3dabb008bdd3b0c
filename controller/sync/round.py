"""One round of the booking-system sync: pull, push, push status (`SupabaseSync`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from controller.config import Settings
from controller.drivers.supabase import BookingSystem, error_text, make_client
from controller.sync.pull import Pull, PullResult
from controller.sync.push import PUSH_BATCH, PushResult, StatusFn, deliver, push, push_status

if TYPE_CHECKING:
    from supabase import Client

    from controller.fsm.store import BookingStore

log = logging.getLogger("ezrec.sync")


class SupabaseSync:
    """One round of pull, push and status push; `SyncWorker` repeats it in a thread."""

    def __init__(
        self,
        settings: Settings,
        store: BookingStore,
        *,
        client: Client | None = None,
        status_fn: StatusFn | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.remote = BookingSystem(
            client or make_client(settings), media_bucket=settings.supabase_media_bucket
        )
        self.status_fn = status_fn
        self.clock = clock or (lambda: datetime.now(UTC))
        self.device_id = settings.device_id
        self._pull = Pull(self.remote, store, self.device_id, lambda: self.clock())

    def pull(self) -> PullResult:
        """Bring new, rescheduled and cancelled bookings into the local state machine."""
        return self._pull()

    def push(self, stop: threading.Event | None = None) -> PushResult:
        """Deliver pending outbox rows in order; stop at the first failure."""
        return push(self.remote, self.store, stop)

    def deliver(self, payload: dict[str, Any]) -> None:
        """Apply one outbox payload to the booking system; idempotent, raises on failure."""
        deliver(self.remote, payload)

    def push_status(self) -> None:
        if self.status_fn is None:
            raise RuntimeError("no status source given")
        push_status(self.remote, self.device_id, self.status_fn(), self.clock())

    def run_once(self, stop: threading.Event | None = None) -> dict[str, Any]:
        """Pull, push, push status; each step on its own so that one failing does not stop
        the others. Returns what happened, also kept in the store's `sync` key."""
        report: dict[str, Any] = {"at": self.clock().isoformat(), "errors": []}
        try:
            pulled = self.pull()
            report["pull"] = {
                "seen": pulled.seen,
                "created": pulled.created,
                "rescheduled": pulled.rescheduled,
                "cancelled": pulled.cancelled,
                "refused": pulled.refused,
                "notes": pulled.notes,
            }
        except Exception as exc:
            report["errors"].append(f"pull: {error_text(exc)}")
        pushed = self.push(stop)
        report["push"] = {"delivered": pushed.delivered, "set_aside": pushed.set_aside}
        if pushed.error:
            report["errors"].append(f"push: {pushed.error}")
        # Counted up to one batch: "100+" is all a person needs to know.
        report["pending"] = len(self.store.outbox_pending(PUSH_BATCH + 1))
        if self.status_fn is not None:
            try:
                self.push_status()
                report["status_pushed"] = True
            except Exception as exc:
                report["status_pushed"] = False
                report["errors"].append(f"status: {error_text(exc)}")
        try:
            self.store.kv_set("sync", report)
        except Exception as exc:  # the database is busy: the next round writes it again
            log.debug("could not record the sync report: %s", exc)
        return report
