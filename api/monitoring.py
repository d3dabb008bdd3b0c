"""`/health`, `/status` and `/metrics`: the same status dictionary `ezrec status` prints.

`/metrics` is built per scrape from that dictionary plus two aggregate queries (transitions per
trigger with the last upload time, undelivered outbox rows), through a custom collector in a
fresh registry: nothing is kept in process-global counters, so a second API process or a
restart can never make the numbers disagree with the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.openapi import Answer, operation
from api.responses import Health, StatusReport
from api.state import api_state
from controller.db import OutboxRow, TransitionRow, utcnow
from controller.fsm import BookingStore
from controller.fsm.states import FAILED, State

MiB = 1024 * 1024


@operation(
    id="health", summary="Liveness (no database access, never needs a token)", public=True,
    answers={200: Answer("The process answers.", Health)},
)  # fmt: skip
async def health(request: Request) -> JSONResponse:
    """Liveness only: answers without touching the database."""
    return JSONResponse({"status": "ok"})


@operation(
    id="status", summary="Cameras, disk, bookings per state, supervisor heartbeat age",
    description="The same report as `ezrec status --json`; at most 1 s old.",
    answers={200: Answer("The status report.", StatusReport)},
)  # fmt: skip
async def status(request: Request) -> Response:
    return Response(await api_state(request).status.body(), media_type="application/json")


@dataclass(frozen=True)
class Tallies:
    transitions: dict[str, int]
    last_upload_at: datetime | None
    outbox_pending: int


def _utc(value: Any) -> datetime | None:
    # Aggregates may come back without the column's type processing (naive, or text on SQLite).
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def tallies(store: BookingStore) -> Tallies:
    with store.db.reader() as session:
        rows = session.execute(
            select(TransitionRow.trigger, func.count(), func.max(TransitionRow.at)).group_by(
                TransitionRow.trigger
            )
        ).all()
        pending = session.scalar(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.delivered_at.is_(None))
        )
    last_upload = next((_utc(at) for trigger, _, at in rows if trigger == "upload"), None)
    return Tallies({trigger: int(n) for trigger, n, _ in rows}, last_upload, int(pending or 0))


class StatusCollector(Collector):
    def __init__(self, report: dict[str, Any], counts: Tallies, now: datetime) -> None:
        self.report, self.counts, self.now = report, counts, now

    def collect(self) -> Iterator[Metric]:
        r, sup = self.report, self.report["supervisor"]
        queue: dict[str, int] = r["queue"]

        bookings = GaugeMetricFamily("ezrec_bookings", "Bookings per state.", labels=["state"])
        for state, n in queue.items():
            bookings.add_metric([state], n)
        yield bookings

        running = bool(sup.get("running"))
        yield GaugeMetricFamily(
            "ezrec_recording_in_progress",
            "Bookings being recorded now (from the supervisor heartbeat).",
            value=len(sup.get("recording") or []) if running else 0,
        )
        depth = GaugeMetricFamily(
            "ezrec_queue_depth", "Work waiting, per queue.", labels=["queue"]
        )
        depth.add_metric(["build"], queue.get(State.COMPLETED, 0))
        depth.add_metric(["upload"], queue.get(State.VIDEO_PROCESSED, 0))
        depth.add_metric(["retry"], sum(queue.get(s, 0) for s in FAILED))
        depth.add_metric(["booking_system"], self.counts.outbox_pending)
        yield depth

        jobs = GaugeMetricFamily(
            "ezrec_jobs_running", "Build/upload jobs running.", labels=["kind"]
        )
        kinds = list((sup.get("jobs") or {}).values()) if running else []
        for kind in sorted(set(kinds) | {"build", "upload"}):
            jobs.add_metric([kind], kinds.count(kind))
        yield jobs

        yield GaugeMetricFamily(
            "ezrec_supervisor_running", "1 when the supervisor heartbeat is fresh.",
            value=int(running),
        )
        if sup.get("heartbeat_age_s") is not None:
            yield GaugeMetricFamily(
                "ezrec_supervisor_heartbeat_age_seconds", "Age of the last supervisor heartbeat.",
                value=float(sup["heartbeat_age_s"]),
            )
        if self.counts.last_upload_at is not None:
            yield GaugeMetricFamily(
                "ezrec_last_upload_age_seconds", "Seconds since the last verified upload.",
                value=max(0.0, (self.now - self.counts.last_upload_at).total_seconds()),
            )

        disk = r["disk"]
        yield GaugeMetricFamily(
            "ezrec_disk_free_bytes", "Free space on the data dir's file system.",
            value=disk["free_mb"] * MiB,
        )
        yield GaugeMetricFamily(
            "ezrec_disk_total_bytes", "Size of the data dir's file system.",
            value=disk["total_mb"] * MiB,
        )
        yield GaugeMetricFamily(
            "ezrec_disk_ok", "1 while free space is above EZREC_MIN_FREE_DISK_MB.",
            value=int(bool(disk["ok"])),
        )

        cameras = GaugeMetricFamily(
            "ezrec_camera_up", "1 when the camera works (as the supervisor last saw it).",
            labels=["camera", "driver"],
        )
        for cam in r.get("cameras") or []:
            index = cam.get("index")
            label = "unknown" if index is None else str(index)
            cameras.add_metric([label, str(cam.get("driver") or "")], int(bool(cam.get("up"))))
        yield cameras

        transitions = CounterMetricFamily(
            "ezrec_transitions", "Booking transitions recorded, per trigger.", labels=["trigger"]
        )
        for trigger, n in sorted(self.counts.transitions.items()):
            transitions.add_metric([trigger], n)
        yield transitions

        system = r.get("system") or {}
        for key, name, doc in (
            ("cpu_percent", "ezrec_cpu_percent", "CPU use of the whole box, percent."),
            ("memory_percent", "ezrec_memory_percent", "Memory in use, percent."),
            ("temperature_c", "ezrec_temperature_celsius", "CPU/SoC temperature."),
            ("load_1m", "ezrec_load1", "1-minute load average."),
        ):
            if system.get(key) is not None:
                yield GaugeMetricFamily(name, doc, value=float(system[key]))


@operation(
    id="metrics", summary="Prometheus metrics (text exposition format)",
    answers={200: Answer("Metrics.", media_type="text/plain")},
)  # fmt: skip
async def metrics(request: Request) -> Response:
    state = api_state(request)
    report = await state.status.get()
    counts = await run_in_threadpool(tallies, state.store)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(report, counts, utcnow()))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
