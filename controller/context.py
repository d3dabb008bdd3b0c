"""The composition root: settings → database → booking store, built the same way for every face
(CLI, API, supervisor), so that they cannot disagree about where the data lives."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from controller.config import Settings, load_settings
from controller.db import Database
from controller.fsm import BookingStore, RetryPolicy


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
