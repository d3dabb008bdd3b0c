"""Presigned URLs are capabilities: no API answer carries one without the valid bearer token.

The bookings are driven to `video_uploaded` through the real store with the `extra` the
supervisor writes after an upload (`Supervisor._uploaded`), so the routes see what they would
see on a box that uploads to S3 with EZREC_S3_PRESIGN_S set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from api.app import create_app
from controller.config import Settings
from controller.context import Context, open_context
from controller.db import utcnow

TOKEN = "capability-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SIGNED = "http://127.0.0.1:9/bucket/venue/up1.mp4?X-Amz-Signature=deadbeef&X-Amz-Expires=600"
SIGNED_2 = "http://127.0.0.1:9/bucket/venue/up1-cam1.mp4?X-Amz-Signature=cafe&X-Amz-Expires=600"


def uploaded_booking(ctx: Context, booking_id: str = "up1") -> None:
    store = ctx.store
    start = utcnow() + timedelta(minutes=1)
    store.create(start, start + timedelta(minutes=5), booking_id=booking_id, user_id="u-1")
    store.fire(booking_id, "start")
    store.fire(booking_id, "finish")
    store.fire(booking_id, "process", changes={"processed_path": "/nowhere/up1.mp4"})
    objects = [
        {"url": f"s3://bucket/venue/{name}", "key": f"venue/{name}", "size": 10,
         "sha256": "0" * 64, "etag": None, "presigned_url": signed,
         "uploaded_at": utcnow().isoformat()}
        for name, signed in (("up1.mp4", SIGNED), ("up1-cam1.mp4", SIGNED_2))
    ]
    store.fire(
        booking_id,
        "upload",
        changes={
            "video_url": "s3://bucket/venue/up1.mp4",
            "extra": {"uploaded": objects, "presigned_url": SIGNED},
        },
    )


@pytest.fixture
def secured(settings: Settings) -> Iterator[Context]:
    c = open_context(settings.model_copy(update={"api_token": SecretStr(TOKEN)}))
    uploaded_booking(c)
    yield c
    c.close()


@pytest.fixture
def client(secured: Context) -> Iterator[TestClient]:
    with TestClient(create_app(context=secured)) as c:
        yield c


def carries_signature(body: Any) -> bool:
    return "X-Amz-Signature" in json.dumps(body)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
    ],
    ids=["no-token", "wrong-token", "not-bearer", "empty-bearer"],
)
@pytest.mark.parametrize("path", ["/bookings", "/bookings/up1", "/bookings?state=video_uploaded"])
def test_reads_without_the_token_carry_no_presigned_url(
    client: TestClient, path: str, headers: dict[str, str]
) -> None:
    r = client.get(path, headers=headers)
    assert r.status_code == 200
    assert not carries_signature(r.json()), r.text
    booking = r.json()[0] if isinstance(r.json(), list) else r.json()
    # Where the video is stays visible; only the key to it is withheld.
    assert booking["video_url"] == "s3://bucket/venue/up1.mp4"
    assert "presigned_url" not in booking["extra"]
    assert [o["key"] for o in booking["extra"]["uploaded"]] == ["venue/up1.mp4",
                                                              "venue/up1-cam1.mp4"]
    assert all("presigned_url" not in o for o in booking["extra"]["uploaded"])


@pytest.mark.parametrize("path", ["/bookings", "/bookings/up1"])
def test_reads_with_the_token_show_them(client: TestClient, path: str) -> None:
    r = client.get(path, headers=AUTH)
    booking = r.json()[0] if isinstance(r.json(), list) else r.json()
    assert booking["extra"]["presigned_url"] == SIGNED
    assert [o["presigned_url"] for o in booking["extra"]["uploaded"]] == [SIGNED, SIGNED_2]


def test_no_other_read_route_leaks_them(client: TestClient) -> None:
    for path in ("/status", "/metrics", "/openapi.json", "/", "/page/live"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "X-Amz-Signature" not in r.text, path


def test_the_page_shows_them_only_with_the_token(client: TestClient) -> None:
    # The box's copy (/nowhere/up1.mp4) is gone, so the bucket's presigned URL is the way in.
    videos = client.get("/page/live", headers=AUTH).json()["videos"]
    assert SIGNED.replace("&", "&amp;") in videos
    anonymous = client.get("/page/live", headers={"Authorization": "Bearer nope"}).json()
    assert "X-Amz-Signature" not in anonymous["videos"]


def test_the_stored_booking_keeps_them(client: TestClient, secured: Context) -> None:
    client.get("/bookings")  # answering without them must not strip what the store holds
    assert secured.store.get("up1").extra["presigned_url"] == SIGNED


def test_without_a_configured_token_loopback_callers_see_them(ctx: Context) -> None:
    # No token: the server binds loopback only and every check is off, changes included.
    uploaded_booking(ctx)
    with TestClient(create_app(context=ctx)) as client:
        assert client.get("/bookings/up1").json()["extra"]["presigned_url"] == SIGNED
