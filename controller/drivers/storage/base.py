"""Where finished videos go: the storage interface and the rules every backend shares.

Two backends share one contract, chosen by ``STORAGE_URL`` in `controller.context.open_storage`
(this module imports neither):

- ``file://<dir>`` (the embedded default, ``<data dir>/uploads``): `storage.local.LocalStorage`;
- ``s3://bucket/prefix`` (AWS, MinIO, Supabase Storage's S3 endpoint): `storage.s3.S3Storage`,
  a resumable multipart upload.

The contract that the supervisor relies on: `Storage.upload` returns only after the stored copy
has been verified (size and checksum), so a `StoredObject` in hand means the raw files may go
(after `retention_due`). Every failure is a `StorageError` whose text is fit for a booking's
``last_error`` and whose ``retryable`` says whether trying again later can help.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from controller.fileio import atomic_write, unlink_durably

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


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
        atomic_write(self.path, json.dumps(data, separators=(",", ":")))

    def clear(self) -> None:
        unlink_durably(self.path)


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


@runtime_checkable
class ServerSideCopy(Protocol):
    """A backend that copies an object to another key without the bytes passing through the
    box (S3): the share links point at such copies, so that revoking a link can delete what it
    opens. Ask with ``isinstance(storage, ServerSideCopy)``."""

    def copy(self, key: str, new_key: str) -> None: ...


@runtime_checkable
class GrowingUpload(Protocol):
    """A backend that can send a video while it is still being built (S3 multipart): the
    builder's append-only file goes up part by part, so that when the booking ends only the
    last part(s) and the completion remain for `Storage.upload`, given the same checkpoint.
    A local copy is fast enough at the end, so `LocalStorage` has none. Ask with
    ``isinstance(storage, GrowingUpload)``."""

    def upload_growing(
        self,
        path: Path,
        key: str,
        *,
        checkpoint: Checkpoint,
        stable_below: int,
        on_progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Send every whole part of `path` lying entirely below byte `stable_below` (bytes before it
        will not change again) that is not on the server yet; return the bytes of `path` now
        on the server. Never completes the upload."""
        ...


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
