"""The outbox: every change the booking system must hear of, queued in the change's own
transaction and delivered in order by the sync.

`outbox_row` builds the row a create or a transition adds; `OutboxQueue` is the part of
`BookingStore` the sync reads and acknowledges through.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from controller.db import Database, OutboxRow

log = logging.getLogger("ezrec.store")


def outbox_row(
    booking: dict[str, Any],
    kind: str,
    change: dict[str, Any] | None,
    now: datetime,
    values: dict[str, Any] | None = None,
) -> OutboxRow:
    """The row telling of `booking` (as `to_dict` gave it, updated by the columns `values`
    a transition writes)."""
    snapshot = dict(booking)
    for key, value in (values or {}).items():
        if key == "extra_json":
            snapshot["extra"] = json.loads(value)
        elif key in snapshot:
            snapshot[key] = value.isoformat() if isinstance(value, datetime) else value
    payload = {"booking": snapshot, "change": change, "at": now.isoformat()}
    return OutboxRow(
        booking_id=snapshot["id"],
        seq=int(snapshot.get("version") or 0),
        kind=kind,
        payload=json.dumps(payload, sort_keys=True, default=str),
        created_at=now,
        attempts=0,
    )


class OutboxQueue:
    db: Database
    clock: Callable[[], datetime]
    # Called after a commit that queued outbox rows (the sync pushes them now, not at its
    # next tick). Called from whichever thread wrote: keep them quick and thread-safe.
    on_outbox: list[Callable[[], None]]

    def _outbox_written(self) -> None:
        for listener in self.on_outbox:
            try:
                listener()
            except Exception:  # a listener's bug must not turn a committed change into an error
                log.exception("outbox listener failed")

    def outbox_pending(self, limit: int = 100) -> list[OutboxRow]:
        """Undelivered changes, oldest first: the order they must reach the booking system."""
        query = (
            select(OutboxRow)
            .where(OutboxRow.delivered_at.is_(None))
            .order_by(OutboxRow.id)
            .limit(limit)
        )
        with self.db.reader() as session:
            return list(session.scalars(query))

    def outbox_delivered(self, row_id: int) -> None:
        with self.db.session() as session:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row_id)
                .values(delivered_at=self.clock())
                .execution_options(synchronize_session=False)
            )

    def outbox_failed(self, row_id: int, error: str) -> None:
        with self.db.session() as session:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row_id)
                .values(attempts=OutboxRow.attempts + 1, last_error=error[:2000])
                .execution_options(synchronize_session=False)
            )
