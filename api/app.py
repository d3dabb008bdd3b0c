"""The Starlette application: routes, the token check, JSON errors, the OpenAPI document.

Every route is a Starlette `Route`: a function for one method, an `HTTPEndpoint` for several,
so method dispatch and the 405 answers are Starlette's. `api.openapi` describes the routes from
the `@operation` each endpoint declares.

`create_app(settings)` opens the same context (settings → database → booking store) as the CLI
and the supervisor, so the API is one more face on the one state machine; it can run in its own
process next to the supervisor because every write is versioned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import bookings, cameras, marks, media, monitoring, share
from api.auth import BearerAuthMiddleware
from api.errors import EXCEPTION_HANDLERS
from api.headers import SecurityHeadersMiddleware
from api.openapi import Answer, document, operation
from api.page import routes as page_routes
from api.state import ApiState
from controller.config import Settings, load_settings
from controller.context import Context, open_context

Endpoint = Callable[[Request], Awaitable[Response]]


def resource(name: str, **handlers: Endpoint) -> type[HTTPEndpoint]:
    """A path's endpoints by method, as an HTTPEndpoint: Starlette dispatches on the method and
    answers any other with 405 and an Allow header of the path's methods (`api.errors` gives
    the body our error shape)."""
    return type(name, (HTTPEndpoint,), {m: staticmethod(h) for m, h in handlers.items()})


@operation(
    id="openapi", summary="This document",
    answers={200: Answer("OpenAPI 3.1 document.", dict[str, Any])},
)  # fmt: skip
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)


def routes() -> list[Route]:
    return [
        Route("/health", monitoring.health, methods=["GET"]),
        Route("/status", monitoring.status, methods=["GET"]),
        Route("/metrics", monitoring.metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route(
            "/bookings",
            resource("Bookings", get=bookings.list_bookings, post=bookings.create_booking),
        ),
        Route(
            "/bookings/{id}",
            resource(
                "Booking",
                get=bookings.get_booking,
                patch=bookings.reschedule_booking,
                delete=bookings.cancel_booking,
            ),
        ),
        Route("/bookings/{id}/retry", bookings.retry_booking, methods=["POST"]),
        Route(
            "/bookings/{id}/marks",
            resource("Marks", get=marks.list_marks, post=marks.mark_booking),
        ),
        Route("/cameras/{camera}/mark", marks.mark_camera, methods=["POST"]),
        Route(
            "/bookings/{id}/share",
            resource(
                "Share", get=share.get_share, post=share.make_share, delete=share.revoke_share
            ),
        ),
        Route("/bookings/{id}/qr.png", share.qr_png, methods=["GET"]),
        Route("/media/notify", media.notify, methods=["POST"]),
        Route("/cameras", cameras.list_cameras, methods=["GET"]),
        Route("/cameras/{n:int}/preview.jpg", cameras.preview, methods=["GET"]),
    ]


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
    app.state.openapi = document(app.routes, token_required=token is not None)
    return app


def app_factory() -> Any:  # pragma: no cover - for `uvicorn --factory api.app:app_factory`
    return create_app()
