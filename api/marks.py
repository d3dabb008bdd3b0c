"""Replay mark routes: `POST /cameras/{camera}/mark` (now, on whatever records there) and
`POST /bookings/{id}/marks` (now, or at a given `at`), `GET /bookings/{id}/marks`.

The marks are written by `controller.fsm.marks` through the store, like every booking change.
A new mark answers 201; a press within a few seconds of a stored one answers 200 with that
mark (`"duplicate": true`); a mark outside a recording answers 409 saying why.
"""

from __future__ import annotations

from datetime import datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from api.openapi import Answer, operation
from api.responses import Mark, MarkAnswer
from api.schemas import NO_BODY, MarkIn, read_json, valid_id, validate
from api.state import api_state
from controller.fsm.marks import MarkResult, marks_of, record_mark

MARKED = {
    200: Answer("A mark within a few seconds was there already.", MarkAnswer),
    201: Answer("Stored.", MarkAnswer),
}
MARK_ERRORS = (404, 409, 413, 415, 422)


async def _at(request: Request) -> datetime | None:
    data = await read_json(request)
    if data is NO_BODY:
        return None
    body: MarkIn = validate(MarkIn, data)
    return body.at


def _answer(result: MarkResult) -> JSONResponse:
    return JSONResponse(result.to_dict(), status_code=200 if result.duplicate else 201)


@operation(
    id="markCamera", summary="A replay mark on the booking recording on this camera now",
    description="409 when nothing records there.", body=MarkIn, body_required=False,
    answers=MARKED, errors=MARK_ERRORS,
)  # fmt: skip
async def mark_camera(request: Request) -> JSONResponse:
    camera = valid_id(request.path_params["camera"], "camera")
    at = await _at(request)
    state = api_state(request)
    result = await state.change(record_mark, state.store, source="api", camera=camera, at=at)
    return _answer(result)


@operation(
    id="markBooking", summary="A replay mark on this booking, now or at `at`",
    description="409 unless the booking is recording and `at` inside its slot.",
    body=MarkIn, body_required=False, answers=MARKED, errors=MARK_ERRORS,
)  # fmt: skip
async def mark_booking(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    at = await _at(request)
    state = api_state(request)
    result = await state.change(
        record_mark, state.store, source="api", booking_id=booking_id, at=at
    )
    return _answer(result)


@operation(
    id="listMarks", summary="The booking's replay marks",
    answers={200: Answer("Marks, in order.", list[Mark])}, errors=(404,),
)  # fmt: skip
async def list_marks(request: Request) -> JSONResponse:
    booking_id = valid_id(request.path_params["id"])
    store = api_state(request).store
    await run_in_threadpool(store.get, booking_id)  # 404 for an unknown booking
    marks = await run_in_threadpool(marks_of, store, booking_id)
    return JSONResponse([m.to_dict() for m in marks])
