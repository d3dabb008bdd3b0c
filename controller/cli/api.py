"""The `ezrec api` verb: the HTTP API server (uvicorn, one worker)."""

from __future__ import annotations

import logging
import sys

import click

from controller.cli.context import config_file
from controller.config import load_settings


@click.command()
@click.option("--host", help="Bind address (default: EZREC_API_HOST, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Port (default: EZREC_API_PORT, 8080)."
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def api(ctx: click.Context, host: str | None, port: int | None, verbose: bool) -> None:
    """Serve the HTTP API. Refuses a non-loopback address without EZREC_API_TOKEN."""
    from api.server import serve

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = load_settings(config_file(ctx))
    # The command line wins over the environment here (load_settings lets the environment
    # win over its arguments); click has validated the port already.
    updates = {k: v for k, v in (("api_host", host), ("api_port", port)) if v is not None}
    serve(settings.model_copy(update=updates), log_level="debug" if verbose else "info")
