"""Share links and QR codes: S3 presigned links (moto on loopback) that download the stored
bytes and stop working when revoked, template links, renewal, the API's routes (token needed),
QR codes decoded back to the link, and the player email through an SMTP server on loopback."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zxingcpp
from aiosmtpd.controller import Controller
from PIL import Image
from pydantic import SecretStr
from starlette.testclient import TestClient

from api.app import create_app
from controller import qrcodes, share, video_jobs
from controller.config import Settings
from controller.context import Context, open_context, open_storage
from controller.drivers.mailer import Mailer
from controller.recordings import booking_files
from controller.replay_service import ReplayKeeper
from tests._s3server import MotoServer, free_port

TOKEN = "share-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START = datetime(2030, 6, 1, 18, 0, tzinfo=UTC)


def decode_qr(png: bytes) -> str:
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(found) == 1
    return str(found[0].text)


def uploaded_booking(
    ctx: Context, settings: Settings, booking_id: str = "bk1", user_id: str | None = None
) -> bytes:
    """A booking at video_uploaded with a video and one clip stored by the real upload job."""
    ctx.store.create(START, START + timedelta(minutes=40), booking_id=booking_id, user_id=user_id,
                     allow_past=True, extra={"contact_email": "player@example.com"})  # fmt: skip
    ctx.store.fire(booking_id, "start")
    ctx.store.fire(booking_id, "finish")
    video = booking_files(settings, booking_id).processed_path
    video.parent.mkdir(parents=True, exist_ok=True)
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64
    video.write_bytes(data)
    clip = video.with_name(f"{booking_id}-clip01.mp4")
    clip.write_bytes(data[:2000])
    extra = {"outputs": [str(video)],
             "clips": [{"name": "clip01", "path": str(clip), "source": str(video),
                        "start_s": 5.0, "end_s": 35.0, "from": "2030-06-01T18:00:05+00:00",
                        "to": "2030-06-01T18:00:35+00:00",
                        "marks": ["2030-06-01T18:00:30+00:00"]}]}  # fmt: skip
    ctx.store.fire(booking_id, "process", changes={"processed_path": str(video), "extra": extra})
    outcome = video_jobs.upload_video(settings, ctx.store.get(booking_id), open_storage(settings),
                                lambda _f, **_detail: None, threading.Event())  # fmt: skip
    ctx.store.fire(booking_id, "upload", changes={"video_url": outcome.video_url,
                                                 "extra": {"uploaded": outcome.objects}})
    return data


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return bytes(resp.read())


@pytest.fixture
def s3_ctx(settings: Settings, s3_server: MotoServer) -> Iterator[Context]:
    bucket = s3_server.new_bucket()
    c = open_context(settings.model_copy(update={
        "storage_url": f"s3://{bucket}/videos", "s3_endpoint_url": s3_server.endpoint_url,
        "api_token": SecretStr(TOKEN), "share_link_h": 24.0,
    }))  # fmt: skip
    yield c
    c.close()


def test_presigned_share_links_download_the_stored_bytes_and_revoking_ends_them(
    s3_ctx: Context,
) -> None:
    settings = s3_ctx.settings
    data = uploaded_booking(s3_ctx, settings)
    storage = open_storage(settings)
    booking = share.ensure(settings, s3_ctx.store, storage, "bk1")
    links = {item["name"]: item for item in share.active(booking)["links"]}  # type: ignore[index]
    assert set(links) == {"video", "clip01"}
    assert fetch(links["video"]["url"]) == data
    assert fetch(links["clip01"]["url"]) == data[:2000]
    expires = datetime.fromisoformat(links["video"]["expires_at"])
    assert expires - s3_ctx.store.clock() == pytest.approx(timedelta(hours=24), abs=timedelta(
        seconds=30))
    history = s3_ctx.store.history("bk1")[-1]
    assert "share links made" in (history.detail or "") and "http" not in (history.detail or "")
    # A second call keeps the live links: the player's link does not change under them.
    assert share.ensure(settings, s3_ctx.store, storage, "bk1").version == booking.version
    share.revoke(s3_ctx.store, storage, "bk1")
    with pytest.raises(urllib.error.HTTPError) as gone:
        fetch(links["video"]["url"])
    assert gone.value.code in (403, 404)
    # The booking's own object is still there (the box keeps its copy of record).
    assert storage.client.head_object(Bucket=storage.bucket,  # type: ignore[attr-defined]
                                      Key=links["video"]["key"])["ContentLength"] == len(data)
    with pytest.raises(share.ShareError, match="no share link"):
        share.link(s3_ctx.store.get("bk1"))


def test_links_are_renewed_before_they_expire_but_not_after_a_revoke(s3_ctx: Context) -> None:
    settings = s3_ctx.settings
    uploaded_booking(s3_ctx, settings)
    storage = open_storage(settings)
    first = share.active(share.ensure(settings, s3_ctx.store, storage, "bk1"))
    assert first is not None
    now = s3_ctx.store.clock()
    assert share.renew_due(settings, s3_ctx.store, storage, now + timedelta(hours=1)) == []
    assert share.active(s3_ctx.store.get("bk1")) == first  # not due: untouched
    later = now + timedelta(hours=22)
    s3_ctx.store.clock = lambda: later
    assert share.renew_due(settings, s3_ctx.store, storage, later) == []
    renewed = share.active(s3_ctx.store.get("bk1"))
    assert renewed is not None and renewed["token"] == first["token"]
    assert renewed["expires_at"] > first["expires_at"]
    assert "share links renewed" in (s3_ctx.store.history("bk1")[-1].detail or "")
    share.revoke(s3_ctx.store, storage, "bk1")
    much_later = later + timedelta(hours=23)
    assert share.renew_due(settings, s3_ctx.store, storage, much_later) == []
    assert share.active(s3_ctx.store.get("bk1")) is None


@pytest.fixture
def template_ctx(settings: Settings) -> Iterator[Context]:
    c = open_context(settings.model_copy(update={
        "api_token": SecretStr(TOKEN),
        "share_url_template": "https://watch.example/v/{booking}/{clip}?t={token}",
    }))  # fmt: skip
    yield c
    c.close()


def test_api_share_routes_need_the_token_and_the_qr_code_decodes_to_the_link(
    template_ctx: Context,
) -> None:
    uploaded_booking(template_ctx, template_ctx.settings)
    with TestClient(create_app(context=template_ctx)) as client:
        assert client.get("/bookings/bk1/share").status_code == 401
        assert client.get("/bookings/bk1/qr.png").status_code == 401
        assert client.get("/bookings/bk1/qr.png", headers=AUTH).json()["error"] == "no_share"
        made = client.post("/bookings/bk1/share", headers=AUTH)
        assert made.status_code == 200, made.text
        links = {item["name"]: item["url"] for item in made.json()["links"]}
        token = share.active(template_ctx.store.get("bk1"))["token"]  # type: ignore[index]
        assert links == {"video": f"https://watch.example/v/bk1/?t={token}",
                         "clip01": f"https://watch.example/v/bk1/clip01?t={token}"}
        # Without the token the booking shows no link; with it, it does.
        assert "share" not in client.get("/bookings/bk1").json()["extra"]
        assert "share" in client.get("/bookings/bk1", headers=AUTH).json()["extra"]
        png = client.get("/bookings/bk1/qr.png", headers=AUTH)
        assert png.headers["content-type"] == "image/png"
        assert decode_qr(png.content) == links["video"]
        clip = client.get("/bookings/bk1/qr.png?clip=clip01", headers=AUTH)
        assert decode_qr(clip.content) == links["clip01"]
        assert client.get("/bookings/bk1/qr.png?clip=clip99", headers=AUTH).status_code == 409
        assert client.get("/bookings/bk1/qr.png?clip=../x", headers=AUTH).status_code == 422
        assert client.delete("/bookings/bk1/share").status_code == 401
        revoked = client.delete("/bookings/bk1/share", headers=AUTH)
        assert revoked.json()["links"] == [] and revoked.json()["revoked_at"]
        again = client.post("/bookings/bk1/share", headers=AUTH).json()
        assert again["links"] and f"t={token}" not in again["links"][0]["url"]  # new token
        assert client.post("/bookings/nope/share", headers=AUTH).status_code == 404


def test_local_storage_without_template_says_how_to_get_links(ctx: Context) -> None:
    uploaded_booking(ctx, ctx.settings)
    with pytest.raises(share.ShareError, match="set EZREC_SHARE_URL_TEMPLATE"):
        share.ensure(ctx.settings, ctx.store, open_storage(ctx.settings), "bk1")


def test_qr_terminal_output_is_block_characters() -> None:
    text = qrcodes.terminal("https://watch.example/v/bk1")
    assert "█" in text and len(text.splitlines()) > 10


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse = 0

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        if self.refuse:
            self.refuse -= 1
            return "451 try again later"
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_players_get_an_email_with_links_and_qr_and_a_failed_send_is_retried(
    template_ctx: Context, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    inbox.refuse = 1
    uploaded_booking(template_ctx, template_ctx.settings)
    settings = template_ctx.settings
    mailer = Mailer(f"smtp://127.0.0.1:{port}", "court-1@venue.example")
    keeper = ReplayKeeper(settings, template_ctx.store, open_storage(settings), mailer)
    now = template_ctx.store.clock()
    problems = keeper.run_once(now)
    assert any("451" in p for p in problems)
    booking = template_ctx.store.get("bk1")
    assert booking.state == "video_uploaded"  # a failed mail never touches the state
    assert booking.extra["notify"]["attempts"] == 1 and not inbox.messages
    assert keeper.run_once(now + timedelta(seconds=10)) == []  # backing off: not yet
    assert not inbox.messages
    assert keeper.run_once(now + timedelta(minutes=5)) == []
    assert len(inbox.messages) == 1
    sender, to, raw = inbox.messages[0]
    assert sender == "court-1@venue.example" and to == ["player@example.com"]
    from email import message_from_bytes, policy

    msg = message_from_bytes(raw, policy=policy.default)
    link = share.link(template_ctx.store.get("bk1"))
    assert link in msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    qr = next(p for p in msg.walk() if p.get_content_type() == "image/png")
    assert decode_qr(qr.get_payload(decode=True)) == link
    history = [h.detail or "" for h in template_ctx.store.history("bk1")]
    assert history[-1] == "video links emailed to the player"
    assert not any("player@example.com" in line for line in history)  # history is public
    keeper.run_once(now + timedelta(hours=1))
    assert len(inbox.messages) == 1  # sent once


def test_the_keeper_thread_makes_links_when_woken(template_ctx: Context) -> None:
    uploaded_booking(template_ctx, template_ctx.settings)
    settings = template_ctx.settings
    keeper = ReplayKeeper(settings, template_ctx.store, open_storage(settings), None,
                          every_s=3600).start()  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while share.active(template_ctx.store.get("bk1")) is None:
            assert time.monotonic() < deadline
            keeper.wake()
            time.sleep(0.05)
    finally:
        keeper.stop()


def test_contact_email_is_taken_checked_and_shown_only_with_the_token(
    template_ctx: Context,
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    body = {"start_time": start.isoformat(), "end_time": (start + timedelta(hours=1)).isoformat(),
            "id": "bk9", "contact_email": "player@example.com"}  # fmt: skip
    with TestClient(create_app(context=template_ctx)) as client:
        assert client.post("/bookings", json=body | {"contact_email": "no"},
                           headers=AUTH).status_code == 422  # fmt: skip
        assert client.post("/bookings", json=body, headers=AUTH).status_code == 201
        assert "contact_email" not in client.get("/bookings/bk9").json()["extra"]
        shown = client.get("/bookings/bk9", headers=AUTH).json()["extra"]
        assert shown["contact_email"] == "player@example.com"


def test_the_keeper_leaves_videos_stored_long_before_alone(template_ctx: Context) -> None:
    uploaded_booking(template_ctx, template_ctx.settings)
    settings = template_ctx.settings
    keeper = ReplayKeeper(settings, template_ctx.store, open_storage(settings), None)
    later = datetime.now(UTC) + timedelta(hours=settings.share_link_h + 1)
    assert keeper.run_once(later) == []
    assert template_ctx.store.get("bk1").extra.get("share") is None  # `ezrec share ID` can
    assert keeper.run_once() == [] and share.active(template_ctx.store.get("bk1"))


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"EZREC_SMTP_URL": "http://mail"}, "bad setting EZREC_SMTP_URL: must start with smtp://"),
        ({"EZREC_SMTP_URL": "smtp://mail"}, "bad setting EZREC_NOTIFY_FROM: must be set when"),
        ({"EZREC_NOTIFY_FROM": "nobody"}, "bad setting EZREC_NOTIFY_FROM: must be an email"),
        ({"EZREC_SHARE_URL_TEMPLATE": "https://x/{user}"}, "unknown field {user}"),
        ({"EZREC_SHARE_URL_TEMPLATE": "https://x/v"}, "must contain {booking}"),
        ({"EZREC_SHARE_LINK_H": "200"}, "bad setting EZREC_SHARE_LINK_H"),
        ({"EZREC_MARK_GPIO_PIN": "pin 17"}, "bad setting EZREC_MARK_GPIO_PIN: must be a GPIO pin"),
        ({"EZREC_CLIP_BEFORE_S": "-1"}, "bad setting EZREC_CLIP_BEFORE_S"),
    ],
)
def test_replay_settings_are_checked_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    from controller.config import ConfigError, load_settings

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as info:
        load_settings(data_dir=tmp_path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_the_smtp_password_is_never_shown(tmp_path: Path) -> None:
    from controller.config import load_settings

    s = load_settings(data_dir=tmp_path, smtp_url="smtps://u:hunter2@mail.example",
                      notify_from="box@venue.example")  # fmt: skip
    assert "hunter2" not in repr(s) and s.public_dict()["smtp_url"] == "***"
    mailer = Mailer(s.smtp_url.get_secret_value(), "box@venue.example")  # type: ignore[union-attr]
    assert "hunter2" not in repr(mailer) and mailer.port == 465 and mailer.password == "hunter2"


def test_layout_separate_links_are_per_camera_and_the_video_link_is_the_first() -> None:
    from controller.db import Booking

    booking = Booking(id="bk1", extra_json=json.dumps({"share": {"links": [
        {"name": "cam0", "kind": "video", "url": "https://a/0"},
        {"name": "cam1", "kind": "video", "url": "https://a/1"},
        {"name": "cam0-clip01", "kind": "clip", "url": "https://a/c"},
    ]}}))  # fmt: skip
    assert share.link(booking) == "https://a/0"
    assert share.link(booking, "cam1") == "https://a/1"
    assert share.object_name("bk1", "v/d/bk1-cam0-clip01.mp4") == "cam0-clip01"
    assert share.object_name("bk1", "v/d/bk1.mp4") == "video"
    with pytest.raises(share.ShareError, match="has no 'clip09'"):
        share.link(booking, "clip09")


def test_doctor_lines_for_replays_check_the_smtp_server(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    from controller.config import load_settings
    from controller.doctor import replay_checks

    _inbox, port = smtp
    s = load_settings(data_dir=tmp_path, smtp_url=f"smtp://127.0.0.1:{port}",
                      notify_from="box@venue.example", mark_gpio_pin="17")  # fmt: skip
    got = {c.name: (c.ok, c.detail) for c in replay_checks(s)}
    assert got["mail"][0] and "answers" in got["mail"][1]
    assert got["button"][0] and got["share"] == (True, "no share links (local storage, no "
                                                       "EZREC_SHARE_URL_TEMPLATE)")  # fmt: skip
    down = s.model_copy(update={"smtp_url": SecretStr(f"smtp://127.0.0.1:{free_port()}")})
    ok, text = {c.name: (c.ok, c.detail) for c in replay_checks(down)}["mail"]
    assert not ok and "check EZREC_SMTP_URL" in text and "\n" not in text
