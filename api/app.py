"""The Starlette application: routes, the token check, JSON errors, the OpenAPI document.

`create_app(settings)` opens the same context (settings → database → booking store) as the CLI
and the supervisor, so the API is one more face on the one state machine; it can run in its own
process next to the supervisor because every write is versioned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import bookings, cameras, marks, media, monitoring, share
from api.auth import BearerAuthMiddleware
from api.errors import EXCEPTION_HANDLERS
from api.headers import SecurityHeadersMiddleware
from api.openapi import document
from api.page import routes as page_routes
from api.state import ApiState
from controller.config import Settings, load_settings
from controller.context import Context, open_context

Endpoint = Callable[[Request], Awaitable[Response]]


def by_method(**handlers: Endpoint) -> Endpoint:
    """One endpoint per path, so that a 405 lists every method the path has (Allow)."""
    table = {method.upper(): handler for method, handler in handlers.items()}
    if "GET" in table:
        table["HEAD"] = table["GET"]

    async def endpoint(request: Request) -> Response:
        return await table[request.method](request)

    return endpoint


def routes() -> list[Route]:
    return [
        Route("/health", monitoring.health, methods=["GET"]),
        Route("/status", monitoring.status, methods=["GET"]),
        Route("/metrics", monitoring.metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route(
            "/bookings",
            by_method(get=bookings.list_bookings, post=bookings.create_booking),
            methods=["GET", "POST"],
        ),
        Route(
            "/bookings/{id}",
            by_method(
                get=bookings.get_booking,
                patch=bookings.reschedule_booking,
                delete=bookings.cancel_booking,
            ),
            methods=["GET", "PATCH", "DELETE"],
        ),
        Route("/bookings/{id}/retry", bookings.retry_booking, methods=["POST"]),
        Route(
            "/bookings/{id}/marks",
            by_method(get=marks.list_marks, post=marks.mark_booking),
            methods=["GET", "POST"],
        ),
        Route("/cameras/{camera}/mark", marks.mark_camera, methods=["POST"]),
        Route(
            "/bookings/{id}/share",
            by_method(get=share.get_share, post=share.make_share, delete=share.revoke_share),
            methods=["GET", "POST", "DELETE"],
        ),
        Route("/bookings/{id}/qr.png", share.qr_png, methods=["GET"]),
        Route("/media/notify", media.notify, methods=["POST"]),
        Route("/cameras", cameras.list_cameras, methods=["GET"]),
        Route("/cameras/{n:int}/preview.jpg", cameras.preview, methods=["GET"]),
    ]


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)


def create_app(settings: Settings | None = None, *, context: Context | None = None) -> Starlette:
    """The app. With `context` given, the caller keeps ownership of it (tests share one)."""
    ctx = context or open_context(settings or load_settings())
    state = ApiState(ctx, owns_context=context is None)
    token = ctx.settings.api_token.get_secret_value() if ctx.settings.api_token else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.close()

    app = Starlette(
        routes=[*routes(), *page_routes()],
        middleware=[
            Middleware(SecurityHeadersMiddleware, settings=ctx.settings),
            Middleware(BearerAuthMiddleware, token=token),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.api = state
    app.state.openapi = document(token_required=token is not None)
    return app


def app_factory() -> Any:  # pragma: no cover - for `uvicorn --factory api.app:app_factory`
    return create_app()
