"""Booking routes: list, create, read, reschedule, cancel, retry.

Every change goes through `BookingStore` (the one state machine the CLI and the supervisor use),
in a worker thread, and is followed by a nudge so that the supervisor acts now. The store's
errors map to statuses in `api.errors`: unknown booking 404, overlap / wrong state / stale
version 409, bad input 422. Every booking answered is `controller.fsm.views.BookingView`
(`booking_json`), less what only the token may see.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.auth import authorized
from api.errors import ApiError
from api.media import shown
from api.openapi import Answer, operation
from api.schemas import (
    BookingIn,
    BookingPatch,
    BookingQuery,
    Empty,
    no_body,
    parse_query,
    read_json,
    valid_id,
    validate,
)
from api.state import api_state
from controller.db import Booking, TransitionRow
from controller.fsm import BookingStore
from controller.fsm.views import BookingView, BookingWithHistory, booking_json

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


def shown_booking(
    booking: Booking, *, capabilities: bool, history: list[TransitionRow] | None = None
) -> dict[str, Any]:
    """A booking as every route answers it; presigned URLs only when `capabilities`."""
    data = booking_json(booking, history)
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
    return shown_booking(booking, capabilities=capabilities, history=history)


@operation(
    id="listBookings", summary="List bookings, ordered by start time", query=BookingQuery,
    answers={200: Answer("Bookings.", list[BookingView])}, errors=(422,),
)  # fmt: skip
async def list_bookings(request: Request) -> JSONResponse:
    """Bookings ordered by start time; filters combine (a slot overlapping [from, to))."""
    query = parse_query(BookingQuery, request)
    store = api_state(request).store
    found = await run_in_threadpool(
        store.list, state=query.state or None, start_from=query.start_from,
        start_to=query.start_to, limit=query.limit,
    )  # fmt: skip
    capable = authorized(request)
    return JSONResponse([shown_booking(b, capabilities=capable) for b in found])


@operation(
    id="createBooking", summary="Create a booking", body=BookingIn,
    answers={201: Answer("Created.", BookingView, headers={"Location": {"type": "string"}})},
    errors=(409, 413, 415, 422),
)  # fmt: skip
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
        shown_booking(booking, capabilities=authorized(request)),
        status_code=201,
        headers={"Location": f"/bookings/{booking.id}"},
    )


@operation(
    id="getBooking", summary="One booking with its whole transition history",
    answers={200: Answer("The booking.", BookingWithHistory)}, errors=(404,),
)  # fmt: skip
async def get_booking(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    store = api_state(request).store
    return JSONResponse(
        await run_in_threadpool(_with_history, store, booking_id, authorized(request))
    )


@operation(
    id="rescheduleBooking", summary="Reschedule a booking that is still `confirmed`",
    body=BookingPatch, answers={200: Answer("Rescheduled.", BookingView)},
    errors=(404, 409, 413, 415, 422),
)  # fmt: skip
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
    return JSONResponse(shown_booking(booking, capabilities=authorized(request)))


@operation(
    id="cancelBooking", summary="Cancel a booking (409 once its recording has finished)",
    description="Cancelling a cancelled booking answers 200 (idempotent).",
    answers={200: Answer("Cancelled.", BookingView)}, errors=(404, 409),
)  # fmt: skip
async def cancel_booking(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    state = api_state(request)
    # DELETE is idempotent: a retried cancel answers the cancelled booking, no error.
    booking = await state.change(
        state.store.cancel, booking_id, detail="cancelled through the API"
    )
    return JSONResponse(shown_booking(booking, capabilities=authorized(request)))


@operation(
    id="retryBooking", summary="Retry a failed booking now (resets its attempt count)",
    body=Empty, body_required=False, answers={200: Answer("Re-armed.", BookingView)},
    errors=(404, 409, 413, 415, 422),
)  # fmt: skip
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
    return JSONResponse(shown_booking(booking, capabilities=authorized(request)))

