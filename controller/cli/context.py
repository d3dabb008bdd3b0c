"""The controller a command works on: settings + database opened once per command, and the
nudge that makes a running supervisor act on a change now."""

from __future__ import annotations

import click

from controller.context import Context, open_context
from controller.drivers.nudge import send_nudge


def context(ctx: click.Context) -> Context:
    """Open settings + database lazily, once per command, closed when the command ends."""
    root = ctx.find_root()
    if "context" not in root.obj:
        opened = open_context(config_file=root.obj["config_file"])
        root.obj["context"] = opened
        root.call_on_close(opened.close)
    return root.obj["context"]


def config_file(ctx: click.Context) -> str | None:
    """The `--config` file (or EZREC_CONFIG) given to `ezrec`, for verbs that load settings."""
    return ctx.find_root().obj["config_file"]


def nudge(ctx: Context) -> None:
    """Wake a running supervisor so that a change takes effect now, not at its next tick."""
    send_nudge(ctx.settings.data_dir)
