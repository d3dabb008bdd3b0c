"""`GET /`: the box's web page for venue staff, and `GET /page/live`, what keeps it current.

The page is rendered on the server (Jinja2 through starlette.templating, autoescaped, so a
user id or an error text is shown as text, never run). Its parts (bookings, health, videos)
are templates of their own: `/` renders them into the page, `/page/live` renders the same
templates again and answers them as JSON for `static/page.js` to swap in every few seconds.
One template per part, so a polled update cannot look different from a reload.

Both read the status report of `GET /status` (the same cache, `controller.health.collect`)
and the booking store. A request with the API token (or any request when none is configured)
also gets what only the token may see: links that play the videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from api.auth import authorized, bearer_token
from api.openapi import Answer, operation
from api.page_view import BOOKINGS_SHOWN, booking_groups, camera_views, video_items
from api.responses import PageLive
from api.state import ApiState, api_state
from api.video_links import VideoLinks, video, video_links
from controller.db import utcnow
from controller.fsm.states import STATES

HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
# Parts that /page/live re-renders; the cameras part holds only settings and stays put.
LIVE_PARTS = ("bookings", "health", "videos")
POLL_S = 2
PREVIEW_EVERY_S = 5


def _local(value: datetime | None, fmt: str = "%a %d %b %H:%M") -> str:
    return value.astimezone().strftime(fmt) if value else ""


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.0f} %"


def _install_filters(env: Environment) -> None:
    env.filters["local"] = _local
    env.filters["hm"] = lambda value: _local(value, "%H:%M")
    env.filters["percent"] = _percent


_install_filters(TEMPLATES.env)


@dataclass(frozen=True)
class View:
    """Everything the templates read, gathered in one worker-thread call."""

    device_id: str
    now: datetime
    report: dict[str, Any]
    groups: list[Any]
    videos: list[Any]
    cameras: list[Any]
    capabilities: bool
    token_configured: bool
    states: tuple[str, ...] = STATES

    def context(self) -> dict[str, Any]:
        return {
            **vars(self),
            "poll_s": POLL_S,
            "preview_every_s": PREVIEW_EVERY_S,
            "bookings_shown": BOOKINGS_SHOWN,
            "bookings_capped": sum(len(g.rows) for g in self.groups) >= BOOKINGS_SHOWN,
        }


def _view(state: ApiState, report: dict[str, Any], capabilities: bool, links: VideoLinks) -> View:
    settings, store, now = state.settings, state.store, utcnow()
    return View(
        device_id=settings.device_id,
        now=now,
        report=report,
        groups=booking_groups(store, settings, now),
        videos=video_items(
            store, settings, now, capabilities=capabilities, local_link=links.link
        ),
        cameras=camera_views(settings, report),
        capabilities=capabilities,
        token_configured=settings.api_token is not None,
    )


async def _gather(request: Request) -> View:
    state = api_state(request)
    report = await state.status.get()
    return await run_in_threadpool(
        _view, state, report, authorized(request), video_links(request)
    )


def _render_parts(view: View) -> dict[str, str]:
    context = view.context()
    return {
        part: TEMPLATES.get_template(f"_{part}.html").render(context) for part in LIVE_PARTS
    }


NO_STORE = {"Cache-Control": "no-store"}


@operation(
    id="page", summary="The box's web page for venue staff (HTML)",
    description="Bookings, health, camera stills and recent videos; the same data as "
    "`/status` and `/bookings`. Changes go through the API's routes with the token.",
    answers={200: Answer("The page.", media_type="text/html")},
)  # fmt: skip
async def index(request: Request) -> Response:
    view = await _gather(request)
    return TEMPLATES.TemplateResponse(request, "index.html", view.context(), headers=NO_STORE)


def token_verdict(request: Request, view: View) -> str:
    """What the page should tell about the token it sent, so a mistyped one is noticed."""
    if not view.token_configured:
        return "not_needed"
    if bearer_token(request.scope) is None:
        return "none"
    return "accepted" if view.capabilities else "wrong"


@operation(
    id="pageLive", summary="The page's live parts, rendered again (HTML strings in JSON)",
    description="What the page polls. With the token, videos come with links that play them.",
    answers={200: Answer("One HTML fragment per part, and the time they show.", PageLive)},
)  # fmt: skip
async def live(request: Request) -> JSONResponse:
    view = await _gather(request)
    parts = await run_in_threadpool(_render_parts, view)
    body = parts | {"time": view.now.isoformat(), "token": token_verdict(request, view)}
    return JSONResponse(body, headers=NO_STORE)


def routes() -> list[BaseRoute]:
    return [
        Route("/", index, methods=["GET"]),
        Route("/page/live", live, methods=["GET"]),
        Route("/bookings/{id}/video.mp4", video, methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
