"""The box's health in one dictionary (supervisor heartbeat, cameras, disk, queue per state,
what needs an operator, last errors, system metrics), shared by `ezrec status`, `GET /status`,
`/metrics`, the staff page and the booking-system push, so that they never tell different
stories."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.config import Settings
from controller.db import utcnow
from controller.drivers import system_metrics
from controller.drivers.disk_reserve import DiskReserve
from controller.fsm import BookingStore
from controller.fsm.states import FAILED, WORKING

# The supervisor writes its heartbeat every pass and at least every minute when idle.
HEARTBEAT_STALE_S = 180.0


def collect(settings: Settings, store: BookingStore, now: datetime | None = None) -> dict[str, Any]:
    """The health report as of `now`: one read of the heartbeat, the queue and the metrics."""
    now = now or utcnow()
    beat = store.kv_get("supervisor")
    supervisor: dict[str, Any] = {"running": False, "heartbeat_age_s": None}
    last_errors: list[str] = []
    cameras: list[Any] = []
    if beat is not None:
        value, at = beat
        age = (now - at).total_seconds()
        supervisor = {
            "running": age < HEARTBEAT_STALE_S,
            "heartbeat_age_s": round(age, 1),
            "status": value.get("status"),
            "recording": value.get("recording", []),
            "jobs": value.get("jobs", {}),
            "camera_driver": value.get("camera_driver"),
        }
        last_errors = list(value.get("last_errors", []))
        cameras = list(value.get("cameras", []))
    failed = store.list(state=sorted(FAILED), limit=20)
    for booking in failed:
        if booking.last_error:
            last_errors.append(f"{booking.id} ({booking.state}): {booking.last_error}")
    # Failed with no retry left or none possible: only an operator moves these on.
    stuck = [
        {"id": b.id, "state": b.state, "error": b.last_error or "",
         "fix": f"fix the cause, then `ezrec retry {b.id}`"}
        for b in failed if b.next_attempt_at is None
    ]
    busy = store.list(state=sorted(WORKING), limit=50)
    snapshot = system_metrics.snapshot(settings.data_dir).as_dict()
    free_mb = float(snapshot.get("disk_free_mb", 0.0))
    # Given back to the database when the disk filled, and no room to make it again: full.
    reserve_ok = DiskReserve(settings.data_dir, settings.disk_reserve_mb).present or (
        free_mb >= settings.min_free_disk_mb + settings.disk_reserve_mb)
    return {
        "device_id": settings.device_id,
        "time": now.isoformat(),
        "supervisor": supervisor,
        "cameras": cameras,
        "disk": {
            "free_mb": round(free_mb, 1),
            "total_mb": round(float(snapshot.get("disk_total_mb", 0.0)), 1),
            "min_free_mb": settings.min_free_disk_mb,
            "reserve_ok": reserve_ok,
            "ok": free_mb >= settings.min_free_disk_mb and reserve_ok,
        },
        "queue": store.counts(),
        "in_progress": [
            {
                "id": b.id,
                "state": b.state,
                "stage": b.progress_stage,
                "progress": b.progress,
                "detail": b.progress_detail,
            }
            for b in busy
        ],
        "needs_operator": stuck,
        "last_errors": last_errors[-20:],
        "system": snapshot,
    }
