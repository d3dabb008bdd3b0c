"""The booking verbs: `add`, `bookings`, `show`, `retry`, `cancel`, and `graph` (the diagram of
the states they move through). Every one acts through the state machine's store."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from controller.cli.context import context, nudge
from controller.cli.output import booking_json, json_option, out, print_json, progress_text, when
from controller.cli.replays import show_replays
from controller.context import Context
from controller.db import Booking, TransitionRow
from controller.fsm import diagram
from controller.fsm.marks import marks_of
from controller.fsm.states import State
from controller.timeparse import parse_time


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
    booking = ctx.store.get(booking_id)
    history = ctx.store.history(booking_id)
    if as_json:
        marks = [m.to_dict() for m in marks_of(ctx.store, booking_id)]
        print_json(booking_json(booking, history) | {"marks": marks})
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


@click.command()
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
        print_json(booking_json(booking))
    else:
        out.print(
            f"created {booking.id}: {when(booking.start_time)} to {when(booking.end_time)} "
            f"on camera {booking.camera_id}",
            markup=False,
        )


@click.command()
# The values, not the members: click would offer an enum's member names (CONFIRMED).
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in State]),
              help="Filter.")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), help="At most this many.")
@json_option
@click.pass_context
def bookings(ctx: click.Context, states: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """List bookings, oldest first."""
    found = context(ctx).store.list(state=list(states) or None, limit=limit)
    if as_json:
        print_json([booking_json(b) for b in found])
    elif not found:
        out.print("no bookings")
    else:
        out.print(bookings_table(found))


@click.command()
@click.argument("booking_id")
@click.option("--qr", is_flag=True, help="Also the QR code of the video's share link.")
@json_option
@click.pass_context
def show(ctx: click.Context, booking_id: str, qr: bool, as_json: bool) -> None:
    """One booking with its whole transition history (and its marks, clips, links)."""
    show_booking(context(ctx), booking_id, as_json, qr)


@click.command()
@click.argument("booking_id")
@json_option
@click.pass_context
def retry(ctx: click.Context, booking_id: str, as_json: bool) -> None:
    """Retry a failed booking now (resets its attempt count)."""
    operator_fire(ctx, booking_id, "retry", as_json, admin=True,
                  detail="retry requested by operator")  # fmt: skip


@click.command()
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
        print_json(booking_json(booking))
    else:
        out.print(f"{booking.id}: {booking.state}", markup=False)


@click.command()
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(fmt: str) -> None:
    """The state diagram, generated from the state machine's definition."""
    click.echo(diagram(fmt))  # type: ignore[arg-type]
