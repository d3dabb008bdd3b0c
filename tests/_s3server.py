"""A real S3-protocol server for the tests: moto's server mode on 127.0.0.1, on a free port.

`s3_server` is session-scoped (one server for the run); `MotoServer` can also be started on its
own by a test that must stop and restart it. Fake credentials are put in the environment for
the session, so boto3's standard chain finds them and no developer's real keys are ever used.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# A developer's profile or config file must not redirect the tests to a real account.
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
          "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """moto's ThreadedMotoServer that can be stopped and started again on the same port.

    ThreadedMotoServer.stop() leaves the listening socket open, so clients would hang instead
    of being refused; closing it too makes "server down" look like it does in real life.
    moto keeps its buckets in process memory, so they survive a restart, as on a real server.
    """

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._server: ThreadedMotoServer | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self._server is None:
            server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
            server.start()
            self._server = server

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()
            inner = getattr(server, "_server", None)
            if inner is not None:
                inner.server_close()

    def client(self) -> object:
        return boto3.session.Session().client("s3", endpoint_url=self.endpoint_url)

    def new_bucket(self) -> str:
        name = f"ezrec-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    saved = {key: os.environ.get(key) for key in (*FAKE_AWS_ENV, *_UNSET)}
    for key in _UNSET:
        os.environ.pop(key, None)
    os.environ.update(FAKE_AWS_ENV)
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_bucket(s3_server: MotoServer) -> str:
    """A fresh, empty bucket on the session's server."""
    return s3_server.new_bucket()
