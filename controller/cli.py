"""The `ezrec` command. Every listing verb takes `--json`; human output is aligned tables.

Errors a person can fix are one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from controller.config import ConfigError
from controller.context import Context, open_context
from controller.db import Booking, TransitionRow
from controller.dbhealth import DatabaseUnavailable, describe, is_unavailable
from controller.fsm import STATES, BookingError, InvalidTrigger, diagram
from controller.timeparse import TimeFormatError, parse_time

# Piped output (scripts, tests, logs) must not be cut at 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 250)

USER_ERRORS = (BookingError, InvalidTrigger, ConfigError, TimeFormatError, DatabaseUnavailable)


class EzrecGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:
            # A database lost in the middle of a command is the venue's network or server,
            # not a bug: one line naming the setting, not SQLAlchemy's traceback.
            if not is_unavailable(exc):
                raise
            opened = (ctx.obj or {}).get("context")
            click.echo(f"error: {describe(exc, opened.settings.db_url if opened else None)}",
                       err=True)
            sys.exit(1)


@click.group(cls=EzrecGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="EZREC_CONFIG",
    help="TOML settings file (also EZREC_CONFIG). Environment EZREC_* wins over it.",
)
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """EZREC controller: records booked slots with two cameras, builds and uploads the video."""
    ctx.obj = {"config_file": config_file}


def context(ctx: click.Context) -> Context:
    """Open settings + database lazily, once per command, closed when the command ends."""
    root = ctx.find_root()
    if "context" not in root.obj:
        opened = open_context(config_file=root.obj["config_file"])
        root.obj["context"] = opened
        root.call_on_close(opened.close)
    return root.obj["context"]


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(func)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def progress_text(booking: Booking) -> str:
    if booking.progress is None:
        return ""
    return f"{booking.progress_stage or ''} {booking.progress * 100:.0f}%".strip()


def bookings_table(bookings: Iterable[Booking]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "STATE", "START", "END", "CAMERA", "USER", "TRIES", "PROGRESS"):
        table.add_column(column, no_wrap=True)
    for b in bookings:
        table.add_row(
            b.id,
            b.state,
            when(b.start_time),
            when(b.end_time),
            b.camera_id,
            b.user_id or "-",
            str(b.attempts),
            progress_text(b),
        )
    return table


def history_table(rows: Iterable[TransitionRow]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("#", "AT", "TRIGGER", "FROM", "TO", "DETAIL"):
        table.add_column(column, no_wrap=column != "DETAIL")
    for row in rows:
        text = row.detail or ""
        if row.error:
            text = f"{text} error: {row.error}".strip()
        table.add_row(
            str(row.seq),
            when(row.at),
            row.trigger,
            row.from_state or "-",
            row.to_state,
            text,
        )
    return table


def show_booking(ctx: Context, booking_id: str, as_json: bool, qr: bool = False) -> None:
    from controller.cli_replays import show_replays
    from controller.fsm.marks import marks_of

    booking = ctx.store.get(booking_id)
    history = ctx.store.history(booking_id)
    if as_json:
        marks = [m.to_dict() for m in marks_of(ctx.store, booking_id)]
        print_json(booking.to_dict() | {"marks": marks, "history": [h.to_dict() for h in history]})
        return
    fields = [
        ("id", booking.id),
        ("state", booking.state),
        ("start", when(booking.start_time)),
        ("end", when(booking.end_time)),
        ("camera", booking.camera_id),
        ("user", booking.user_id or "-"),
        ("version", str(booking.version)),
        ("attempts", str(booking.attempts)),
        ("next attempt", when(booking.next_attempt_at)),
        ("last error", booking.last_error or "-"),
        ("progress", progress_text(booking) or "-"),
        ("raw", booking.raw_dir or "-"),
        ("video", booking.processed_path or "-"),
        ("uploaded", booking.video_url or "-"),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        out.print(f"{name:<{width}}  {value}", markup=False)
    show_replays(ctx, booking, qr)
    out.print()
    out.print(history_table(history))


@main.command()
@click.option("--start", "start", required=True, help="ISO 8601 with offset, or now / +5m.")
@click.option("--end", "end", required=True, help="ISO 8601 with offset, or +10m (from now).")
@click.option("--user", "user_id", help="The booking system's user id.")
@click.option("--camera", "camera_id", help="Camera / court id (default: this device).")
@click.option("--id", "booking_id", help="Booking id (default: generated).")
@click.option("--email", help="Where the player's video links are mailed (when SMTP is set).")
@json_option
@click.pass_context
def add(
    ctx: click.Context,
    start: str,
    end: str,
    user_id: str | None,
    camera_id: str | None,
    booking_id: str | None,
    email: str | None,
    as_json: bool,
) -> None:
    """Create a booking."""
    now = datetime.now(UTC)
    booking = context(ctx).store.create(
        parse_time(start, now),
        parse_time(end, now),
        booking_id=booking_id,
        user_id=user_id,
        camera_id=camera_id,
        extra={"contact_email": email} if email else None,
    )
    nudge(context(ctx))
    if as_json:
        print_json(booking.to_dict())
    else:
        out.print(
            f"created {booking.id}: {when(booking.start_time)} to {when(booking.end_time)} "
            f"on camera {booking.camera_id}",
            markup=False,
        )


@main.command()
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="Filter.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many.")
@json_option
@click.pass_context
def bookings(ctx: click.Context, states: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """List bookings, oldest first."""
    found = context(ctx).store.list(state=list(states) or None, limit=limit)
    if as_json:
        print_json([b.to_dict() for b in found])
    elif not found:
        out.print("no bookings")
    else:
        out.print(bookings_table(found))


@main.command()
@click.argument("booking_id")
@click.option("--qr", is_flag=True, help="Also the QR code of the video's share link.")
@json_option
@click.pass_context
def show(ctx: click.Context, booking_id: str, qr: bool, as_json: bool) -> None:
    """One booking with its whole transition history (and its marks, clips, links)."""
    show_booking(context(ctx), booking_id, as_json, qr)


@main.command()
@click.argument("booking_id")
@json_option
@click.pass_context
def retry(ctx: click.Context, booking_id: str, as_json: bool) -> None:
    """Retry a failed booking now (resets its attempt count)."""
    operator_fire(ctx, booking_id, "retry", as_json, admin=True,
                  detail="retry requested by operator")  # fmt: skip


@main.command()
@click.argument("booking_id")
@json_option
@click.pass_context
def cancel(ctx: click.Context, booking_id: str, as_json: bool) -> None:
    """Cancel a booking that has not finished recording."""
    operator_fire(ctx, booking_id, "cancel", as_json, detail="cancelled by operator")


def operator_fire(
    ctx: click.Context, booking_id: str, trigger: str, as_json: bool, **kwargs: Any
) -> None:
    """Fire an operator's trigger, wake the supervisor, and say the new state."""
    c = context(ctx)
    booking = c.store.fire(booking_id, trigger, **kwargs)
    nudge(c)
    if as_json:
        print_json(booking.to_dict())
    else:
        out.print(f"{booking.id}: {booking.state}", markup=False)


@main.command()
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(fmt: str) -> None:
    """The state diagram, generated from the state machine's definition."""
    click.echo(diagram(fmt))  # type: ignore[arg-type]


def nudge(ctx: Context) -> None:
    """Wake a running supervisor so that a change takes effect now, not at its next tick."""
    try:
        from controller.drivers.nudge import send_nudge
    except ImportError:  # pragma: no cover - the supervisor issue adds it
        return
    send_nudge(ctx.settings.data_dir)


# The verbs that run things live in their own module; importing it registers them.
from controller import cli_api, cli_replays, cli_run, cli_sync  # noqa: E402, F401
