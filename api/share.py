"""Share link routes: `GET|POST|DELETE /bookings/{id}/share` and `GET /bookings/{id}/qr.png`.

Share links are capabilities (whoever holds one watches the video), so every route here needs
the API token, reads included. POST makes the links when there are none (or they were revoked:
new ones, under a new token); DELETE revokes them. `qr.png` is the QR code of the video's link,
or of one clip's with `?clip=clip01`.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import CHALLENGE, authorized
from api.errors import ApiError
from api.schemas import no_body, read_json, valid_id
from api.state import api_state
from controller import qrcodes, share
from controller.context import open_storage
from controller.db import Booking
from controller.drivers.storage import StorageError

CLIP_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _need_token(request: Request) -> None:
    if not authorized(request):
        raise ApiError(
            401, "share links need Authorization: Bearer <EZREC_API_TOKEN>", headers=CHALLENGE
        )


def share_json(booking: Booking) -> dict[str, Any]:
    stored = booking.extra.get("share") or {}
    return {
        "booking_id": booking.id,
        "expires_at": stored.get("expires_at"),
        "revoked_at": stored.get("revoked_at"),
        "links": [
            {k: item.get(k) for k in ("name", "kind", "url", "expires_at")}
            for item in stored.get("links") or []
        ],
    }


async def get_share(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    _need_token(request)
    booking = await run_in_threadpool(api_state(request).store.get, booking_id)
    return JSONResponse(share_json(booking))


async def make_share(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    _need_token(request)
    if not no_body(await read_json(request)):
        raise ApiError(422, "this route takes no body (or an empty object)")
    state = api_state(request)
    try:
        storage = await run_in_threadpool(open_storage, state.settings)
        booking = await state.change(
            share.ensure, state.settings, state.store, storage, booking_id
        )
    except StorageError as exc:
        raise ApiError(503, f"storage: {exc}") from None
    return JSONResponse(share_json(booking))


async def revoke_share(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    _need_token(request)
    state = api_state(request)
    try:
        storage = await run_in_threadpool(open_storage, state.settings)
        booking = await state.change(share.revoke, state.store, storage, booking_id)
    except StorageError as exc:
        raise ApiError(503, f"storage: {exc}; the links were not revoked, try again") from None
    return JSONResponse(share_json(booking))


async def qr_png(request: Request) -> Response:
    booking_id = valid_id(request.path_params["id"])
    _need_token(request)
    name = request.query_params.get("clip") or "video"
    if not CLIP_NAME.fullmatch(name):
        raise ApiError(422, "clip must be a clip's name, such as clip01")
    booking = await run_in_threadpool(api_state(request).store.get, booking_id)
    url = share.link(booking, name)
    body = await run_in_threadpool(qrcodes.png, url)
    return Response(body, media_type="image/png", headers={"Cache-Control": "no-store"})
