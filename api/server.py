"""Serving the API: uvicorn, one worker, on EZREC_API_HOST:EZREC_API_PORT (127.0.0.1:8080).

It refuses to listen on anything but loopback without EZREC_API_TOKEN: an open API on the
venue's network would let anyone cancel bookings. One worker, because the API's state (status
cache, write queue, preview slots) is per process and the box has few cores to spare.
"""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from controller.config import ConfigError, Settings

MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name could resolve to anything: treat it as exposed


def check_bind(settings: Settings) -> None:
    """ConfigError (one line, naming the setting) when this bind would be unsafe."""
    host = settings.api_host
    token = settings.api_token.get_secret_value() if settings.api_token else ""
    if is_loopback(host):
        return
    if not token:
        raise ConfigError(
            f"refusing to serve the API on {host}: that is not loopback and EZREC_API_TOKEN "
            "is not set (set a token, or EZREC_API_HOST=127.0.0.1)"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"refusing to serve the API on {host}: EZREC_API_TOKEN is shorter than "
            f"{MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 24`)"
        )


def serve(settings: Settings, *, log_level: str = "info") -> None:
    """Run until SIGINT/SIGTERM; returns after a graceful shutdown."""
    check_bind(settings)
    from api.app import create_app

    app = create_app(settings)
    logging.getLogger("ezrec.api").info(
        "API on http://%s:%d (token %s)",
        settings.api_host,
        settings.api_port,
        "required for changes" if settings.api_token else "not set: loopback only",
    )
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        workers=1,
        log_level=log_level,
        lifespan="on",
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        # uvicorn already logged why (e.g. the port is taken); make the exit status say so.
        raise SystemExit(1)
