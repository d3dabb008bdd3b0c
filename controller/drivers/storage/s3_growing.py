"""Multipart parts sent while the video is still being built (`base.GrowingUpload`).

The builder writes an append-only fragmented MP4: bytes once written stay as they are (but for
the header, which may be patched once at the end). Each time another whole part lies below the
point the caller promises will not change again, that part can go up, so that when the booking
ends only the last part(s) and the completion remain; `S3Storage.upload` of the finished file
then takes the same multipart upload over from the checkpoint (`Transfer._resume`) and re-sends
whatever no longer matches, such as a patched header part.

S3 fixes an object's metadata at CreateMultipartUpload, long before the file's SHA-256 exists,
so such an object carries ``ezrec-growing: 1`` instead of ``sha256``. What proves its content is
the multipart ETag: S3 checked every part's MD5 on receipt (``Content-MD5``) and the ETag is
built from those MD5s, so one computed locally from the finished file must equal it. With
SSE-KMS the ETag is no MD5, nothing would prove the object, and `GrowingUploader.upload`
therefore does nothing there (returns 0): the final upload then sends everything, as before.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.drivers.storage.base import (
    Checkpoint,
    ProgressFn,
    StorageError,
    UploadInterrupted,
    local_source,
)
from controller.drivers.storage.s3_client import error_code
from controller.drivers.storage.s3_meter import Meter
from controller.drivers.storage.s3_plan import MAX_PARTS, UploadPlan
from controller.drivers.storage.s3_transfer import CHECKPOINT_VERSION, Transfer
from controller.fileio import CHUNK

log = logging.getLogger("ezrec.storage")

GROWING_KEY = "ezrec-growing"  # object metadata (boto3 reports metadata keys in lower case)
GROWING_METADATA = {GROWING_KEY: "1"}
_FILES_REMEMBERED = 16  # part MD5s are kept for this many files (a booking has one or two)


@dataclass
class _Hashes:
    """The MD5s of a file's first whole parts, so that a call every few seconds does not
    re-read gigabytes: bytes below `stable_below` do not change, so a hash stays true."""

    ident: tuple[int, int]  # (st_dev, st_ino): a file built anew is another file
    size: int  # the largest size seen: a file that shrank was written anew
    md5s: list[bytes]


class GrowingUploader:
    """The growing uploads of one bucket (`S3Storage.upload_growing`). One caller per file at a
    time: the builder of a booking calls it between the fragments it writes."""

    def __init__(self, transfer: Transfer, part_size: int) -> None:
        self.transfer = transfer
        self.part_size = part_size
        self._hashes: OrderedDict[tuple[str, int], _Hashes] = OrderedDict()
        self._lock = threading.Lock()
        self._said_kms = False

    def upload(
        self,
        path: Path,
        key: str,
        *,
        checkpoint: Checkpoint,
        stable_below: int,
        on_progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
    ) -> int:
        """Send the whole parts below `stable_below` that the server lacks; the bytes of `path`
        on the server afterwards. Creates the multipart upload only once a whole part exists, so
        a video that ends up one PUT (at most a part) leaves nothing to abort."""
        if not self.transfer.etag_is_md5:
            if not self._said_kms:
                self._said_kms = True
                log.info("S3_SSE=aws:kms: no upload while a video is built (ETags are no MD5)")
            return 0
        if stop is not None and stop.is_set():
            raise UploadInterrupted()
        # The 10,000th part would be the last, whose size only the finished file knows; a
        # longer file gets bigger parts in `plan_file` anyway, and this upload starts over.
        stable = min(stable_below, local_source(Path(path)))
        whole = min(max(stable, 0) // self.part_size, MAX_PARTS - 1)
        if whole == 0:
            return 0
        state = self._resume(checkpoint, key)
        on_server = None if state is None else self.transfer.list_parts(key, state["upload_id"])
        plan = UploadPlan(
            size=whole * self.part_size,
            sha256="",  # unknown until the file is finished
            part_size=self.part_size,
            md5s=tuple(self._md5s(Path(path), whole)),
        )
        if state is not None and on_server is not None:
            self.transfer.reconcile(state, on_server, plan)
            checkpoint.save(state)
        else:
            # No upload yet, or it vanished (abort_stale, a lifecycle rule, expiry): start over.
            state = self.transfer.create(
                key, self.part_size, checkpoint, metadata=GROWING_METADATA, growing=True
            )
        meter = Meter(plan.size, _bytes(state), on_progress)
        meter.finished(0, 0)  # where this call starts
        try:
            self.transfer.send_parts(Path(path), key, plan, state, checkpoint, meter, stop)
        except StorageError as exc:
            if error_code(exc.__cause__) != "NoSuchUpload":
                raise
            checkpoint.clear()  # aborted while we were sending: the next call starts over
            raise StorageError(
                f"S3 multipart upload of {key} vanished while the video was built; it starts over",
                retryable=True,
            ) from exc
        return _bytes(state)

    def _resume(self, checkpoint: Checkpoint, key: str) -> dict[str, Any] | None:
        state = checkpoint.load()
        if not state:
            return None
        if (
            state.get("growing") is True
            and state.get("version") == CHECKPOINT_VERSION
            and state.get("bucket") == self.transfer.bucket
            and state.get("key") == key
            and state.get("part_size") == self.part_size
            and isinstance(state.get("upload_id"), str)
        ):
            return state
        # Another key or part size, or an upload of a finished file: it cannot go on from here,
        # and left alone it would cost storage until abort_stale.
        self.transfer.forget(checkpoint, abort=state.get("bucket") == self.transfer.bucket)
        return None

    def _md5s(self, path: Path, parts: int) -> list[bytes]:
        """The MD5s of the first `parts` whole parts, reading only those not hashed before."""
        try:
            st = path.stat()
            name = (str(path.resolve()), self.part_size)
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}", retryable=False) from None
        with self._lock:
            known = self._hashes.pop(name, None)
            if known is None or known.ident != (st.st_dev, st.st_ino) or st.st_size < known.size:
                known = _Hashes((st.st_dev, st.st_ino), st.st_size, [])
            known.size = max(known.size, st.st_size)
            self._hashes[name] = known
            while len(self._hashes) > _FILES_REMEMBERED:
                self._hashes.popitem(last=False)
        try:
            with path.open("rb") as fh:
                fh.seek(len(known.md5s) * self.part_size)
                while len(known.md5s) < parts:
                    known.md5s.append(_md5_of_part(fh, self.part_size, path))
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}", retryable=False) from None
        return known.md5s[:parts]


def _md5_of_part(fh: Any, part_size: int, path: Path) -> bytes:
    md5, left = hashlib.md5(), part_size
    while left:
        chunk = fh.read(min(CHUNK, left))
        if not chunk:
            raise StorageError(f"{path} is shorter than the stable_below given", retryable=False)
        md5.update(chunk)
        left -= len(chunk)
    return md5.digest()


def _bytes(state: dict[str, Any]) -> int:
    return sum(int(p["size"]) for p in state["parts"])
