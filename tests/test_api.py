"""The HTTP API through Starlette's TestClient: every route and every error path.

Real SQLite, real ffmpeg for previews, a real loopback HTTP server for media; the supervisor is
stood in for only by what it writes to the database (its heartbeat), which is the interface the
API reads.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate as validate_openapi
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.routing import Route
from starlette.testclient import TestClient

from api.app import create_app
from api.schemas import MAX_BODY_BYTES
from controller.config import Settings
from controller.context import Context, open_context
from controller.drivers.nudge import NudgeListener
from tests._media_fixtures import ffmpeg, make_logo

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def iso(t: datetime) -> str:
    return t.isoformat()


def future(hours: float = 24, length_h: float = 1) -> dict[str, str]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours)
    return {"start_time": iso(start), "end_time": iso(start + timedelta(hours=length_h))}


@pytest.fixture
def secured(settings: Settings) -> Iterator[Context]:
    c = open_context(settings.model_copy(update={"api_token": SecretStr(TOKEN)}))
    yield c
    c.close()


@pytest.fixture
def client(secured: Context) -> Iterator[TestClient]:
    with TestClient(create_app(context=secured)) as c:
        yield c


def create(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/bookings", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    return response.json()


def assert_error(response: Any, status: int, code: str, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    assert "Traceback" not in response.text
    return body


# -- health, auth ------------------------------------------------------------------------------


def test_health_needs_nothing(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_mutations_need_the_token_reads_do_not(client: TestClient) -> None:
    body = future()
    r = client.post("/bookings", json=body)
    assert_error(r, 401, "unauthorized", "Bearer")
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.post("/bookings", json=body, headers={"Authorization": "Bearer nope"})
    assert_error(r, 401, "unauthorized", "wrong token")
    r = client.post("/bookings", json=body, headers={"Authorization": f"Basic {TOKEN}"})
    assert_error(r, 401, "unauthorized")
    for method, path in (("PATCH", "/bookings/x"), ("DELETE", "/bookings/x"),
                         ("POST", "/bookings/x/retry"), ("POST", "/media/notify")):
        assert client.request(method, path).status_code == 401
    # The scheme is case-insensitive (RFC 7235); the token is not.
    r = client.post("/bookings", json=body, headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status_code == 201
    r = client.post("/bookings", json=future(48),
                    headers={"Authorization": f"Bearer {TOKEN.upper()}"})
    assert r.status_code == 401
    assert client.get("/bookings").status_code == 200
    assert client.get("/status").status_code == 200


def test_without_a_token_changes_are_open(ctx: Context) -> None:
    # Only possible on loopback: api.server refuses any other bind without a token.
    with TestClient(create_app(context=ctx)) as c:
        assert c.post("/bookings", json=future()).status_code == 201
        assert "security" not in c.get("/openapi.json").json()["paths"]["/bookings"]["post"]


def test_token_is_never_echoed(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    responses = [
        client.post("/bookings", json=future(), headers={"Authorization": f"Bearer {TOKEN}x"}),
        client.post("/bookings", json={"start_time": TOKEN}, headers=AUTH),
        client.get("/status"),
        client.get("/metrics"),
        client.get("/openapi.json"),
    ]
    for r in responses:
        assert TOKEN not in r.text
    assert TOKEN not in caplog.text


# -- create --------------------------------------------------------------------------------


def test_create_stores_the_booking_and_nudges_the_supervisor(
    client: TestClient, secured: Context
) -> None:
    listener = NudgeListener(secured.settings.data_dir)
    try:
        body = future() | {"id": "match-1", "user_id": "u@x.org", "camera_id": "court2"}
        r = client.post("/bookings", json=body, headers=AUTH)
        assert r.status_code == 201, r.text
        assert listener.wait(2.0), "no nudge after a change"
    finally:
        listener.close()
    data = r.json()
    assert r.headers["location"] == "/bookings/match-1"
    assert data["state"] == "confirmed" and data["version"] == 0
    assert (data["user_id"], data["camera_id"]) == ("u@x.org", "court2")
    stored = secured.store.get("match-1")
    assert stored.start_time == datetime.fromisoformat(body["start_time"])


def test_create_converts_offsets_to_utc(client: TestClient) -> None:
    data = create(client, start_time="2031-06-01T18:00:00+02:00",
                  end_time="2031-06-01T19:30:00+02:00")
    assert data["start_time"] == "2031-06-01T16:00:00+00:00"
    assert data["end_time"] == "2031-06-01T17:30:00+00:00"
    assert data["id"].startswith("bk-")


def test_media_is_stored_for_the_build_and_signed_urls_are_not_shown(
    client: TestClient, secured: Context
) -> None:
    media = {
        "intro": "https://cdn.example.org/intro.mp4?X-Amz-Signature=s3cr3t",
        "logo": "https://user:pw@cdn.example.org/logo.png",
        "sponsors": ["https://cdn.example.org/s1.png", "http://cdn.example.org/s2.png"],
    }
    data = create(client, **future(), id="m1", media=media)
    assert data["extra"]["media"] == {
        "intro": "https://cdn.example.org/intro.mp4",
        "logo": "https://cdn.example.org/logo.png",
        "sponsors": media["sponsors"],
    }
    assert "s3cr3t" not in client.get("/bookings/m1").text
    assert secured.store.get("m1").extra["media"] == media  # the build needs the real URL


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"start_time": "2031-06-01T18:00:00", "end_time": "2031-06-01T19:00:00+02:00"},
         "UTC offset"),
        ({"start_time": "2031-06-01 18:00:00+02:00", "end_time": "2031-06-01T19:00:00+02:00"},
         "UTC offset"),
        ({"start_time": "2031-13-01T18:00:00+02:00", "end_time": "2031-06-01T19:00:00+02:00"},
         "not a valid time"),
        ({"start_time": "0001-01-01T00:00:00+01:00", "end_time": "2031-06-01T19:00:00+02:00"},
         "not a valid time"),
        ({"start_time": 1_900_000_000, "end_time": "2031-06-01T19:00:00+02:00"}, "UTC offset"),
        ({"start_time": "2031-06-01T19:00:00+02:00", "end_time": "2031-06-01T18:00:00+02:00"},
         "is not after start"),
        ({"start_time": "2031-06-01T08:00:00+02:00", "end_time": "2031-06-01T22:00:00+02:00"},
         "maximum"),
        ({"start_time": "2020-06-01T08:00:00+02:00", "end_time": "2020-06-01T09:00:00+02:00"},
         "ended already"),
        ({"end_time": "2031-06-01T19:00:00+02:00"}, "start_time: required"),
        ({**future(), "colour": "red"}, "unknown field 'colour'"),
        ({**future(), "id": "has space"}, "id:"),
        ({**future(), "id": "x" * 65}, "id:"),
        ({**future(), "id": "trailing\n"}, "id:"),
        ({**future(), "user_id": "<script>"}, "user_id:"),
        ({**future(), "camera_id": 5}, "camera_id:"),
        ({**future(), "media": {"logo": "/etc/passwd"}}, "media.logo"),
        ({**future(), "media": {"logo": "file:///etc/passwd"}}, "media.logo"),
        ({**future(), "media": {"sponsors": ["https://a.org/1.png"] * 4}}, "media.sponsors"),
        ({**future(), "media": {"banner": "https://a.org/1.png"}}, "unknown field 'media.banner'"),
    ],
)
def test_create_refuses_bad_input(client: TestClient, body: dict[str, Any], needle: str) -> None:
    assert_error(client.post("/bookings", json=body, headers=AUTH), 422, "invalid", needle)


@pytest.mark.parametrize(
    ("content", "ctype", "status", "needle"),
    [
        (b"[1, 2]", "application/json", 422, "JSON object"),
        (b"{\"start_time\": ", "application/json", 422, "not valid JSON"),
        (b"{\"start_time\": NaN}", "application/json", 422, "not valid JSON"),
        (b"", "application/json", 422, "JSON object"),
        (b"{}", "text/plain", 415, "application/json"),
        (b"start_time=1", "application/x-www-form-urlencoded", 415, "application/json"),
        (b"{}", None, 415, "Content-Type"),
        (b"\xff\xfe", "application/json", 422, "not valid JSON"),
    ],
)
def test_create_refuses_bad_bodies(
    client: TestClient, content: bytes, ctype: str | None, status: int, needle: str
) -> None:
    headers = dict(AUTH) | ({"Content-Type": ctype} if ctype else {})
    r = client.post("/bookings", content=content, headers=headers)
    assert_error(r, status, "invalid" if status == 422 else "unsupported_media_type", needle)


def test_body_size_is_capped(client: TestClient) -> None:
    big = json.dumps(future() | {"user_id": "u" * MAX_BODY_BYTES}).encode()
    r = client.post("/bookings", content=big,
                    headers=AUTH | {"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must hold while streaming
        for _ in range(100):
            yield b" " * 4096
        yield b"{}"

    r = client.post("/bookings", content=chunks(),
                    headers=AUTH | {"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")


def test_overlap_is_a_conflict_naming_the_other_booking(client: TestClient) -> None:
    create(client, start_time="2031-06-01T18:00:00+02:00", end_time="2031-06-01T19:00:00+02:00",
           id="first", camera_id="court1")
    r = client.post("/bookings", headers=AUTH, json={
        "start_time": "2031-06-01T16:30:00Z", "end_time": "2031-06-01T17:30:00Z",
        "camera_id": "court1"})
    body = assert_error(r, 409, "conflict", "first")
    assert body["conflicts_with"] == "first"
    # Back to back is no overlap; another camera is no overlap.
    create(client, start_time="2031-06-01T17:00:00Z", end_time="2031-06-01T18:00:00Z",
           camera_id="court1")
    create(client, start_time="2031-06-01T16:30:00Z", end_time="2031-06-01T17:30:00Z",
           camera_id="court2")
    r = client.post("/bookings", headers=AUTH, json=future(200) | {"id": "first"})
    assert_error(r, 409, "conflict", "exists already")



def test_a_generated_id_that_clashes_is_drawn_again(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(client, **future(200), id="bk-dup")
    drawn = iter(["bk-dup", "bk-dup", "bk-fresh"])
    monkeypatch.setattr("controller.fsm.store.new_booking_id", lambda now: next(drawn))
    assert create(client, **future())["id"] == "bk-fresh"
    # A clash with an id the client chose is the client's conflict.
    r = client.post("/bookings", json=future(300) | {"id": "bk-dup"}, headers=AUTH)
    assert_error(r, 409, "conflict", "exists already")

# -- list, get -------------------------------------------------------------------------------


def test_list_filters(client: TestClient, secured: Context) -> None:
    create(client, start_time="2031-01-01T10:00:00Z", end_time="2031-01-01T11:00:00Z", id="a")
    create(client, start_time="2031-01-02T10:00:00Z", end_time="2031-01-02T11:00:00Z", id="b")
    create(client, start_time="2031-01-03T10:00:00Z", end_time="2031-01-03T11:00:00Z", id="c")
    secured.store.fire("b", "cancel")

    def ids(query: str) -> list[str]:
        r = client.get(f"/bookings{query}")
        assert r.status_code == 200, r.text
        return [b["id"] for b in r.json()]

    assert ids("") == ["a", "b", "c"]
    assert ids("?state=confirmed") == ["a", "c"]
    assert ids("?state=confirmed&state=cancelled") == ["a", "b", "c"]
    assert ids("?from=2031-01-01T10:30:00%2B00:00&to=2031-01-03T10:00:00Z") == ["a", "b"]
    assert ids("?limit=1") == ["a"]
    for query, needle in (("?state=nope", "unknown state"), ("?from=yesterday", "'from'"),
                          ("?to=2031-01-01T10:00:00", "UTC offset"), ("?limit=0", "limit"),
                          ("?limit=x", "limit"), ("?limit=%C2%B2", "limit"),
                          ("?from=2031-01-02T00:00:00Z&to=2031-01-01T00:00:00Z", "after")):
        assert_error(client.get(f"/bookings{query}"), 422, "invalid", needle)


def test_get_one_with_history(client: TestClient, secured: Context) -> None:
    create(client, **future(), id="h1")
    secured.store.fire("h1", "start")
    r = client.get("/bookings/h1")
    assert r.status_code == 200
    data = r.json()
    assert data["state"] == "recording"
    assert [(h["from"], h["to"], h["trigger"]) for h in data["history"]] == [
        ("confirmed", "recording", "start")
    ]
    assert_error(client.get("/bookings/nope"), 404, "not_found", "nope")
    assert_error(client.get("/bookings/b%C3%A4d"), 404, "not_found")


# -- reschedule, cancel, retry ----------------------------------------------------------------


def test_reschedule(client: TestClient, secured: Context) -> None:
    create(client, start_time="2031-01-01T10:00:00Z", end_time="2031-01-01T11:00:00Z", id="r1")
    create(client, start_time="2031-01-01T12:00:00Z", end_time="2031-01-01T13:00:00Z", id="r2")
    r = client.patch("/bookings/r1", headers=AUTH,
                     json={"end_time": "2031-01-01T13:00:00+02:00", "expected_version": 0})
    assert r.status_code == 200, r.text
    assert r.json()["end_time"] == "2031-01-01T11:00:00+00:00"
    assert r.json()["version"] == 1
    history = secured.store.history("r1")
    assert [h.trigger for h in history] == ["reschedule"]

    r = client.patch("/bookings/r1", headers=AUTH, json={"end_time": "2031-01-01T12:30:00Z"})
    assert_error(r, 409, "conflict", "r2")
    r = client.patch("/bookings/r1", headers=AUTH,
                     json={"start_time": "2031-01-01T09:00:00Z", "expected_version": 0})
    body = assert_error(r, 409, "stale_version", "changed meanwhile")
    assert body["version"] == 1
    for payload, needle in (({}, "nothing to change"), ({"start_time": None}, "null"),
                            ({"start_time": "2031-01-01T09:00:00"}, "UTC offset"),
                            ({"end_time": "2031-01-01T09:00:00Z"}, "not after start"),
                            ({"expected_version": 0, "state": "x"}, "unknown field"),
                            ({"end_time": "2031-01-01T12:00:00Z", "expected_version": -1},
                             "expected_version")):
        assert_error(client.patch("/bookings/r1", headers=AUTH, json=payload), 422, "invalid",
                     needle)
    assert_error(client.patch("/bookings/ghost", headers=AUTH,
                              json={"end_time": "2031-01-01T12:00:00Z"}), 404, "not_found")
    secured.store.fire("r1", "start")
    r = client.patch("/bookings/r1", headers=AUTH, json={"end_time": "2031-01-01T11:30:00Z"})
    body = assert_error(r, 409, "invalid_transition", "cannot reschedule")
    assert body["state"] == "recording"


def test_cancel(client: TestClient, secured: Context) -> None:
    create(client, **future(), id="c1")
    r = client.delete("/bookings/c1", headers=AUTH)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    again = client.delete("/bookings/c1", headers=AUTH)  # a retried DELETE is no error
    assert again.status_code == 200 and again.json()["version"] == r.json()["version"]

    create(client, **future(30), id="c2")
    secured.store.fire("c2", "start")  # cancelling a recording stops it: allowed
    assert client.delete("/bookings/c2", headers=AUTH).json()["state"] == "cancelled"

    create(client, **future(40), id="c3")
    for trigger in ("start", "finish"):
        secured.store.fire("c3", trigger)
    body = assert_error(client.delete("/bookings/c3", headers=AUTH), 409, "invalid_transition",
                        "cannot cancel")
    assert body["state"] == "completed"
    assert_error(client.delete("/bookings/ghost", headers=AUTH), 404, "not_found")


def test_retry(client: TestClient, secured: Context) -> None:
    create(client, **future(), id="f1")
    secured.store.fire("f1", "start")
    for _ in range(3):
        booking = secured.store.fire("f1", "fail", error="camera died")
        if booking.state == "recording_failed":
            break
    assert secured.store.get("f1").attempts >= 1
    assert_error(client.post("/bookings/f1/retry", headers=AUTH, json={"now": True}), 422,
                 "invalid")
    r = client.post("/bookings/f1/retry", headers=AUTH)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["attempts"]) == ("confirmed", 0)
    body = assert_error(client.post("/bookings/f1/retry", headers=AUTH, json={}), 409,
                        "invalid_transition", "cannot retry")
    assert body["state"] == "confirmed"
    assert_error(client.post("/bookings/ghost/retry", headers=AUTH), 404, "not_found")


# -- status, metrics --------------------------------------------------------------------------


def heartbeat(ctx: Context, **value: Any) -> None:
    base = {"cameras": [], "recording": [], "jobs": {}, "status": "idle", "last_errors": []}
    ctx.store.kv_set("supervisor", base | value)


def test_status_is_the_shared_report_and_sees_changes_at_once(client: TestClient) -> None:
    before = client.get("/status").json()
    assert before["supervisor"]["running"] is False
    assert before["queue"]["confirmed"] == 0
    assert {"disk", "cameras", "in_progress", "last_errors", "system"} <= set(before)
    create(client, **future())
    assert client.get("/status").json()["queue"]["confirmed"] == 1


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics(client: TestClient, secured: Context) -> None:
    create(client, **future(), id="p1")
    create(client, **future(30), id="p2")
    for trigger in ("start", "finish", "process", "upload"):
        secured.store.fire("p1", trigger)
    heartbeat(secured, recording=["x"], jobs={"p9": "build"}, cameras=[
        {"index": 0, "driver": "synthetic", "model": "m", "mode": "320x240@10", "up": True},
        {"index": 1, "driver": "synthetic", "model": "m", "mode": "320x240@10", "up": False,
         "detail": "gone"},
    ])
    secured.store.fire("p2", "cancel")
    # Changes made behind the API's back (the supervisor's) show within the cache's second.
    client.app.state.api.status.invalidate()  # type: ignore[attr-defined]
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    m = metric_samples(r.text)
    assert m[("ezrec_bookings", (("state", "video_uploaded"),))] == 1
    assert m[("ezrec_bookings", (("state", "cancelled"),))] == 1
    assert m[("ezrec_bookings", (("state", "confirmed"),))] == 0
    assert m[("ezrec_transitions_total", (("trigger", "upload"),))] == 1
    assert m[("ezrec_transitions_total", (("trigger", "cancel"),))] == 1
    assert m[("ezrec_recording_in_progress", ())] == 1
    assert m[("ezrec_jobs_running", (("kind", "build"),))] == 1
    assert m[("ezrec_supervisor_running", ())] == 1
    assert m[("ezrec_camera_up", (("camera", "0"), ("driver", "synthetic")))] == 1
    assert m[("ezrec_camera_up", (("camera", "1"), ("driver", "synthetic")))] == 0
    assert 0 <= m[("ezrec_last_upload_age_seconds", ())] < 60
    assert m[("ezrec_disk_free_bytes", ())] > 0
    assert m[("ezrec_queue_depth", (("queue", "booking_system"),))] >= 1  # outbox rows


# -- cameras, previews --------------------------------------------------------------------------


def test_cameras_from_the_driver_then_from_the_supervisor(
    client: TestClient, secured: Context
) -> None:
    r = client.get("/cameras")
    assert r.status_code == 200
    assert r.json()["source"] == "driver"
    assert [(c["index"], c["driver"], c["mode"], c["up"]) for c in r.json()["cameras"]] == [
        (0, "synthetic", "320x240@10", True), (1, "synthetic", "320x240@10", True)]
    heartbeat(secured, cameras=[{"index": 0, "driver": "picamera2", "model": "imx708",
                                 "mode": "1280x720@30", "up": False, "detail": "unplugged"}])
    client.app.state.api.status.invalidate()  # type: ignore[attr-defined]
    data = client.get("/cameras").json()
    assert data["source"] == "supervisor"
    assert data["cameras"][0]["detail"] == "unplugged"


def jpeg_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image.size


def test_preview_from_the_camera_when_idle(client: TestClient) -> None:
    r = client.get("/cameras/1/preview.jpg")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == "no-store"
    assert jpeg_size(r.content) == (320, 240)
    assert_error(client.get("/cameras/2/preview.jpg"), 404, "not_found", "EZREC_CAMERAS")
    assert_error(client.get("/cameras/x/preview.jpg"), 404, "not_found")


def test_preview_while_recording_reads_the_segments_only(
    client: TestClient, secured: Context
) -> None:
    cam0 = secured.settings.raw_dir / "live1" / "cam0"
    cam0.mkdir(parents=True)
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=320x240:r=10", "-t", "2", "-c:v", "libx264",
           "-preset", "ultrafast", "-g", "10", "-pix_fmt", "yuv420p", "-f", "segment",
           "-segment_time", "1", "-segment_format", "mpegts", str(cam0 / "000-%05d.ts"))
    heartbeat(secured, recording=["live1"])
    r = client.get("/cameras/0/preview.jpg")
    assert r.status_code == 200, r.text
    image = Image.open(io.BytesIO(r.content)).convert("RGB")
    red, green, blue = image.getpixel((160, 120))
    assert red > 200 and green < 60 and blue < 60  # the recorded red, not a test pattern
    # Camera 1 has no segment in the live recording: the camera is not opened behind its back.
    assert_error(client.get("/cameras/1/preview.jpg"), 503, "unavailable", "no segment")
    assert client.app.state.api._driver is None  # type: ignore[attr-defined]


def test_preview_leaves_the_cameras_alone_before_a_booking(client: TestClient) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=5)
    create(client, start_time=iso(soon), end_time=iso(soon + timedelta(minutes=5)), id="soon")
    assert_error(client.get("/cameras/0/preview.jpg"), 503, "unavailable", "soon")


# -- media --------------------------------------------------------------------------------------


@pytest.fixture
def media_server(tmp_path: Path) -> Iterator[str]:
    root = tmp_path / "www"
    root.mkdir()
    make_logo(root / "venue.png")
    make_logo(root / "user.png", rgba=(0, 0, 255, 255))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_media_notify_refreshes_venue_and_user_media(
    secured: Context, media_server: str
) -> None:
    venue = f"{media_server}/venue.png"
    user = f"{media_server}/user.png?token=abc"
    settings = secured.settings.model_copy(update={"logo": venue})
    c = open_context(settings)
    try:
        with TestClient(create_app(context=c)) as client:
            create(client, **future(), id="u1", media={"logo": user})
            create(client, **future(30), id="u2", media={"logo": f"{media_server}/gone.png"})
            client.delete("/bookings/u2", headers=AUTH)  # cancelled: its media are not needed
            r = client.post("/media/notify", headers=AUTH)
            assert r.status_code == 202, r.text
            assert r.json() == {"status": "refreshing", "video": [],
                                "image": sorted([venue, f"{media_server}/user.png"])}
            assert_error(client.post("/media/notify", headers=AUTH, json={"x": 1}), 422,
                         "invalid")
        # TestClient returns once the background task has run.
        index = json.loads((settings.media_dir / "index.json").read_text())
        fetched = {entry["source"]: entry for entry in index.values()}
        assert set(fetched) == {venue, user}
        assert all(entry.get("sha256") for entry in fetched.values())
    finally:
        c.close()


# -- the error shape everywhere ----------------------------------------------------------------


def test_unknown_route_and_method(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found", "/nope")
    r = client.put("/bookings/x", headers=AUTH)
    assert_error(r, 405, "method_not_allowed")
    assert set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}


def test_an_unexpected_error_is_a_bare_500(secured: Context, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals /var/lib/ezrec")

    monkeypatch.setattr(secured.store, "list", boom)
    with TestClient(create_app(context=secured), raise_server_exceptions=False) as c:
        r = c.get("/bookings")
    body = assert_error(r, 500, "internal_error")
    assert "secret" not in r.text and "RuntimeError" not in body["detail"]


def test_openapi_documents_every_route(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    validate_openapi(doc)
    app_paths = {
        route.path.replace("{n:int}", "{n}")
        for route in client.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route)
    }
    assert app_paths == set(doc["paths"])
    post = doc["paths"]["/bookings"]["post"]
    assert post["security"] == [{"bearer": []}]
    assert {"201", "401", "409", "413", "415", "422"} <= set(post["responses"])
