"""The replay chain through the real supervisor (`create_supervisor`, as `ezrec run` builds it):
synthetic cameras record, the court's button (gpiozero, mock pins chosen through its own
GPIOZERO_PIN_FACTORY switch) marks a moment, the build plans the clip, the upload job cuts and
stores it, and the keeper gives video and clip their share links."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from gpiozero import Device

from controller import share
from controller.config import Settings
from controller.context import open_context
from controller.db import utcnow
from controller.fsm.marks import marks_of
from controller.supervisor import create_supervisor

pytestmark = pytest.mark.slow


def test_button_press_to_clip_and_share_links_through_the_supervisor(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    Device.pin_factory = None  # let gpiozero pick its factory from the environment again
    settings = settings.model_copy(update={
        "mark_gpio_pin": "GPIO17", "clip_before_s": 2.0, "clip_after_s": 1.0,
        "share_url_template": "https://watch.example/v/{booking}/{clip}?t={token}",
    })  # fmt: skip
    ctx = open_context(settings)
    start = utcnow() + timedelta(seconds=1)
    ctx.store.create(start, start + timedelta(seconds=6), booking_id="bk1")
    sup = create_supervisor(settings, ctx.store)
    done = threading.Event()

    def finished() -> bool:
        booking = ctx.store.get("bk1")
        return done.is_set() or (booking.state == "video_uploaded" and share.active(booking)
                                 is not None) or booking.state.endswith("failed")  # fmt: skip

    loop = threading.Thread(target=sup.run, kwargs={"until": finished})
    loop.start()
    try:
        while ctx.store.get("bk1").state != "recording":
            time.sleep(0.1)
        while utcnow() < start + timedelta(seconds=3):
            time.sleep(0.05)
        pin = Device.pin_factory.pin(17)  # type: ignore[union-attr]
        pin.drive_low()
        time.sleep(0.1)
        pin.drive_high()
        deadline = time.monotonic() + 90
        while not finished():
            assert time.monotonic() < deadline, ctx.store.get("bk1").to_dict()
            time.sleep(0.2)
    finally:
        done.set()
        sup.request_stop()
        loop.join(30)
        Device.pin_factory = None
    booking = ctx.store.get("bk1")
    assert booking.state == "video_uploaded", booking.last_error
    marks = marks_of(ctx.store, "bk1")
    assert [m.source for m in marks] == ["button"]
    offset = (marks[0].at - booking.start_time).total_seconds()
    assert 2.5 < offset < 4.5
    (clip,) = booking.extra["clips"]
    assert clip["end_s"] - clip["start_s"] == pytest.approx(3.0, abs=0.01)
    assert Path(clip["path"]).is_file()
    kinds = sorted(o["kind"] for o in booking.extra["uploaded"])
    assert kinds == ["clip", "video"]
    names = {item["name"] for item in share.active(booking)["links"]}  # type: ignore[index]
    assert names == {"video", "clip01"}
    ctx.close()
