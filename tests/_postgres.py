"""A private PostgreSQL cluster for the test session: initdb into a temporary directory, a free
loopback port, stopped and removed afterwards. As root it runs as the `postgres` user, since
PostgreSQL refuses to run as root.

`PostgresCluster` is also used on its own by tests that stop and start the server under a
running process (a database outage), so that they never take the shared server down.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        pytest.fail(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")
    return found


def free_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


class PostgresCluster:
    """One initdb'd cluster on a fixed loopback port, which can be stopped and started again
    (same port, same data) to stand for a database server that goes away and comes back."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ezrec-pg-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.port = free_port()
        subprocess.run(
            _as_postgres([_pg_bin("initdb"), "-D", str(self.data), "-U", "ezrec",
                          "--auth=trust", "--no-sync", "-E", "UTF8"]),
            check=True, capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"postgresql://ezrec@127.0.0.1:{self.port}"

    def running(self) -> bool:
        status = subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "status"]),
            capture_output=True,
        )
        return status.returncode == 0

    def start(self) -> None:
        """Start the server (nothing to do if it runs) and wait until it accepts connections."""
        if self.running():
            return
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                          str(self.root / "log"), "-w", "-t", "60", "start"]),
            check=True, capture_output=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, as when the server or its host goes."""
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"{self.url}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.url}/{name}"

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Yields a base URL `postgresql://ezrec@127.0.0.1:PORT` of a running server."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.remove()


def database_name(request: pytest.FixtureRequest) -> str:
    return "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]


@pytest.fixture
def postgres_url(postgres_server: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the session's server for one test."""
    import psycopg

    name = database_name(request)
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{postgres_server}/{name}"


@pytest.fixture(scope="module")
def stoppable_postgres() -> Iterator[PostgresCluster]:
    """A server of the test module's own, which its tests stop and start (an outage) without
    hurting anyone else's."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def stoppable_postgres_url(
    stoppable_postgres: PostgresCluster, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh database on it, the server running at the start and after the test."""
    stoppable_postgres.start()
    yield stoppable_postgres.create_database(database_name(request))
    stoppable_postgres.start()
