"""The composition root: settings → database → booking store, built the same way for every face
(CLI, API, supervisor), so that they cannot disagree about where the data lives; and the choice
of each driver family's implementation (cameras, storage) from the settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from controller.config import Settings, load_settings
from controller.db import Database
from controller.drivers.cameras import CameraDriver
from controller.drivers.storage import KeyScheme, Storage, StorageError
from controller.fsm import BookingStore, RetryPolicy

log = logging.getLogger(__name__)


@dataclass
class Context:
    settings: Settings
    db: Database
    store: BookingStore

    def close(self) -> None:
        self.db.dispose()


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base_s=settings.retry_base_s,
        max_s=settings.retry_max_s,
        max_attempts=settings.max_attempts,
    )


def open_context(
    settings: Settings | None = None, config_file: str | Path | None = None
) -> Context:
    settings = settings or load_settings(config_file)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    store = BookingStore(
        db,
        device_id=settings.device_id,
        policy=retry_policy(settings),
        max_length=timedelta(hours=settings.max_booking_h),
    )
    return Context(settings=settings, db=db, store=store)


def open_cameras(settings: Settings) -> CameraDriver:
    """The camera driver named by CAMERA_DRIVER; `auto` is Picamera2 when it imports and sees
    cameras, else the synthetic test patterns.

    Imports are local so that choosing one never drags in picamera2 or ffmpeg checks.
    """
    choice = settings.camera_driver
    if choice == "synthetic":
        from controller.drivers.cameras.synthetic import SyntheticDriver

        return SyntheticDriver(settings)
    if choice == "v4l2":
        from controller.drivers.cameras.v4l2 import V4L2Driver

        return V4L2Driver(settings)
    from controller.drivers.cameras.picamera2 import Picamera2Driver, picamera2_available

    if choice == "picamera2":
        return Picamera2Driver(settings)
    why = picamera2_available()
    if why is None:
        return Picamera2Driver(settings)
    # Loud on purpose: on a venue box this means the customers' videos will be test patterns.
    log.warning(
        "CAMERA_DRIVER=auto: no usable Picamera2 camera (%s); recording SYNTHETIC test patterns "
        "instead. Set EZREC_CAMERA_DRIVER=picamera2 or v4l2 on a real installation.",
        why,
    )
    from controller.drivers.cameras.synthetic import SyntheticDriver

    return SyntheticDriver(settings)


def open_storage(settings: Settings) -> Storage:
    """The backend named by ``settings.storage_url``; raises StorageError(retryable=False) on a
    bad URL, template or SSE value. Opens no network connection."""
    url = settings.storage_url
    if url.startswith("file://"):
        from controller.drivers.storage.local import LocalStorage

        root = Path(url.removeprefix("file://")).expanduser()
        if not root.is_absolute():
            root = settings.data_dir / root
        scheme = KeyScheme(settings.s3_key_template, prefix="", device=settings.device_id)
        return LocalStorage(root, scheme)
    if url.startswith("s3://"):
        # Imported here: boto3 takes a while to load, and a box storing locally never needs it.
        from controller.drivers.storage.s3 import S3Storage, parse_s3_url

        bucket, prefix = parse_s3_url(url)
        return S3Storage(
            bucket=bucket,
            scheme=KeyScheme(settings.s3_key_template, prefix=prefix, device=settings.device_id),
            endpoint_url=settings.s3_endpoint_url,
            sse=settings.s3_sse,
            presign_s=settings.s3_presign_s,
            part_size=settings.s3_part_size_mb * 1024 * 1024,
            concurrency=settings.s3_concurrency,
            connect_timeout_s=min(10.0, settings.s3_timeout_s),
            read_timeout_s=settings.s3_timeout_s,
        )
    raise StorageError(
        f"bad setting EZREC_STORAGE_URL: {url!r} must start with file:// or s3://",
        retryable=False,
    )
