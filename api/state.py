"""What the API process holds between requests: the context, a short status cache, the camera
driver for previews, and the lock that queues this process's database writes.

Endpoints reach it through `api_state(request)`; `create_app` builds one per app.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from controller.config import Settings
from controller.context import Context, open_cameras
from controller.drivers.cameras import CameraDriver
from controller.drivers.nudge import send_nudge
from controller.fsm import BookingStore
from controller.health import collect

log = logging.getLogger("ezrec.api")

T = TypeVar("T")

# GET /status and /metrics may be this old. The system snapshot inside status.collect blocks
# up to 0.1 s to measure CPU use, so computing it per request would cap /status at ~10 req/s;
# changes made through this API invalidate the cache at once.
STATUS_TTL_S = 1.0
# ffmpeg stills in flight at once; a Pi recording two cameras has little CPU to spare.
PREVIEW_SLOTS = 2


class StatusCache:
    """`collect()` at most once per TTL, however many requests ask meanwhile (single flight)."""

    def __init__(self, compute: Callable[[], dict[str, Any]], ttl_s: float = STATUS_TTL_S) -> None:
        self._compute = compute
        self.ttl_s = ttl_s
        self._value: dict[str, Any] | None = None
        self._body: bytes | None = None  # the value as JSON, rendered once per refresh
        self._at = 0.0
        self._generation = 0
        self._lock = threading.Lock()

    def fresh(self) -> dict[str, Any] | None:
        value = self._value
        if value is not None and time.monotonic() - self._at < self.ttl_s:
            return value
        return None

    def _refresh(self) -> dict[str, Any]:
        with self._lock:
            value = self.fresh()
            if value is not None:
                return value  # another request computed it while this one waited
            generation = self._generation
            value = self._compute()
            if generation == self._generation:  # no change landed meanwhile
                self._value, self._body, self._at = value, None, time.monotonic()
            return value

    async def get(self) -> dict[str, Any]:
        # The fast path stays on the event loop: no thread hop for a cached answer.
        return self.fresh() or await run_in_threadpool(self._refresh)

    async def body(self) -> bytes:
        """The report as JSON bytes: at hundreds of polls a second, rendering once matters."""
        value = await self.get()
        body = self._body
        if body is None or value is not self._value:
            body = render_json(value)
            if value is self._value:
                self._body = body
        return body

    def invalidate(self) -> None:
        self._generation += 1
        self._value = None
        self._body = None


def render_json(value: Any) -> bytes:
    # What Starlette's JSONResponse writes, so both routes answer byte-identical JSON.
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode()


class ApiState:
    def __init__(self, ctx: Context, *, owns_context: bool) -> None:
        self.ctx = ctx
        self.owns_context = owns_context
        self.status = StatusCache(lambda: collect(ctx.settings, ctx.store))
        # SQLite has one writer; its busy handler sleeps in steps of up to 100 ms, so writers
        # of this process queue on a lock instead (FIFO-ish, woken at once). Other processes
        # (the supervisor) still meet the busy timeout. PostgreSQL needs no such queue.
        self._write_lock = threading.Lock() if ctx.db.engine.dialect.name == "sqlite" else None
        self._driver: CameraDriver | None = None
        self._driver_lock = threading.Lock()
        self.preview_slots = threading.BoundedSemaphore(PREVIEW_SLOTS)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def store(self) -> BookingStore:
        return self.ctx.store

    def camera_driver(self) -> CameraDriver:
        with self._driver_lock:
            if self._driver is None:
                self._driver = open_cameras(self.settings)
            return self._driver

    def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._write_lock is None:
            return fn(*args, **kwargs)
        with self._write_lock:
            return fn(*args, **kwargs)

    async def change(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a booking change in a worker thread; then wake the supervisor so it acts now."""
        try:
            result = await run_in_threadpool(self._write, fn, *args, **kwargs)
        finally:
            # Even a refused change may have raced with one that landed: drop the cache anyway.
            self.status.invalidate()
        send_nudge(self.settings.data_dir)
        return result

    def close(self) -> None:
        with self._driver_lock:
            if self._driver is not None:
                try:
                    self._driver.close()
                except Exception:  # closing must not hide the reason we are shutting down
                    log.exception("camera driver did not close cleanly")
                self._driver = None
        if self.owns_context:
            self.ctx.close()


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state
