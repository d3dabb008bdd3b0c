"""Share link routes: `GET|POST|DELETE /bookings/{id}/share` and `GET /bookings/{id}/qr.png`.

Share links are capabilities (whoever holds one watches the video), so every route here needs
the API token, reads included. POST makes the links when there are none (or they were revoked:
new ones, under a new token); DELETE revokes them. `qr.png` is the QR code of the video's link,
or of one clip's with `?clip=clip01`.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.auth import CHALLENGE, authorized
from api.errors import ApiError
from api.openapi import Answer, operation
from api.responses import ShareView
from api.schemas import Empty, QrQuery, no_body, parse_query, read_json, valid_id
from api.state import api_state
from controller import qrcodes, share
from controller.context import open_storage
from controller.db import Booking
from controller.drivers.storage import StorageError


def _need_token(request: Request) -> None:
    if not authorized(request):
        raise ApiError(
            401, "share links need Authorization: Bearer <EZREC_API_TOKEN>", headers=CHALLENGE
        )


def share_json(booking: Booking) -> JSONResponse:
    stored = booking.extra.get("share") or {}
    view = ShareView.model_validate(
        {
            "booking_id": booking.id,
            "expires_at": stored.get("expires_at"),
            "revoked_at": stored.get("revoked_at"),
            "links": [
                {k: item.get(k) for k in ("name", "kind", "url", "expires_at")}
                for item in stored.get("links") or []
            ],
        }
    )
    return JSONResponse(view.model_dump(mode="json"))


@operation(
    id="getShare", summary="The booking's share links (capabilities: token needed)",
    token=True, answers={200: Answer("Links.", ShareView)}, errors=(404,),
)  # fmt: skip
async def get_share(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    _need_token(request)
    booking = await run_in_threadpool(api_state(request).store.get, booking_id)
    return share_json(booking)


@operation(
    id="makeShare", summary="Make share links for the stored video and clips (if none are live)",
    body=Empty, body_required=False, answers={200: Answer("Live links.", ShareView)},
    errors=(404, 409, 413, 415, 422, 503),
)  # fmt: skip
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
    return share_json(booking)


@operation(
    id="revokeShare", summary="Revoke the share links (they stop working at once)",
    answers={200: Answer("Revoked.", ShareView)}, errors=(404, 409, 503),
)  # fmt: skip
async def revoke_share(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    _need_token(request)
    state = api_state(request)
    try:
        storage = await run_in_threadpool(open_storage, state.settings)
        booking = await state.change(share.revoke, state.store, storage, booking_id)
    except StorageError as exc:
        raise ApiError(503, f"storage: {exc}; the links were not revoked, try again") from None
    return share_json(booking)


@operation(
    id="shareQr", summary="A QR code of the video's share link (token needed)", token=True,
    query=QrQuery, answers={200: Answer("A PNG image.", media_type="image/png")},
    errors=(404, 409, 422),
)  # fmt: skip
async def qr_png(request: Request) -> Response:
    booking_id = valid_id(request.path_params["id"])
    _need_token(request)
    name = parse_query(QrQuery, request).clip or "video"
    booking = await run_in_threadpool(api_state(request).store.get, booking_id)
    url = share.link(booking, name)
    body = await run_in_threadpool(qrcodes.png, url)
    return Response(body, media_type="image/png", headers={"Cache-Control": "no-store"})
