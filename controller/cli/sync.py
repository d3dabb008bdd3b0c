"""`ezrec sync`: one round (or a loop) of the booking-system sync, for operators.

The supervisor runs the same sync in a thread (`controller.sync.start_sync`);
this verb is for checking credentials and rights, or draining the outbox by hand.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import click

from controller.cli.context import context
from controller.cli.output import json_option, out, print_json
from controller.config import ConfigError
from controller.drivers.supabase import SupabaseError, is_configured
from controller.health import collect
from controller.sync import PUSH_BATCH, SupabaseSync, SyncWorker


def _print_report(report: dict[str, Any]) -> None:
    pull = report.get("pull")
    if pull is not None:
        out.print(
            f"pull: {pull['seen']} booking(s) seen, {len(pull['created'])} new, "
            f"{len(pull['rescheduled'])} rescheduled, {len(pull['cancelled'])} cancelled"
        )
        for booking_id, reason in pull["refused"].items():
            out.print(f"  refused {booking_id}: {reason}")
        for note in pull["notes"]:
            out.print(f"  note: {note}")
    push = report["push"]
    pending = report["pending"]
    shown = f"{PUSH_BATCH}+" if pending > PUSH_BATCH else str(pending)
    line = f"push: {push['delivered']} change(s) delivered, {shown} pending"
    if push["set_aside"]:
        line += f", {push['set_aside']} set aside (rejected by the booking system)"
    out.print(line)
    if "status_pushed" in report:
        out.print(f"status: {'pushed' if report['status_pushed'] else 'not pushed'}")
    for error in report["errors"]:
        out.print(f"[red]error[/red] {error}")


@click.command()
@click.option("--once", is_flag=True, help="One round, then exit (non-zero if a step failed).")
@json_option
@click.pass_context
def sync(ctx: click.Context, once: bool, as_json: bool) -> None:
    """Sync with the booking system (Supabase): pull bookings, push changes and status."""
    c = context(ctx)
    if not is_configured(c.settings):
        raise ConfigError(
            "the booking-system sync needs EZREC_SUPABASE_URL and EZREC_SUPABASE_KEY"
        )
    try:
        engine = SupabaseSync(
            c.settings, c.store, status_fn=lambda: collect(c.settings, c.store)
        )
    except SupabaseError as exc:
        raise ConfigError(str(exc)) from None
    if once:
        report = engine.run_once()
        if as_json:
            print_json(report)
        else:
            _print_report(report)
        sys.exit(1 if report["errors"] else 0)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    worker = SyncWorker(engine, c.settings.supabase_sync_s)

    def on_signal(_signum: int, _frame: Any) -> None:
        worker.stop_event.set()
        worker.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.start()
    while worker.is_alive():
        worker.join(1.0)
