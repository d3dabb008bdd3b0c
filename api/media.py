"""`POST /media/notify`: an intro or logo changed somewhere; fetch and check it again now.

The sources are the venue's (settings: INTRO, LOGO, SPONSOR_LOGOS) and the users' own media of
every booking not built yet. Fetching may take minutes (a long intro over a slow link), so the
answer is 202 with the list of what is being refreshed, and the work runs after the response.
URLs are shown without their query string and user info: signed URLs carry credentials.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.errors import ApiError
from api.openapi import Answer, operation
from api.responses import MediaRefresh
from api.schemas import Empty, no_body, read_json
from api.state import ApiState, api_state
from controller.booking_media import media_in_use
from controller.drivers.media_cache import MediaCache

log = logging.getLogger("ezrec.api")

_refresh_lock = threading.Lock()


def shown(source: str) -> str:
    """A source as it may appear in a response or a log line."""
    parts = urlsplit(source)
    if not parts.scheme or not parts.netloc:
        return source
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def media_to_refresh(state: ApiState) -> dict[str, list[str]]:
    return media_in_use(state.settings, state.store)


def refresh(cache: MediaCache, sources: dict[str, list[str]]) -> None:
    # One refresh at a time in this process (the cache's file lock covers other processes).
    with _refresh_lock:
        try:
            cache.refresh(sources["video"], kind="video")
            cache.refresh(sources["image"], kind="image")
        except Exception:
            log.exception("media refresh failed")
        else:
            log.info(
                "media refreshed: %d video(s), %d image(s)",
                len(sources["video"]), len(sources["image"]),
            )


@operation(
    id="notifyMedia", summary="An intro or logo changed: refresh the media cache",
    description="Answers at once; the fetching runs after the answer.", body=Empty,
    body_required=False, answers={202: Answer("Refresh started.", MediaRefresh)},
    errors=(413, 415, 422),
)  # fmt: skip
async def notify(request: Request) -> JSONResponse:
    if not no_body(await read_json(request)):
        raise ApiError(422, "notify takes no body (or an empty object)")
    state = api_state(request)
    sources = await run_in_threadpool(media_to_refresh, state)
    cache = MediaCache(state.settings.media_dir)
    body: dict[str, Any] = {
        "status": "refreshing",
        "video": [shown(s) for s in sources["video"]],
        "image": [shown(s) for s in sources["image"]],
    }
    return JSONResponse(body, status_code=202, background=BackgroundTask(refresh, cache, sources))
