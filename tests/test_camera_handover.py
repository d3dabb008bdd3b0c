"""Back-to-back bookings on cameras that cannot be opened twice: the running camera is handed
over to the next booking at the boundary, and no frame is lost between the two.

V4L2 runs through ffmpeg with lavfi standing in for the device (a /dev/video node that refuses
a second open cannot be made without a kernel module); there the proof is that one ffmpeg
process per camera recorded both bookings. The Picamera2 fake refuses a second open of a camera
as libcamera does, so there the refusal itself is shown first.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.drivers.cameras import CameraError
from controller.drivers.cameras.picamera2 import Picamera2Driver
from controller.drivers.cameras.v4l2 import V4L2Driver
from controller.recordings import read_manifest, read_runs
from tests._camera_helpers import FPS, small_settings

pytestmark = pytest.mark.slow
FAKE_ROOT = Path(__file__).with_name("fake_picamera2")


def packet_times(path: Path) -> list[float]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    return sorted(float(x.strip(",")) for x in out.split() if x.strip(","))


def assert_no_frame_lost(paths: list[Path]) -> None:
    """Where one file ends and the next begins (each inode once), the frames run on.

    Only file boundaries are where a hand-over can lose frames; a camera's own pacing inside
    a file (a late frame on a loaded machine) is not what this test is about.
    """
    seen: set[tuple[int, int]] = set()
    files: list[list[float]] = []
    for path in paths:
        st = path.stat()
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            files.append(packet_times(path))
    assert all(files), "a file without frames"
    for before, after in itertools.pairwise(files):
        step = after[0] - before[-1]
        assert 0 < step < 1.6 / FPS, f"{step:.3f} s between two files of the recording"


def check_handover(driver: Any, a_out: Path, b_out: Path, hold: float = 2.5) -> None:
    a = driver.start("a", a_out)
    assert a.cameras == [0, 1]
    time.sleep(hold)
    at = time.time()
    result, b = driver.hand_over(a, "b", b_out, at)
    assert b.cameras == [0, 1] and a.cameras == []
    assert driver.stop(a) is result  # the old handle is finished; stopping it stops nothing
    time.sleep(hold)
    assert driver.poll(b) == []
    # The first booking's end is on disk (what its build waits for after a hand-over).
    until = driver.written_until(b)
    assert until is not None and at + hold - 1.0 < until <= time.time() + 0.1
    done = driver.stop(b)
    for cam in (0, 1):
        a_files, b_files = result.files[cam], done.files[cam]
        assert a_files and len(b_files) >= 2
        # The segment holding the boundary is one file under both names.
        assert os.path.samefile(a_files[-1], b_files[0])
        assert not any(os.path.samefile(f, g) for f in a_files[:-1] for g in b_files)
        assert_no_frame_lost(a_files + b_files)
        (a_run,) = read_runs(a_out)[cam]
        (b_run,) = read_runs(b_out)[cam]
        assert a_run.stopped_at == pytest.approx(at)
        assert b_run.extra["continued_for"] == "b"
        # b's run starts at or before the boundary: its build cuts its slot from there on.
        assert a_run.started_at < b_run.started_at <= at + 1.0 / FPS
        assert b_run.stopped_at is not None and b_run.stopped_at > at + hold - 1.0


def test_v4l2_hand_over_keeps_one_process_and_loses_no_frame(tmp_path: Path) -> None:
    settings = small_settings(tmp_path, camera_driver="v4l2",
                              v4l2_devices=["lavfi:testsrc2", "lavfi:smptebars"])
    driver = V4L2Driver(settings)
    assert driver.exclusive
    spawned: list[int] = []
    real_start = driver.start

    def start(booking_id: str, out_dir: Path) -> Any:
        handle = real_start(booking_id, out_dir)
        spawned.extend(p.proc.pid for p in handle.sources.values())
        return handle

    driver.start = start  # type: ignore[method-assign]
    check_handover(driver, settings.raw_dir / "a", settings.raw_dir / "b")
    assert len(spawned) == 2, "one ffmpeg per camera recorded both bookings"
    # Later segments of the process were linked into b, and a's build reads only its part.
    limits = [read_manifest(settings.raw_dir / "a" / f"cam{c}", 0) for c in (0, 1)]
    assert all(m is not None and "last_seq" in m.extra for m in limits)
    driver.close()


@pytest.fixture
def hw(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in list(sys.modules):
        if name.split(".")[0] in ("picamera2", "libcamera"):
            del sys.modules[name]
    monkeypatch.syspath_prepend(str(FAKE_ROOT))
    from picamera2 import _fake_hardware

    yield _fake_hardware.reset(2)
    for name in list(sys.modules):
        if name.split(".")[0] in ("picamera2", "libcamera"):
            del sys.modules[name]


def test_picamera2_refuses_a_second_open_and_hands_over_instead(
    hw: Any, tmp_path: Path
) -> None:
    driver = Picamera2Driver(small_settings(tmp_path, camera_driver="picamera2"))
    assert driver.exclusive
    a = driver.start("x", driver.settings.raw_dir / "x")
    # What the next booking's pre-roll met before: the cameras are held.
    with pytest.raises(CameraError, match="could not open"):
        driver.start("y", driver.settings.raw_dir / "y")
    driver.stop(a)
    check_handover(driver, driver.settings.raw_dir / "a", driver.settings.raw_dir / "b")
    assert hw.opened_total == 4, "x's two opens and a's two: b opened nothing"
    driver.close()
    assert hw.acquired == set()


def test_the_open_segment_survives_a_hand_over_while_still_empty(tmp_path: Path) -> None:
    """Just after a rotation the camera's new segment can be empty for a moment (the muxer has
    not flushed yet): the hand-over must keep its name, or the footage written into it next
    is orphaned (seen under load with the Picamera2 fake: the next booking lost a second)."""
    from controller.recordings import drop_empty_but_open

    closed_empty, full, open_empty = (tmp_path / f"000-0000{i}.ts" for i in range(3))
    closed_empty.write_bytes(b"")
    full.write_bytes(b"\x47" * 188)
    open_empty.write_bytes(b"")
    assert drop_empty_but_open([closed_empty, full, open_empty]) == [full, open_empty]
    assert not closed_empty.exists() and open_empty.exists()
