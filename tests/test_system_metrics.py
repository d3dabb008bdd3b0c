"""System metrics on this very machine, checked against independent sources (os, /proc)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from controller.drivers import system_metrics


def test_snapshot_values_are_sane(tmp_path: Path) -> None:
    snap = system_metrics.snapshot(tmp_path)
    assert 0.0 <= snap.cpu_percent <= 100.0
    assert 0.0 < snap.memory_percent < 100.0
    assert 0 < snap.memory_used_mb < snap.memory_total_mb
    with open("/proc/meminfo") as fh:
        total_kb = int(fh.readline().split()[1])
    assert snap.memory_total_mb == pytest.approx(total_kb / 1024, rel=0.01)
    usage = shutil.disk_usage(tmp_path)
    assert snap.disk_total_mb == pytest.approx(usage.total / 2**20, rel=0.001)
    assert snap.disk_free_mb == pytest.approx(usage.free / 2**20, rel=0.05)
    assert 0.0 <= snap.disk_percent <= 100.0
    assert snap.temperature_c is None or -40.0 < snap.temperature_c < 125.0
    assert snap.load_1m >= 0 and snap.load_5m >= 0 and snap.load_15m >= 0
    with open("/proc/uptime") as fh:
        uptime = float(fh.read().split()[0])
    assert snap.uptime_s == pytest.approx(uptime, abs=5)
    assert 5 < snap.process_rss_mb < 4096
    assert set(snap.as_dict()) >= {"cpu_percent", "disk_free_mb", "temperature_c", "uptime_s"}


def test_cpu_percent_sees_a_busy_process(tmp_path: Path) -> None:
    system_metrics.snapshot(tmp_path)
    # Keep one core busy for a moment: the system-wide figure must move above zero.
    end = os.times().elapsed + 0.3
    while os.times().elapsed < end:
        pass
    assert system_metrics.snapshot(tmp_path).cpu_percent > 0.0


def test_free_disk_of_a_dir_not_created_yet(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b" / "c"
    assert system_metrics.free_disk_mb(missing) == pytest.approx(
        shutil.disk_usage(tmp_path).free / 2**20, rel=0.05
    )
    assert not missing.exists()


def test_thermal_zones_are_read_and_cpu_zone_preferred(tmp_path: Path) -> None:
    for name, kind, milli in [
        ("thermal_zone0", "acpitz", "71000"),
        ("thermal_zone1", "cpu-thermal", "48312"),
        ("thermal_zone2", "broken", "n/a"),
    ]:
        zone = tmp_path / name
        zone.mkdir()
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(milli + "\n")
    assert system_metrics._thermal_zones(tmp_path) == pytest.approx(48.312)
    (tmp_path / "thermal_zone1" / "type").write_text("gpu\n")
    assert system_metrics._thermal_zones(tmp_path) == pytest.approx(71.0)
    assert system_metrics._thermal_zones(tmp_path / "none") is None


def test_pi_throttled_flags(tmp_path: Path) -> None:
    flags = tmp_path / "get_throttled"
    flags.write_text("50005\n")
    assert system_metrics.throttled(flags) == 0x50005
    assert system_metrics.throttled(tmp_path / "absent") is None
