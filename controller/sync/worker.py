"""The sync thread beside the supervisor: a round every few seconds, backing off in outages."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controller.config import Settings
from controller.dbhealth import describe, is_unavailable
from controller.drivers.supabase import is_configured
from controller.fsm.retry import RetryPolicy
from controller.sync.push import StatusFn
from controller.sync.round import SupabaseSync

if TYPE_CHECKING:
    from controller.fsm.store import BookingStore

log = logging.getLogger("ezrec.sync")

MAX_BACKOFF_S = 300.0


class SyncWorker(threading.Thread):
    """Runs `SupabaseSync.run_once` every `interval_s`, sooner when woken; never raises out.

    After a failed round it waits longer (the machine's `RetryPolicy`: doubling up to
    MAX_BACKOFF_S, with jitter), so a long outage costs a request every few minutes, and the
    outbox simply grows meanwhile. It retries without end: its policy's attempts do not apply.
    """

    def __init__(
        self,
        sync: SupabaseSync,
        interval_s: float,
        *,
        max_backoff_s: float = MAX_BACKOFF_S,
        rng: random.Random | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="supabase-sync", daemon=True)
        self.sync = sync
        # Called after a pull changed local bookings, so the supervisor looks at them now
        # instead of at the end of a long idle sleep.
        self.on_change = on_change
        self.interval_s = interval_s
        # The first failed round waits up to twice the interval, each further one doubles.
        self.backoff = RetryPolicy(base_s=2 * interval_s, max_s=max(max_backoff_s, interval_s))
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._rng = rng or random.Random()
        self.failures = 0
        self.rounds = 0
        self.last_report: dict[str, Any] | None = None

    def wake(self) -> None:
        """Push now (a booking changed) instead of at the next tick; not while backing off."""
        self._wake.set()

    def stop(self, timeout: float | None = 10.0) -> None:
        self.stop_event.set()
        self._wake.set()
        if self.is_alive():
            self.join(timeout)

    def delay(self) -> float:
        if self.failures == 0:
            return self.interval_s
        return self.backoff.delay(self.failures, self._rng)

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                report = self.sync.run_once(self.stop_event)
                self.last_report = report
                pulled = report.get("pull") or {}
                changed = any(pulled.get(k) for k in ("created", "rescheduled", "cancelled"))
                if changed and self.on_change is not None:
                    self.on_change()
                self.failures = self.failures + 1 if report["errors"] else 0
                if report["errors"]:
                    log.warning("sync round failed (%s in a row): %s",
                                self.failures, "; ".join(report["errors"]))
            except Exception as exc:  # a bug must not kill the thread: log it, try again later
                self.failures += 1
                if is_unavailable(exc):  # our own database is away: the loop says so already
                    log.warning("sync round skipped: %s", describe(exc))
                else:
                    log.exception("sync round crashed")
            self.rounds += 1
            self._sleep(started + self.delay())

    def _sleep(self, until: float) -> None:
        # A wake cuts a normal pause short, but not a back-off: during an outage every state
        # change would otherwise hammer the far side at once.
        while not self.stop_event.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return
            woken = self._wake.wait(left)
            self._wake.clear()
            if woken and self.failures == 0:
                return


def start_sync(
    settings: Settings,
    store: BookingStore,
    *,
    status_fn: StatusFn | None,
    interval_s: float | None = None,
    on_change: Callable[[], None] | None = None,
) -> SyncWorker | None:
    """Start the sync thread, or return None when Supabase is not configured.

    `status_fn` (the supervisor's: `lambda: controller.health.collect(settings, store)`) is
    what each round pushes as the box's health; with None no health is pushed.
    """
    if not is_configured(settings):
        return None
    sync = SupabaseSync(settings, store, status_fn=status_fn)
    worker = SyncWorker(sync, interval_s or settings.supabase_sync_s, on_change=on_change)
    worker.start()
    return worker
