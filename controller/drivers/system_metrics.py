"""What the box itself is doing: CPU, memory, the data dir's disk, temperature, load, uptime.

One `snapshot()` feeds `ezrec status`, ``GET /status``, ``/metrics`` and the booking-system
push, so they can never disagree. Every reading that a board may lack (temperature, the
Raspberry Pi's under-voltage flags) is None rather than a made-up number.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

MiB = 1024 * 1024

# psutil's sensor names, most specific first: the Pi's SoC, then x86 and other ARM boards.
_SENSOR_PREFERENCE = ("cpu_thermal", "cpu-thermal", "soc_thermal", "coretemp", "k10temp",
                      "zenpower", "acpitz")
# The Pi firmware's throttling flags (what `vcgencmd get_throttled` prints), where exposed.
_THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")


@dataclass(frozen=True)
class SystemSnapshot:
    cpu_percent: float  # all cores, since the previous snapshot
    memory_percent: float
    memory_used_mb: float
    memory_total_mb: float
    disk_free_mb: float  # of the file system holding the data dir
    disk_total_mb: float
    disk_percent: float
    temperature_c: float | None
    load_1m: float
    load_5m: float
    load_15m: float
    uptime_s: float
    process_rss_mb: float
    throttled: int | None  # Pi: bit 0 under-voltage now, bit 16 under-voltage has occurred

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _existing(path: Path) -> Path:
    # The data dir may not exist yet on a fresh box; its disk is that of its nearest ancestor.
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def disk_mb(path: Path) -> tuple[float, float]:
    """(free, total) MB of the file system holding `path`, as an unprivileged user sees it."""
    usage = psutil.disk_usage(str(_existing(path)))
    return usage.free / MiB, usage.total / MiB


def free_disk_mb(path: Path) -> float:
    return disk_mb(path)[0]


def _thermal_zones(root: Path) -> float | None:
    readings: list[tuple[int, float]] = []
    for zone in sorted(root.glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip().lower()
            milli = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue  # zones that cannot be read (disabled sensors) are common
        rank = 0 if any(word in kind for word in ("cpu", "soc", "x86_pkg")) else 1
        readings.append((rank, milli / 1000))
    if not readings:
        return None
    best = min(rank for rank, _ in readings)
    return max(temp for rank, temp in readings if rank == best)


def temperature_c(thermal_root: Path = Path("/sys/class/thermal")) -> float | None:
    """The CPU/SoC temperature, or None where the board reports none (VMs, containers)."""
    sensors: dict[str, list[Any]] = {}
    if hasattr(psutil, "sensors_temperatures"):
        try:
            sensors = psutil.sensors_temperatures()
        except (OSError, RuntimeError):
            sensors = {}
    for name in _SENSOR_PREFERENCE:
        temps = [t.current for t in sensors.get(name, []) if t.current is not None]
        if temps:
            return float(max(temps))
    others = [t.current for entries in sensors.values() for t in entries if t.current]
    if others:
        return float(max(others))
    return _thermal_zones(thermal_root)


def throttled(path: Path = _THROTTLED) -> int | None:
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def uptime_s() -> float:
    # CLOCK_BOOTTIME does not jump when NTP first sets the clock of a Pi that has no RTC.
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return max(0.0, time.time() - psutil.boot_time())


class _CpuSampler:
    """psutil's cpu_percent(None) measures since its previous call; the first call has nothing
    to compare with, so it is primed here and a too-short window is widened by a short block."""

    MIN_WINDOW_S = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        psutil.cpu_percent(None)
        self._last = time.monotonic()

    def percent(self) -> float:
        with self._lock:
            waited = time.monotonic() - self._last
            if waited < self.MIN_WINDOW_S:
                time.sleep(self.MIN_WINDOW_S - waited)
            value = float(psutil.cpu_percent(None))
            self._last = time.monotonic()
            return value


_cpu = _CpuSampler()


def snapshot(data_dir: Path) -> SystemSnapshot:
    """All readings at once; costs a few system calls (and at most 0.1 s on a first call)."""
    mem = psutil.virtual_memory()
    free, total = disk_mb(data_dir)
    load1, load5, load15 = os.getloadavg()
    return SystemSnapshot(
        cpu_percent=_cpu.percent(),
        memory_percent=float(mem.percent),
        memory_used_mb=(mem.total - mem.available) / MiB,
        memory_total_mb=mem.total / MiB,
        disk_free_mb=free,
        disk_total_mb=total,
        disk_percent=100.0 * (1 - free / total) if total else 0.0,
        temperature_c=temperature_c(),
        load_1m=load1,
        load_5m=load5,
        load_15m=load15,
        uptime_s=uptime_s(),
        process_rss_mb=psutil.Process().memory_info().rss / MiB,
        throttled=throttled(),
    )
