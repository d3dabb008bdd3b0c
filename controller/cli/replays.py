"""`ezrec mark`, `ezrec share ID` / `ezrec share revoke ID`, and the replay part of `ezrec show`.

The CLI runs on the box with the database in reach, so it shows share links as they are (the
API shows them only with its token).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.table import Table

from controller import qrcodes, share
from controller.cli.context import context, nudge
from controller.cli.output import json_option, out, print_json, when
from controller.context import Context, open_storage
from controller.db import Booking
from controller.drivers.storage import StorageError
from controller.fsm.marks import marks_of, record_mark
from controller.timeparse import parse_time


def _storage(c: Context) -> Any:
    try:
        return open_storage(c.settings)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.option("--camera", help="Camera / court id (default: this device).")
@click.option("--at", "at", help="When (ISO 8601 with offset, now, -20s); default now.")
@click.option("--booking", "booking_id", help="Mark this booking instead of the camera's.")
@json_option
@click.pass_context
def mark(
    ctx: click.Context, camera: str | None, at: str | None, booking_id: str | None, as_json: bool
) -> None:
    """A replay mark on the booking recording now (or at T): its clip comes with the video."""
    c = context(ctx)
    moment = parse_time(at) if at else None
    result = record_mark(
        c.store, source="cli", booking_id=booking_id,
        camera=None if booking_id else camera or c.settings.device_id, at=moment,
    )  # fmt: skip
    nudge(c)
    if as_json:
        print_json(result.to_dict())
        return
    seconds = (result.mark.at - result.booking.start_time).total_seconds()
    same = " (the same moment as an earlier mark: counted once)" if result.duplicate else ""
    out.print(f"marked {result.booking.id} at {when(result.mark.at)}, {seconds:.0f} s in{same}",
              markup=False)  # fmt: skip


def links_table(booking: Booking) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "KIND", "EXPIRES", "LINK"):
        table.add_column(column, no_wrap=column != "LINK", overflow="fold")
    for item in (share.active(booking) or {}).get("links", []):
        table.add_row(item["name"], item["kind"], item["expires_at"] or "-", item["url"])
    return table


@click.command(name="share")
@click.argument("args", nargs=-1, required=True, metavar="ID | revoke ID")
@json_option
@click.pass_context
def share_cmd(ctx: click.Context, args: tuple[str, ...], as_json: bool) -> None:
    """A booking's share links (made if it has none), or `revoke ID` to withdraw them."""
    c = context(ctx)
    if len(args) == 2 and args[0] == "revoke":
        try:
            booking = share.revoke(c.store, _storage(c), args[1])
        except StorageError as exc:
            raise click.ClickException(f"{exc}; the links were not revoked") from None
        nudge(c)
        if as_json:
            print_json(booking.extra.get("share"))
        else:
            out.print(f"{booking.id}: share links revoked; they no longer open", markup=False)
        return
    if len(args) != 1:
        raise click.UsageError("use: ezrec share ID, or ezrec share revoke ID")
    try:
        booking = share.ensure(c.settings, c.store, _storage(c), args[0])
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    nudge(c)
    if as_json:
        print_json(booking.extra.get("share"))
    else:
        out.print(links_table(booking))


def clips_table(booking: Booking) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("CLIP", "FROM", "TO", "MARKS", "FILE"):
        table.add_column(column, no_wrap=True)
    for clip in booking.extra.get("clips") or []:
        start, end = (_clock(clip.get(k)) for k in ("from", "to"))
        table.add_row(clip["name"], start, end, str(len(clip.get("marks") or [])), clip["path"])
    return table


def _clock(iso: str | None) -> str:
    return when(datetime.fromisoformat(iso))[11:19] if iso else "-"


def show_replays(c: Context, booking: Booking, qr: bool) -> None:
    """Marks, clips and share links under `ezrec show`; the video link's QR code with --qr."""
    marks = marks_of(c.store, booking.id)
    if marks:
        listed = ", ".join(f"{when(m.at)[11:19]} ({m.source})" for m in marks)
        out.print(f"marks     {listed}", markup=False)
    if booking.extra.get("clips"):
        out.print()
        out.print(clips_table(booking))
    live = share.active(booking)
    if live:
        out.print()
        out.print(links_table(booking))
    if qr:
        link = share.link(booking)  # ShareError (one line) when there is none
        out.print()
        click.echo(qrcodes.terminal(link), nl=False)
        out.print(link, markup=False, soft_wrap=True)

