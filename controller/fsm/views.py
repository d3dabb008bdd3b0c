"""A booking as its faces show it: the one JSON shape of `GET /bookings`, the API's other booking
answers and `ezrec ... --json`.

The pydantic models here serialise a stored `Booking` (and its transition history) and are what
the API's OpenAPI document publishes, so what is documented is what is sent. They read the ORM
rows directly (`from_attributes`); times are written as `datetime.isoformat()` gives them, as
the database's own JSON (the outbox) does. Neither HTTP nor the terminal is known here: the API
drops what only the token may see from `extra`, the CLI prints everything.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from controller.db import Booking, TransitionRow
from controller.fsm.machine import TRIGGERS
from controller.fsm.states import State

_DATE_TIME = {"type": "string", "format": "date-time"}
IsoTime = Annotated[
    datetime, PlainSerializer(datetime.isoformat, return_type=str), WithJsonSchema(_DATE_TIME)
]
Trigger = Annotated[str, WithJsonSchema({"type": "string", "enum": list(TRIGGERS)})]


class _View(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class ProgressDetail(_View):
    """How far the video is: chunks built (while the slot is recorded too) and bytes stored."""

    chunks_built: Annotated[int, Field(ge=0)] | None = None
    chunks_total: Annotated[int, Field(ge=0)] | None = None
    bytes_uploaded: Annotated[int, Field(ge=0)] | None = None
    bytes_total: Annotated[int, Field(ge=0)] | None = None


class BookingView(_View):
    """A booking: its slot, its state and what the supervisor did with it."""

    id: str
    user_id: str | None
    camera_id: str
    device_id: str
    start_time: IsoTime
    end_time: IsoTime
    state: State
    version: Annotated[int, Field(ge=0)]
    attempts: Annotated[int, Field(ge=0)]
    next_attempt_at: IsoTime | None
    last_error: str | None
    raw_dir: str | None
    processed_path: str | None
    video_url: str | None
    progress: Annotated[float, Field(ge=0, le=1)] | None
    progress_stage: str | None
    progress_detail: ProgressDetail | None = None
    extra: dict[str, Any]
    created_at: IsoTime
    updated_at: IsoTime


class TransitionView(_View):
    """One row of a booking's history; `seq` is the version the transition made."""

    seq: int
    from_: State | None = Field(validation_alias="from_state", serialization_alias="from")
    to: State = Field(validation_alias="to_state")
    trigger: Trigger
    at: IsoTime
    detail: str | None
    error: str | None


class BookingWithHistory(BookingView):
    """A booking with its whole transition history, oldest first."""

    history: list[TransitionView]


def booking_json(
    booking: Booking, history: Iterable[TransitionRow] | None = None
) -> dict[str, Any]:
    """The booking as JSON-ready values; with `history`, as `BookingWithHistory`."""
    if history is None:
        view: BookingView = BookingView.model_validate(booking)
    else:
        view = BookingWithHistory.model_validate(
            {**_fields(booking), "history": [TransitionView.model_validate(h) for h in history]}
        )
    return view.model_dump(mode="json", by_alias=True)


def _fields(booking: Booking) -> dict[str, Any]:
    return {name: getattr(booking, name) for name in BookingView.model_fields}
