"""`ezrec doctor`: prints the checks of `controller.doctor`; exit 1 when one fails."""

from __future__ import annotations

import sys

import click

from controller.cli.context import context
from controller.cli.output import json_option, out, print_json


@click.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check ffmpeg, cameras, storage, cloud credentials, disk and clock; say what to fix."""
    # Imported here: the checks load every driver (and httpx); only `ezrec doctor` pays for it.
    from controller.doctor import Level, run_checks

    labels = {Level.OK: "ok  ", Level.FAIL: "FAIL", Level.INFO: "info"}
    c = context(ctx)
    checks = run_checks(c.settings, c.store)
    if as_json:
        print_json([check.to_dict() for check in checks])
    else:
        width = max(len(check.name) for check in checks)
        for check in checks:
            out.print(f"{labels[check.level]}  {check.name:<{width}}  {check.detail}",
                      markup=False)  # fmt: skip
    if any(check.level is Level.FAIL for check in checks):
        sys.exit(1)
