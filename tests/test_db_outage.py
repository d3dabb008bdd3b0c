"""A database lost under a running `ezrec run` or `ezrec api`, and found again.

Real processes, real synthetic cameras (ffmpeg children), a real PostgreSQL server of this
module's own on loopback that is stopped (`pg_ctl stop -m fast`) and started under them, and a
datagram socket standing in for systemd's NOTIFY_SOCKET.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.context import Context
from tests._postgres import PostgresCluster, free_port

EZREC = [sys.executable, "-m", "controller"]


# -- `ezrec run` rides out a lost database -----------------------------------------------------

class Notifications:
    """The datagram socket systemd would give the service as NOTIFY_SOCKET, read all the time
    as systemd does (a full socket would block the sender)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.seen: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            self.seen.extend((at, field) for field in data.splitlines())

    def collect(self, seconds: float) -> list[str]:
        """The messages that arrive within the next `seconds`."""
        since = time.monotonic()
        time.sleep(seconds)
        return [m for t, m in list(self.seen) if t >= since]

    def close(self) -> None:
        self._stop.set()
        self._reader.join(5)
        self.sock.close()


def start_run(data_dir: Path, db_url: str, notify: Path, **env_extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EZREC")}
    env |= {
        "EZREC_DATA_DIR": str(data_dir), "EZREC_DB_URL": db_url,
        "EZREC_CAMERA_DRIVER": "synthetic", "EZREC_WIDTH": "320", "EZREC_HEIGHT": "240",
        "EZREC_FPS": "10", "EZREC_SEGMENT_S": "1", "EZREC_PREROLL_S": "0.5",
        "EZREC_MIN_FREE_DISK_MB": "1", "EZREC_DEVICE_ID": "outage",
        "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "2000000",  # a ping every second
    } | env_extra
    log = (data_dir / "run.log").open("w")
    return subprocess.Popen([*EZREC, "run"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            text=True, cwd=Path(__file__).parent.parent)


def raw_bytes(data_dir: Path, booking_id: str) -> int:
    folder = data_dir / "recordings" / "raw" / booking_id
    return sum(p.stat().st_size for p in folder.rglob("*.ts")) if folder.exists() else 0


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_run_records_through_a_database_outage_and_completes_the_booking(
    stoppable_postgres: PostgresCluster, stoppable_postgres_url: str, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from controller.db import Database
    from controller.fsm import BookingStore

    store = BookingStore(Database(stoppable_postgres_url), device_id="outage")
    now = datetime.now(UTC)
    booking = store.create(now + timedelta(seconds=2), now + timedelta(seconds=16),
                           booking_id="through-outage")
    notify = Notifications(tmp_path / "notify.sock")
    proc = start_run(tmp_path, stoppable_postgres_url, notify.path)
    try:
        wait_for(lambda: raw_bytes(tmp_path, booking.id) > 0, 30, "the recording to start")
        assert store.get(booking.id).state == "recording"
        store.db.dispose()  # our own pooled connections would die with the server anyway
        stoppable_postgres.stop()
        written = raw_bytes(tmp_path, booking.id)
        messages = notify.collect(5)
        # The loop is alive, says why it is unhappy, and keeps the watchdog fed: a restart
        # would cut the recording and reach the database no better.
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        assert any(m.startswith("STATUS=database unreachable") for m in messages), messages
        assert messages.count("WATCHDOG=1") >= 3, messages
        # The cameras (child processes) went on writing segments without the database.
        assert raw_bytes(tmp_path, booking.id) > written
        stoppable_postgres.start()
        wait_for(lambda: store.get(booking.id).state == "video_uploaded", 120,
                 "the booking to be uploaded after the database came back")
        history = store.history(booking.id)
        assert [h.trigger for h in history if h.trigger != "note"] == [
            "start", "finish", "process", "upload"]
        log = (tmp_path / "run.log").read_text()
        assert "database reachable again" in log and "Traceback" not in log
        assert log.count("cannot be used") == 1  # one line for the outage, not one per try
    finally:
        proc.terminate()
        proc.wait(30)
        notify.close()
        store.db.dispose()
    assert proc.returncode == 0


@pytest.mark.slow
def test_run_stops_petting_the_watchdog_after_the_outage_bound_when_idle(
    stoppable_postgres: PostgresCluster, stoppable_postgres_url: str, tmp_path: Path
) -> None:
    notify = Notifications(tmp_path / "notify.sock")
    proc = start_run(tmp_path, stoppable_postgres_url, notify.path, EZREC_DB_OUTAGE_S="2")
    try:
        wait_for(lambda: any(m == "READY=1" for _, m in notify.seen), 30, "READY=1")
        notify.collect(2)
        stoppable_postgres.stop()
        notify.collect(8)
        seen = list(notify.seen)
        lost = [t for t, m in seen if m.startswith("STATUS=database unreachable")]
        assert lost, seen
        pings = [t - lost[0] for t, m in seen if m == "WATCHDOG=1" and t >= lost[0]]
        # Petted within the bound (2 s from the first failed pass), then not: systemd
        # (WatchdogSec) would restart the service. The slack is for a loaded machine.
        assert pings and min(pings) < 2.0, pings
        assert not [t for t in pings if t > 3.5], pings
        assert proc.poll() is None
        stoppable_postgres.start()
        assert "WATCHDOG=1" in notify.collect(15)  # back to normal once the database answers
    finally:
        proc.terminate()
        proc.wait(30)
        notify.close()
    assert proc.returncode == 0


# -- `ezrec api` answers 503 JSON while the database is away -----------------------------------

def test_api_answers_503_json_while_the_database_is_away_and_recovers(
    stoppable_postgres: PostgresCluster, stoppable_postgres_url: str, tmp_path: Path
) -> None:
    import httpx

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EZREC")}
    env |= {"EZREC_DATA_DIR": str(tmp_path), "EZREC_DB_URL": stoppable_postgres_url,
            "EZREC_CAMERA_DRIVER": "synthetic", "EZREC_API_PORT": str(port)}
    log = (tmp_path / "api.log").open("w")
    proc = subprocess.Popen([*EZREC, "api"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).parent.parent)
    base = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return httpx.get(f"{base}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 30, "ezrec api to listen")
        assert httpx.get(f"{base}/bookings", timeout=5).status_code == 200
        stoppable_postgres.stop()
        for method, path in [("GET", "/bookings"), ("GET", "/status"), ("GET", "/bookings/b1"),
                             ("POST", "/bookings"), ("GET", "/metrics")]:
            body = {"start_time": "2030-01-01T10:00:00+00:00",
                    "end_time": "2030-01-01T11:00:00+00:00"} if method == "POST" else None
            answer = httpx.request(method, f"{base}{path}", json=body, timeout=15)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["error"] == "unavailable"
            assert "database is not reachable" in answer.json()["detail"]
            assert answer.headers["retry-after"] == "5"
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        stoppable_postgres.start()
        assert httpx.get(f"{base}/bookings", timeout=15).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
    text = (tmp_path / "api.log").read_text()
    assert "Traceback" not in text, text
    assert "cannot be used" in text  # the reason is in the server's log, one line a request


def test_a_bug_in_the_loop_is_not_mistaken_for_a_database_outage(ctx: Context) -> None:
    from sqlalchemy.exc import OperationalError

    from controller.dbhealth import Outage
    from controller.supervisor import Supervisor

    class Notes:
        def __init__(self) -> None:
            self.sent: list[str] = []

        def ready(self) -> None: ...
        def stopping(self) -> None: ...
        def status(self, text: str) -> None:
            self.sent.append(f"STATUS={text}")

        def watchdog(self) -> None:
            self.sent.append("WATCHDOG=1")

        def watchdog_interval(self) -> float | None:
            return 1.0

    class NoCameras:
        name, exclusive = "none", False

        def discover(self) -> list[object]:
            return []

        def close(self) -> None: ...

    notes = Notes()
    sup = Supervisor(ctx.settings, ctx.store, NoCameras(), storage=None,  # type: ignore[arg-type]
                     media=None, notifier=notes)
    sup.db_outage = Outage(first_s=0.01, max_s=0.02)
    calls: list[int] = []

    def due(now: object, preroll_s: float = 0.0) -> object:
        calls.append(1)
        if len(calls) <= 2:
            raise OperationalError("SELECT", {}, Exception("server closed the connection"))
        raise ValueError("a bug, not an outage")

    sup.store.due = due  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="a bug"):
        sup.run()
    assert len(calls) == 3  # two outage passes were ridden out, the bug ended the loop
    assert [m for m in notes.sent if m.startswith("STATUS=database unreachable")]
    assert notes.sent.count("WATCHDOG=1") == 2


def test_exclusive_cameras_still_stop_at_the_slot_end_with_the_database_away(
    ctx: Context,
) -> None:
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from sqlalchemy.exc import OperationalError

    from controller.recording_control import Active
    from controller.supervisor import Supervisor

    class Notes:
        def ready(self) -> None: ...
        def stopping(self) -> None: ...
        def status(self, text: str) -> None: ...
        def watchdog(self) -> None: ...
        def watchdog_interval(self) -> float | None:
            return 1.0

    class Sensor:
        """A real sensor's driver: one session at a time, so a slot's end looks for a
        booking to hand the running cameras to (a database read)."""

        name, exclusive = "sensor", True

        def __init__(self) -> None:
            self.stopped: list[str] = []

        def discover(self) -> list[object]:
            return []

        def stop(self, handle: SimpleNamespace, timeout: float = 5.0) -> SimpleNamespace:
            self.stopped.append(handle.booking_id)
            return SimpleNamespace(notes=[])

        def close(self) -> None: ...

    now = datetime.now(UTC)
    booking = ctx.store.create(now - timedelta(minutes=5), now - timedelta(seconds=1),
                               allow_past=True)
    ctx.store.fire(booking.id, "start")
    sensor = Sensor()
    sup = Supervisor(ctx.settings, ctx.store, sensor, storage=None,  # type: ignore[arg-type]
                     media=None, notifier=Notes())

    def away(*_a: object, **_k: object) -> list[object]:
        raise OperationalError("SELECT", {}, Exception("server closed the connection"))

    ctx.store.list = away  # type: ignore[method-assign]
    handle = SimpleNamespace(booking_id=booking.id, cameras=[0, 1])
    active = Active(booking.id, handle, booking.end_time)  # type: ignore[arg-type]
    sup.recording.active[booking.id] = active
    sup.recording.end_recording(active, now)
    assert sensor.stopped == [booking.id] and booking.id not in sup.recording.active
    sup.shutdown()
