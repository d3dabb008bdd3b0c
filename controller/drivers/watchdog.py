"""systemd's sd_notify protocol, spoken directly (no libsystemd): READY, STATUS, STOPPING and
the watchdog ping.

systemd (``Type=notify``, ``WatchdogSec=``) gives the service a datagram socket in
``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket) and, with a watchdog, the
deadline in ``WATCHDOG_USEC``. Without that socket — a terminal, a test, another init — every
call here is a cheap no-op, so the supervisor never needs to ask whether it runs under systemd.

There are deliberately no threads here. A ping from a side timer would keep a wedged loop alive
forever; instead the supervisor loop itself calls `SdNotifier.watchdog()` (or the throttled
`pet()`), only after an iteration in which it made progress, and sleeps no longer than
`watchdog_interval()`. If the loop hangs, the pings stop and systemd restarts the service,
which is the point of the watchdog.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)

_ENV_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(value: str | None) -> str | bytes | None:
    """``NOTIFY_SOCKET`` → an AF_UNIX address: ``@name`` is the abstract socket ``\\0name``."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    # systemd also knows vsock:… addresses (VMs); a Pi never gets one, and guessing is worse.
    log.warning("NOTIFY_SOCKET=%r is not a Unix socket path; sd_notify disabled", value)
    return None


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None when no watchdog is asked for
    or it is meant for another process (``WATCHDOG_PID`` is not ours)."""
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number; watchdog disabled", raw)
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def _clean(text: str) -> str:
    # One assignment per line is the protocol: a newline in a status would forge a field.
    return " ".join(text.split())


class SdNotifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET``; every method returns whether a message
    went out and never raises, because the box must keep recording even if systemd vanished.

    `unset_environment` removes the variables from ``os.environ`` after reading them, so child
    processes (ffmpeg) do not inherit a socket they must not speak on.
    """

    def __init__(
        self,
        env: MutableMapping[str, str] | None = None,
        *,
        unset_environment: bool = False,
    ) -> None:
        source = os.environ if env is None else env
        self.address = socket_address(source.get("NOTIFY_SOCKET"))
        self.interval = watchdog_interval(source) if self.address is not None else None
        if unset_environment:
            for key in _ENV_KEYS:
                source.pop(key, None)
        self._sock: socket.socket | None = None
        self._last_pet: float | None = None
        self._last_status: str | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send raw ``KEY=value`` fields in one datagram."""
        if self.address is None or not fields:
            return False
        message = "\n".join(fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # Never wait on the reader: a receiver that stopped reading must not stall the
            # loop (a pet that cannot be sent now is as good as a missed one).
            self._sock.sendto(message, socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            log.warning("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1"]
        if status:
            fields.append(f"STATUS={_clean(status)}")
            self._last_status = _clean(status)
        return self.notify(*fields)

    def status(self, text: str) -> bool:
        """Set the line `systemctl status` shows; an unchanged text is not sent again."""
        text = _clean(text)
        if text == self._last_status:
            return False
        sent = self.notify(f"STATUS={text}")
        if sent:
            self._last_status = text
        return sent

    def stopping(self, status: str | None = None) -> bool:
        fields = ["STOPPING=1"]
        if status:
            fields.append(f"STATUS={_clean(status)}")
        return self.notify(*fields)

    def watchdog_interval(self) -> float | None:
        """Seconds between pings that systemd expects; None without a watchdog."""
        return self.interval

    def watchdog(self) -> bool:
        """Send WATCHDOG=1 now, unconditionally."""
        if self.interval is None:
            return False
        sent = self.notify("WATCHDOG=1")
        if sent:
            self._last_pet = time.monotonic()
        return sent

    def pet(self) -> bool:
        """Send WATCHDOG=1 if half an interval has passed since the last one.

        Call it after every healthy loop iteration; the throttle keeps a busy loop from
        flooding systemd, and half an interval leaves room for a late wake-up.
        """
        if self.interval is None:
            return False
        now = time.monotonic()
        if self._last_pet is not None and now - self._last_pet < self.interval / 2:
            return False
        return self.watchdog()

    def next_pet_in(self) -> float | None:
        """Longest the loop may sleep before it must pet again; None without a watchdog."""
        if self.interval is None:
            return None
        if self._last_pet is None:
            return 0.0
        return max(0.0, self._last_pet + self.interval - time.monotonic())

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SdNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Notifier = SdNotifier
