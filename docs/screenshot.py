"""Take docs/page.png (and docs/page-phone.png): the staff page of a real box, photographed.

Starts `ezrec api` and `ezrec run` with synthetic cameras in a temporary data dir, records one
short booking to the end, starts a second one, adds an upcoming booking and a failed one, and
photographs the page in Debian's Chromium (Playwright) once the camera stills and the finished
video have loaded. Nothing is drawn: what the picture shows is what the page showed.

    .venv/bin/python docs/screenshot.py docs/page.png      (or: make screenshot)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.config import load_settings  # noqa: E402
from controller.context import open_context  # noqa: E402
from tests._browser import CHROMIUM, CHROMIUM_ARGS, Box, running_box  # noqa: E402

TOKEN = "screenshot-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT_MS = 180_000


def book(http: httpx.Client, booking_id: str, start: datetime, seconds: float, **kw: str) -> None:
    r = http.post("/bookings", headers=AUTH, json={
        "id": booking_id, "start_time": start.isoformat(),
        "end_time": (start + timedelta(seconds=seconds)).isoformat(), **kw})
    r.raise_for_status()


def wait_state(http: httpx.Client, booking_id: str, state: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while http.get(f"/bookings/{booking_id}").json()["state"] != state:
        if time.monotonic() > deadline:
            raise SystemExit(f"error: {booking_id} did not reach {state} in {timeout_s:.0f} s")
        time.sleep(0.5)


def stage(box: Box) -> None:
    now = datetime.now(UTC)
    with httpx.Client(base_url=box.url, timeout=30) as http:
        book(http, "evening-7", now + timedelta(seconds=1), 6, user_id="anna.k")
        wait_state(http, "evening-7", "video_uploaded")
        now = datetime.now(UTC)
        book(http, "evening-8", now + timedelta(seconds=1), 300, user_id="team-blue")
        book(http, "evening-9", now + timedelta(hours=2), 3600, user_id="marco@club")
        book(http, "court2-3", now + timedelta(hours=3), 3600, camera_id="court2",
             user_id="u-42")
        wait_state(http, "evening-8", "recording")
    ctx = open_context(load_settings(data_dir=box.data_dir))
    try:  # what the supervisor writes when a camera does not start
        ctx.store.fire("court2-3", "fail",
                       error="camera 1 did not start: /dev/video2: No such device")
    finally:
        ctx.close()


def photograph(box: Box, out: Path) -> list[Path]:
    written = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)
        for name, viewport in ((out, {"width": 1180, "height": 900}),
                               (out.with_name(out.stem + "-phone.png"),
                                {"width": 390, "height": 844})):
            page = browser.new_page(viewport=viewport)
            page.goto(box.url + "/")
            page.get_by_label("Token", exact=True).fill(TOKEN)
            page.get_by_role("button", name="Keep for this browser session").click()
            for n in (0, 1):
                expect(page.locator(f"#preview-status-{n}")).to_contain_text(
                    "still taken", timeout=WAIT_MS)
            video = page.locator('video[data-video="evening-7"]')
            expect(video).to_have_count(1, timeout=WAIT_MS)
            # Show a frame from the match, not the first black one of the intro.
            page.evaluate("""() => new Promise(done => {
                const v = document.querySelector('video[data-video="evening-7"]');
                // Done once the seeked frame has reached the screen, not only the decoder.
                const seek = () => { v.requestVideoFrameCallback(() => done());
                                     v.currentTime = Math.min(4, v.duration / 2); };
                v.readyState >= 1 ? seek() : v.addEventListener('loadedmetadata', seek);
            })""")
            # The first poll after the token was kept may still be swapping parts in.
            expect(page.locator("#token-status")).to_contain_text("kept for this browser")
            page.screenshot(path=str(name), full_page=True)
            written.append(name)
            page.close()
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=ROOT / "docs" / "page.png")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"error: {CHROMIUM} is missing (apt-get install chromium)")
    with (
        tempfile.TemporaryDirectory(prefix="ezrec-shot-") as tmp,
        running_box(Path(tmp), TOKEN, supervisor=True) as box,
    ):
        stage(box)
        for path in photograph(box, args.out.resolve()):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
