"""Room kept back on the data disk for the state database.

When the disk fills (another process, a log, a large download), every writer gets ENOSPC at
once: the cameras, and SQLite, which then cannot record what happened. So the supervisor keeps
a file of EZREC_DISK_RESERVE_MB allocated in the data dir and deletes it the moment the disk is
full: the database then has room to write the booking's failure, its history and the heartbeat,
while the cameras stay stopped (they need the reserve back, and EZREC_MIN_FREE_DISK_MB on top,
before they start again). The file is made again once there is room for it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from controller.fileio import durable_replace

log = logging.getLogger("ezrec.disk")

MiB = 1024 * 1024
NAME = ".disk-reserve"


class DiskReserve:
    def __init__(self, data_dir: Path, size_mb: int) -> None:
        self.path = data_dir / NAME
        self.size = size_mb * MiB

    @property
    def present(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def release(self) -> bool:
        """Give the room back to the database; True if there was a reserve to give."""
        if not self.present:
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        log.warning("disk full: released the %d MB reserve for the database", self.size // MiB)
        return True

    def restore(self) -> bool:
        """Allocate the reserve (really: blocks, not a sparse file); False if there is no room."""
        if self.size == 0 or self.present:
            return True
        tmp = self.path.with_name(NAME + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
            durable_replace(tmp, self.path)
            return True
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.info("disk reserve not restored yet: %s", exc.strerror or exc)
            return False
