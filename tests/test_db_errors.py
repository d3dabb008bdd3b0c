"""A database that is not there: one line naming EZREC_DB_URL and what to do, a non-zero exit,
never SQLAlchemy's traceback. Real processes, against a loopback port nobody listens on and a
PostgreSQL server of this module's own that is stopped under a running command.
(`ezrec run` and `ezrec api` riding out an outage: test_db_outage.py.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    stoppable_postgres: PostgresCluster, stoppable_postgres_url: str, tmp_path: Path
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
    env |= {"EZREC_DATA_DIR": str(tmp_path), "EZREC_DB_URL": stoppable_postgres_url}
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
        stoppable_postgres.stop()
        go.touch()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        stoppable_postgres.start()
    line = one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    assert "EZREC_DB_URL=postgresql://ezrec@127.0.0.1:" in line


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


def test_the_sync_thread_says_one_line_not_a_traceback_when_the_database_is_away(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sqlalchemy.exc import OperationalError

    from controller.sync import SyncWorker

    class Away:
        def run_once(self, stop: object = None) -> dict[str, object]:
            raise OperationalError("SELECT", {}, Exception("database is locked"))

    class Bug:
        def run_once(self, stop: object = None) -> dict[str, object]:
            raise KeyError("a bug")

    for sync in (Away(), Bug()):
        worker = SyncWorker(sync, 0.05)  # type: ignore[arg-type]
        worker.start()
        time.sleep(0.2)
        worker.stop_event.set()
        worker.join(5)
        assert worker.failures >= 1 and not worker.is_alive()
    skipped = [r for r in caplog.records if r.getMessage().startswith("sync round skipped")]
    crashed = [r for r in caplog.records if r.getMessage() == "sync round crashed"]
    assert skipped and all(r.exc_info is None for r in skipped)
    line = skipped[0].getMessage()
    assert "EZREC_DB_URL" in line and "database is locked" in line
    assert crashed and crashed[0].exc_info is not None  # a bug keeps its traceback
