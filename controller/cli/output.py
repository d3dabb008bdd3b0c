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
    parts = []
    if booking.progress is not None:
        parts.append(f"{booking.progress_stage or ''} {booking.progress * 100:.0f}%".strip())
    detail = detail_text(booking.progress_detail)
    if detail:
        parts.append(detail)
    return ", ".join(parts)


def detail_text(detail: dict[str, int] | None) -> str:
    """'chunks 4/12, 31.5/60.2 MB uploaded' from a booking's progress detail."""
    if not detail:
        return ""
    parts = []
    if detail.get("chunks_total"):
        parts.append(f"chunks {detail.get('chunks_built', 0)}/{detail['chunks_total']}")
    if detail.get("bytes_uploaded") is not None:
        sent = detail["bytes_uploaded"] / 1e6
        total = detail.get("bytes_total")
        parts.append(f"{sent:.1f}/{total / 1e6:.1f} MB uploaded" if total else
                     f"{sent:.1f} MB uploaded")  # fmt: skip
    return ", ".join(parts)
