"""`GET /bookings/{id}/video.mp4?exp=&sig=`: a finished video played straight from the box.

A video is what a presigned URL protects, so the box's own copy is handed out the same way: a
link signed by this process (HMAC-SHA256 over the booking id and an expiry), given only to a
request that carries the API token. A <video> element cannot send an Authorization header, and
the token must never be put in a URL; a signed link can be, because it opens one video for a
while and nothing else. The key is drawn at start: a restart ends every link, and the page
asks for fresh ones on its next poll.

The file is answered by Starlette's FileResponse, which honours Range requests (seeking, and
the way browsers fetch video).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from api.errors import ApiError
from api.openapi import Answer, operation
from api.page_view import local_video
from api.schemas import VideoLinkQuery, valid_id
from api.state import api_state

# A link is valid until the end of the next whole hour: 1-2 hours, and the same link for the
# whole hour, so the page's video list does not change (and reset a playing video) every poll.
LINK_HOURS = 1
_DIGITS = frozenset("0123456789")


class VideoLinks:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _sig(self, booking_id: str, exp: int) -> str:
        message = f"{booking_id}\n{exp}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def link(self, booking_id: str, now: float | None = None) -> str:
        hour = int((now if now is not None else time.time()) // 3600)
        exp = (hour + 1 + LINK_HOURS) * 3600
        query = urlencode({"exp": exp, "sig": self._sig(booking_id, exp)})
        return f"/bookings/{booking_id}/video.mp4?{query}"

    def valid(self, booking_id: str, exp: str, sig: str, now: float | None = None) -> bool:
        if not exp or len(exp) > 12 or not set(exp) <= _DIGITS:
            return False
        expected = self._sig(booking_id, int(exp))
        fresh = int(exp) > (now if now is not None else time.time())
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError).
        return hmac.compare_digest(expected.encode(), sig.encode()) and fresh


def video_links(request: Request) -> VideoLinks:
    """The app's signer, made on first use (one per app, so per API process)."""
    links: VideoLinks | None = getattr(request.app.state, "video_links", None)
    if links is None:
        links = request.app.state.video_links = VideoLinks()
    return links


@operation(
    id="video", summary="A finished video from the box's own copy, through a signed link",
    description="The link (`exp`, `sig`) is handed out by `/page/live` to a request with the "
    "token; Range requests are honoured.",
    query=VideoLinkQuery,
    answers={200: Answer("The video.", media_type="video/mp4"),
             206: Answer("The range asked for.", media_type="video/mp4")},
    errors=(403, 404, 416),
)  # fmt: skip
async def video(request: Request) -> Response:
    booking_id = valid_id(request.path_params["id"])
    query = request.query_params
    if not video_links(request).valid(booking_id, query.get("exp", ""), query.get("sig", "")):
        raise ApiError(
            403,
            "this video link is wrong or has expired; open the page again with the API token "
            "set to get a fresh one",
        )
    state = api_state(request)
    booking = await run_in_threadpool(state.store.get, booking_id)
    path = await run_in_threadpool(local_video, booking, state.settings)
    if path is None:
        raise ApiError(404, f"booking {booking_id} has no video file on this box any more")
    # The link is the capability: keep it out of shared caches and other sites' Referer.
    headers = {"Cache-Control": "private, max-age=3600", "Referrer-Policy": "no-referrer"}
    return FileResponse(path, media_type="video/mp4", headers=headers)
