"""The S3 storage backend (``s3://bucket/prefix``): a resumable, verified multipart upload.

How an upload goes, and why:

1. The file is read once to get its SHA-256 (stored as object metadata ``sha256``, so anyone
   can check a download) and the MD5 of every part (sent as ``Content-MD5``, so S3 rejects a
   part damaged in transit, and used to predict the final multipart ETag).
2. If the object is already there with that size and SHA-256 (a crash hit after the upload but
   before the booking was updated), nothing is sent again.
3. Parts go up through a small thread pool (``S3_CONCURRENCY`` in flight, ``S3_PART_SIZE_MB``
   each, so memory stays at their product). After each part the upload id and the finished
   parts are saved to the `Checkpoint`; on the next call they are reconciled with ListParts,
   keeping exactly the parts the server has whose MD5 matches the local bytes. A kill therefore
   costs at most the parts that were in flight — and not even those if they had reached S3.
4. After CompleteMultipartUpload, HeadObject must show the right size, the SHA-256 metadata and
   the ETag computed locally from the part MD5s; only then does `upload` return.

Network trouble inside one call is retried briefly (tenacity); anything longer comes back as
``StorageError(retryable=True)`` for the booking's own backoff to handle. Credentials come from
boto3's standard chain (environment, ``~/.aws``, instance/container role).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import re
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from controller.drivers.storage import (
    CHUNK,
    Checkpoint,
    KeyScheme,
    ProgressFn,
    StorageError,
    StoredObject,
    UploadInterrupted,
    local_source,
)

T = TypeVar("T")

MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's smallest allowed part (all but the last)
MAX_PARTS = 10_000  # S3's largest part count
CHECKPOINT_VERSION = 1

_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,62}$")
# Server-side conditions that pass by themselves: worth a retry.
_RETRYABLE_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "OperationAborted",
    }
)
_HINTS = {
    "NoSuchBucket": "the bucket does not exist (check EZREC_STORAGE_URL)",
    "AccessDenied": "access denied (check the IAM policy in docs/storage.md)",
    "InvalidAccessKeyId": "the access key is not known to the server",
    "SignatureDoesNotMatch": "the secret key is wrong",
    "RequestTimeTooSkewed": "this device's clock is wrong (waiting for NTP?)",
    # HEAD answers carry no error body: only the status says what is wrong.
    "403": "access denied: wrong AWS credentials or a missing permission (docs/storage.md)",
    "404": "the bucket does not exist (check EZREC_STORAGE_URL)",
}


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


def to_storage_error(exc: BaseException, what: str, endpoint: str) -> StorageError:
    """One clear line for any failure of an S3 call, and whether it is worth retrying."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return StorageError(
            f"S3 {what}: no usable AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,"
            " ~/.aws/credentials or an instance role)",
            retryable=False,
        )
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        detail = _HINTS.get(code) or err.get("Message") or "no message"
        return StorageError(
            f"S3 {what} failed: {code} ({detail})",
            retryable=status >= 500 or code in _RETRYABLE_CODES,
        )
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return StorageError(
            f"S3 {what}: cannot reach {endpoint} ({type(exc).__name__})", retryable=True
        )
    if isinstance(exc, BotoCoreError):
        return StorageError(f"S3 {what}: {exc}", retryable=False)
    if isinstance(exc, OSError):
        return StorageError(f"S3 {what}: {exc.strerror or exc}", retryable=False)
    return StorageError(f"S3 {what}: {type(exc).__name__}: {exc}", retryable=False)


class _Meter:
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


class _CountingBody(io.BytesIO):
    """A part's bytes, telling the meter how far the HTTP client has read them.

    Over plain HTTP botocore reads the whole body once to sign its SHA-256 before sending it:
    that pass (`hashed_first`) moves nothing over the network and is not counted.
    """

    def __init__(self, data: bytes, meter: _Meter, part: int, *, hashed_first: bool) -> None:
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


def _code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code"))
    return None


@dataclass(frozen=True)
class _Plan:
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


def plan_file(path: Path, part_size: int) -> _Plan:
    size = local_source(path)
    # S3 allows 10,000 parts: a longer file gets bigger parts, rounded up to whole MiB.
    if size > part_size * MAX_PARTS:
        part_size = -(-size // (MAX_PARTS * MiB)) * MiB
    sha = hashlib.sha256()
    md5s: list[bytes] = []
    try:
        with Path(path).open("rb") as fh:
            while True:
                md5 = hashlib.md5()
                left = part_size
                while left and (chunk := fh.read(min(CHUNK, left))):
                    sha.update(chunk)
                    md5.update(chunk)
                    left -= len(chunk)
                if left == part_size and md5s:
                    break
                md5s.append(md5.digest())
                if left:
                    break
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}", retryable=False) from None
    return _Plan(size=size, sha256=sha.hexdigest(), part_size=part_size, md5s=tuple(md5s))


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
        self._attempts = retry_attempts
        self._wait_s = retry_wait_s
        config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # tenacity does the retrying, with one policy for every call.
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=concurrency + 4,
            # S3-compatible servers (MinIO, Supabase, older Ceph) reject the CRC trailers that
            # boto3 >= 1.36 adds by default; we send Content-MD5 ourselves instead.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        # A low-level client is thread-safe; the session that makes it is not, hence our own.
        self.client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, config=config
        )

    def __repr__(self) -> str:
        return f"S3Storage({self.url!r}, endpoint={self.endpoint!r})"

    # -- keys -----------------------------------------------------------------------------

    def key_for(self, booking_id: str, start: datetime, suffix: str = "") -> str:
        return self.scheme.render(booking_id, start, suffix)

    def object_url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- calls ----------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential(multiplier=self._wait_s, max=8),
            retry=retry_if_exception(
                lambda exc: to_storage_error(exc, what, self.endpoint).retryable
            ),
            reraise=True,
        )
        try:
            return retrying(fn, **kwargs)
        except Exception as exc:
            raise to_storage_error(exc, what, self.endpoint) from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        """HeadObject, or None when the object is not there."""
        try:
            return self._call("check", self.client.head_object, Bucket=self.bucket, Key=key)
        except StorageError as exc:
            if _code(exc.__cause__) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

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
        keep it quick and thread-safe). Setting `stop`
        lets the parts in flight finish, saves the checkpoint and raises UploadInterrupted.
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
                self._forget(checkpoint, abort=True)
            if on_progress is not None:
                on_progress(plan.size, plan.size)
            return self._finish(obj)
        if stop is not None and stop.is_set():
            raise UploadInterrupted()
        if plan.multipart:
            self._multipart(Path(path), key, plan, checkpoint, on_progress, stop)
        else:
            self._put(Path(path), key, plan, _Meter(plan.size, 0, on_progress))
        try:
            self.verify(obj)
        finally:
            # Verified or not, this upload id is done: a retry must start a fresh one.
            if checkpoint is not None:
                checkpoint.clear()
        return self._finish(obj)

    def _finish(self, obj: StoredObject) -> StoredObject:
        if self.presign_s <= 0:
            return obj
        url = self.presign(obj.key, self.presign_s)
        return dataclasses.replace(obj, presigned_url=url)

    def _already_stored(self, obj: StoredObject) -> bool:
        try:
            head = self._head(obj.key)
        except StorageError as exc:
            # Without s3:ListBucket a missing key answers 403, not 404: just upload it.
            if _code(exc.__cause__) in ("403", "AccessDenied"):
                return False
            raise
        return bool(
            head
            and head.get("ContentLength") == obj.size
            and head.get("Metadata", {}).get("sha256") == obj.sha256
            and (obj.etag is None or head.get("ETag", "").strip('"') == obj.etag)
        )

    def _put(self, path: Path, key: str, plan: _Plan, meter: _Meter) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}", retryable=False) from None

        def send() -> Any:  # a fresh body per attempt: a retry starts at its first byte
            return self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=_CountingBody(data, meter, 1, hashed_first=self.signs_payload),
                ContentMD5=base64.b64encode(plan.md5s[0]).decode(),
                ContentType=_content_type(key),
                Metadata={"sha256": plan.sha256},
                **self.sse,
            )

        self._call("upload", send)

    def _multipart(
        self,
        path: Path,
        key: str,
        plan: _Plan,
        checkpoint: Checkpoint | None,
        on_progress: ProgressFn | None,
        stop: threading.Event | None,
    ) -> None:
        state = self._resume(checkpoint, key, plan)
        if state is None:
            created = self._call(
                "start of multipart upload",
                self.client.create_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                ContentType=_content_type(key),
                Metadata={"sha256": plan.sha256},
                **self.sse,
            )
            state = {
                "version": CHECKPOINT_VERSION,
                "bucket": self.bucket,
                "key": key,
                "upload_id": created["UploadId"],
                "size": plan.size,
                "sha256": plan.sha256,
                "part_size": plan.part_size,
                "parts": [],
                "started_at": datetime.now(UTC).isoformat(),
            }
            if checkpoint is not None:
                checkpoint.save(state)
        upload_id: str = state["upload_id"]
        done: dict[int, dict[str, Any]] = {int(p["number"]): p for p in state["parts"]}
        meter = _Meter(plan.size, sum(int(p["size"]) for p in done.values()), on_progress)
        meter.finished(0, 0)  # where a resumed upload starts

        def record(number: int, etag: str) -> None:
            done[number] = {"number": number, "etag": etag, "size": plan.span(number)[1]}
            state["parts"] = [done[n] for n in sorted(done)]
            if checkpoint is not None:
                checkpoint.save(state)

        todo = iter(n for n in range(1, plan.parts + 1) if n not in done)
        in_flight: dict[Future[str], int] = {}
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-part")
        try:
            while True:
                while len(in_flight) < self.concurrency and not (stop and stop.is_set()):
                    number = next(todo, None)
                    if number is None:
                        break
                    fut = pool.submit(
                        self._upload_part, path, key, upload_id, plan, number, meter
                    )
                    in_flight[fut] = number
                if not in_flight:
                    break
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in finished:
                    number = in_flight.pop(fut)
                    record(number, fut.result())
                    meter.finished(number, plan.span(number)[1])
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            # Parts that finished while we were failing are on the server: remember them.
            for fut, number in in_flight.items():
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    record(number, fut.result())
        if len(done) < plan.parts:
            raise UploadInterrupted(
                f"upload interrupted by shutdown after {len(done)}/{plan.parts} parts; it resumes"
            )
        self._complete(key, upload_id, done, plan)

    def _upload_part(
        self, path: Path, key: str, upload_id: str, plan: _Plan, number: int, meter: _Meter
    ) -> str:
        offset, length = plan.span(number)
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(length)
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}", retryable=False) from None
        if len(data) != length:
            raise StorageError(f"{path} shrank during the upload", retryable=False)
        def send() -> Any:  # a fresh body per attempt: a retry starts at its first byte
            return self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=_CountingBody(data, meter, number, hashed_first=self.signs_payload),
                ContentMD5=base64.b64encode(plan.md5s[number - 1]).decode(),
            )

        resp = self._call(f"upload of part {number}/{plan.parts}", send)
        return str(resp["ETag"])

    def _complete(
        self, key: str, upload_id: str, done: dict[int, dict[str, Any]], plan: _Plan
    ) -> None:
        parts = [{"PartNumber": n, "ETag": done[n]["etag"]} for n in sorted(done)]
        try:
            self._call(
                "completion of multipart upload",
                self.client.complete_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except StorageError as exc:
            # A completion whose answer was lost leaves NoSuchUpload on the retry; verify()
            # then tells whether the object really is complete.
            if _code(exc.__cause__) != "NoSuchUpload":
                raise

    def _resume(
        self, checkpoint: Checkpoint | None, key: str, plan: _Plan
    ) -> dict[str, Any] | None:
        """The checkpointed upload reconciled with what the server holds, or None to start over."""
        if checkpoint is None:
            return None
        state = checkpoint.load()
        if not state:
            return None
        same = (
            state.get("version") == CHECKPOINT_VERSION
            and state.get("bucket") == self.bucket
            and state.get("key") == key
            and state.get("size") == plan.size
            and state.get("sha256") == plan.sha256
            and state.get("part_size") == plan.part_size
            and isinstance(state.get("upload_id"), str)
        )
        if not same:
            # Another file, key or part size: the old upload can never be completed.
            self._forget(checkpoint, abort=state.get("bucket") == self.bucket)
            return None
        on_server = self._list_parts(key, state["upload_id"])
        if on_server is None:  # aborted (abort_stale) or expired: start over
            checkpoint.clear()
            return None
        claimed = {int(p["number"]): str(p["etag"]) for p in state.get("parts", [])}
        parts = []
        for number, (etag, size) in sorted(on_server.items()):
            if number > plan.parts or size != plan.span(number)[1]:
                continue
            if self.etag_is_md5:
                good = etag.strip('"') == plan.md5s[number - 1].hex()
            else:
                good = claimed.get(number) == etag
            if good:
                parts.append({"number": number, "etag": etag, "size": size})
        state["parts"] = parts
        checkpoint.save(state)
        return state

    def _list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]] | None:
        found: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            try:
                page = self._call(
                    "listing of uploaded parts",
                    self.client.list_parts,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumberMarker=marker,
                )
            except StorageError as exc:
                if _code(exc.__cause__) in ("NoSuchUpload", "404"):
                    return None
                raise
            for part in page.get("Parts", []):
                found[int(part["PartNumber"])] = (str(part["ETag"]), int(part["Size"]))
            if not page.get("IsTruncated"):
                return found
            marker = int(page["NextPartNumberMarker"])

    def _forget(self, checkpoint: Checkpoint, *, abort: bool) -> None:
        state = checkpoint.load()
        if abort and state and isinstance(state.get("upload_id"), str):
            # Best effort: if this fails, abort_stale() catches the upload later.
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=state.get("key", ""), UploadId=state["upload_id"]
                )
        checkpoint.clear()

    # -- checks ---------------------------------------------------------------------------

    def verify(self, obj: StoredObject, *, deep: bool = False) -> None:
        """HeadObject: size, SHA-256 metadata and ETag; `deep` also downloads and hashes it."""
        where = self.object_url(obj.key)
        head = self._head(obj.key)
        if head is None:
            raise StorageError(f"stored video {where} is missing", retryable=True)
        size = head.get("ContentLength")
        if size != obj.size:
            raise StorageError(
                f"stored video {where} has {size} bytes, expected {obj.size}", retryable=True
            )
        if head.get("Metadata", {}).get("sha256") != obj.sha256:
            raise StorageError(f"stored video {where} lacks the expected sha256", retryable=True)
        etag = str(head.get("ETag", "")).strip('"')
        if obj.etag is not None and etag != obj.etag:
            raise StorageError(
                f"stored video {where} has ETag {etag}, expected {obj.etag}", retryable=True
            )
        if deep:
            body = self._call("download", self.client.get_object, Bucket=self.bucket, Key=obj.key)[
                "Body"
            ]
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
                        self._call(
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
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=key)

    def copy(self, key: str, new_key: str) -> None:
        """A server-side copy (no byte passes through the box), multipart past 5 GB: the
        share links point at such copies, so that revoking them can delete what they open."""
        self._call(
            "copy",
            self.client.copy,
            CopySource={"Bucket": self.bucket, "Key": key},
            Bucket=self.bucket,
            Key=new_key,
            ExtraArgs=dict(self.sse) or None,
        )

    def check(self) -> str:
        """For `ezrec doctor`: the bucket answers with these credentials."""
        self._call("bucket check", self.client.head_bucket, Bucket=self.bucket)
        return f"S3 bucket {self.bucket} reachable at {self.endpoint}"


def _content_type(key: str) -> str:
    return "video/mp4" if key.endswith(".mp4") else "application/octet-stream"
