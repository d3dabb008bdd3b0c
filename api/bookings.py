"""Booking routes: list, create, read, reschedule, cancel, retry.

Every change goes through `BookingStore` (the one state machine the CLI and the supervisor use),
in a worker thread, and is followed by a nudge so that the supervisor acts now. The store's
errors map to statuses in `api.errors`: unknown booking 404, overlap / wrong state / stale
version 409, bad input 422.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import authorized
from api.errors import ApiError
from api.media import shown
from api.schemas import (
    BookingIn,
    BookingPatch,
    no_body,
    query_limit,
    query_time,
    read_json,
    valid_id,
    validate,
)
from api.state import api_state
from controller.db import Booking
from controller.fsm import STATES, BookingStore

# Keys whose value grants access to a video by itself: only the token's bearer may see them.
CAPABILITY_KEYS = frozenset({"presigned_url", "share"})  # share: the players' links
# The players' own address and what was mailed to it: not for every reader of the API either.
PRIVATE_KEYS = frozenset({"contact_email", "notify"})


def without_capabilities(value: Any) -> Any:
    """`value` with every capability key dropped, however deep (the upload list nests them)."""
    if isinstance(value, dict):
        return {
            k: without_capabilities(v)
            for k, v in value.items()
            if k not in CAPABILITY_KEYS and k not in PRIVATE_KEYS
        }
    if isinstance(value, list):
        return [without_capabilities(v) for v in value]
    return value


def booking_json(booking: Booking, *, capabilities: bool) -> dict[str, Any]:
    """A booking as every route answers it; presigned URLs only when `capabilities`."""
    data = booking.to_dict()
    if not capabilities:
        data["extra"] = without_capabilities(data["extra"])
    media = data["extra"].get("media")
    if isinstance(media, dict):
        # Signed URLs carry credentials in their query: the answer shows where, not the key.
        data["extra"]["media"] = {
            key: [shown(str(v)) for v in value] if isinstance(value, list) else shown(str(value))
            for key, value in media.items()
        }
    return data


def _with_history(
    store: BookingStore, booking_id: str, capabilities: bool
) -> dict[str, Any]:
    booking = store.get(booking_id)
    history = store.history(booking_id)
    return booking_json(booking, capabilities=capabilities) | {
        "history": [row.to_dict() for row in history]
    }


async def list_bookings(request: Request) -> JSONResponse:
    """Bookings ordered by start time; filters combine (a slot overlapping [from, to))."""
    states = request.query_params.getlist("state")
    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise ApiError(
            422, f"unknown state {unknown[0][:40]!r} (known: {', '.join(STATES)})"
        )
    start_from = query_time(request, "from")
    start_to = query_time(request, "to")
    if start_from and start_to and start_to <= start_from:
        raise ApiError(422, "'to' must be after 'from'")
    limit = query_limit(request)
    store = api_state(request).store
    found = await run_in_threadpool(
        store.list, state=states or None, start_from=start_from, start_to=start_to, limit=limit
    )
    capable = authorized(request)
    return JSONResponse([booking_json(b, capabilities=capable) for b in found])


async def create_booking(request: Request) -> JSONResponse:
    body: BookingIn = validate(BookingIn, await read_json(request))
    state = api_state(request)
    extra = {"media": body.media.stored()} if body.media and body.media.stored() else {}
    if body.contact_email:
        extra["contact_email"] = body.contact_email
    # No id: the store draws one (and draws again on a clash); a chosen id that exists is a 409.
    booking = await state.change(
        state.store.create,
        body.start_time,
        body.end_time,
        booking_id=body.id,
        user_id=body.user_id,
        camera_id=body.camera_id,
        extra=extra,
    )
    return JSONResponse(
        booking_json(booking, capabilities=authorized(request)),
        status_code=201,
        headers={"Location": f"/bookings/{booking.id}"},
    )


async def get_booking(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    store = api_state(request).store
    return JSONResponse(
        await run_in_threadpool(_with_history, store, booking_id, authorized(request))
    )


async def reschedule_booking(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    body: BookingPatch = validate(BookingPatch, await read_json(request))
    changes = {
        key: value
        for key, value in (("start_time", body.start_time), ("end_time", body.end_time))
        if value is not None
    }
    state = api_state(request)
    booking = await state.change(
        state.store.fire,
        booking_id,
        "reschedule",
        expected_version=body.expected_version,
        changes=changes,
        detail="rescheduled through the API",
    )
    return JSONResponse(booking_json(booking, capabilities=authorized(request)))


async def cancel_booking(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    state = api_state(request)
    # DELETE is idempotent: a retried cancel answers the cancelled booking, no error.
    booking = await state.change(
        state.store.cancel, booking_id, detail="cancelled through the API"
    )
    return JSONResponse(booking_json(booking, capabilities=authorized(request)))


async def retry_booking(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    if not no_body(await read_json(request)):
        raise ApiError(422, "retry takes no body (or an empty object)")
    state = api_state(request)
    booking = await state.change(
        state.store.fire,
        booking_id,
        "retry",
        admin=True,
        detail="retry requested through the API",
    )
    return JSONResponse(booking_json(booking, capabilities=authorized(request)))

