"""A database that is not there: one line naming EZREC_DB_URL and what to do, a non-zero exit,
never SQLAlchemy's traceback; the API answers 503 JSON; `ezrec run` rides out an outage.

Real processes and real servers on loopback: a port nobody listens on, a PostgreSQL cluster of
this module's own that is stopped and started under a running `ezrec run`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.context import Context
from tests._postgres import PostgresCluster

EZREC = [sys.executable, "-m", "controller"]


def dead_port() -> int:
    """A loopback port with nothing listening (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ezrec(args: list[str], data_dir: Path, db_url: str, *, prelude: str = "",
          timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EZREC")}
    env |= {"EZREC_DATA_DIR": str(data_dir), "EZREC_DB_URL": db_url,
            "EZREC_CAMERA_DRIVER": "synthetic"}
    cmd = [sys.executable, "-c", f"{prelude}\nfrom controller.cli import main\nmain()", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).parent.parent)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    """This module's own server, so that stopping it never hurts another test."""
    c = PostgresCluster()
    c.start()
    yield c
    c.remove()


@pytest.fixture
def pg(cluster: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    cluster.start()  # a test before may have left it stopped
    from tests._postgres import database_name

    yield cluster.create_database(database_name(request))
    cluster.start()


# -- one line, exit non-zero -----------------------------------------------------------------

@pytest.mark.parametrize(
    "args",
    [["bookings"], ["show", "b1"], ["add", "--start", "+1m", "--end", "+5m"], ["status"],
     ["run"], ["api", "--port", "1"]],
    ids=lambda a: a[0],
)
def test_a_server_that_is_down_is_one_line_naming_the_setting(
    args: list[str], tmp_path: Path
) -> None:
    url = f"postgresql://ezrec:s3cret@127.0.0.1:{dead_port()}/ezrec"
    line = one_line_error(ezrec(args, tmp_path, url))
    assert "EZREC_DB_URL=postgresql://ezrec:***@127.0.0.1:" in line
    assert "Connection refused" in line and "server is running" in line
    assert "s3cret" not in line  # the password is masked


def test_a_missing_postgresql_driver_says_to_install_the_extra(tmp_path: Path) -> None:
    # A plain `pip install ezrec` has no psycopg: hide it from the process, as that would be.
    url = f"postgresql://ezrec@127.0.0.1:{dead_port()}/ezrec"
    hide = "import sys; sys.modules['psycopg'] = None"
    line = one_line_error(ezrec(["bookings"], tmp_path, url, prelude=hide))
    assert f"EZREC_DB_URL={url}" in line
    assert "pip install 'ezrec[postgres]'" in line


def test_a_driver_that_is_not_installed_is_named(tmp_path: Path) -> None:
    try:
        import pg8000  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - the venv does not have it
        pytest.skip("pg8000 is installed here")
    line = one_line_error(ezrec(["bookings"], tmp_path, "postgresql+pg8000://ezrec@127.0.0.1/x"))
    assert "EZREC_DB_URL=postgresql+pg8000://" in line and "'pg8000'" in line
    assert "pip install 'ezrec[postgres]'" in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+nosuchdriver://ezrec@127.0.0.1/x", "unknown database driver"),
        ("postgresql://ezrec@127.0.0.1:notaport/x", "not a database URL"),
        ("sqlite:////proc/no-such-dir/state.db", "cannot create its directory"),
    ],
)
def test_bad_database_urls_are_one_line(url: str, expected: str, tmp_path: Path) -> None:
    line = one_line_error(ezrec(["bookings"], tmp_path, url))
    assert "EZREC_DB_URL" in line and expected in line


def test_a_database_lost_in_the_middle_of_a_command_is_one_line(
    cluster: PostgresCluster, pg: str, tmp_path: Path
) -> None:
    # The command opens (and migrates) the database, then the server goes before it reads:
    # the real OperationalError from the real driver, mid-command.
    ready, go = tmp_path / "ready", tmp_path / "go"
    hook = (
        "import os, time\n"
        "from controller.fsm import store\n"
        "real = store.BookingStore.list\n"
        "def list_after_outage(self, *a, **k):\n"
        f"    open({str(ready)!r}, 'w').close()\n"
        f"    while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
        "    return real(self, *a, **k)\n"
        "store.BookingStore.list = list_after_outage\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EZREC")}
    env |= {"EZREC_DATA_DIR": str(tmp_path), "EZREC_DB_URL": pg}
    proc = subprocess.Popen(
        [sys.executable, "-c", f"{hook}\nfrom controller.cli import main\nmain()", "bookings"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for _ in range(600):
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), proc.communicate()
        cluster.stop()
        go.touch()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.start()
    line = one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert "EZREC_DB_URL=postgresql://ezrec@127.0.0.1:" in line


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


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_run_records_through_a_database_outage_and_completes_the_booking(
    cluster: PostgresCluster, pg: str, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from controller.db import Database
    from controller.fsm import BookingStore

    store = BookingStore(Database(pg), device_id="outage")
    now = datetime.now(UTC)
    booking = store.create(now + timedelta(seconds=2), now + timedelta(seconds=16),
                           booking_id="through-outage")
    notify = Notifications(tmp_path / "notify.sock")
    proc = start_run(tmp_path, pg, notify.path)
    try:
        wait_for(lambda: raw_bytes(tmp_path, booking.id) > 0, 30, "the recording to start")
        assert store.get(booking.id).state == "recording"
        store.db.dispose()  # our own pooled connections would die with the server anyway
        cluster.stop()
        written = raw_bytes(tmp_path, booking.id)
        messages = notify.collect(5)
        # The loop is alive, says why it is unhappy, and keeps the watchdog fed: a restart
        # would cut the recording and reach the database no better.
        assert proc.poll() is None, (tmp_path / "run.log").read_text()
        assert any(m.startswith("STATUS=database unreachable") for m in messages), messages
        assert messages.count("WATCHDOG=1") >= 3, messages
        # The cameras (child processes) went on writing segments without the database.
        assert raw_bytes(tmp_path, booking.id) > written
        cluster.start()
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
    cluster: PostgresCluster, pg: str, tmp_path: Path
) -> None:
    notify = Notifications(tmp_path / "notify.sock")
    proc = start_run(tmp_path, pg, notify.path, EZREC_DB_OUTAGE_S="2")
    try:
        assert "READY=1" in notify.collect(8)
        cluster.stop()
        stopped = time.monotonic()
        notify.collect(6)
        pings = [t - stopped for t, m in notify.seen if m == "WATCHDOG=1" and t > stopped]
        # Petted within the bound, then not: systemd (WatchdogSec) would restart the service.
        assert pings and min(pings) < 2.5, pings
        assert not [t for t in pings if t > 3.5], pings
        assert proc.poll() is None
        cluster.start()
        assert "WATCHDOG=1" in notify.collect(15)  # back to normal once the database answers
    finally:
        proc.terminate()
        proc.wait(30)
        notify.close()
    assert proc.returncode == 0


# -- `ezrec api` answers 503 JSON while the database is away -----------------------------------

def test_api_answers_503_json_while_the_database_is_away_and_recovers(
    cluster: PostgresCluster, pg: str, tmp_path: Path
) -> None:
    import httpx

    port = dead_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EZREC")}
    env |= {"EZREC_DATA_DIR": str(tmp_path), "EZREC_DB_URL": pg,
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
        cluster.stop()
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
        cluster.start()
        assert httpx.get(f"{base}/bookings", timeout=15).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
    text = (tmp_path / "api.log").read_text()
    assert "Traceback" not in text, text
    assert "cannot be used" in text  # the reason is in the server's log, one line a request


# -- the pieces: backoff, and what counts as an outage ------------------------------------------

def test_outage_backs_off_to_its_cap_logs_once_and_says_when_it_is_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sqlalchemy.exc import OperationalError

    from controller.dbhealth import Outage

    now = [100.0]
    outage = Outage(first_s=0.5, max_s=10.0, clock=lambda: now[0])
    refused = OperationalError("SELECT 1", {}, Exception("connection refused\nmore text"))
    delays = []
    for _ in range(8):
        delays.append(outage.failed(refused, "postgresql://ezrec:pw@db/ezrec"))
        now[0] += 1
    assert delays == [0.5, 1, 2, 4, 8, 10, 10, 10]
    assert outage.down and outage.age_s() == 8 and outage.last_reason == "connection refused"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "EZREC_DB_URL=postgresql://ezrec:***@db/ezrec" in errors[0]
    assert outage.recovered() == 8 and not outage.down
    assert outage.recovered() is None  # only once
    assert outage.failed(refused) == 0.5  # a new outage starts from the first delay


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
