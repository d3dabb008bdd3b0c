"""`ezrec doctor`'s checks: ffmpeg, cameras, storage, cloud credentials, replays, disk, clock,
media, database. Each returns data (a `Check`) and prints nothing; the CLI prints them.

A check never raises for what it finds: a broken camera or a refused key is a failed `Check`
whose text says what to fix, so one run lists every problem of a box at once.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from controller.config import Settings
from controller.context import open_cameras, open_storage
from controller.db import utcnow
from controller.drivers import supabase, system_metrics
from controller.drivers.mailer import Mailer, MailError
from controller.drivers.media_cache import Kind, MediaCache
from controller.drivers.storage import StorageError
from controller.fsm import BookingStore
from controller.supervisor import SANE_CLOCK_AFTER

# The camera drivers that talk to real hardware: doctor says what each of them sees.
REAL_CAMERA_DRIVERS = ("picamera2", "v4l2")


class Level(StrEnum):
    OK = "ok"
    FAIL = "fail"
    # What a camera driver not in use sees: it neither passes nor fails the box.
    INFO = "info"


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    message: str  # what was found
    fix: str | None = None  # what to do about it, when the message alone does not say

    @property
    def ok(self) -> bool | None:
        return None if self.level is Level.INFO else self.level is Level.OK

    @property
    def detail(self) -> str:
        return f"{self.message}: {self.fix}" if self.fix else self.message

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"check": self.name, "ok": self.ok, "detail": self.detail}
        if self.level is Level.INFO:
            data["info"] = True
        return data


def passed(name: str, message: str) -> Check:
    return Check(name, Level.OK, message)


def failed(name: str, message: str, fix: str | None = None) -> Check:
    return Check(name, Level.FAIL, message, fix)


def verdict(name: str, ok: bool, message: str) -> Check:
    return Check(name, Level.OK if ok else Level.FAIL, message)


def run_checks(settings: Settings, store: BookingStore) -> list[Check]:
    """Every check, in the order they are printed; what other camera drivers see comes last."""
    found = [
        check_ffmpeg(settings.video_encoder),
        *check_cameras(settings),
        check_storage(settings),
        check_cloud(settings),
        *replay_checks(settings),
        check_disk(settings),
        check_clock(),
        *check_media(settings),
        check_database(settings, store),
    ]
    return [c for c in found if c.level is not Level.INFO] + [
        c for c in found if c.level is Level.INFO
    ]


def check_ffmpeg(encoder: str) -> Check:
    if not shutil.which("ffmpeg") or not shutil.which("ffprobe"):
        return failed("ffmpeg", "ffmpeg/ffprobe not found", "sudo apt-get install ffmpeg")
    first = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True,
                           check=False).stdout.splitlines()[0]  # fmt: skip
    encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True,
                              text=True, check=False).stdout  # fmt: skip
    if f" {encoder} " not in encoders:
        return failed("ffmpeg", f"{first}: encoder {encoder} missing (EZREC_VIDEO_ENCODER)")
    version = first.removeprefix("ffmpeg version ").split(" Copyright")[0]
    return passed("ffmpeg", f"{version} with {encoder}")


def check_cameras(settings: Settings) -> list[Check]:
    """The configured driver's cameras, then (as INFO) what the other real drivers see, for an
    operator choosing or wiring cameras."""
    checks: list[Check] = []
    used = None
    try:
        driver = open_cameras(settings)
        used = driver.name
        probes = driver.probe()
        driver.close()
        if not probes:
            checks.append(failed("cameras", f"{settings.camera_driver}: no camera found"))
        checks.extend(
            verdict(f"camera {p.camera}", p.ok, f"[{driver.name}] {p.line}") for p in probes
        )
    except Exception as exc:  # any driver fault is the answer here, not a crash of doctor
        checks.append(failed("cameras", f"{settings.camera_driver}: {exc}"))
    for name in REAL_CAMERA_DRIVERS:
        if name == used:
            continue
        try:
            other = open_cameras(settings.model_copy(update={"camera_driver": name}))
            lines = [p.line for p in other.probe()] or ["no camera found"]
            other.close()
        except Exception as exc:
            lines = [str(exc)]
        checks.extend(Check(name, Level.INFO, line) for line in lines)
    return checks


def check_storage(settings: Settings) -> Check:
    try:
        return passed("storage", open_storage(settings).check())
    except StorageError as exc:
        return failed("storage", str(exc))
    except Exception as exc:
        return failed("storage", f"{settings.storage_url}: {exc}")


def check_cloud(settings: Settings) -> Check:
    """Through the sync's own Supabase client, so doctor sees what the sync will see."""
    found = supabase.check(settings)
    return passed("cloud", found.detail) if found.ok else failed("cloud", found.detail)


def replay_checks(settings: Settings) -> list[Check]:
    """The replays: the button, share links, the players' email (its server is asked)."""
    checks: list[Check] = []
    if settings.mark_gpio_pin:
        checks.append(passed("button", f"replay button on {settings.mark_gpio_pin}, read by "
                             "ezrec run (a press with nothing recording is logged)"))  # fmt: skip
    if settings.share_url_template:
        checks.append(passed("share", f"share links: {settings.share_url_template}"))
    elif settings.storage_url.startswith("s3://"):
        checks.append(passed("share", f"share links: S3 presigned, {settings.share_link_h:g} h"))
    else:
        checks.append(passed("share", "no share links (local storage, no "
                             "EZREC_SHARE_URL_TEMPLATE)"))  # fmt: skip
    if settings.smtp_url is not None and settings.notify_from:
        try:
            mailer = Mailer(settings.smtp_url.get_secret_value(), settings.notify_from,
                            timeout_s=5)  # fmt: skip
            checks.append(passed("mail", mailer.check()))
        except MailError as exc:
            checks.append(failed("mail", str(exc), "check EZREC_SMTP_URL"))
    return checks


def check_disk(settings: Settings) -> Check:
    free = system_metrics.free_disk_mb(settings.data_dir)
    return verdict("disk", free >= settings.min_free_disk_mb,
                   f"{free:.0f} MB free in {settings.data_dir} (EZREC_MIN_FREE_DISK_MB="
                   f"{settings.min_free_disk_mb})")  # fmt: skip


def check_clock() -> Check:
    now = utcnow()
    if now < SANE_CLOCK_AFTER:
        return failed("clock", f"clock reads {now.isoformat()}",
                      "set the time / enable NTP (timedatectl)")  # fmt: skip
    line = f"clock {now.astimezone().isoformat(timespec='seconds')}"
    if shutil.which("timedatectl"):
        synced = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                                capture_output=True, text=True, check=False).stdout.strip()
        if synced == "no":
            return failed("clock", f"{line}: not NTP-synchronised (timedatectl set-ntp true)")
        if synced == "yes":
            line += ", NTP-synchronised"
    return passed("clock", line)


def check_media(settings: Settings) -> list[Check]:
    """The intro, logo and sponsor logos that are set: fetched and checked as a build would."""
    cache = MediaCache(settings.media_dir)
    wanted: list[tuple[str, str | None, Kind]] = [
        ("intro", settings.intro, "video"),
        ("logo", settings.logo, "image"),
        *((f"sponsor{i}", src, "image") for i, src in enumerate(settings.sponsor_logos, 1)),
    ]
    checks: list[Check] = []
    for name, source, kind in wanted:
        if source:
            found = cache.resolve(source, kind, label=name)
            checks.append(verdict(name, found.path is not None, found.note or f"{source}: ok"))
    return checks


def check_database(settings: Settings, store: BookingStore) -> Check:
    where = settings.db_url.split("@")[-1]  # never the password of a postgresql:// URL
    return passed("database", f"{where}: {sum(store.counts().values())} bookings")
