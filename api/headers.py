"""Security headers on every response: a Content-Security-Policy that allows no inline script
(the page's JavaScript is one static file), and no sniffing, framing or Referer leaks.

JSON answers carry them too: a browser that is tricked into rendering one as a document then
still runs nothing. `media-src` also allows the object store's origin, where a presigned URL
points, so that a video kept only in the bucket still plays in the page.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controller.config import Settings


def media_sources(settings: Settings) -> list[str]:
    sources = ["'self'"]
    if settings.storage_url.startswith("s3://"):
        endpoint = settings.s3_endpoint_url
        if endpoint:
            parts = urlsplit(endpoint)
            sources.append(f"{parts.scheme}://{parts.netloc}")
        else:
            sources.append("https://*.amazonaws.com")
    return sources


def content_security_policy(settings: Settings) -> str:
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' blob:",  # camera stills are fetched, then shown from a blob
            f"media-src {' '.join(media_sources(settings))}",
            "connect-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        headers = {
            "content-security-policy": content_security_policy(settings),
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            "referrer-policy": "same-origin",
        }
        # Raw ASGI pairs, appended as they are: /status answers hundreds of polls a second,
        # and parsing the headers (MutableHeaders) per response costs ten times as much.
        self.raw = [(name.encode(), value.encode()) for name, value in headers.items()]
        self.names = frozenset(name for name, _ in self.raw)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                existing = list(message.get("headers") or [])
                # A route may set its own, stricter one (the video's Referrer-Policy).
                present = {name.lower() for name, _ in existing} & self.names
                message["headers"] = existing + [h for h in self.raw if h[0] not in present]
            await send(message)

        await self.app(scope, receive, send_with_headers)
