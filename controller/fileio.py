"""Durable file writes and file digests: the one copy every owner of files on disk uses.

A power cut must leave the old file or the new one, never half of either: a write goes to a
hidden temporary name in the same directory, is fsynced, renamed over the target, and the
directory is fsynced so the rename itself survives.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 1024 * 1024


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable (a power cut must not undo it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write `data` to `path` atomically and durably; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def durable_replace(temp: Path, final: Path) -> None:
    """Rename a finished file `temp` over `final` so that a power cut keeps one of them whole."""
    with Path(temp).open("rb") as fh:
        os.fsync(fh.fileno())
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, final)
    fsync_dir(final.parent)


def unlink_durably(path: Path) -> bool:
    """Remove `path` (False if it was not there) and make the removal survive a power cut."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    fsync_dir(Path(path).parent)
    return True


def sha256_file(path: Path, on_chunk: Callable[[bytes], None] | None = None) -> str:
    """The file's SHA-256 (hex); `on_chunk` sees every chunk read, e.g. to count progress."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
    return digest.hexdigest()


class Stopped(Exception):
    """`stop` was set while waiting for a lock."""


@contextlib.contextmanager
def flocked(
    path: Path, *, wait: bool, stop: threading.Event | None = None
) -> Iterator[bool]:
    """Hold an exclusive advisory lock on `path` (created if missing); yields False at once
    when `wait` is False and someone else holds it. Waiting polls so that `stop` ends it
    (raising Stopped). The kernel drops the lock with the process, so a kill never leaves it
    held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    yield False
                    return
                if stop is not None and stop.wait(0.2):
                    raise Stopped from None
                if stop is None:
                    threading.Event().wait(0.2)
        yield True
    finally:
        os.close(fd)
