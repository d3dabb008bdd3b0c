"""The S3 backend against a real S3-protocol server (moto's server mode on 127.0.0.1).

Bytes "sent" are counted at botocore's send hook, i.e. what really went over the socket in
UploadPart bodies, so the resume assertions measure the network and not our bookkeeping.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from controller.config import load_settings
from controller.context import open_storage
from controller.drivers.storage import (
    FileCheckpoint,
    KeyScheme,
    ServerSideCopy,
    Storage,
    StorageError,
    UploadInterrupted,
)
from controller.drivers.storage.local import LocalStorage
from controller.drivers.storage.s3 import S3Storage, parse_s3_url
from controller.drivers.storage.s3_plan import MiB
from tests._s3server import MotoServer, free_port

TEMPLATE = "{prefix}/{device}/{yyyy}/{mm}/{dd}/{booking}.mp4"
PART = 5 * MiB
SIZE = 17 * MiB + 4321  # 4 parts: 5 + 5 + 5 + 2 MiB and a bit
START = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("s3") / "b1.mp4"
    path.write_bytes(os.urandom(SIZE))
    return path


def make(server: MotoServer, bucket: str, **kw: Any) -> S3Storage:
    kw.setdefault("part_size", PART)
    kw.setdefault("concurrency", 2)
    return S3Storage(
        bucket=bucket,
        scheme=KeyScheme(TEMPLATE, prefix="venue", device="dev1"),
        endpoint_url=server.endpoint_url,
        retry_attempts=2,
        retry_wait_s=0.05,
        connect_timeout_s=2,
        read_timeout_s=10,
        **kw,
    )


class Sent:
    """Counts UploadPart/PutObject body bytes as botocore hands them to the socket."""

    def __init__(self, storage: S3Storage) -> None:
        self.bytes = 0
        self.parts: list[int] = []
        self.numbers: set[int] = set()
        self._lock = threading.Lock()
        storage.client.meta.events.register("before-send.s3.UploadPart", self._hook)
        storage.client.meta.events.register("before-send.s3.PutObject", self._hook)

    def _hook(self, request: Any, **_: Any) -> None:
        # The body may be bytes or a file-like wrapper by now; its length header is exact.
        size = int(request.headers["Content-Length"])
        query = parse_qs(urlsplit(request.url).query)
        with self._lock:
            self.bytes += size
            self.parts.append(size)
            self.numbers.update(int(n) for n in query.get("partNumber", []))


def stop_after(parts: int, stop: threading.Event, part: int = PART) -> Any:
    def progress(done: int, total: int) -> None:
        if done >= parts * part:
            stop.set()

    return progress


@pytest.fixture
def s3(s3_server: MotoServer, s3_bucket: str) -> S3Storage:
    return make(s3_server, s3_bucket)


def test_multipart_upload_is_verified(s3: S3Storage, video: Path, tmp_path: Path) -> None:
    sent = Sent(s3)
    seen: list[tuple[int, int]] = []
    cp = FileCheckpoint(tmp_path / "cp.json")
    key = s3.key_for("b1", START)
    assert key == "venue/dev1/2024/05/01/b1.mp4"
    obj = s3.upload(video, key, checkpoint=cp, on_progress=lambda d, t: seen.append((d, t)))
    data = video.read_bytes()
    assert obj.url == f"s3://{s3.bucket}/{key}"
    assert obj.size == SIZE
    assert obj.sha256 == hashlib.sha256(data).hexdigest()
    assert obj.etag is not None and obj.etag.endswith("-4")
    assert sorted(sent.parts) == [SIZE - 3 * PART, PART, PART, PART]
    assert seen[0] == (0, SIZE) and seen[-1] == (SIZE, SIZE)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert cp.load() is None  # a finished upload leaves no checkpoint
    got = s3.client.get_object(Bucket=s3.bucket, Key=key)
    assert got["Body"].read() == data
    assert got["Metadata"]["sha256"] == obj.sha256
    assert got["ContentType"] == "video/mp4"
    s3.verify(obj, deep=True)


def test_small_file_is_one_put(s3: S3Storage, tmp_path: Path) -> None:
    small = tmp_path / "s.mp4"
    small.write_bytes(b"tiny video" * 100)
    sent = Sent(s3)
    obj = s3.upload(small, "k/s.mp4")
    assert sent.parts == [1000]
    assert obj.etag == hashlib.md5(small.read_bytes()).hexdigest()
    s3.verify(obj, deep=True)


def test_same_file_again_sends_nothing(s3: S3Storage, video: Path) -> None:
    first = s3.upload(video, "k/b1.mp4")
    sent = Sent(s3)
    again = s3.upload(video, "k/b1.mp4")
    assert sent.bytes == 0
    assert again == first


def test_stop_then_new_storage_resumes(
    s3_server: MotoServer, s3_bucket: str, video: Path, tmp_path: Path
) -> None:
    cp = FileCheckpoint(tmp_path / "cp.json")
    first = make(s3_server, s3_bucket)
    sent1 = Sent(first)
    stop = threading.Event()
    with pytest.raises(UploadInterrupted, match="resumes"):
        first.upload(video, "k/b1.mp4", checkpoint=cp, on_progress=stop_after(1, stop), stop=stop)
    saved = cp.load()
    assert saved is not None and 1 <= len(saved["parts"]) < 4
    assert sum(p["size"] for p in saved["parts"]) == sent1.bytes  # every sent part recorded

    second = make(s3_server, s3_bucket)
    sent2 = Sent(second)
    seen: list[int] = []
    obj = second.upload(video, "k/b1.mp4", checkpoint=cp, on_progress=lambda d, t: seen.append(d))
    assert seen[0] == sent1.bytes  # progress starts where the first run stopped
    assert sent1.bytes + sent2.bytes == SIZE  # nothing sent twice
    second.verify(obj, deep=True)
    assert cp.load() is None


def test_crash_with_stale_checkpoint_resends_at_most_one_part(
    s3_server: MotoServer, s3_bucket: str, video: Path, tmp_path: Path
) -> None:
    cp = FileCheckpoint(tmp_path / "cp.json")
    first = make(s3_server, s3_bucket)
    sent1 = Sent(first)

    def die(done: int, total: int) -> None:
        if done >= 2 * PART:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        first.upload(video, "k/b1.mp4", checkpoint=cp, on_progress=die)
    # A real crash can also lose the last checkpoint write: forget the newest recorded part,
    # and claim one with a wrong ETag, as a torn state might. ListParts must sort this out.
    state = cp.load()
    assert state is not None
    state["parts"] = [*state["parts"][:1], {"number": 4, "etag": '"bogus"', "size": 1}]
    cp.save(state)

    second = make(s3_server, s3_bucket)
    sent2 = Sent(second)
    obj = second.upload(video, "k/b1.mp4", checkpoint=cp)
    resent = sent1.bytes + sent2.bytes - SIZE
    assert 0 <= resent <= PART
    second.verify(obj, deep=True)


@pytest.mark.slow
def test_sigkill_mid_upload_then_resume(
    s3_server: MotoServer, s3_bucket: str, video: Path, tmp_path: Path
) -> None:
    """A real SIGKILL of the uploading process after its second part: only the parts that were
    in flight (at most S3_CONCURRENCY, here 2) may go up again; recorded ones never do."""
    cp_path = tmp_path / "cp.json"
    child = f"""
import json, os, signal, sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from controller.drivers.storage import FileCheckpoint, KeyScheme
from controller.drivers.storage.s3 import S3Storage
s3 = S3Storage(bucket={s3_bucket!r}, scheme=KeyScheme({TEMPLATE!r}, prefix="v", device="d"),
               endpoint_url={s3_server.endpoint_url!r}, part_size={PART}, concurrency=2)
def started(request, **_):
    for n in parse_qs(urlsplit(request.url).query).get("partNumber", []):
        os.write(1, f"{{n}}\\n".encode())  # one write: threads cannot interleave it
s3.client.meta.events.register("before-send.s3.UploadPart", started)
def progress(done, total):
    # Progress counts bytes as they go out: die once two parts are recorded as done.
    cp = Path({str(cp_path)!r})
    if cp.exists() and len(json.loads(cp.read_text())["parts"]) >= 2:
        os.kill(os.getpid(), signal.SIGKILL)
s3.upload(Path({str(video)!r}), "k/killed.mp4", checkpoint=FileCheckpoint(Path({str(cp_path)!r})),
          on_progress=progress)
"""
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    started = {int(line) for line in proc.stdout.split()}
    recorded = {p["number"] for p in json.loads(cp_path.read_text())["parts"]}
    assert len(recorded) >= 2 and recorded <= started

    s3 = make(s3_server, s3_bucket)
    sent = Sent(s3)
    obj = s3.upload(video, "k/killed.mp4", checkpoint=FileCheckpoint(cp_path))
    assert not sent.numbers & recorded  # nothing the checkpoint knew went up again
    again = sent.numbers & started
    assert len(again) <= 2
    assert sent.numbers | started == {1, 2, 3, 4}
    s3.verify(obj, deep=True)


@pytest.mark.slow
def test_server_down_is_retryable_then_succeeds(video: Path, tmp_path: Path) -> None:
    server = MotoServer(port=free_port())
    server.start()
    try:
        bucket = server.new_bucket()
        s3 = make(server, bucket)
        cp = FileCheckpoint(tmp_path / "cp.json")

        def outage(done: int, total: int) -> None:
            if done >= PART and server._server is not None:
                server.stop()

        with pytest.raises(StorageError, match="cannot reach") as exc:
            s3.upload(video, "k/b1.mp4", checkpoint=cp, on_progress=outage)
        assert exc.value.retryable
        assert "127.0.0.1" in str(exc.value)
        state = cp.load()
        assert state is not None and state["parts"]

        # Still down: a clean retryable error, the checkpoint kept.
        with pytest.raises(StorageError) as again:
            s3.upload(video, "k/b1.mp4", checkpoint=cp)
        assert again.value.retryable
        assert cp.load() is not None

        server.start()
        sent = Sent(s3)
        obj = s3.upload(video, "k/b1.mp4", checkpoint=cp)
        done_before = sum(p["size"] for p in state["parts"])
        assert sent.bytes <= SIZE - done_before + PART
        s3.verify(obj, deep=True)
    finally:
        server.stop()


def test_verify_catches_an_object_changed_behind_its_back(s3: S3Storage, video: Path) -> None:
    obj = s3.upload(video, "k/b1.mp4")
    s3.client.put_object(
        Bucket=s3.bucket, Key="k/b1.mp4", Body=b"truncated", Metadata={"sha256": obj.sha256}
    )
    with pytest.raises(StorageError, match="has 9 bytes, expected") as exc:
        s3.verify(obj)
    assert exc.value.retryable
    # Same size and a forged sha256 in the metadata: the ETag still tells.
    forged = os.urandom(SIZE)
    s3.client.put_object(
        Bucket=s3.bucket, Key="k/b1.mp4", Body=forged, Metadata={"sha256": obj.sha256}
    )
    with pytest.raises(StorageError, match="ETag"):
        s3.verify(obj)
    # Without an ETag to compare (SSE-KMS), the deep check still catches it.
    from dataclasses import replace

    with pytest.raises(StorageError, match="sha256"):
        s3.verify(replace(obj, etag=None), deep=True)
    s3.delete("k/b1.mp4")
    with pytest.raises(StorageError, match="missing"):
        s3.verify(obj)


def test_checkpoint_of_another_file_starts_over(
    s3: S3Storage, video: Path, tmp_path: Path
) -> None:
    cp = FileCheckpoint(tmp_path / "cp.json")
    stop = threading.Event()
    with pytest.raises(UploadInterrupted):
        s3.upload(video, "k/old.mp4", checkpoint=cp, on_progress=stop_after(1, stop), stop=stop)
    old_id = cp.load()["upload_id"]  # type: ignore[index]
    other = tmp_path / "other.mp4"
    other.write_bytes(os.urandom(6 * MiB))
    obj = s3.upload(other, "k/other.mp4", checkpoint=cp)
    s3.verify(obj, deep=True)
    ids = [u["UploadId"] for u in s3.client.list_multipart_uploads(Bucket=s3.bucket).get(
        "Uploads", []
    )]
    assert old_id not in ids  # the orphan was aborted, not left to cost money


def test_abort_stale_only_touches_old_uploads_of_this_device(
    s3: S3Storage, video: Path, tmp_path: Path
) -> None:
    mine = s3.client.create_multipart_upload(Bucket=s3.bucket, Key="venue/dev1/2024/x.mp4")
    theirs = s3.client.create_multipart_upload(Bucket=s3.bucket, Key="venue/dev2/2024/x.mp4")
    # moto reports every upload as initiated on 2010-11-10: younger than 30 years, older than 1.
    year = 365 * 24 * 3600
    assert s3.abort_stale(30 * year) == 0
    assert s3.abort_stale(1 * year) == 1
    left = {u["UploadId"] for u in s3.client.list_multipart_uploads(Bucket=s3.bucket)["Uploads"]}
    assert theirs["UploadId"] in left and mine["UploadId"] not in left

    # An upload aborted under a checkpoint simply starts over.
    cp = FileCheckpoint(tmp_path / "cp.json")
    stop = threading.Event()
    key = s3.key_for("b1", START)
    with pytest.raises(UploadInterrupted):
        s3.upload(video, key, checkpoint=cp, on_progress=stop_after(1, stop), stop=stop)
    assert s3.abort_stale(0) == 1
    sent = Sent(s3)
    obj = s3.upload(video, key, checkpoint=cp)
    assert sent.bytes == SIZE
    s3.verify(obj, deep=True)


def test_presigned_url_serves_the_video(
    s3_server: MotoServer, s3_bucket: str, tmp_path: Path
) -> None:
    s3 = make(s3_server, s3_bucket, presign_s=300)
    data = os.urandom(4096)
    path = tmp_path / "x.mp4"
    path.write_bytes(data)
    obj = s3.upload(path, "k/x.mp4")
    assert obj.presigned_url is not None and "Expires=" in obj.presigned_url
    assert obj.presigned_url.startswith(s3_server.endpoint_url)
    assert httpx.get(obj.presigned_url).content == data
    with pytest.raises(StorageError, match="presign expiry"):
        s3.presign("k/x.mp4", 0)


def test_sse_header_is_sent_and_accepted(
    s3_server: MotoServer, s3_bucket: str, video: Path
) -> None:
    s3 = make(s3_server, s3_bucket, sse="AES256")
    obj = s3.upload(video, "k/enc.mp4")
    head = s3.client.head_object(Bucket=s3.bucket, Key="k/enc.mp4")
    assert head["ServerSideEncryption"] == "AES256"
    s3.verify(obj)
    kms = make(s3_server, s3_bucket, sse="aws:kms:alias/ezrec")
    assert kms.sse == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/ezrec"}
    assert not kms.etag_is_md5
    with pytest.raises(StorageError, match="EZREC_S3_SSE") as exc:
        make(s3_server, s3_bucket, sse="rot13")
    assert not exc.value.retryable


def test_missing_bucket_is_not_retryable(s3_server: MotoServer, video: Path) -> None:
    s3 = make(s3_server, "no-such-bucket-here")
    with pytest.raises(StorageError, match="NoSuchBucket") as exc:
        s3.upload(video, "k/b1.mp4")
    assert not exc.value.retryable
    with pytest.raises(StorageError, match="bucket"):
        s3.check()


def test_missing_credentials_are_not_retryable(
    s3_server: MotoServer, s3_bucket: str, video: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no probe of a link-local address
    s3 = make(s3_server, s3_bucket)
    with pytest.raises(StorageError, match="no usable AWS credentials") as exc:
        s3.upload(video, "k/b1.mp4")
    assert not exc.value.retryable



def test_only_s3_copies_server_side(s3: S3Storage, tmp_path: Path) -> None:
    local = LocalStorage(tmp_path, KeyScheme(TEMPLATE, prefix="", device="d"))
    assert isinstance(s3, Storage) and isinstance(s3, ServerSideCopy)
    assert isinstance(local, Storage) and not isinstance(local, ServerSideCopy)

def test_open_storage_from_settings(s3_server: MotoServer, tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, storage_url="s3://media-bucket/venues/north/", device_id="pi7",
        s3_endpoint_url=s3_server.endpoint_url, s3_part_size_mb=6, s3_concurrency=3,
    )
    storage = open_storage(settings)
    assert isinstance(storage, S3Storage)
    assert storage.url == "s3://media-bucket/venues/north"
    assert (storage.part_size, storage.concurrency) == (6 * MiB, 3)
    assert storage.key_for("b9", START) == "venues/north/pi7/2024/05/01/b9.mp4"
    assert storage.scheme.static_prefix() == "venues/north/pi7/"


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://b/", "s3://x/../y"])
def test_bad_s3_urls(url: str) -> None:
    with pytest.raises(StorageError, match="EZREC_STORAGE_URL"):
        parse_s3_url(url)


@pytest.fixture
def _no_leftover_threads() -> Iterator[None]:
    before = {t.name for t in threading.enumerate()}
    yield
    leftover = {t.name for t in threading.enumerate()} - before
    assert not [n for n in leftover if n.startswith("s3-part")]


def test_no_part_threads_outlive_an_upload(
    _no_leftover_threads: None, s3: S3Storage, video: Path
) -> None:
    s3.upload(video, "k/t.mp4")


def _through(server: MotoServer, proxy: Any, bucket: str, **kw: Any) -> S3Storage:
    kw.setdefault("part_size", PART)
    kw.setdefault("retry_wait_s", 0.05)
    return S3Storage(bucket=bucket, scheme=KeyScheme(TEMPLATE, prefix="v", device="d"),
                     endpoint_url=proxy.url, **kw)


@pytest.mark.slow
def test_progress_counts_bytes_on_a_slow_uplink(
    s3_server: MotoServer, s3_bucket: str, tmp_path: Path
) -> None:
    """At a venue's uplink one part takes minutes: progress must move with the bytes, not once
    per part, or a slow upload looks like a hung one."""
    from tests._throttle import UplinkProxy

    host, port = urlsplit(s3_server.endpoint_url).hostname, urlsplit(s3_server.endpoint_url).port
    proxy = UplinkProxy((host or "127.0.0.1", int(port or 0)), rate_bps=4 * MiB)
    path = tmp_path / "slow.mp4"
    path.write_bytes(os.urandom(PART + MiB))  # two parts
    seen: list[int] = []
    try:
        s3 = _through(s3_server, proxy, s3_bucket)
        s3.upload(path, "k/slow.mp4", on_progress=lambda done, _total: seen.append(done))
    finally:
        proxy.close()
    inside_first_part = [d for d in seen if 0 < d < PART]
    assert len(inside_first_part) >= 3, seen
    assert seen == sorted(seen) and seen[-1] == path.stat().st_size


@pytest.mark.slow
def test_a_hung_uplink_fails_the_upload_in_bounded_time(
    s3_server: MotoServer, s3_bucket: str, tmp_path: Path
) -> None:
    """A link that accepts and then moves nothing: the socket timeout ends each call, and the
    upload fails as retryable (the booking's backoff tries again) instead of hanging."""
    import time

    from tests._throttle import UplinkProxy

    host, port = urlsplit(s3_server.endpoint_url).hostname, urlsplit(s3_server.endpoint_url).port
    proxy = UplinkProxy((host or "127.0.0.1", int(port or 0)))
    proxy.hang = True
    path = tmp_path / "hung.mp4"
    path.write_bytes(os.urandom(MiB))
    began = time.monotonic()
    try:
        s3 = _through(s3_server, proxy, s3_bucket, connect_timeout_s=1, read_timeout_s=1,
                      retry_attempts=2)
        with pytest.raises(StorageError) as exc:
            s3.upload(path, "k/hung.mp4")
    finally:
        proxy.close()
    assert exc.value.retryable
    assert time.monotonic() - began < 15
