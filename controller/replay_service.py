"""What runs beside the supervisor for the players: the court's replay button, and a keeper
that gives every stored video its share links, renews them, and emails the players.

Both are sidecars of the supervisor (`stop()`, `wake()`: `supervisor.Sidecar`), started by
`start()`. Nothing here can hold a booking back: the button only adds marks, and the keeper
works on bookings that are already `video_uploaded`; a failed share or mail is retried on its
own schedule and only ever adds history lines.
"""

from __future__ import annotations

import contextlib
import html
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from controller import qrcodes, share
from controller.config import Settings
from controller.db import Booking
from controller.drivers.mailer import Attachment, Mail, Mailer, MailError
from controller.drivers.storage import ServerSideCopy, Storage, StorageError
from controller.fsm import BookingError, BookingStore, StaleVersion
from controller.fsm.marks import MarkRefused, record_mark
from controller.fsm.states import State

log = logging.getLogger("ezrec.replays")

KEEP_EVERY_S = 300.0
MIN_ROUND_GAP_S = 2.0  # a burst of booking changes (each one wakes us) costs one round
MAIL_TRIES = 8
MAIL_BACKOFF_S = 60.0  # doubled per failed try, up to MAIL_BACKOFF_MAX_S
MAIL_BACKOFF_MAX_S = 3600.0


def contact_of(booking: Booking) -> str | None:
    value = booking.extra.get("contact_email")
    return str(value) if value else None


def player_mail(booking: Booking, to: str) -> Mail:
    """The message: the video's link and QR code, every clip's link."""
    links = (share.active(booking) or {}).get("links", [])
    video = next((item["url"] for item in links if item["name"] == "video"), links[0]["url"])
    clips = [item for item in links if item["kind"] == "clip"]
    day = booking.start_time.astimezone().strftime("%A %d %B %Y, %H:%M")
    lines = [f"Your video of {day} is ready:", "", video, ""]
    if clips:
        lines += ["Your best moments:", *(f"  {c['name']}: {c['url']}" for c in clips), ""]
    expires = (share.active(booking) or {}).get("expires_at")
    if expires:
        lines.append(f"The links work until {expires[:16].replace('T', ' ')} UTC.")
    clip_html = "".join(
        f'<li><a href="{html.escape(c["url"])}">{html.escape(c["name"])}</a></li>' for c in clips
    )
    body = (
        f"<p>Your video of {html.escape(day)} is ready:</p>"
        f'<p><a href="{html.escape(video)}">Watch it</a></p>'
        '<p><img src="cid:qr" alt="QR code of the link" width="240" height="240"></p>'
        + (f"<p>Your best moments:</p><ul>{clip_html}</ul>" if clips else "")
    )
    qr = Attachment("video-qr.png", qrcodes.png(video), "image", "png", cid="qr")
    return Mail(to, f"Your video of {day}", "\n".join(lines) + "\n", body, [qr])


class ReplayKeeper:
    """Share links made and renewed, players mailed; one thread, woken on booking changes."""

    def __init__(
        self,
        settings: Settings,
        store: BookingStore,
        storage: Storage,
        mailer: Mailer | None,
        *,
        every_s: float = KEEP_EVERY_S,
    ) -> None:
        self.settings, self.store, self.storage, self.mailer = settings, store, storage, mailer
        self.every_s = every_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replays", daemon=True)
        self.problems: list[str] = []

    def start(self) -> ReplayKeeper:
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the database is away: the next round tries again
                log.exception("replay keeper round failed")
            self._wake.wait(self.every_s)
            self._stop.wait(MIN_ROUND_GAP_S)
            self._wake.clear()

    def run_once(self, now: datetime | None = None) -> list[str]:
        """One round; returns the problems met (also logged)."""
        now = now or self.store.clock()
        problems: list[str] = []
        copies = isinstance(self.storage, ServerSideCopy)
        can_share = bool(self.settings.share_url_template) or copies
        recent = now - timedelta(hours=self.settings.share_link_h)
        for booking in self.store.list(state=State.VIDEO_UPLOADED):
            # Videos stored before links existed (an upgrade, a long history) get theirs on
            # request (`ezrec share ID`), not all at once at the next start.
            if can_share and booking.extra.get("share") is None and _stored_at(booking) > recent:
                try:
                    booking = share.ensure(self.settings, self.store, self.storage, booking.id)
                except (BookingError, StorageError) as exc:
                    problems.append(f"{booking.id}: no share links: {exc}")
                    continue
            if self.mailer is not None:
                problem = self._notify(booking, now)
                if problem:
                    problems.append(problem)
        problems += share.renew_due(self.settings, self.store, self.storage, now)
        for line in problems:
            log.warning("%s", line)
        self.problems = problems
        return problems

    def _notify(self, booking: Booking, now: datetime) -> str | None:
        to = contact_of(booking)
        state: dict[str, Any] = booking.extra.get("notify") or {}
        if not to or state.get("sent_at") or share.active(booking) is None:
            return None
        tries = int(state.get("attempts", 0))
        if tries >= MAIL_TRIES:
            return None  # given up: said so in the history at the last try
        due = state.get("next_at")
        if due and datetime.fromisoformat(due) > now:
            return None
        assert self.mailer is not None
        try:
            self.mailer.send(player_mail(booking, to))
        except MailError as exc:
            wait = min(MAIL_BACKOFF_MAX_S, MAIL_BACKOFF_S * 2**tries)
            state = {"attempts": tries + 1, "last_error": str(exc),
                     "next_at": (now + timedelta(seconds=wait)).isoformat()}  # fmt: skip
            last = " (giving up)" if tries + 1 >= MAIL_TRIES else ""
            self._record(booking, state, f"email not sent, try {tries + 1}{last}: {exc}")
            return f"{booking.id}: {exc}"
        self._record(booking, {"sent_at": now.isoformat(), "to": to, "attempts": tries + 1},
                     "video links emailed to the player")  # fmt: skip
        return None

    def _record(self, booking: Booking, state: dict[str, Any], detail: str) -> None:
        # Changed meanwhile: the next round reads it again (a mail may then go twice).
        with contextlib.suppress(StaleVersion):
            self.store.fire(booking.id, "note", detail=detail, changes={"extra": {"notify": state}})


def _stored_at(booking: Booking) -> datetime:
    times = [o.get("uploaded_at") for o in booking.extra.get("uploaded") or []]
    found = [datetime.fromisoformat(t) for t in times if t]
    return max(found) if found else booking.updated_at


def _press(settings: Settings, store: BookingStore) -> None:
    try:
        result = record_mark(store, source="button", camera=settings.device_id)
    except MarkRefused as exc:
        log.info("replay button: %s", exc)
        return
    log.info("replay button: mark on %s%s", result.booking.id,
             " (same moment as the last press)" if result.duplicate else "")  # fmt: skip


class ReplayButton:
    """The court's button as a sidecar of the loop: each press marks the booking recording."""

    def __init__(self, pin: str, on_press: Callable[[], None]) -> None:
        from controller.drivers.gpio_button import MarkButton

        self.button = MarkButton(pin, on_press)

    def wake(self) -> None:
        """A booking changed elsewhere: nothing for a button to do."""

    def stop(self) -> None:
        self.button.stop()


def start(
    settings: Settings, store: BookingStore, storage: Storage
) -> list[ReplayKeeper | ReplayButton]:
    """The sidecars the settings ask for (the keeper always; the button with a pin)."""
    sidecars: list[ReplayKeeper | ReplayButton] = []
    if settings.mark_gpio_pin:
        from controller.drivers.gpio_button import ButtonError

        try:
            sidecars.append(ReplayButton(settings.mark_gpio_pin, lambda: _press(settings, store)))
        except ButtonError as exc:  # a dead button must not keep the box from recording
            log.error("%s: no replay button", exc)
    mailer = None
    if settings.smtp_url is not None and settings.notify_from:
        mailer = Mailer(settings.smtp_url.get_secret_value(), settings.notify_from)
    links = bool(settings.share_url_template) or isinstance(storage, ServerSideCopy)
    if mailer is None and not links:
        return sidecars  # local storage, no template, no mail: nothing for a keeper to do
    keeper = ReplayKeeper(settings, store, storage, mailer).start()
    store.on_outbox.append(keeper.wake)  # a video just stored gets its links at once
    sidecars.append(keeper)
    return sidecars
