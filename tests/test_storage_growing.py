"""Uploading a video while it is built (`S3Storage.upload_growing`), against a real S3-protocol
server (moto's server mode on 127.0.0.1).

The file grows by appends as the builder's fragmented MP4 would; parts are counted at botocore's
send hook, so "sent" means what went over the socket, not what our bookkeeping believes.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.drivers.storage import (
    FileCheckpoint,
    GrowingUpload,
    KeyScheme,
    StorageError,
    UploadInterrupted,
)
from controller.drivers.storage.local import LocalStorage
from controller.drivers.storage.s3 import S3Storage
from controller.drivers.storage.s3_plan import MiB, plan_file
from tests._s3server import MotoServer

PART = 5 * MiB
FINAL = 17 * MiB + 4321  # 4 parts: 5 + 5 + 5 + 2 MiB and a bit
KEY = "venue/dev1/2024/05/01/b1.mp4"


@pytest.fixture(scope="module")
def blob() -> bytes:
    """The finished video's bytes; a growing file is a prefix of them."""
    return os.urandom(20 * MiB)


def make(server: MotoServer, bucket: str, **kw: Any) -> S3Storage:
    kw.setdefault("part_size", PART)
    kw.setdefault("concurrency", 2)
    return S3Storage(
        bucket=bucket,
        scheme=KeyScheme("{prefix}/{device}/{yyyy}/{mm}/{dd}/{booking}.mp4", prefix="venue",
                         device="dev1"),
        endpoint_url=server.endpoint_url,
        retry_attempts=2,
        retry_wait_s=0.05,
        connect_timeout_s=2,
        read_timeout_s=10,
        **kw,
    )


@pytest.fixture
def s3(s3_server: MotoServer, s3_bucket: str) -> S3Storage:
    return make(s3_server, s3_bucket)


class Sent:
    """The part numbers (each time one goes over the socket) and body bytes sent."""

    def __init__(self, storage: S3Storage) -> None:
        self.numbers: Counter[int] = Counter()
        self.bytes = 0
        self.puts = 0
        self._lock = threading.Lock()
        storage.client.meta.events.register("before-send.s3.UploadPart", self._hook)
        storage.client.meta.events.register("before-send.s3.PutObject", self._put)

    def _hook(self, request: Any, **_: Any) -> None:
        query = parse_qs(urlsplit(request.url).query)
        with self._lock:
            self.bytes += int(request.headers["Content-Length"])
            self.numbers.update(int(n) for n in query.get("partNumber", []))

    def _put(self, request: Any, **_: Any) -> None:
        with self._lock:
            self.puts += 1
            self.bytes += int(request.headers["Content-Length"])


class Growing:
    """A file the builder appends to; `grow(n)` makes it the first n bytes of `blob`."""

    def __init__(self, path: Path, blob: bytes) -> None:
        self.path, self.blob = path, blob
        path.write_bytes(b"")

    def grow(self, size: int) -> int:
        have = self.path.stat().st_size
        with self.path.open("ab") as fh:
            fh.write(self.blob[have:size])
        return size


def server_parts(s3: S3Storage, upload_id: str, key: str = KEY) -> dict[int, str]:
    page = s3.client.list_parts(Bucket=s3.bucket, Key=key, UploadId=upload_id)
    return {p["PartNumber"]: p["ETag"].strip('"') for p in page.get("Parts", [])}


def uploads(s3: S3Storage) -> list[str]:
    listed = s3.client.list_multipart_uploads(Bucket=s3.bucket)
    return [u["UploadId"] for u in listed.get("Uploads", [])]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_only_s3_uploads_while_growing(s3: S3Storage, tmp_path: Path) -> None:
    local = LocalStorage(tmp_path, KeyScheme("{booking}.mp4", prefix="", device="d"))
    assert isinstance(s3, GrowingUpload)
    assert not isinstance(local, GrowingUpload)


def test_parts_go_up_as_they_exist_and_the_object_stays_invisible(
    s3: S3Storage, blob: bytes, tmp_path: Path
) -> None:
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "b1.mp4.upload.json")
    sent = Sent(s3)

    # Less than a part: nothing to send, and no upload begun that might need aborting.
    assert s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=video.grow(3 * MiB)) == 0
    assert cp.load() is None and uploads(s3) == [] and sent.bytes == 0

    video.grow(7 * MiB)
    assert s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=7 * MiB) == PART
    state = cp.load()
    assert state is not None and state["growing"] is True
    assert (state["bucket"], state["key"], state["part_size"]) == (s3.bucket, KEY, PART)
    assert "sha256" not in state and "size" not in state
    assert [(p["number"], p["size"], p["md5"]) for p in state["parts"]] == [
        (1, PART, md5(blob[:PART]))
    ]
    assert server_parts(s3, state["upload_id"]) == {1: md5(blob[:PART])}
    with pytest.raises(ClientError, match="404"):
        s3.client.head_object(Bucket=s3.bucket, Key=KEY)  # not visible before completion

    assert s3.upload_growing(
        video.path, KEY, checkpoint=cp, stable_below=video.grow(12 * MiB)
    ) == 2 * PART
    # Asked again with nothing new: nothing goes up, the same bytes are on the server.
    assert s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=12 * MiB) == 2 * PART
    # Part 3 (10..15 MiB) is not entirely below the stable point yet.
    video.grow(16 * MiB)
    assert s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=14 * MiB) == 2 * PART
    assert s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=15 * MiB) == 3 * PART
    assert sent.numbers == Counter({1: 1, 2: 1, 3: 1})
    assert sorted(server_parts(s3, state["upload_id"])) == [1, 2, 3]
    assert s3.api.head(KEY) is None

    video.grow(FINAL)
    sent = Sent(s3)
    seen: list[tuple[int, int]] = []
    obj = s3.upload(video.path, KEY, checkpoint=cp, on_progress=lambda d, t: seen.append((d, t)))
    assert sent.numbers == Counter({4: 1})  # only the rest
    assert sent.bytes == FINAL - 3 * PART
    assert seen[0] == (3 * PART, FINAL) and seen[-1] == (FINAL, FINAL)
    assert cp.load() is None and uploads(s3) == []
    got = s3.client.get_object(Bucket=s3.bucket, Key=KEY)
    assert got["Body"].read() == blob[:FINAL]
    assert got["Metadata"] == {"ezrec-growing": "1"}  # no sha256: unknown when S3 fixed it
    assert obj.sha256 == hashlib.sha256(blob[:FINAL]).hexdigest()
    s3.verify(obj)
    s3.verify(obj, deep=True)
    # Already stored and proven by its ETag: the same upload again sends nothing.
    again = Sent(s3)
    assert s3.upload(video.path, KEY, checkpoint=cp) == obj
    assert again.bytes == 0


def test_a_header_patched_at_the_end_resends_only_part_one(
    s3: S3Storage, blob: bytes, tmp_path: Path
) -> None:
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "cp.json")
    assert s3.upload_growing(
        video.path, KEY, checkpoint=cp, stable_below=video.grow(16 * MiB)
    ) == 3 * PART
    video.grow(FINAL)
    with video.path.open("r+b") as fh:  # the duration in the header, rewritten once
        fh.write(b"\x00moov-with-the-real-duration" * 100)
    local = video.path.read_bytes()
    assert local[:PART] != blob[:PART] and local[PART:] == blob[PART:FINAL]

    sent = Sent(s3)
    obj = s3.upload(video.path, KEY, checkpoint=cp)
    assert sent.numbers == Counter({1: 1, 4: 1})
    assert s3.client.get_object(Bucket=s3.bucket, Key=KEY)["Body"].read() == local
    s3.verify(obj, deep=True)


def test_a_lost_checkpoint_write_costs_nothing_after_a_restart(
    s3_server: MotoServer, s3_bucket: str, blob: bytes, tmp_path: Path
) -> None:
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "cp.json")
    first = make(s3_server, s3_bucket)
    first.upload_growing(video.path, KEY, checkpoint=cp, stable_below=video.grow(16 * MiB))
    # A kill can lose the newest checkpoint writes; a torn one could claim a part that the
    # server never got (here: part 3 with a bogus ETag after it is deleted from the claims).
    state = cp.load()
    assert state is not None and len(state["parts"]) == 3
    state["parts"] = [*state["parts"][:1], {"number": 2, "etag": '"bogus"', "size": PART,
                                            "md5": "0" * 32}]
    cp.save(state)

    # A new process: nothing in memory, the local parts hashed again, ListParts believed.
    second = make(s3_server, s3_bucket)
    sent = Sent(second)
    assert second.upload_growing(video.path, KEY, checkpoint=cp, stable_below=16 * MiB) == 3 * PART
    assert sent.bytes == 0
    kept = cp.load()
    assert kept is not None
    assert [(p["number"], p["md5"]) for p in kept["parts"]] == [
        (n, md5(blob[(n - 1) * PART : n * PART])) for n in (1, 2, 3)
    ]
    video.grow(FINAL)
    obj = second.upload(video.path, KEY, checkpoint=cp)
    assert sent.numbers == Counter({4: 1})
    second.verify(obj, deep=True)


def test_a_crash_mid_call_resumes_without_resending_recorded_parts(
    s3_server: MotoServer, s3_bucket: str, blob: bytes, tmp_path: Path
) -> None:
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "cp.json")
    first = make(s3_server, s3_bucket, concurrency=1)
    sent1 = Sent(first)

    def die(done: int, total: int) -> None:
        if done >= PART:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        first.upload_growing(
            video.path, KEY, checkpoint=cp, stable_below=video.grow(16 * MiB), on_progress=die
        )
    state = cp.load()
    assert state is not None
    recorded = {p["number"] for p in state["parts"]}
    assert recorded and recorded < {1, 2, 3}

    second = make(s3_server, s3_bucket)
    sent2 = Sent(second)
    assert second.upload_growing(video.path, KEY, checkpoint=cp, stable_below=16 * MiB) == 3 * PART
    assert not set(sent2.numbers) & recorded
    assert set(sent1.numbers) | set(sent2.numbers) == {1, 2, 3}
    video.grow(FINAL)
    obj = second.upload(video.path, KEY, checkpoint=cp)
    second.verify(obj, deep=True)


def test_stop_interrupts_and_a_later_call_continues(
    s3: S3Storage, blob: bytes, tmp_path: Path
) -> None:
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "cp.json")
    stop = threading.Event()
    stop.set()
    sent = Sent(s3)
    with pytest.raises(UploadInterrupted):
        s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=video.grow(16 * MiB),
                          stop=stop)
    assert sent.bytes == 0

    stop.clear()

    def stop_after_one(done: int, total: int) -> None:
        if done >= PART:
            stop.set()

    with pytest.raises(UploadInterrupted, match="resumes"):
        s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=16 * MiB,
                          on_progress=stop_after_one, stop=stop)
    state = cp.load()
    assert state is not None
    first = set(sent.numbers)
    assert {p["number"] for p in state["parts"]} == first  # every part sent is recorded
    assert 1 <= len(first) < 3

    stop.clear()
    more = Sent(s3)
    assert s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=16 * MiB) == 3 * PART
    assert set(more.numbers) == {1, 2, 3} - first


def test_an_upload_aborted_on_the_server_starts_over(
    s3: S3Storage, blob: bytes, tmp_path: Path
) -> None:
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "cp.json")
    s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=video.grow(12 * MiB))
    old = cp.load()
    assert old is not None
    assert s3.abort_stale(0) == 1  # what a week without the box does

    sent = Sent(s3)
    assert s3.upload_growing(
        video.path, KEY, checkpoint=cp, stable_below=video.grow(16 * MiB)
    ) == 3 * PART
    new = cp.load()
    assert new is not None and new["upload_id"] != old["upload_id"] and new["growing"]
    assert sent.numbers == Counter({1: 1, 2: 1, 3: 1})
    video.grow(FINAL)
    obj = s3.upload(video.path, KEY, checkpoint=cp)
    assert s3.client.get_object(Bucket=s3.bucket, Key=KEY)["Body"].read() == blob[:FINAL]
    s3.verify(obj, deep=True)


def test_an_upload_aborted_before_the_final_one_is_sent_whole(
    s3: S3Storage, blob: bytes, tmp_path: Path
) -> None:
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "cp.json")
    s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=video.grow(12 * MiB))
    s3.abort_stale(0)
    video.grow(FINAL)
    sent = Sent(s3)
    obj = s3.upload(video.path, KEY, checkpoint=cp)
    assert sent.bytes == FINAL
    # An ordinary upload now: the SHA-256 was known when it began.
    head = s3.client.head_object(Bucket=s3.bucket, Key=KEY)
    assert head["Metadata"] == {"sha256": obj.sha256}
    s3.verify(obj, deep=True)


def test_an_upload_aborted_while_parts_go_up_ends_right(
    s3: S3Storage, blob: bytes, tmp_path: Path
) -> None:
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "cp.json")
    s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=video.grow(7 * MiB))

    aborted: list[str] = []

    def abort_now(done: int, total: int) -> None:
        state = cp.load()
        if done > PART and state is not None and not aborted:
            aborted.append(state["upload_id"])
            s3.client.abort_multipart_upload(Bucket=s3.bucket, Key=KEY,
                                             UploadId=state["upload_id"])

    # S3 answers NoSuchUpload, moto a 500: either way this call fails, retryably.
    with pytest.raises(StorageError) as exc:
        s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=video.grow(16 * MiB),
                          on_progress=abort_now)
    assert exc.value.retryable and aborted
    assert s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=16 * MiB) == 3 * PART
    state = cp.load()
    assert state is not None and state["upload_id"] != aborted[0]
    video.grow(FINAL)
    obj = s3.upload(video.path, KEY, checkpoint=cp)
    s3.verify(obj, deep=True)


def test_a_file_built_anew_sends_its_parts_again(
    s3: S3Storage, blob: bytes, tmp_path: Path
) -> None:
    """Processing failed and ran again: the new file has other bytes at the same offsets."""
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "cp.json")
    s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=video.grow(12 * MiB))
    rebuilt = bytes(reversed(blob))
    tmp = tmp_path / "b1.mp4.tmp"
    tmp.write_bytes(rebuilt[: 12 * MiB])
    tmp.replace(video.path)
    sent = Sent(s3)
    assert s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=12 * MiB) == 2 * PART
    assert sent.numbers == Counter({1: 1, 2: 1})
    state = cp.load()
    assert state is not None and state["parts"][0]["md5"] == md5(rebuilt[:PART])
    video.blob = rebuilt
    video.grow(FINAL)
    obj = s3.upload(video.path, KEY, checkpoint=cp)
    assert s3.client.get_object(Bucket=s3.bucket, Key=KEY)["Body"].read() == rebuilt[:FINAL]
    s3.verify(obj, deep=True)


def test_a_video_of_exactly_one_part_ends_as_one_put(
    s3: S3Storage, blob: bytes, tmp_path: Path
) -> None:
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "cp.json")
    assert s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=video.grow(PART)) == PART
    assert len(uploads(s3)) == 1
    sent = Sent(s3)
    obj = s3.upload(video.path, KEY, checkpoint=cp)
    assert sent.puts == 1
    assert uploads(s3) == []  # the growing upload was aborted, not left to cost storage
    assert cp.load() is None
    s3.verify(obj, deep=True)


def test_sse_kms_sends_nothing_while_growing(
    s3_server: MotoServer, s3_bucket: str, blob: bytes, tmp_path: Path
) -> None:
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "cp.json")
    plain = make(s3_server, s3_bucket)
    plain.upload_growing(video.path, KEY, checkpoint=cp, stable_below=video.grow(12 * MiB))
    before = cp.load()

    kms = make(s3_server, s3_bucket, sse="aws:kms:alias/ezrec")
    sent = Sent(kms)
    video.grow(16 * MiB)
    assert kms.upload_growing(video.path, KEY, checkpoint=cp, stable_below=16 * MiB) == 0
    assert sent.bytes == 0 and cp.load() == before

    # The finished file under SSE-KMS: no MD5 ETag could prove the growing parts, so they
    # are dropped (and aborted) and the object goes up whole, with its sha256 metadata.
    video.grow(FINAL)
    obj = kms.upload(video.path, KEY, checkpoint=cp)
    assert sent.bytes == FINAL
    assert before is not None and before["upload_id"] not in uploads(kms)
    head = kms.client.head_object(Bucket=kms.bucket, Key=KEY)
    assert head["Metadata"] == {"sha256": obj.sha256}
    assert obj.etag is None
    kms.verify(obj, deep=True)


def test_verify_of_a_growing_object(s3: S3Storage, blob: bytes, tmp_path: Path) -> None:
    video = Growing(tmp_path / "b1.mp4", blob)
    cp = FileCheckpoint(tmp_path / "cp.json")
    s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=video.grow(16 * MiB))
    video.grow(FINAL)
    obj = s3.upload(video.path, KEY, checkpoint=cp)
    s3.verify(obj, deep=True)

    # One byte differs locally: its part MD5, hence the ETag, gives it away...
    other = tmp_path / "other.mp4"
    changed = bytearray(blob[:FINAL])
    changed[9 * MiB] ^= 1
    other.write_bytes(bytes(changed))
    plan = plan_file(other, PART)
    differs = replace(obj, sha256=plan.sha256, etag=plan.etag)
    with pytest.raises(StorageError, match="ETag"):
        s3.verify(differs)
    # ...and a deep check compares the downloaded bytes with the SHA-256 itself.
    with pytest.raises(StorageError, match="does not match its sha256"):
        s3.verify(replace(differs, etag=obj.etag), deep=True)
    s3.verify(replace(differs, etag=obj.etag))  # shallow: size and ETag are the object's

    # Without an ETag to trust (SSE-KMS), the marker alone proves nothing.
    with pytest.raises(StorageError, match="lacks the expected sha256"):
        s3.verify(replace(obj, etag=None))

    # The same bytes in the same parts but without the marker: not ours, refused.
    up = s3.client.create_multipart_upload(Bucket=s3.bucket, Key="venue/copy.mp4")
    parts = []
    for n in range(1, 5):
        chunk = blob[(n - 1) * PART : min(n * PART, FINAL)]
        got = s3.client.upload_part(Bucket=s3.bucket, Key="venue/copy.mp4", PartNumber=n,
                                    UploadId=up["UploadId"], Body=chunk)
        parts.append({"PartNumber": n, "ETag": got["ETag"]})
    s3.client.complete_multipart_upload(Bucket=s3.bucket, Key="venue/copy.mp4",
                                        UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
    copy = replace(obj, key="venue/copy.mp4")
    assert s3.client.head_object(Bucket=s3.bucket, Key=copy.key)["ETag"].strip('"') == obj.etag
    with pytest.raises(StorageError, match="lacks the expected sha256"):
        s3.verify(copy)


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.integers(1, 6 * MiB), st.integers(0, 3 * MiB)), min_size=1, max_size=6
    )
)
def test_whatever_the_growth_every_part_goes_up_once(
    s3_server: MotoServer, blob: bytes, tmp_path: Path, steps: list[tuple[int, int]]
) -> None:
    """Appends of any size, each followed by a call whose stable point lags the end by any
    amount: each call reports exactly its whole stable parts, and over the whole upload every
    part goes up once (none of the file's bytes change)."""
    s3 = make(s3_server, s3_server.new_bucket())
    sent = Sent(s3)
    where = tmp_path / uuid.uuid4().hex
    where.mkdir()
    video = Growing(where / "v.mp4", blob)
    cp = FileCheckpoint(where / "cp.json")
    size = 0
    for grow, lag in steps:
        size = video.grow(min(size + grow, len(blob)))
        stable = max(size - lag, 0)
        on_server = s3.upload_growing(video.path, KEY, checkpoint=cp, stable_below=stable)
        assert on_server == stable // PART * PART
    final = video.grow(max(size, PART + 1))  # the finished video has several parts
    obj = s3.upload(video.path, KEY, checkpoint=cp)
    assert set(sent.numbers.values()) == {1}
    assert sorted(sent.numbers) == list(range(1, -(-final // PART) + 1))
    s3.verify(obj, deep=True)
