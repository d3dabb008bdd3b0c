"""The loop's health as the outside sees it: the status line and `WATCHDOG=1` for systemd, the
`supervisor` row that `ezrec status` and the API read, and the last errors shown there.

A pass of the loop is healthy unless something in it found the box stuck: segments that stopped
growing, an encode that stopped moving (both longer than STALL_S), or a heartbeat the database
did not commit. An unhealthy pass does not pet the watchdog, so systemd restarts the service.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from controller.drivers.cameras import CameraDriver, CameraInfo
from controller.fsm import BookingStore

log = logging.getLogger("ezrec.supervisor")

# How long a recording's segments or a build's progress may stand still before the loop
# counts itself stuck (a build gets four times as long: an encode reports in bursts).
STALL_S = 30.0
CAMERAS_EVERY_S = 60.0
KEPT_ERRORS = 10


class Notifier(Protocol):
    """What systemd hears (drivers/watchdog.SdNotifier; a list in the tests). Whether a
    message arrived is not the loop's business: results are ignored."""

    def ready(self) -> object: ...
    def status(self, text: str) -> object: ...
    def stopping(self) -> object: ...
    def watchdog(self) -> object: ...
    def watchdog_interval(self) -> float | None: ...


class Heartbeat:
    def __init__(
        self,
        store: BookingStore,
        cameras: CameraDriver,
        notifier: Notifier,
        clock: Callable[[], datetime],
    ) -> None:
        self.store, self.cameras, self.notifier, self.clock = store, cameras, notifier, clock
        self.healthy = True
        self.status_line = "starting"
        self.last_errors: list[str] = []
        self._cameras: list[dict[str, Any]] = []
        self._cameras_at = -1e9

    def begin_pass(self) -> None:
        self.healthy = True

    def stuck(self) -> None:
        """Something in this pass is stuck: no pet, so systemd restarts the service."""
        self.healthy = False

    def error(self, line: str) -> None:
        log.warning("%s", line)
        stamp = self.clock().strftime("%Y-%m-%d %H:%M:%S")
        self.last_errors = [*self.last_errors[-(KEPT_ERRORS - 1) :], f"{stamp} {line}"]

    def write(self, now: datetime, recording: list[str], jobs: dict[str, str]) -> None:
        """The `supervisor` row: what is recording, which jobs run, the cameras, the errors."""
        self.status_line = (
            f"recording {', '.join(recording)}" if recording else "idle"
        ) + (f"; {len(jobs)} job(s)" if jobs else "")
        if time.monotonic() - self._cameras_at > CAMERAS_EVERY_S:
            self._cameras_at = time.monotonic()
            try:
                self._cameras = [_plain(c) for c in self.cameras.discover()]
            except Exception as exc:
                self._cameras = [{"index": None, "up": False, "detail": str(exc)}]
        try:
            self.store.kv_set(
                "supervisor",
                {
                    "at": now.isoformat(),
                    "pid": os.getpid(),
                    "cameras": self._cameras,
                    "recording": recording,
                    "jobs": jobs,
                    "camera_driver": self.cameras.name,
                    "last_errors": self.last_errors,
                    "status": self.status_line,
                },
            )
        except Exception as exc:
            self.stuck()  # the database does not commit: let systemd restart us
            log.error("heartbeat not written: %s", exc)

    def pet(self) -> None:
        self.notifier.status(self.status_line)
        if self.healthy:
            self.notifier.watchdog()

    def outage(self, line: str, *, pet: bool) -> None:
        """A pass the database cut short: the status says so; petted while `pet` allows."""
        self.status_line = line
        self.notifier.status(line)
        if self.healthy and pet:
            self.notifier.watchdog()


def _plain(camera: CameraInfo) -> dict[str, Any]:
    # A driver's own record type is written as its fields; anything else as its text.
    if dataclasses.is_dataclass(camera) and not isinstance(camera, type):
        return dataclasses.asdict(camera)
    return camera if isinstance(camera, dict) else {"detail": str(camera)}
