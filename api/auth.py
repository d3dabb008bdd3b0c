"""Bearer-token check for every request that can change something.

It works on the HTTP method, not on a list of routes, so that a route added later cannot be
left open by mistake. Reads stay open: the contract (DESIGN.md) protects the mutating routes,
and `/health`, `/status` and `/metrics` are polled by monitoring that holds no secret. What a
read answers may still hold a capability (a presigned URL, a link that plays a video): the
routes leave those out unless `authorized(request)`.
With no token configured the check is off; `api.server` then refuses any non-loopback bind.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ezrec"'}


def bearer_token(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


def token_matches(given: bytes | None, expected: bytes) -> bool:
    # compare_digest takes the same time whatever prefix matches; a missing token is compared
    # too, so that its absence is not faster to detect than a wrong one.
    return hmac.compare_digest(given or b"", expected) and given is not None


def authorized(request: Request) -> bool:
    """Whether this request may see capabilities (presigned URLs, video links).

    The same rule as for changes: with a token configured, only its bearer; without one the
    server listens on loopback only and the check is off (`api.server.check_bind`).
    """
    configured = request.app.state.api.settings.api_token
    if configured is None:
        return True
    return token_matches(bearer_token(request.scope), configured.get_secret_value().encode())


class BearerAuthMiddleware:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.token is None
            or scope["type"] != "http"
            or scope["method"] not in MUTATING
        ):
            await self.app(scope, receive, send)
            return
        given = bearer_token(scope)
        if token_matches(given, self.token):
            await self.app(scope, receive, send)
            return
        detail = (
            "this route needs Authorization: Bearer <EZREC_API_TOKEN>"
            if given is None
            else "wrong token"
        )
        response = error_response(401, detail, headers=CHALLENGE)
        await response(scope, receive, send)
