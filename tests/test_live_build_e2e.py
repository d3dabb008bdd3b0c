"""The video built and uploaded while its slot is recorded: a real `ezrec run`, synthetic
cameras, S3 on a loopback moto server."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.db import utcnow
from controller.drivers.builder import fmp4
from controller.fsm import State
from controller.recordings import booking_files, chunk_dir, upload_checkpoint
from tests._e2e import probe, state_of, wait_for, world  # noqa: F401
from tests._s3server import FAKE_AWS_ENV, s3_bucket, s3_server  # noqa: F401

# Lossless x264 at 640x360: big enough that whole 5 MiB parts exist while recording.
LIVE_ENV = {
    "EZREC_WIDTH": "640", "EZREC_HEIGHT": "360", "EZREC_CRF": "0",
    "EZREC_X264_PRESET": "ultrafast", "EZREC_CHUNK_S": "2", "EZREC_S3_PART_SIZE_MB": "5",
    "EZREC_LAYOUT": "side_by_side",
}  # fmt: skip


@pytest.mark.slow
def test_parts_go_up_while_recording_and_the_rest_after(
    world: Any,  # noqa: F811
    s3_server: Any,  # noqa: F811
    s3_bucket: str,  # noqa: F811
) -> None:
    env = FAKE_AWS_ENV | LIVE_ENV | {
        "EZREC_STORAGE_URL": f"s3://{s3_bucket}/venue",
        "EZREC_S3_ENDPOINT_URL": s3_server.endpoint_url,
    }
    store = world.ctx.store
    world.start(extra_env=env, ready=True)
    start = utcnow() + timedelta(seconds=2)
    store.create(start, start + timedelta(seconds=26), booking_id="live")
    files = booking_files(world.ctx.settings, "live")
    checkpoint = upload_checkpoint(files.processed_path)
    client = s3_server.client()

    def parts_on_server() -> int:
        try:
            state = json.loads(checkpoint.read_text())
        except (OSError, ValueError):
            return 0
        got = client.list_parts(Bucket=s3_bucket, Key=state["key"], UploadId=state["upload_id"])
        return len(got.get("Parts", []))

    # While the cameras still record: chunks joined and a part on the server, no object yet.
    # The count is written once the server took the part, so the test waits for the count
    # (a part can be listed a moment before the uploader hears it was taken).
    seen: dict[str, Any] = {}

    def reported_uploaded() -> bool:
        seen["booking"] = store.get("live")
        detail = seen["booking"].progress_detail or {}
        return bool(detail.get("bytes_uploaded", 0) >= 5 * 1024 * 1024)

    wait_for(reported_uploaded, 60, "a part reported uploaded while recording")
    booking = seen["booking"]
    assert booking.state == State.RECORDING
    assert parts_on_server() >= 1
    detail = booking.progress_detail or {}
    # 26 s in 2 s chunks, cut where camera 0's segments begin (a first one may be shorter).
    chunks = detail.get("chunks_total", 0)
    assert detail.get("chunks_built", 0) >= 1 and chunks in (13, 14)
    key = json.loads(checkpoint.read_text())["key"]
    assert "Contents" not in client.list_objects_v2(Bucket=s3_bucket, Prefix=key)

    wait_for(lambda: state_of(world.ctx, "live") == State.VIDEO_UPLOADED, 180, "video_uploaded")
    booking = store.get("live")
    video = Path(booking.processed_path or "")
    info = probe(video)
    assert info["duration"] == pytest.approx(26.0, abs=0.3)
    assert (info["width"], info["height"]) == (1280, 360)
    assert fmp4.header_duration(video.read_bytes()[:65536]) == pytest.approx(26.0, abs=0.2)
    assert booking.extra["chunks"] == chunks and booking.extra["build_cpu_s"] > 0
    detail = booking.progress_detail or {}
    assert detail["chunks_built"] == detail["chunks_total"] == chunks
    assert detail["bytes_uploaded"] == detail["bytes_total"] == video.stat().st_size
    body = client.get_object(Bucket=s3_bucket, Key=booking.extra["uploaded"][0]["key"])["Body"]
    assert body.read() == video.read_bytes()
    history = [h.detail or "" for h in store.history("live")]
    assert any(f"from {chunks} chunk(s)" in d for d in history)
    # Stored and verified: nothing is kept beside the video for building or uploading it.
    assert not chunk_dir(video).exists() and not checkpoint.exists()
