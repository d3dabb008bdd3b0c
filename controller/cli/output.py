"""How the `ezrec` verbs print: the console, `--json`, times, and a booking as JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import click
from rich.console import Console

from controller.db import Booking, TransitionRow
from controller.fsm import views

# Piped output (scripts, tests, logs) must not be cut at 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 250)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(func)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def booking_json(
    booking: Booking, history: Iterable[TransitionRow] | None = None
) -> dict[str, Any]:
    """A booking as every verb's `--json` prints it: the API's own model
    (`fsm.views.BookingView`, with `history` `BookingWithHistory`), so the two cannot differ."""
    return views.booking_json(booking, history)


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def progress_text(booking: Booking) -> str:
    if booking.progress is None:
        return ""
    return f"{booking.progress_stage or ''} {booking.progress * 100:.0f}%".strip()
