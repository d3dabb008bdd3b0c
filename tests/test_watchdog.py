"""sd_notify against a real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.drivers.watchdog import SdNotifier, socket_address, watchdog_interval


class FakeSystemd:
    """The receiving end: a bound datagram socket, read without blocking forever."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2)

    def recv(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def pending(self) -> int:
        self.sock.setblocking(False)
        count = 0
        try:
            while True:
                self.sock.recv(4096)
                count += 1
        except BlockingIOError:
            return count
        finally:
            self.sock.settimeout(2)


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[FakeSystemd, str]]:
    path = tmp_path / "notify"
    fake = FakeSystemd(str(path))
    yield fake, str(path)
    fake.sock.close()


def test_messages_arrive_as_systemd_expects(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    with SdNotifier(env) as n:
        assert n.enabled and n.watchdog_interval() == 10.0
        assert n.ready("up\nand running")
        assert fake.recv() == ["READY=1", "STATUS=up and running"]
        assert n.status("2 bookings today")
        assert fake.recv() == ["STATUS=2 bookings today"]
        assert not n.status("2 bookings today")  # unchanged: not sent again
        assert n.watchdog()
        assert fake.recv() == ["WATCHDOG=1"]
        assert n.stopping("closing segments")
        assert fake.recv() == ["STOPPING=1", "STATUS=closing segments"]
    assert fake.pending() == 0


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"ezrec-test-{uuid.uuid4().hex}"
    fake = FakeSystemd(b"\0" + name.encode())
    try:
        n = SdNotifier({"NOTIFY_SOCKET": f"@{name}"})
        assert n.ready()
        assert fake.recv() == ["READY=1"]
        assert n.watchdog_interval() is None and not n.watchdog()
        n.close()
    finally:
        fake.sock.close()


def test_pet_is_throttled_and_next_pet_in_counts_down(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    n = SdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})  # 0.2 s interval
    assert n.next_pet_in() == 0.0  # never petted: due now
    assert n.pet() and fake.recv() == ["WATCHDOG=1"]
    assert not n.pet()  # within half an interval: skipped
    remaining = n.next_pet_in()
    assert remaining is not None and 0.1 < remaining <= 0.2
    time.sleep(0.11)
    assert n.pet() and fake.recv() == ["WATCHDOG=1"]
    assert fake.pending() == 0


def test_no_socket_is_a_silent_no_op() -> None:
    n = SdNotifier({})
    assert not n.enabled
    assert not n.ready("x") and not n.status("x") and not n.watchdog() and not n.stopping()
    assert n.watchdog_interval() is None and n.next_pet_in() is None
    # A watchdog deadline without a socket is meaningless.
    assert SdNotifier({"WATCHDOG_USEC": "1000000"}).watchdog_interval() is None


def test_systemd_gone_does_not_raise(tmp_path: Path) -> None:
    n = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "vanished")})
    assert n.enabled
    assert not n.ready()


def test_unset_environment(systemd: tuple[FakeSystemd, str]) -> None:
    fake, path = systemd
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid()),
           "OTHER": "kept"}
    n = SdNotifier(env, unset_environment=True)
    assert env == {"OTHER": "kept"}
    assert n.watchdog_interval() == 0.5 and n.watchdog()
    assert fake.recv() == ["WATCHDOG=1"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),  # pid=4242 below
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env, pid=4242) == expected


def test_watchdog_pid_defaults_to_this_process() -> None:
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(env) == 1.0
    env["WATCHDOG_PID"] = str(os.getppid())
    assert watchdog_interval(env) is None


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == b"\0abc"
    assert socket_address("") is None and socket_address(None) is None
    assert socket_address("vsock:2:1234") is None


def test_a_receiver_that_stops_reading_never_blocks_the_sender(tmp_path: Path) -> None:
    """A datagram socket nobody reads fills up; sd_notify must then drop, not wait."""
    import socket
    import time

    from controller.drivers.watchdog import SdNotifier

    path = tmp_path / "full.sock"
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(str(path))
    try:
        notifier = SdNotifier(env={"NOTIFY_SOCKET": str(path)})
        began = time.monotonic()
        for i in range(5000):  # far more than the receive queue holds
            notifier.notify(f"STATUS=message {i}")
        assert time.monotonic() - began < 2.0
    finally:
        sink.close()
