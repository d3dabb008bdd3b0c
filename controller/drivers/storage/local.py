"""The local storage backend (``file://<dir>``): the embedded default, with the same contract
as S3 — nothing is reported stored until the stored copy has been read back and matched.

A copy goes to a hidden temporary name in the destination directory, is read back and compared
by SHA-256, then fsynced and renamed into place (`fileio.durable_replace`), so a crash or power
cut at any instant leaves either no file or the whole verified file under the key, never a
truncated one.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from datetime import datetime
from pathlib import Path

from controller.drivers.storage.base import (
    Checkpoint,
    ProgressFn,
    StorageError,
    StoredObject,
    UploadInterrupted,
    local_source,
)
from controller.drivers.storage.keys import KeyScheme
from controller.fileio import durable_replace, sha256_file

_TMP_MARK = ".ezrec-tmp-"


class LocalStorage:
    def __init__(self, root: Path, scheme: KeyScheme) -> None:
        self.root = Path(root).expanduser().resolve()
        self.scheme = scheme
        self.url = f"file://{self.root}"

    def __repr__(self) -> str:
        return f"LocalStorage({self.url!r})"

    def key_for(self, booking_id: str, start: datetime, suffix: str = "") -> str:
        return self.scheme.render(booking_id, start, suffix)

    def path_for(self, key: str) -> Path:
        # Keys come from KeyScheme, but verify()/delete() also take keys from the database:
        # re-check that none leads outside the root.
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise StorageError(f"bad storage key {key!r}", retryable=False)
        return self.root.joinpath(*parts)

    def upload(
        self,
        path: Path,
        key: str,
        *,
        checkpoint: Checkpoint | None = None,
        on_progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
    ) -> StoredObject:
        # A local copy is fast and restarts from zero; a checkpoint has nothing to remember.
        if checkpoint is not None:
            checkpoint.clear()
        size = local_source(path)
        dest = self.path_for(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create {dest.parent}: {exc.strerror}", retryable=False
            ) from None
        tmp = dest.with_name(f"{_TMP_MARK}{os.getpid()}-{threading.get_ident()}-{dest.name}")
        try:
            source_sha = self._copy(Path(path), tmp, size, on_progress, stop)
            copied_sha = sha256_file(tmp)
            if copied_sha != source_sha:
                raise StorageError(
                    f"copy of {path} to {dest} does not match (sha256 {copied_sha[:12]} != "
                    f"{source_sha[:12]}); the disk may be failing",
                    retryable=True,
                )
            durable_replace(tmp, dest)
        except OSError as exc:
            # ENOSPC and friends: worth retrying once retention has freed space.
            raise StorageError(
                f"cannot store {path} as {dest}: {exc.strerror or exc}", retryable=True
            ) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return StoredObject(url=f"file://{dest}", key=key, size=size, sha256=source_sha, etag=None)

    def _copy(
        self,
        src: Path,
        tmp: Path,
        size: int,
        on_progress: ProgressFn | None,
        stop: threading.Event | None,
    ) -> str:
        """Copy `src` to `tmp` in one read; returns the SHA-256 of the bytes read."""
        done = 0

        def write(chunk: bytes) -> None:
            nonlocal done
            if stop is not None and stop.is_set():
                raise UploadInterrupted()
            fout.write(chunk)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, size)

        with tmp.open("wb") as fout:
            try:
                digest = sha256_file(src, on_chunk=write)
            except OSError as exc:
                if exc.filename != os.fspath(src):
                    raise  # writing failed: the caller's "cannot store"
                raise StorageError(f"cannot read {src}: {exc.strerror}", retryable=False) from None
        if done != size:
            raise StorageError(f"{src} changed size while being stored", retryable=True)
        return digest

    def verify(self, obj: StoredObject, *, deep: bool = False) -> None:
        """Size always; the SHA-256 too when `deep` (a full read of the stored file)."""
        dest = self.path_for(obj.key)
        try:
            size = dest.stat().st_size
        except FileNotFoundError:
            raise StorageError(f"stored video {dest} is missing", retryable=True) from None
        if size != obj.size:
            raise StorageError(
                f"stored video {dest} has {size} bytes, expected {obj.size}", retryable=True
            )
        if deep and sha256_file(dest) != obj.sha256:
            raise StorageError(f"stored video {dest} does not match its sha256", retryable=True)

    def presign(self, key: str, expires_s: int) -> str | None:
        return None

    def abort_stale(self, older_than_s: float) -> int:
        """Remove temporary copies left by a crash, older than `older_than_s`."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for tmp in self.root.rglob(f"{_TMP_MARK}*"):
            with contextlib.suppress(OSError):
                if tmp.stat().st_mtime <= cutoff:
                    tmp.unlink()
                    removed += 1
        return removed

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_for(key).unlink()

    def check(self) -> str:
        """For `ezrec doctor`: the directory can be created and written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f"{_TMP_MARK}probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageError(
                f"storage directory {self.root} is not writable: {exc.strerror}", retryable=False
            ) from None
        return f"local folder {self.root} is writable"
