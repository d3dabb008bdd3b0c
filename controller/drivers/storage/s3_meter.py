"""Upload progress in bytes, not parts: a part's body tells a shared meter how far the HTTP
client has read it, so that a slow uplink shows progress every few KiB."""

from __future__ import annotations

import io
import threading

from controller.drivers.storage.base import ProgressFn


class Meter:
    """Bytes on their way, counted as the HTTP client reads each part's body.

    A slow uplink then shows progress every few KiB instead of once per part, so nobody
    mistakes an upload that crawls for one that hangs (a hang is the socket timeout's job).
    """

    def __init__(self, total: int, done: int, report: ProgressFn | None) -> None:
        self.total, self.done, self.report = total, done, report
        self.moving: dict[int, int] = {}
        self.lock = threading.Lock()
        self.error: BaseException | None = None

    def reading(self, part: int, position: int) -> None:
        with self.lock:
            # A retry rewinds the body: count each byte once.
            self.moving[part] = max(self.moving.get(part, 0), position)
            now = self.done + sum(self.moving.values())
        if self.report is not None:
            try:
                self.report(min(now, self.total), self.total)
            except BaseException as exc:  # not into the HTTP client: raised between parts
                self.error = self.error or exc

    def finished(self, part: int, size: int) -> None:
        with self.lock:
            self.moving.pop(part, None)
            self.done += size
            now = self.done + sum(self.moving.values())
        if self.error is not None:
            raise self.error
        if self.report is not None:
            self.report(min(now, self.total), self.total)


class CountingBody(io.BytesIO):
    """A part's bytes, telling the meter how far the HTTP client has read them.

    Over plain HTTP botocore reads the whole body once to sign its SHA-256 before sending it:
    that pass (`hashed_first`) moves nothing over the network and is not counted.
    """

    def __init__(self, data: bytes, meter: Meter, part: int, *, hashed_first: bool) -> None:
        super().__init__(data)
        self.meter, self.part = meter, part
        self.hashing = hashed_first
        self.hashed = 0  # bytes the signing pass has read

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if self.hashing:
            self.hashed += len(chunk)
        else:
            self.meter.reading(self.part, self.tell())
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.hashing and self.hashed and whence == io.SEEK_SET:
            self.hashing = False  # the signing pass is over: the send starts from here
        return super().seek(offset, whence)
