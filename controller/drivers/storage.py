"""Where finished videos go: the storage interface, its shared rules, and `open_storage`.

Two backends share one contract, chosen by ``STORAGE_URL``:

- ``file://<dir>`` (the embedded default, ``<data dir>/uploads``): `LocalStorage`;
- ``s3://bucket/prefix`` (AWS, MinIO, Supabase Storage's S3 endpoint): `S3Storage`, a resumable
  multipart upload.

The contract that the supervisor relies on: `Storage.upload` returns only after the stored copy
has been verified (size and checksum), so a `StoredObject` in hand means the raw files may go
(after `retention_due`). Every failure is a `StorageError` whose text is fit for a booking's
``last_error`` and whose ``retryable`` says whether trying again later can help.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import string
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from controller.config import Settings

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)

CHUNK = 1024 * 1024

# Booking ids end up in object keys and file names: keep them to a safe alphabet, so that no id
# can climb out of the prefix ("..") or smuggle in a separator, whatever the booking system sends.
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_TEMPLATE_FIELDS = frozenset({"prefix", "device", "booking", "yyyy", "mm", "dd", "hh", "date"})


class StorageError(Exception):
    """An upload or check failed. ``str(exc)`` is the reason to show; ``retryable`` says whether
    the same call can succeed later (network down, server busy) or needs a human (bad bucket,
    no credentials, bad key template). It defaults to True: retries are bounded by
    ``MAX_ATTEMPTS`` anyway, and an unattended box should rather try again than give up."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class UploadInterrupted(StorageError):
    """`stop` was set: the upload paused cleanly and resumes from its checkpoint next time."""

    def __init__(self, message: str = "upload interrupted by shutdown; it resumes") -> None:
        super().__init__(message, retryable=True)


@dataclass(frozen=True)
class StoredObject:
    url: str  # file:///… or s3://bucket/key
    key: str
    size: int
    sha256: str  # of the local file; also stored as object metadata on S3
    etag: str | None = None
    presigned_url: str | None = None


class Checkpoint(Protocol):
    """Where an in-progress multipart upload is remembered across crashes and restarts."""

    def load(self) -> dict[str, Any] | None: ...
    def save(self, data: dict[str, Any]) -> None: ...
    def clear(self) -> None: ...


class FileCheckpoint:
    """A JSON sidecar file, replaced atomically so a crash leaves the old or the new state,
    never half of one. A file that cannot be parsed counts as no checkpoint: the upload then
    starts over, which costs bandwidth but never correctness."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(self.path.parent)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
            fsync_dir(self.path.parent)


@runtime_checkable
class Storage(Protocol):
    url: str

    def key_for(self, booking_id: str, start: datetime, suffix: str = "") -> str: ...

    def upload(
        self,
        path: Path,
        key: str,
        *,
        checkpoint: Checkpoint | None = None,
        on_progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
    ) -> StoredObject: ...

    def verify(self, obj: StoredObject, *, deep: bool = False) -> None: ...
    def presign(self, key: str, expires_s: int) -> str | None: ...
    def abort_stale(self, older_than_s: float) -> int: ...
    def delete(self, key: str) -> None: ...
    def check(self) -> str: ...


class KeyScheme:
    """Renders ``S3_KEY_TEMPLATE`` into object keys (relative paths for the local backend).

    Fields: {prefix} {device} {booking} {yyyy} {mm} {dd} {hh} {date}. The date fields are taken
    from the booking's start as the caller passes it (the supervisor passes local venue time).
    The result is always a clean relative key: no empty, "." or ".." component, no leading "/".
    """

    def __init__(self, template: str, *, prefix: str, device: str) -> None:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        unknown = sorted(fields - _TEMPLATE_FIELDS)
        if unknown:
            raise StorageError(
                f"bad setting EZREC_S3_KEY_TEMPLATE: unknown field {{{unknown[0]}}} "
                f"(known: {', '.join(sorted(_TEMPLATE_FIELDS))})",
                retryable=False,
            )
        if "booking" not in fields:
            # Without the booking id two videos would overwrite each other.
            raise StorageError(
                "bad setting EZREC_S3_KEY_TEMPLATE: must contain {booking}", retryable=False
            )
        self.template = template
        self.prefix = "/".join(part for part in prefix.split("/") if part)
        self.device = device
        # Fail at start-up, not at the first upload hours later.
        self.render("check", datetime(2000, 1, 2, 3, 4, 5))

    def render(self, booking_id: str, start: datetime, suffix: str = "") -> str:
        name = f"{booking_id}{suffix}"
        if not _SAFE_COMPONENT.match(name):
            raise StorageError(
                f"booking id {name!r} cannot be used in a storage key "
                "(letters, digits, '.', '_' and '-' only)",
                retryable=False,
            )
        raw = self.template.format(
            prefix=self.prefix,
            device=self.device,
            booking=name,
            yyyy=f"{start.year:04d}",
            mm=f"{start.month:02d}",
            dd=f"{start.day:02d}",
            hh=f"{start.hour:02d}",
            date=start.strftime("%Y-%m-%d"),
        )
        # An empty prefix leaves "//" or a leading "/": those components are simply dropped.
        parts = [part for part in raw.replace("\\", "/").split("/") if part]
        if not parts or any(part in (".", "..") for part in parts):
            raise StorageError(
                f"storage key {raw!r} from EZREC_S3_KEY_TEMPLATE is not a clean relative path",
                retryable=False,
            )
        return "/".join(parts)

    def static_prefix(self) -> str:
        """The part of every key that never varies (for listing this device's own uploads)."""
        literal = ""
        for text, name, _, _ in string.Formatter().parse(self.template):
            literal += text
            if name is None:
                break
            if name not in ("prefix", "device"):
                literal += "\0"  # marks the first varying field
                break
            literal += self.prefix if name == "prefix" else self.device
        literal = literal.split("\0", 1)[0]
        head, sep, _ = literal.rpartition("/")
        parts = [part for part in head.split("/") if part]
        return "/".join(parts) + "/" if sep and parts else ""


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable (a power cut must not undo it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_file(path: Path, on_chunk: Callable[[bytes], None] | None = None) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
    return digest.hexdigest()


def local_source(path: Path) -> int:
    """The size of the file to upload, or a clear non-retryable error."""
    try:
        st = Path(path).stat()
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}", retryable=False) from None
    if not Path(path).is_file():
        raise StorageError(f"cannot upload {path}: not a regular file", retryable=False)
    return st.st_size


def retention_due(uploaded_at: datetime, now: datetime, grace_h: float) -> bool:
    """True once local copies of a verified upload may be deleted: `grace_h` hours after it.

    The grace period leaves time to notice a bad video and re-process it from the raw files.
    Both times must be timezone-aware (or both naive); mixing them raises TypeError.
    """
    if grace_h < 0:
        raise ValueError(f"grace_h must be >= 0, got {grace_h}")
    return now - uploaded_at >= timedelta(hours=grace_h)


def open_storage(settings: Settings) -> Storage:
    """The backend named by ``settings.storage_url``; raises StorageError(retryable=False) on a
    bad URL, template or SSE value. Opens no network connection."""
    url = settings.storage_url
    if url.startswith("file://"):
        from controller.drivers.storage_local import LocalStorage

        rest = url.removeprefix("file://")
        root = Path(rest).expanduser()
        if not root.is_absolute():
            root = settings.data_dir / root
        scheme = KeyScheme(settings.s3_key_template, prefix="", device=settings.device_id)
        return LocalStorage(root, scheme)
    if url.startswith("s3://"):
        from controller.drivers.storage_s3 import S3Storage, parse_s3_url

        bucket, prefix = parse_s3_url(url)
        return S3Storage(
            bucket=bucket,
            scheme=KeyScheme(settings.s3_key_template, prefix=prefix, device=settings.device_id),
            endpoint_url=settings.s3_endpoint_url,
            sse=settings.s3_sse,
            presign_s=settings.s3_presign_s,
            part_size=settings.s3_part_size_mb * 1024 * 1024,
            concurrency=settings.s3_concurrency,
            connect_timeout_s=min(10.0, settings.s3_timeout_s),
            read_timeout_s=settings.s3_timeout_s,
        )
    raise StorageError(
        f"bad setting EZREC_STORAGE_URL: {url!r} must start with file:// or s3://",
        retryable=False,
    )
