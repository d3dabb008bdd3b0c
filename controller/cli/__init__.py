"""The `ezrec` command: the click group, and every verb registered on it here, by name.

Every listing verb takes `--json`; human output is aligned tables. Errors a person can fix are
one line on stderr and a non-zero exit, never a traceback.

The verbs live in modules per family (bookings, replays, run, status, doctor, sync, api); they
import their helpers from `output` and `context`, never from this module, so that nothing
imports back up into the group.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from controller.cli.api import api
from controller.cli.bookings import add, bookings, cancel, graph, retry, show
from controller.cli.doctor import doctor
from controller.cli.replays import mark, share_cmd
from controller.cli.run import build, demo, run
from controller.cli.status import status
from controller.cli.sync import sync
from controller.config import ConfigError
from controller.dbhealth import DatabaseUnavailable, describe, is_unavailable
from controller.fsm import BookingError, InvalidTrigger
from controller.timeparse import TimeFormatError

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
                       err=True)  # fmt: skip
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


for command in (
    run, api, demo, build,  # the pipeline and the HTTP API
    add, bookings, show, retry, cancel, graph,  # bookings and their state machine
    status, doctor,  # health
    mark, share_cmd,  # replays
    sync,  # the booking system
):  # fmt: skip
    main.add_command(command)
