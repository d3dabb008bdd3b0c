"""Waking the supervisor: a datagram on an abstract Unix socket named after the data dir.

The supervisor sleeps in `NudgeListener.wait()` until its next due time; the CLI and the API
send one datagram after they change a booking, so a booking that starts now starts now. An
abstract socket (Linux) leaves no file behind after a crash and has no path-length trouble.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from pathlib import Path


def socket_name(data_dir: Path) -> bytes:
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:24]
    return b"\0ezrec-nudge-" + digest.encode()


def send_nudge(data_dir: Path) -> bool:
    """True when a supervisor was listening; never raises (nobody listening is normal)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"nudge", socket_name(data_dir))
        return True
    except OSError:
        return False


class NudgeListener:
    def __init__(self, data_dir: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(socket_name(data_dir))
        except OSError as exc:
            self._sock.close()
            raise RuntimeError(
                f"another supervisor is already running for {data_dir} ({exc})"
            ) from None

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True if nudged. Drains queued nudges."""
        self._sock.settimeout(max(0.0, timeout))
        try:
            self._sock.recv(64)
        except (TimeoutError, BlockingIOError):
            return False
        self._sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while self._sock.recv(64):
                pass
        return True

    def close(self) -> None:
        self._sock.close()
