"""Up: the local outbox (every booking change, in order) and the box's health.

The outbox is written in the same transaction as each change; `Push` drains it in order, at
least once. Every write is idempotent on the far side (an update that sets the same values,
an upsert on a unique column), so a redelivered row is harmless.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from controller.drivers.supabase import (
    BookingSystem,
    booking_patch,
    error_text,
    is_rejected_row,
    status_row,
    video_row,
)
from controller.fsm.states import State

if TYPE_CHECKING:
    from controller.fsm.store import BookingStore

log = logging.getLogger("ezrec.sync")

PUSH_BATCH = 100
# A row the booking system rejects for its content (a constraint or a bad value: SQLSTATE
# classes 22 and 23) would block the ordered queue forever; after this many tries it is set
# aside (kept, marked delivered with its error) so that later changes still get through.
# Anything else (network, 5xx, auth, a missing table) is retried without end.
GIVE_UP_AFTER = 5

StatusFn = Callable[[], dict[str, Any]]


@dataclass
class PushResult:
    delivered: int = 0
    set_aside: int = 0
    error: str | None = None  # the first failure, where delivery stopped


def push(
    remote: BookingSystem, store: BookingStore, stop: threading.Event | None = None
) -> PushResult:
    """Deliver pending outbox rows in order; stop at the first failure."""
    result = PushResult()
    while stop is None or not stop.is_set():
        rows = store.outbox_pending(PUSH_BATCH)
        for row in rows:
            if stop is not None and stop.is_set():
                return result
            try:
                deliver(remote, row.data)
            except Exception as exc:
                text = error_text(exc)
                store.outbox_failed(row.id, text)
                if is_rejected_row(exc) and row.attempts + 1 >= GIVE_UP_AFTER:
                    # Set aside, never silently: the row keeps its error and attempts.
                    store.outbox_delivered(row.id)
                    result.set_aside += 1
                    log.error("outbox row %s set aside after %s tries: %s",
                              row.id, row.attempts + 1, text)
                    continue
                result.error = text
                return result
            store.outbox_delivered(row.id)
            result.delivered += 1
        if len(rows) < PUSH_BATCH:
            break
    return result


def deliver(remote: BookingSystem, payload: dict[str, Any]) -> None:
    """Apply one outbox payload to the booking system; idempotent, raises on failure."""
    booking = payload["booking"]
    change = payload.get("change") or {}
    uploaded = State.VIDEO_UPLOADED
    uploaded_now = change.get("to") == uploaded and change.get("from") != uploaded
    # A pushed note on an uploaded booking: its share links were made, renewed or revoked.
    share_news = change.get("trigger") == "note" and booking["state"] == uploaded
    if uploaded_now or share_news:
        # The video row goes first: whoever sees `video_uploaded` up there must find it.
        row = video_row(booking)
        if row is not None:
            remote.upsert_video(row)
    remote.update_booking(
        booking["id"],
        booking_patch(booking, with_times=change.get("trigger") == "reschedule"),
        # A cancellation made up there since our last pull must not be overwritten by older
        # news from here: the next pull brings it down (or reports why it cannot).
        unless_cancelled=booking["state"] != State.CANCELLED,
    )


def push_status(
    remote: BookingSystem, device_id: str, status: dict[str, Any], now: datetime
) -> None:
    remote.upsert_status(status_row(device_id, status, now.astimezone(UTC).isoformat()))
