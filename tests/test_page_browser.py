"""The staff page in a real browser (Debian's Chromium, driven by Playwright) against a real
`ezrec api` and a real `ezrec run` recording synthetic cameras, all on loopback.

Every wait below is for a condition (Playwright's expect polls it) with a generous upper
bound; none sleeps for a fixed time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api as playwright_sync
from playwright.sync_api import expect

from controller.config import load_settings
from controller.context import open_context
from tests._browser import CHROMIUM_ARGS, Box, chromium_or_fail, running_box

pytestmark = pytest.mark.slow
TOKEN = "browser-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
LONG_S = 120_000  # ms: the most any step may take on a loaded two-core machine


def iso(t: datetime) -> str:
    return t.isoformat()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = chromium_or_fail()
    with playwright_sync.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(path), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    with running_box(tmp_path_factory.mktemp("box"), TOKEN, supervisor=True) as b:
        yield b


@pytest.fixture
def page(browser: Any, box: Box) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    pg.on("console", lambda msg: problems.append(msg.text)
          if msg.type == "error" and "Content Security Policy" in msg.text else None)
    pg.goto(box.url + "/")
    yield pg
    context.close()
    assert problems == []  # no script error and no CSP violation on the page


def api(box: Box) -> httpx.Client:
    return httpx.Client(base_url=box.url, timeout=30)


def book(box: Box, booking_id: str, start: datetime, seconds: float, **extra: str) -> None:
    with api(box) as http:
        r = http.post("/bookings", headers=AUTH, json={
            "id": booking_id, "start_time": iso(start),
            "end_time": iso(start + timedelta(seconds=seconds)), **extra})
        assert r.status_code == 201, r.text


def set_token(page: Any) -> None:
    page.get_by_label("Token", exact=True).fill(TOKEN)
    page.get_by_role("button", name="Keep for this browser session", exact=True).click()
    expect(page.locator("#token-status")).to_contain_text("kept for this browser session")


def state_cell(page: Any, booking_id: str) -> Any:
    return page.locator(f"#booking-{booking_id} [data-field=state]")


WATCH_STATES = """id => {
  // Every state the page shows for the row, however briefly: read at each DOM change.
  window.__seen = [];
  const note = () => {
    const cell = document.querySelector(`#booking-${id} [data-field=state]`);
    const progress = document.querySelector(`#booking-${id} progress`);
    const entry = cell ? cell.textContent + (progress ? "+progress" : "") : null;
    if (entry && window.__seen[window.__seen.length - 1] !== entry) window.__seen.push(entry);
  };
  new MutationObserver(note).observe(document.body, {childList: true, subtree: true});
  note();
}"""


def test_follows_a_recording_to_uploaded_without_reload_then_plays_it(
    page: Any, box: Box
) -> None:
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.evaluate("window.__sameDocument = true")
    page.evaluate(WATCH_STATES, "live-1")
    expect(page.locator("#booking-live-1")).to_have_count(0)  # it appears without a reload
    book(box, "live-1", datetime.now(UTC) + timedelta(seconds=1), 8, user_id="u-live")

    # Read from the observer's log: a state the page showed between two looks still counts.
    page.wait_for_function("() => window.__seen.some(s => s.startsWith('recording'))",
                           timeout=LONG_S)  # a function: a bare expression would need eval
    expect(page.locator("#booking-live-1")).to_contain_text("u-live")
    expect(state_cell(page, "live-1")).to_have_text("video_uploaded", timeout=LONG_S)
    # Whether the page caught `confirmed` first depends on when its poll fell; the order of
    # what it showed does not.
    seen = page.evaluate("window.__seen")
    assert seen[-1] == "video_uploaded", seen
    assert "recording+progress" in seen, seen  # a recording shows how far its slot has run
    order = [s.removesuffix("+progress") for s in seen]
    assert order == sorted(order, key=["confirmed", "recording", "completed", "video_processed",
                                       "video_uploaded"].index), seen
    assert page.evaluate("window.__sameDocument") is True and navigations == []

    # Without the token the video is listed but not playable; with it, it plays in the page.
    article = page.locator("#video-live-1")
    expect(article).to_contain_text("enter the API token to play it")
    set_token(page)
    video = page.locator('video[data-video="live-1"]')
    expect(video).to_have_count(1, timeout=LONG_S)
    assert re.fullmatch(r"/bookings/live-1/video\.mp4\?exp=\d+&sig=[0-9a-f]{64}",
                        video.get_attribute("src") or "")
    assert page.evaluate("""() => document.createElement('video')
        .canPlayType('video/mp4; codecs="avc1.64001F"')""") == "probably"
    page.evaluate("""async () => {
        const v = document.querySelector('video[data-video="live-1"]');
        v.muted = true;  // autoplay rules: a muted video may play without a click
        await v.play();
    }""")
    page.wait_for_function("""() => {
        const v = document.querySelector('video[data-video="live-1"]');
        return v && v.currentTime > 0 && v.videoWidth > 0;
    }""", timeout=LONG_S)
    # Both 320x240 cameras side by side, decoded by the browser.
    assert page.evaluate("document.querySelector('video').videoWidth") == 640
    # Joined from 2 s chunks, fragmented: the browser still knows how long it is, and plays
    # across the joins to the end.
    duration = page.evaluate("document.querySelector('video[data-video=\"live-1\"]').duration")
    assert duration == pytest.approx(8.0, abs=0.3)
    page.evaluate("""() => {
        const v = document.querySelector('video[data-video="live-1"]');
        v.currentTime = v.duration - 0.5;
    }""")
    page.wait_for_function("""() => document.querySelector('video[data-video="live-1"]').ended""",
                           timeout=LONG_S)


def test_camera_stills_with_resolution_fps_and_rotation(page: Any) -> None:
    figure = page.locator("figure.camera").first
    expect(figure).to_contain_text("320×240 at 10 fps, rotation 0°")
    expect(page.locator("#preview-status-0")).to_contain_text("still taken", timeout=LONG_S)
    # The blob is set before the status text, but decoding it may finish later.
    page.wait_for_function("""() => {
        const img = document.getElementById('preview-0');
        return img.complete && img.naturalWidth > 0;
    }""", timeout=LONG_S)
    assert page.evaluate("document.getElementById('preview-0').naturalWidth") == 320
    assert page.evaluate("document.getElementById('preview-0').src").startswith("blob:")


def test_cancel_is_refused_without_the_token_and_done_with_it(page: Any, box: Box) -> None:
    book(box, "later-1", datetime.now(UTC) + timedelta(hours=3), 1800, camera_id="court2")
    button = page.locator("#cancel-later-1")
    expect(button).to_be_visible(timeout=LONG_S)
    button.click()
    button.click()  # a cancel takes a second press
    message = page.locator("#message")
    expect(message).to_contain_text("refused (401 unauthorized)")
    expect(message).to_contain_text("this route needs Authorization: Bearer <EZREC_API_TOKEN>")
    with api(box) as http:
        assert http.get("/bookings/later-1").json()["state"] == "confirmed"

    set_token(page)
    page.locator("#cancel-later-1").click()
    page.locator("#cancel-later-1").click()
    expect(message).to_contain_text("the booking is now cancelled")
    expect(state_cell(page, "later-1")).to_have_text("cancelled", timeout=LONG_S)
    with api(box) as http:
        assert http.get("/bookings/later-1").json()["state"] == "cancelled"


def test_a_change_the_page_has_not_seen_yet_is_refused_in_the_apis_words(
    page: Any, box: Box
) -> None:
    book(box, "race-1", datetime.now(UTC) + timedelta(hours=4), 1800, camera_id="court6")
    set_token(page)
    cancel = page.locator("#cancel-race-1")
    expect(cancel).to_be_visible(timeout=LONG_S)
    # The page goes on showing what it last saw while the box is unreachable for its polls...
    page.route("**/page/live", lambda route: route.abort())
    expect(page.locator("#offline")).to_contain_text("No connection to the box since",
                                                     timeout=LONG_S)
    ctx = open_context(load_settings(data_dir=box.data_dir))
    try:  # ...and meanwhile the booking moves on (the supervisor found nothing could record)
        ctx.store.fire("race-1", "miss", detail="no camera")
    finally:
        ctx.close()
    cancel.click()
    cancel.click()
    message = page.locator("#message")
    expect(message).to_contain_text("refused (409 invalid_transition)")
    expect(message).to_contain_text("cannot cancel a booking in state 'missed'")
    page.unroute("**/page/live")
    expect(page.locator("#offline")).to_be_hidden(timeout=LONG_S)
    expect(state_cell(page, "race-1")).to_have_text("missed", timeout=LONG_S)


def test_new_booking_from_the_page(page: Any, box: Box) -> None:
    set_token(page)
    start = datetime.now().astimezone() + timedelta(hours=6)
    minute = "%Y-%m-%dT%H:%M"  # what a datetime-local input takes
    page.get_by_label("Start", exact=True).fill(start.strftime(minute))
    page.get_by_label("End", exact=True).fill((start - timedelta(hours=1)).strftime(minute))
    page.get_by_label("Camera/court", exact=True).fill("court4")
    page.get_by_label("User", exact=True).fill("u-desk")
    page.get_by_role("button", name="Book", exact=True).click()
    message = page.locator("#message")
    expect(message).to_contain_text("New booking refused (422 invalid)")
    expect(message).to_contain_text("end")

    page.get_by_label("End", exact=True).fill((start + timedelta(hours=1)).strftime(minute))
    page.get_by_role("button", name="Book", exact=True).click()
    expect(message).to_contain_text("on court4")
    booking_id = re.search(r"Booked (\S+) on", message.text_content() or "")
    assert booking_id is not None
    row = page.locator(f"#booking-{booking_id[1]}")
    expect(row).to_contain_text("u-desk", timeout=LONG_S)
    with api(box) as http:
        stored = http.get(f"/bookings/{booking_id[1]}").json()
    assert stored["camera_id"] == "court4" and stored["user_id"] == "u-desk"
    assert datetime.fromisoformat(stored["start_time"]) == start.replace(second=0, microsecond=0)


def test_error_text_is_shown_as_text_not_run(page: Any, box: Box) -> None:
    book(box, "hostile-1", datetime.now(UTC) + timedelta(hours=8), 1800, camera_id="court3")
    # Error texts come from drivers (ffmpeg, storage, cameras) and can quote anything, file
    # names included; written here through the store as the supervisor writes them.
    ctx = open_context(load_settings(data_dir=box.data_dir))
    try:
        ctx.store.fire("hostile-1", "fail", error=HOSTILE)
    finally:
        ctx.close()
    cell = page.locator("#booking-hostile-1 [data-field=error]")
    expect(cell).to_have_text(HOSTILE, timeout=LONG_S)
    expect(page.locator("ol.errors")).to_contain_text(f"hostile-1 (recording_failed): {HOSTILE}")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#booking-hostile-1 img, ol.errors img").count() == 0


def test_readable_on_a_phone(browser: Any, box: Box) -> None:
    book(box, "phone-1", datetime.now(UTC) + timedelta(hours=10), 1800, camera_id="court7",
         user_id="a.very.long.user.name.without.any.space@some-sports-club.example")
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(box.url + "/")
    row = page.locator("#booking-phone-1")
    expect(row).to_be_visible(timeout=LONG_S)
    # Below 46em a booking is a card with its field names, and nothing scrolls sideways.
    assert page.evaluate("() => getComputedStyle(document.querySelector('table.bookings"
                         " thead')).position") == "absolute"
    expect(row.locator("td[data-label=User]")).to_contain_text("without.any.space@some")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    context.close()


HIDE = """hidden => {
  Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_a_tab_nobody_looks_at_stops_polling_and_catches_up_when_shown(page: Any) -> None:
    with page.expect_request(lambda r: r.url.endswith("/page/live"), timeout=LONG_S):
        pass  # polling runs while the page is in view
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith("/page/live") else None)
    page.evaluate(HIDE, True)
    # Five poll intervals hidden (a visible page polls 5 times meanwhile): at most the one
    # already in flight when it was hidden.
    page.wait_for_timeout(5 * 2000)
    assert len(polls) <= 1, polls
    with page.expect_request(lambda r: r.url.endswith("/page/live"), timeout=5000):
        page.evaluate(HIDE, False)  # shown again: a poll at once, not after the interval


def test_a_wrong_token_is_said_so(page: Any) -> None:
    page.get_by_label("Token", exact=True).fill("not-the-token-at-all")
    page.get_by_role("button", name="Keep for this browser session", exact=True).click()
    expect(page.locator("#token-status")).to_contain_text("The box refused the token",
                                                          timeout=LONG_S)
    page.get_by_role("button", name="Forget", exact=True).click()
    expect(page.locator("#token-status")).to_contain_text("Looking needs no token")
    assert page.evaluate("() => sessionStorage.length") == 0


def test_retry_from_the_page_rearms_a_failed_booking(page: Any, box: Box) -> None:
    book(box, "flaky-1", datetime.now(UTC) + timedelta(hours=9), 1800, camera_id="court5")
    ctx = open_context(load_settings(data_dir=box.data_dir))
    try:
        ctx.store.fire("flaky-1", "fail", error="camera 0 did not start")
    finally:
        ctx.close()
    retry = page.get_by_role("button", name="Retry booking flaky-1", exact=True)
    expect(retry).to_be_visible(timeout=LONG_S)
    set_token(page)
    retry.click()
    expect(page.locator("#message")).to_contain_text("the booking is now confirmed")
    expect(state_cell(page, "flaky-1")).to_have_text("confirmed", timeout=LONG_S)
    with api(box) as http:
        history = http.get("/bookings/flaky-1").json()["history"]
    assert [h["trigger"] for h in history] == ["fail", "retry"]
    assert history[-1]["detail"] == "retry requested through the API"


def test_a_dead_connection_is_shown_then_cleared(
    browser: Any, tmp_path: Path
) -> None:
    with running_box(tmp_path, TOKEN, supervisor=False) as lone:
        context = browser.new_context()
        page = context.new_page()
        page.goto(lone.url + "/")
        offline = page.locator("#offline")
        expect(offline).to_be_hidden()
        lone.stop("api")
        expect(offline).to_be_visible(timeout=LONG_S)
        expect(offline).to_contain_text("No connection to the box since")
        assert "stale" in (page.locator("body").get_attribute("class") or "")
        lone.start_api()  # the same port again: the page finds the box by itself
        expect(offline).to_be_hidden(timeout=LONG_S)
        context.close()
