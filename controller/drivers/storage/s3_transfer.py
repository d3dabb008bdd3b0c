"""How a file's bytes go up to S3: one PUT, or a resumable multipart upload.

Parts go up through a small thread pool (``concurrency`` in flight). After each part the upload
id and the finished parts are saved to the `Checkpoint`; on the next call they are reconciled
with ListParts, keeping exactly the parts the server has whose MD5 matches the local bytes. A
kill therefore costs at most the parts that were in flight — and not even those if they had
reached S3.

A checkpoint marked ``growing`` was begun by `s3_growing` while the file was still being built:
it has no size or SHA-256 to compare, so the finished file takes over those of its parts whose
MD5 still matches (a header patched at the end makes part 1 go up again).
"""

from __future__ import annotations

import base64
import contextlib
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from controller.drivers.storage.base import (
    Checkpoint,
    ProgressFn,
    StorageError,
    UploadInterrupted,
)
from controller.drivers.storage.s3_client import BucketClient, error_code
from controller.drivers.storage.s3_meter import CountingBody, Meter
from controller.drivers.storage.s3_plan import UploadPlan

CHECKPOINT_VERSION = 1


class Transfer:
    """The PUT and multipart uploads of one bucket (`S3Storage.upload` decides which, and
    verifies the result)."""

    def __init__(
        self,
        api: BucketClient,
        *,
        sse: dict[str, str],
        concurrency: int,
        etag_is_md5: bool,
        signs_payload: bool,
    ) -> None:
        self.api = api
        self.client = api.client
        self.bucket = api.bucket
        self.sse = sse
        self.concurrency = concurrency
        self.etag_is_md5 = etag_is_md5
        self.signs_payload = signs_payload

    def put(self, path: Path, key: str, plan: UploadPlan, meter: Meter) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}", retryable=False) from None

        def send() -> Any:  # a fresh body per attempt: a retry starts at its first byte
            return self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=CountingBody(data, meter, 1, hashed_first=self.signs_payload),
                ContentMD5=base64.b64encode(plan.md5s[0]).decode(),
                ContentType=_content_type(key),
                Metadata={"sha256": plan.sha256},
                **self.sse,
            )

        self.api.call("upload", send)

    def multipart(
        self,
        path: Path,
        key: str,
        plan: UploadPlan,
        checkpoint: Checkpoint | None,
        on_progress: ProgressFn | None,
        stop: threading.Event | None,
    ) -> None:
        state = self._resume(checkpoint, key, plan)
        if state is None:
            state = self.create(
                key,
                plan.part_size,
                checkpoint,
                metadata={"sha256": plan.sha256},
                size=plan.size,
                sha256=plan.sha256,
            )
        meter = Meter(plan.size, sum(int(p["size"]) for p in state["parts"]), on_progress)
        meter.finished(0, 0)  # where a resumed upload starts
        done = self.send_parts(path, key, plan, state, checkpoint, meter, stop)
        self._complete(key, state["upload_id"], done, plan)

    def create(
        self,
        key: str,
        part_size: int,
        checkpoint: Checkpoint | None,
        *,
        metadata: dict[str, str],
        **fields: Any,
    ) -> dict[str, Any]:
        """CreateMultipartUpload, and the checkpoint state that remembers it (plus `fields`)."""
        created = self.api.call(
            "start of multipart upload",
            self.client.create_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            ContentType=_content_type(key),
            Metadata=metadata,
            **self.sse,
        )
        state: dict[str, Any] = {
            "version": CHECKPOINT_VERSION,
            "bucket": self.bucket,
            "key": key,
            "upload_id": created["UploadId"],
            **fields,
            "part_size": part_size,
            "parts": [],
            "started_at": datetime.now(UTC).isoformat(),
        }
        if checkpoint is not None:
            checkpoint.save(state)
        return state

    def send_parts(
        self,
        path: Path,
        key: str,
        plan: UploadPlan,
        state: dict[str, Any],
        checkpoint: Checkpoint | None,
        meter: Meter,
        stop: threading.Event | None,
    ) -> dict[int, dict[str, Any]]:
        """Send every part of `plan` that `state` does not hold yet, recording each in the
        checkpoint as it finishes; returns them all by number. A set `stop` lets the parts in
        flight finish and raises UploadInterrupted."""
        upload_id: str = state["upload_id"]
        done: dict[int, dict[str, Any]] = {int(p["number"]): p for p in state["parts"]}

        def record(number: int, etag: str) -> None:
            done[number] = {
                "number": number,
                "etag": etag,
                "size": plan.span(number)[1],
                "md5": plan.md5s[number - 1].hex(),
            }
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
        return done

    def _upload_part(
        self, path: Path, key: str, upload_id: str, plan: UploadPlan, number: int, meter: Meter
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
                Body=CountingBody(data, meter, number, hashed_first=self.signs_payload),
                ContentMD5=base64.b64encode(plan.md5s[number - 1]).decode(),
            )

        resp = self.api.call(f"upload of part {number}/{plan.parts}", send)
        return str(resp["ETag"])

    def _complete(
        self, key: str, upload_id: str, done: dict[int, dict[str, Any]], plan: UploadPlan
    ) -> None:
        parts = [{"PartNumber": n, "ETag": done[n]["etag"]} for n in sorted(done)]
        try:
            self.api.call(
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
            if error_code(exc.__cause__) != "NoSuchUpload":
                raise

    def _resume(
        self, checkpoint: Checkpoint | None, key: str, plan: UploadPlan
    ) -> dict[str, Any] | None:
        """The checkpointed upload reconciled with what the server holds, or None to start over."""
        if checkpoint is None:
            return None
        state = checkpoint.load()
        if not state:
            return None
        if state.get("growing") is True:
            # Begun while the file was still being built (`s3_growing`): its size and SHA-256
            # were unknown then, so only each part's MD5 can tie it to this file; without an
            # MD5 ETag (SSE-KMS) nothing could, nor verify the result.
            whole_file = self.etag_is_md5
        else:
            whole_file = state.get("size") == plan.size and state.get("sha256") == plan.sha256
        same = (
            whole_file
            and state.get("version") == CHECKPOINT_VERSION
            and state.get("bucket") == self.bucket
            and state.get("key") == key
            and state.get("part_size") == plan.part_size
            and isinstance(state.get("upload_id"), str)
        )
        if not same:
            # Another file, key or part size: the old upload can never be completed.
            self.forget(checkpoint, abort=state.get("bucket") == self.bucket)
            return None
        on_server = self.list_parts(key, state["upload_id"])
        if on_server is None:  # aborted (abort_stale) or expired: start over
            checkpoint.clear()
            return None
        self.reconcile(state, on_server, plan)
        checkpoint.save(state)
        return state

    def reconcile(
        self, state: dict[str, Any], on_server: dict[int, tuple[str, int]], plan: UploadPlan
    ) -> None:
        """Keep in `state` exactly the parts the server holds whose size and MD5 are those of
        the local bytes at their offset (without an MD5 ETag: whose ETag the checkpoint
        recorded), so neither a torn checkpoint nor a changed file can smuggle in a part."""
        claimed = {int(p["number"]): str(p["etag"]) for p in state.get("parts", [])}
        parts = []
        for number, (etag, size) in sorted(on_server.items()):
            if number > plan.parts or size != plan.span(number)[1]:
                continue
            md5 = plan.md5s[number - 1].hex()
            good = etag.strip('"') == md5 if self.etag_is_md5 else claimed.get(number) == etag
            if good:
                parts.append({"number": number, "etag": etag, "size": size, "md5": md5})
        state["parts"] = parts

    def list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]] | None:
        found: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            try:
                page = self.api.call(
                    "listing of uploaded parts",
                    self.client.list_parts,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumberMarker=marker,
                )
            except StorageError as exc:
                if error_code(exc.__cause__) in ("NoSuchUpload", "404"):
                    return None
                raise
            for part in page.get("Parts", []):
                found[int(part["PartNumber"])] = (str(part["ETag"]), int(part["Size"]))
            if not page.get("IsTruncated"):
                return found
            marker = int(page["NextPartNumberMarker"])

    def forget(self, checkpoint: Checkpoint, *, abort: bool) -> None:
        state = checkpoint.load()
        if abort and state and isinstance(state.get("upload_id"), str):
            # Best effort: if this fails, abort_stale() catches the upload later.
            with contextlib.suppress(ClientError, BotoCoreError):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=state.get("key", ""), UploadId=state["upload_id"]
                )
        checkpoint.clear()


def _content_type(key: str) -> str:
    return "video/mp4" if key.endswith(".mp4") else "application/octet-stream"
