"""The staff page through Starlette's TestClient: what `/` and `/page/live` render, escaping,
the security headers, and the signed links that play a video from the box.

The browser-side behaviour (polling, actions, playing) is in tests/test_page_browser.py.
"""

from __future__ import annotations

import html.parser
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from api.app import create_app
from api.headers import content_security_policy
from api.video_links import VideoLinks
from controller.config import Settings
from controller.context import Context, open_context
from controller.db import utcnow

TOKEN = "page-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
SIGNED = "http://127.0.0.1:9/bucket/v/gone.mp4?X-Amz-Signature=feedface&X-Amz-Expires=60"


@pytest.fixture
def secured(settings: Settings) -> Iterator[Context]:
    c = open_context(settings.model_copy(update={"api_token": SecretStr(TOKEN)}))
    yield c
    c.close()


@pytest.fixture
def client(secured: Context) -> Iterator[TestClient]:
    with TestClient(create_app(context=secured)) as c:
        yield c


def soon(ctx: Context, booking_id: str, minutes: float = 60, **kw: str) -> None:
    start = utcnow() + timedelta(minutes=minutes)
    ctx.store.create(start, start + timedelta(minutes=30), booking_id=booking_id, **kw)


def uploaded(
    ctx: Context, booking_id: str, video: Path | None, presigned: str | None,
    video_url: str | None = None,
) -> None:
    soon(ctx, booking_id, minutes=1)
    store = ctx.store
    store.fire(booking_id, "start")
    store.fire(booking_id, "finish")
    path = video or ctx.settings.processed_dir / f"{booking_id}.mp4"
    store.fire(booking_id, "process", changes={"processed_path": str(path)})
    store.fire(booking_id, "upload", changes={
        "video_url": video_url or f"s3://bucket/v/{booking_id}.mp4",
        "extra": {"presigned_url": presigned,
                  "uploaded": [{"key": f"v/{booking_id}.mp4", "presigned_url": presigned}]},
    })


class Scripts(html.parser.HTMLParser):
    """Every <script> and every attribute that would run script or style inline."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True
        self.inline += [f"{tag} {k}" for k, _ in attrs if k.startswith("on") or k == "style"]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(f"script body {data[:40]!r}")


def test_page_lists_todays_and_upcoming_bookings_per_camera(
    client: TestClient, secured: Context
) -> None:
    soon(secured, "b-court1", user_id="u-1", camera_id="court1")
    soon(secured, "b-court2", minutes=90, user_id="u-2", camera_id="court2")
    secured.store.fire("b-court2", "fail", error="camera 1 did not start")
    soon(secured, "b-next-week", minutes=7 * 24 * 60, camera_id="court1")
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert page.index("<code>court1</code>") < page.index("b-court1") < page.index("b-next-week")
    assert page.index("<code>court2</code>") < page.index("b-court2")
    row = re.search(r'<tr id="booking-b-court2".*?</tr>', page, re.S)
    assert row is not None
    assert "recording_failed" in row[0] and "camera 1 did not start" in row[0]
    assert "1 of 5" in row[0]  # attempts of EZREC_MAX_ATTEMPTS
    assert 'data-action="retry"' in row[0] and 'data-action="cancel"' in row[0]
    confirmed = re.search(r'<tr id="booking-b-court1".*?</tr>', page, re.S)
    assert confirmed is not None and 'data-action="retry"' not in confirmed[0]
    assert "Showing the first" not in page


def test_health_part_is_the_status_report(client: TestClient, secured: Context) -> None:
    soon(secured, "q1")
    soon(secured, "q2", minutes=120)
    report = client.get("/status").json()
    health = client.get("/page/live").json()["health"]
    assert report["queue"]["confirmed"] == 2 and "confirmed: 2" in health
    assert f"{report['disk']['free_mb']:.0f} MB free" in health
    assert "never seen" in health  # no supervisor heartbeat in this database
    secured.store.kv_set("supervisor", {"status": "idle", "recording": [], "jobs": {},
                                        "last_errors": ["cam0: <b>boom</b>"], "cameras": [
                                            {"index": 0, "driver": "synthetic", "model": "m",
                                             "mode": "320x240@10", "up": False,
                                             "detail": "no signal"}]})
    client.app.state.api.status.invalidate()  # type: ignore[attr-defined]
    health = client.get("/page/live").json()["health"]
    assert "running" in health and "no signal" in health
    assert "cam0: &lt;b&gt;boom&lt;/b&gt;" in health and "<b>boom" not in health


def test_user_text_is_escaped_everywhere_it_is_shown(client: TestClient, secured: Context) -> None:
    soon(secured, "x1")
    secured.store.fire("x1", "fail", error=HOSTILE)
    for text in (client.get("/").text, *client.get("/page/live").json().values()):
        assert "<script>window" not in text and "<img src=x" not in text
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in client.get("/").text
    parsed = Scripts()
    parsed.feed(client.get("/").text)
    assert parsed.scripts == [{"src": "/static/page.js", "defer": None}]
    assert parsed.inline == []


@pytest.mark.parametrize("path", ["/", "/page/live", "/bookings", "/static/page.js", "/nope"])
def test_every_response_carries_the_content_security_policy(client: TestClient, path: str) -> None:
    r = client.get(path)
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"


def test_a_refused_change_carries_the_headers_too(client: TestClient) -> None:
    r = client.delete("/bookings/x")
    assert r.status_code == 401 and "content-security-policy" in r.headers


def test_media_src_allows_the_object_store(settings: Settings) -> None:
    s3 = settings.model_copy(update={"storage_url": "s3://bucket/venue",
                                     "s3_endpoint_url": "http://127.0.0.1:9000/"})
    assert "media-src 'self' http://127.0.0.1:9000;" in content_security_policy(s3)
    aws = s3.model_copy(update={"s3_endpoint_url": None})
    assert "media-src 'self' https://*.amazonaws.com;" in content_security_policy(aws)
    assert "media-src 'self';" in content_security_policy(settings)  # local storage


def test_videos_play_only_with_the_token(client: TestClient, secured: Context) -> None:
    video = secured.settings.processed_dir / "v-local.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 40)
    uploaded(secured, "v-local", video, SIGNED)
    uploaded(secured, "v-bucket", None, SIGNED)  # the box's copy is gone: the bucket's plays
    anonymous = [client.get("/").text, client.get("/page/live").json()["videos"]]
    for text in anonymous:
        assert "X-Amz-Signature" not in text and "video.mp4?" not in text
        assert "enter the API token to play it" in text
    videos = client.get("/page/live", headers=AUTH).json()["videos"]
    link = re.search(r'src="(/bookings/v-local/video\.mp4\?[^"]+)"', videos)
    assert link is not None
    assert 'src="http://127.0.0.1:9/bucket/v/gone.mp4?X-Amz-Signature=feedface&amp;' in videos
    got = client.get(link[1].replace("&amp;", "&"))
    assert got.status_code == 200 and got.content == video.read_bytes()
    assert got.headers["content-type"] == "video/mp4"
    # The link is a capability: it must not travel on in a Referer; the route's stricter
    # policy is kept, not doubled by the app-wide one.
    assert got.headers.get_list("referrer-policy") == ["no-referrer"]
    assert "content-security-policy" in got.headers
    part = client.get(link[1].replace("&amp;", "&"), headers={"Range": "bytes=4-11"})
    assert part.status_code == 206 and part.content == b"ftypmp42"


def test_a_video_link_is_bound_to_its_booking_and_its_time(
    client: TestClient, secured: Context
) -> None:
    video = secured.settings.processed_dir / "v1.mp4"
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(b"video")
    uploaded(secured, "v1", video, None)
    uploaded(secured, "v2", video, None)
    links = VideoLinks()
    client.app.state.video_links = links  # type: ignore[attr-defined]
    good = links.link("v1")
    assert client.get(good).status_code == 200
    exp, sig = re.findall(r"exp=(\d+)&sig=([0-9a-f]+)", good)[0]
    for bad in (
        f"/bookings/v2/video.mp4?exp={exp}&sig={sig}",  # another booking's link
        f"/bookings/v1/video.mp4?exp={int(exp) + 3600}&sig={sig}",  # stretched expiry
        f"/bookings/v1/video.mp4?exp={exp}&sig={'0' * 64}",
        f"/bookings/v1/video.mp4?exp={exp}",
        f"/bookings/v1/video.mp4?exp={exp}&sig=%C2%80",  # not ASCII: compare_digest's TypeError
        "/bookings/v1/video.mp4",
        f"/bookings/v1/video.mp4?exp=１２&sig={sig}",  # full-width digits
        VideoLinks().link("v1"),  # signed by another process's key
        links.link("v1", now=0),  # expired long ago
    ):
        r = client.get(bad)
        assert r.status_code == 403, bad
        assert "wrong or has expired" in r.json()["detail"]
    video.unlink()
    r = client.get(good)
    assert r.status_code == 404 and "no video file on this box" in r.json()["detail"]


def test_a_stored_copy_in_the_local_backend_plays_once_the_build_output_is_gone(
    client: TestClient, secured: Context
) -> None:
    stored = Path(secured.settings.storage_url.removeprefix("file://")) / "dev" / "v3.mp4"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"stored copy")
    uploaded(secured, "v3", None, None, video_url=f"file://{stored}")
    videos = client.get("/page/live", headers=AUTH).json()["videos"]
    link = re.search(r'src="(/bookings/v3/video\.mp4\?[^"]+)"', videos)
    assert link is not None and "v3.mp4" in videos
    assert client.get(link[1].replace("&amp;", "&")).content == b"stored copy"


def test_a_stored_url_outside_the_local_backend_is_never_served(
    client: TestClient, secured: Context, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere.mp4"
    elsewhere.write_bytes(b"not a video of this box")
    uploaded(secured, "v4", None, None, video_url=f"file://{elsewhere}")
    videos = client.get("/page/live", headers=AUTH).json()["videos"]
    assert "/bookings/v4/video.mp4" not in videos and "no copy on this box" in videos


def test_the_page_never_puts_the_token_in_a_url(client: TestClient) -> None:
    js = client.get("/static/page.js").text
    assert "sessionStorage" in js and "Authorization" in js
    page = client.get("/").text
    form = re.search(r'<form id="token-form"[^>]*>', page)
    assert form is not None and 'method="post"' in form[0]  # never a GET form: no ?token=


def test_recent_videos_are_the_newest_six_newest_first(
    client: TestClient, secured: Context
) -> None:
    for n in range(8):
        soon(secured, f"old{n}", minutes=1 + 40 * n)
        store = secured.store
        for trigger in ("start", "finish"):
            store.fire(f"old{n}", trigger)
        store.fire(f"old{n}", "process", changes={"processed_path": f"/nowhere/old{n}.mp4"})
    videos = client.get("/page/live").json()["videos"]
    shown = re.findall(r'<article class="video" id="video-(old\d)"', videos)
    assert shown == [f"old{n}" for n in range(7, 1, -1)]


def test_the_soonest_bookings_are_shown_and_the_cap_is_said(
    client: TestClient, secured: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("api.page_view.BOOKINGS_SHOWN", 3)
    monkeypatch.setattr("api.page.BOOKINGS_SHOWN", 3)
    for n in range(4):
        soon(secured, f"s{n}", minutes=60 + 40 * n)
    bookings = client.get("/page/live").json()["bookings"]
    assert re.findall(r'<tr id="booking-(s\d)"', bookings) == ["s0", "s1", "s2"]
    assert "Showing the first 3 bookings from today on" in bookings


def test_live_says_what_it_made_of_the_token(client: TestClient, ctx: Context) -> None:
    def verdict(c: TestClient, headers: dict[str, str]) -> str:
        return str(c.get("/page/live", headers=headers).json()["token"])

    assert verdict(client, AUTH) == "accepted"
    assert verdict(client, {"Authorization": "Bearer not-the-token"}) == "wrong"
    assert verdict(client, {}) == "none"
    with TestClient(create_app(context=ctx)) as open_box:  # no token configured
        assert verdict(open_box, {}) == "not_needed"


class Markup(html.parser.HTMLParser):
    """Inputs and their labels, images and their alt texts, buttons and their names."""

    def __init__(self) -> None:
        super().__init__()
        self.lang: str | None = None
        self.inputs: list[str] = []
        self.labels: set[str] = set()
        self.images_without_alt: list[str] = []
        self.buttons: list[dict[str, str | None]] = []
        self._button: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang")
        elif tag == "input":
            self.inputs.append(str(a.get("id")))
        elif tag == "label" and a.get("for"):
            self.labels.add(str(a["for"]))
        elif tag == "img" and not a.get("alt"):
            self.images_without_alt.append(str(a.get("id")))
        elif tag == "button":
            self._button = {"aria-label": a.get("aria-label"), "text": ""}
            self.buttons.append(self._button)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._button = None

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button["text"] = (self._button["text"] or "") + data.strip()


def test_markup_names_every_control(client: TestClient, secured: Context) -> None:
    soon(secured, "a11y-1")
    secured.store.fire("a11y-1", "fail", error="boom")
    markup = Markup()
    markup.feed(client.get("/").text)
    assert markup.lang == "en"
    assert markup.inputs and set(markup.inputs) <= markup.labels
    assert markup.images_without_alt == []
    assert markup.buttons and all(b["aria-label"] or b["text"] for b in markup.buttons)
    named = {b["aria-label"] for b in markup.buttons}
    assert {"Retry booking a11y-1", "Cancel booking a11y-1"} <= named
