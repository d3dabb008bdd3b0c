"""The simulated cameras behind the fake picamera2 (not part of the real library's API).

Tests set `HW` up with `reset()` and inspect it afterwards: which cameras are still acquired,
which controls each camera was started with, how many encoder processes are still running.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field


@dataclass
class FakeSensor:
    model: str = "imx708"
    id: str = ""
    size: tuple[int, int] = (4608, 2592)  # PixelArraySize
    sync_capable: bool = False  # a Pi 5 with new libcamera: the SyncMode control exists
    busy: bool = False  # acquire() fails, as when another process holds the camera
    fail_start: bool = False  # camera.start() raises
    no_frames: bool = False  # starts, never delivers a frame
    die_after: float | None = None  # frames stop after this many seconds (cable pulled)
    max_size: tuple[int, int] | None = None  # configure() adjusts bigger sizes down to this


@dataclass
class Hardware:
    sensors: list[FakeSensor] = field(default_factory=list)
    acquired: set[int] = field(default_factory=set)  # libcamera indices held right now
    opened_total: int = 0
    started_controls: dict[int, dict[str, object]] = field(default_factory=dict)
    sync_go: float | None = None  # monotonic time the sync server said "go"
    encoder_processes: set[object] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


HW = Hardware()


def reset(count: int = 2, **kwargs: object) -> Hardware:
    """`count` identical sensors (kwargs go to FakeSensor); returns the fresh HW."""
    HW.sensors = [
        FakeSensor(id=f"/base/axi/pcie@120000/rp1/i2c@{0x80000 + 0x8000 * n:x}/imx708@1a",
                   **kwargs)  # type: ignore[arg-type]
        for n in range(count)
    ]
    HW.acquired.clear()
    HW.opened_total = 0
    HW.started_controls.clear()
    HW.sync_go = None
    HW.encoder_processes.clear()
    return HW


# A whole `ezrec run` in a child process gets its cameras from the environment (test-only code:
# the fake package is on PYTHONPATH only in tests).
if os.environ.get("EZRECTEST_FAKE_PICAMERAS"):
    reset(int(os.environ["EZRECTEST_FAKE_PICAMERAS"]))
