"""The S3 storage backend (``s3://bucket/prefix``): a resumable, verified multipart upload.

How an upload goes, and why:

1. The file is read once (`s3_plan`) to get its SHA-256 (stored as object metadata ``sha256``,
   so anyone can check a download) and the MD5 of every part (sent as ``Content-MD5``, so S3
   rejects a part damaged in transit, and used to predict the final multipart ETag).
2. If the object is already there with that size and SHA-256 (a crash hit after the upload but
   before the booking was updated), nothing is sent again.
3. Parts go up through a small thread pool (``S3_CONCURRENCY`` in flight, ``S3_PART_SIZE_MB``
   each, so memory stays at their product), resumable from a `Checkpoint` (`s3_transfer`).
4. After CompleteMultipartUpload, HeadObject must show the right size, the SHA-256 metadata and
   the ETag computed locally from the part MD5s; only then does `upload` return.

`upload_growing` sends parts while the video is still being built (`s3_growing`); `upload` of
the finished file then completes that same multipart upload from its checkpoint.

Network trouble inside one call is retried briefly (`s3_client`); anything longer comes back as
``StorageError(retryable=True)`` for the booking's own backoff to handle. Progress is counted
in bytes as the HTTP client reads them (`s3_meter`). Credentials come from boto3's standard
chain (environment, ``~/.aws``, instance/container role).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from controller.drivers.storage.base import (
    Checkpoint,
    ProgressFn,
    StorageError,
    StoredObject,
    UploadInterrupted,
)
from controller.drivers.storage.keys import KeyScheme
from controller.drivers.storage.s3_client import BucketClient, error_code, to_storage_error
from controller.drivers.storage.s3_growing import GROWING_KEY, GrowingUploader
from controller.drivers.storage.s3_meter import Meter
from controller.drivers.storage.s3_plan import MIN_PART, MiB, plan_file
from controller.drivers.storage.s3_transfer import Transfer
from controller.fileio import CHUNK

_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,62}$")


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (``bucket``, ``some/prefix``)."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise StorageError(
            f"bad setting EZREC_STORAGE_URL: {bucket!r} in {url!r} is not a bucket name",
            retryable=False,
        )
    prefix = "/".join(part for part in prefix.split("/") if part)
    if any(part in (".", "..") for part in prefix.split("/")):
        raise StorageError(
            f"bad setting EZREC_STORAGE_URL: prefix {prefix!r} has '.' or '..'", retryable=False
        )
    return bucket, prefix


def sse_arguments(sse: str | None) -> dict[str, str]:
    """``S3_SSE`` → the request arguments: ``AES256``, ``aws:kms`` or ``aws:kms:<key id>``."""
    if not sse:
        return {}
    if sse == "AES256":
        return {"ServerSideEncryption": "AES256"}
    if sse == "aws:kms":
        return {"ServerSideEncryption": "aws:kms"}
    if sse.startswith("aws:kms:"):
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": sse.removeprefix("aws:kms:")}
    raise StorageError(
        f"bad setting EZREC_S3_SSE: {sse!r} (use AES256, aws:kms or aws:kms:<key id>)",
        retryable=False,
    )


class S3Storage:
    def __init__(
        self,
        *,
        bucket: str,
        scheme: KeyScheme,
        endpoint_url: str | None = None,
        sse: str | None = None,
        presign_s: int = 0,
        part_size: int = 8 * MiB,
        concurrency: int = 4,
        retry_attempts: int = 3,
        retry_wait_s: float = 0.5,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        if part_size < MIN_PART:
            raise StorageError(f"S3 part size {part_size} is below 5 MiB", retryable=False)
        if not 1 <= concurrency <= 64:
            raise StorageError(f"S3 concurrency {concurrency} is not in 1..64", retryable=False)
        self.bucket = bucket
        self.scheme = scheme
        self.url = f"s3://{bucket}/{scheme.prefix}".rstrip("/")
        self.endpoint = endpoint_url or "AWS S3"
        self.sse = sse_arguments(sse)
        # With SSE-KMS the ETag is not an MD5 of the data: size and SHA-256 metadata remain.
        self.etag_is_md5 = self.sse.get("ServerSideEncryption") != "aws:kms"
        self.presign_s = presign_s
        # botocore signs the payload's SHA-256 on plain HTTP (and streams it unsigned on TLS).
        self.signs_payload = bool(endpoint_url and endpoint_url.startswith("http://"))
        self.part_size = part_size
        self.concurrency = concurrency
        self.api = BucketClient(
            bucket,
            endpoint_url=endpoint_url,
            pool_size=concurrency + 4,
            retry_attempts=retry_attempts,
            retry_wait_s=retry_wait_s,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
        )
        self.client = self.api.client
        self.transfer = Transfer(
            self.api,
            sse=self.sse,
            concurrency=concurrency,
            etag_is_md5=self.etag_is_md5,
            signs_payload=self.signs_payload,
        )
        self.growing = GrowingUploader(self.transfer, part_size)

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, endpoint={self.endpoint!r})"

    # -- keys -----------------------------------------------------------------------------

    def key_for(self, booking_id: str, start: datetime, suffix: str = "") -> str:
        return self.scheme.render(booking_id, start, suffix)

    def object_url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- upload ---------------------------------------------------------------------------

    def upload(
        self,
        path: Path,
        key: str,
        *,
        checkpoint: Checkpoint | None = None,
        on_progress: ProgressFn | None = None,
        stop: threading.Event | None = None,
    ) -> StoredObject:
        """Upload `path` as `key`, resuming from `checkpoint`; returns once verified.

        `on_progress(done, total)` is called as the bytes go out (from the part threads too:
        keep it quick and thread-safe). Setting `stop` lets the parts in flight finish, saves
        the checkpoint and raises UploadInterrupted.
        """
        plan = plan_file(Path(path), self.part_size)
        obj = StoredObject(
            url=self.object_url(key),
            key=key,
            size=plan.size,
            sha256=plan.sha256,
            etag=plan.etag if self.etag_is_md5 else None,
        )
        if self._already_stored(obj):
            if checkpoint is not None:
                self.transfer.forget(checkpoint, abort=True)
            if on_progress is not None:
                on_progress(plan.size, plan.size)
            return self._finish(obj)
        if stop is not None and stop.is_set():
            raise UploadInterrupted()
        if plan.multipart:
            self.transfer.multipart(Path(path), key, plan, checkpoint, on_progress, stop)
        else:
            if checkpoint is not None:
                # A growing upload begun for a video that ended at exactly one part.
                self.transfer.forget(checkpoint, abort=True)
            self.transfer.put(Path(path), key, plan, Meter(plan.size, 0, on_progress))
        try:
            self.verify(obj)
        finally:
            # Verified or not, this upload id is done: a retry must start a fresh one.
            if checkpoint is not None:
                checkpoint.clear()
        return self._finish(obj)

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
        """Send the whole parts of the growing `path` below `stable_below` that the server
        lacks; returns the bytes of `path` on the server. Never completes: `upload` of the
        finished file with the same `checkpoint` does. With SSE-KMS it sends nothing and
        returns 0 (no MD5 ETag could prove such an object: see `s3_growing`)."""
        return self.growing.upload(
            Path(path),
            key,
            checkpoint=checkpoint,
            stable_below=stable_below,
            on_progress=on_progress,
            stop=stop,
        )

    def _finish(self, obj: StoredObject) -> StoredObject:
        if self.presign_s <= 0:
            return obj
        url = self.presign(obj.key, self.presign_s)
        return dataclasses.replace(obj, presigned_url=url)

    def _already_stored(self, obj: StoredObject) -> bool:
        try:
            head = self.api.head(obj.key)
        except StorageError as exc:
            # Without s3:ListBucket a missing key answers 403, not 404: just upload it.
            if error_code(exc.__cause__) in ("403", "AccessDenied"):
                return False
            raise
        return head is not None and self._mismatch(head, obj) is None

    def _mismatch(self, head: dict[str, Any], obj: StoredObject) -> str | None:
        """Why the object that `head` describes is not `obj`, or None when it is."""
        where = self.object_url(obj.key)
        size = head.get("ContentLength")
        if size != obj.size:
            return f"stored video {where} has {size} bytes, expected {obj.size}"
        meta = head.get("Metadata", {})
        # A growing upload could not know its SHA-256 when S3 fixed the metadata; its multipart
        # ETag, built from the MD5 that S3 checked of every part, proves the bytes instead.
        by_etag = "sha256" not in meta and meta.get(GROWING_KEY) == "1" and obj.etag is not None
        if meta.get("sha256") != obj.sha256 and not by_etag:
            return f"stored video {where} lacks the expected sha256"
        etag = str(head.get("ETag", "")).strip('"')
        if obj.etag is not None and etag != obj.etag:
            return f"stored video {where} has ETag {etag}, expected {obj.etag}"
        return None

    # -- checks ---------------------------------------------------------------------------

    def verify(self, obj: StoredObject, *, deep: bool = False) -> None:
        """HeadObject: size, SHA-256 metadata (or, for an object uploaded while it was built,
        ``ezrec-growing``) and ETag; `deep` also downloads the object and hashes it."""
        where = self.object_url(obj.key)
        head = self.api.head(obj.key)
        if head is None:
            raise StorageError(f"stored video {where} is missing", retryable=True)
        wrong = self._mismatch(head, obj)
        if wrong is not None:
            raise StorageError(wrong, retryable=True)
        if deep:
            got = self.api.call(
                "download", self.client.get_object, Bucket=self.bucket, Key=obj.key
            )
            body = got["Body"]
            digest = hashlib.sha256()
            try:
                for chunk in body.iter_chunks(CHUNK):
                    digest.update(chunk)
            except (BotoCoreError, OSError) as exc:
                raise to_storage_error(exc, "download", self.endpoint) from exc
            if digest.hexdigest() != obj.sha256:
                raise StorageError(
                    f"stored video {where} does not match its sha256", retryable=True
                )

    def presign(self, key: str, expires_s: int) -> str | None:
        if not 1 <= expires_s <= 7 * 24 * 3600:
            raise StorageError(
                f"presign expiry {expires_s}s is not in 1 s..7 days", retryable=False
            )
        try:
            return str(
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
                )
            )
        except (BotoCoreError, ClientError) as exc:
            raise to_storage_error(exc, "presign", self.endpoint) from exc

    def abort_stale(self, older_than_s: float) -> int:
        """Abort this device's multipart uploads started more than `older_than_s` ago.

        Only keys under the template's fixed prefix are looked at, so devices that share a
        bucket leave each other's fresh uploads alone. An upload still named by a checkpoint
        simply starts over next time.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        aborted = 0
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.scheme.static_prefix()
            )
            for page in pages:
                for up in page.get("Uploads", []):
                    if up["Initiated"] <= cutoff:
                        self.api.call(
                            "abort of a stale upload",
                            self.client.abort_multipart_upload,
                            Bucket=self.bucket,
                            Key=up["Key"],
                            UploadId=up["UploadId"],
                        )
                        aborted += 1
        except (BotoCoreError, ClientError) as exc:
            raise to_storage_error(exc, "listing of multipart uploads", self.endpoint) from exc
        return aborted

    def delete(self, key: str) -> None:
        self.api.call("delete", self.client.delete_object, Bucket=self.bucket, Key=key)

    def copy(self, key: str, new_key: str) -> None:
        """A server-side copy (no byte passes through the box), multipart past 5 GB: the
        share links point at such copies, so that revoking them can delete what they open."""
        self.api.call(
            "copy",
            self.client.copy,
            CopySource={"Bucket": self.bucket, "Key": key},
            Bucket=self.bucket,
            Key=new_key,
            ExtraArgs=dict(self.sse) or None,
        )

    def check(self) -> str:
        """For `ezrec doctor`: the bucket answers with these credentials."""
        self.api.call("bucket check", self.client.head_bucket, Bucket=self.bucket)
        return f"S3 bucket {self.bucket} reachable at {self.endpoint}"
