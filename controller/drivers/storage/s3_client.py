"""One S3 bucket through one boto3 client: every call retried by one policy (tenacity) and
every failure turned into one `StorageError` line saying what went wrong and whether a retry
can help."""

from __future__ import annotations

from collections.abc import Callable
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

from controller.drivers.storage.base import StorageError

T = TypeVar("T")

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


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code"))
    return None


class BucketClient:
    """The boto3 client of one bucket and the one way every call to it is made."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None,
        pool_size: int,
        retry_attempts: int,
        retry_wait_s: float,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint_url or "AWS S3"
        self._attempts = retry_attempts
        self._wait_s = retry_wait_s
        config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # tenacity does the retrying, with one policy for every call.
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=pool_size,
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

    def call(self, what: str, fn: Callable[..., T], **kwargs: Any) -> T:
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

    def head(self, key: str) -> dict[str, Any] | None:
        """HeadObject, or None when the object is not there."""
        try:
            return self.call("check", self.client.head_object, Bucket=self.bucket, Key=key)
        except StorageError as exc:
            if error_code(exc.__cause__) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
