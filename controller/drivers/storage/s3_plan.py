"""What a local file is before it goes to S3: its SHA-256, the MD5 of every part and how it
splits into parts (read once, in `plan_file`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from controller.drivers.storage.base import StorageError, local_source
from controller.fileio import sha256_file

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's smallest allowed part (all but the last)
MAX_PARTS = 10_000  # S3's largest part count


@dataclass(frozen=True)
class UploadPlan:
    """What the local file is: its checksums and how it splits into parts."""

    size: int
    sha256: str
    part_size: int
    md5s: tuple[bytes, ...]  # one per part; a single entry for a one-shot PUT

    @property
    def parts(self) -> int:
        return len(self.md5s)

    def span(self, number: int) -> tuple[int, int]:
        offset = (number - 1) * self.part_size
        return offset, min(self.part_size, self.size - offset)

    @property
    def multipart(self) -> bool:
        return self.size > self.part_size

    @property
    def etag(self) -> str:
        if not self.multipart:
            return self.md5s[0].hex()
        return f"{hashlib.md5(b''.join(self.md5s)).hexdigest()}-{len(self.md5s)}"


def plan_file(path: Path, part_size: int) -> UploadPlan:
    """Read `path` once for its SHA-256 and the MD5 of each `part_size` part."""
    size = local_source(path)
    # S3 allows 10,000 parts: a longer file gets bigger parts, rounded up to whole MiB.
    if size > part_size * MAX_PARTS:
        part_size = -(-size // (MAX_PARTS * MiB)) * MiB
    md5s: list[bytes] = []
    md5, filled = hashlib.md5(), 0

    def split(chunk: bytes) -> None:  # a chunk may straddle two parts
        nonlocal md5, filled
        view = memoryview(chunk)
        while view:
            take = min(len(view), part_size - filled)
            md5.update(view[:take])
            filled += take
            view = view[take:]
            if filled == part_size:
                md5s.append(md5.digest())
                md5, filled = hashlib.md5(), 0

    try:
        sha = sha256_file(path, on_chunk=split)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}", retryable=False) from None
    if filled or not md5s:  # the short last part, or the one (empty) part of an empty file
        md5s.append(md5.digest())
    return UploadPlan(size=size, sha256=sha, part_size=part_size, md5s=tuple(md5s))
