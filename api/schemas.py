"""Reading and validating what clients send: JSON bodies (size-capped), query and path parameters.

The models here are the request side of the OpenAPI document (`api.openapi` describes them with
pydantic's JSON Schema), so the published schema and the checks cannot drift apart: every
pattern is both a `StringConstraints` (the schema) and a `fullmatch` check with a message for
people. Times must be ISO 8601 with an offset: a naive time is refused, never guessed, because
a box in the wrong zone records the wrong hour.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from starlette.requests import Request

from api.errors import ApiError
from controller.fsm.states import BOOKING_ID_PATTERN, STATES, State, valid_booking_id

Q = TypeVar("Q", bound=BaseModel)

MAX_BODY_BYTES = 64 * 1024
MAX_LIST = 10_000
DEFAULT_LIST = 1_000

# JSON Schema (ECMA 262) syntax; Python checks them with re.fullmatch, so that "$" cannot
# accept a trailing newline. A booking (and camera) id is `BOOKING_ID_PATTERN`.
USER_PATTERN = r"^[A-Za-z0-9_.@:-]{1,128}$"
EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}$"
TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)
URL_PATTERN = r"^https?://[^\s]{1,2040}$"
CLIP_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"
TIME_HINT = (
    "must be an ISO 8601 time with a UTC offset, e.g. 2026-11-23T18:00:00+01:00 "
    "(naive times are refused, not guessed)"
)

_TIME_RE = re.compile(TIME_PATTERN)
_DIGITS = re.compile(r"[0-9]{1,12}")  # str.isdigit() also says yes to '²'


def parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise ValueError(TIME_HINT)
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"is not a valid time ({exc})") from None


def _fullmatch(pattern: str, what: str) -> BeforeValidator:
    compiled = re.compile(pattern)

    def check(value: Any) -> Any:
        if isinstance(value, str) and not compiled.fullmatch(value):
            raise ValueError(what)
        return value

    return BeforeValidator(check)


def _matching(pattern: str, what: str, **constraints: Any) -> Any:
    """A string of `pattern`: in the schema as such, refused with `what` (the check runs
    first, so a client reads our words, not pydantic's)."""
    return Annotated[
        str, StringConstraints(pattern=pattern, **constraints), _fullmatch(pattern, what)
    ]


TIME_SCHEMA = {
    "type": "string",
    "pattern": TIME_PATTERN,
    "description": "ISO 8601 with a UTC offset (naive times are refused), e.g. "
    "2026-11-23T18:00:00+01:00",
    "examples": ["2026-11-23T18:00:00+01:00"],
}
Time = Annotated[datetime, BeforeValidator(parse_time), WithJsonSchema(TIME_SCHEMA)]
BookingId = _matching(BOOKING_ID_PATTERN, "must be 1-64 characters of A-Z a-z 0-9 _ -")
Email = _matching(EMAIL_PATTERN, "must be one address such as player@example.com")
UserId = _matching(USER_PATTERN, "must be 1-128 characters of A-Z a-z 0-9 _ . @ : -")
MediaUrl = _matching(
    URL_PATTERN, "must be an http:// or https:// URL without spaces", max_length=2048
)
ClipName = _matching(CLIP_PATTERN, "must be a clip's name, such as clip01")
# The path parameters' types, by name (the document's parameters; the routes check them).
PATH_PARAMETERS: dict[str, Any] = {
    "id": BookingId,
    "camera": BookingId,
    "n": Annotated[int, Field(ge=0)],
}


class _Strict(BaseModel):
    # Strict: "5" is not 5 and true is not 1; unknown fields are refused, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MediaIn(_Strict):
    """The booking user's own media; the venue's settings fill in what is missing."""

    intro: MediaUrl | None = None
    logo: MediaUrl | None = None
    sponsors: list[MediaUrl] = Field(default_factory=list, max_length=3)

    def stored(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude_defaults=True)


class BookingIn(_Strict):
    start_time: Time
    end_time: Annotated[
        Time, Field(description="after start_time, at most EZREC_MAX_BOOKING_H later, and "
                    "not in the past")
    ]
    id: Annotated[BookingId | None, Field(description="default: generated")] = None
    user_id: UserId | None = None
    camera_id: Annotated[
        BookingId | None, Field(description="camera / court id; default: this device")
    ] = None
    media: MediaIn | None = None
    # Where the player's video links are mailed, when the box has SMTP (docs/replays.md).
    contact_email: Annotated[
        Email | None, Field(description="where the player's video links are mailed")
    ] = None


class BookingPatch(_Strict):
    # The schema says what `_no_nulls` and `_something` check: no nulls, at least one time.
    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["start_time"]}, {"required": ["end_time"]}]}
    )

    start_time: Time | SkipJsonSchema[None] = None
    end_time: Time | SkipJsonSchema[None] = None
    # Optimistic concurrency: refuse the change if the booking moved on since it was read.
    expected_version: Annotated[
        Annotated[int, Field(ge=0)] | None,
        Field(description="refuse (409) if the booking's version is no longer this"),
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        # A null time would read as "leave it", which is what leaving the field out says.
        if isinstance(data, dict):
            for key in ("start_time", "end_time"):
                if key in data and data[key] is None:
                    raise ValueError(f"{key} is null; leave it out to keep the current one")
        return data

    @model_validator(mode="after")
    def _something(self) -> BookingPatch:
        if self.start_time is None and self.end_time is None:
            raise ValueError("nothing to change: give start_time and/or end_time")
        return self


class Empty(_Strict):
    """No body, or an empty JSON object (`no_body`)."""

    model_config = ConfigDict(json_schema_extra={"maxProperties": 0})


class MarkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: Annotated[Time | None, Field(description="default now")] = None


def _known_state(value: Any) -> Any:
    if isinstance(value, str) and value not in STATES:
        raise ValueError(f"has an unknown state {value[:40]!r} (known: {', '.join(STATES)})")
    return value


def _list_limit(value: Any) -> Any:
    if not isinstance(value, str) or not _DIGITS.fullmatch(value):
        raise ValueError(f"must be an integer from 1 to {MAX_LIST}")
    if not 1 <= int(value) <= MAX_LIST:
        raise ValueError(f"must be an integer from 1 to {MAX_LIST}")
    return int(value)


class BookingQuery(BaseModel):
    """`GET /bookings`' query; the filters combine (a slot overlapping [from, to))."""

    model_config = ConfigDict(frozen=True)

    state: Annotated[
        list[Annotated[State, BeforeValidator(_known_state)]],
        Field(description="only these states (repeat the parameter for several)"),
    ] = []
    start_from: Annotated[
        Time | SkipJsonSchema[None], Field(alias="from", description="slots ending after this")
    ] = None
    start_to: Annotated[
        Time | SkipJsonSchema[None], Field(alias="to", description="slots starting before this")
    ] = None
    limit: Annotated[
        int, Field(ge=1, le=MAX_LIST), BeforeValidator(_list_limit)
    ] = DEFAULT_LIST

    @model_validator(mode="after")
    def _ordered(self) -> BookingQuery:
        if self.start_from and self.start_to and self.start_to <= self.start_from:
            raise ValueError("'to' must be after 'from'")
        return self


class QrQuery(BaseModel):
    clip: Annotated[
        ClipName | SkipJsonSchema[None],
        Field(description="a clip's name (clip01) instead of the video"),
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _empty_is_video(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v != ""} if isinstance(data, dict) else data


class VideoLinkQuery(BaseModel):
    """A signed video link's query; checked by `api.video_links` (a wrong link is 403)."""

    exp: str
    sig: str


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err.get("loc", ()))
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown field {loc!r}")
        elif err["type"] == "missing":
            lines.append(f"{loc}: required")
        else:
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            lines.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(lines)


def validate(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise ApiError(422, "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(422, _describe(exc)) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _NoBody:
    def __repr__(self) -> str:
        return "NO_BODY"


NO_BODY: Any = _NoBody()  # an empty body, unlike a JSON `null`


def no_body(data: Any) -> bool:
    """For routes that take nothing: no body, or an empty JSON object."""
    return data is NO_BODY or (isinstance(data, dict) and not data)


async def read_json(request: Request, *, cap: int = MAX_BODY_BYTES) -> Any:
    """The body as JSON (NO_BODY when empty); 413 over `cap` bytes, 415 if it is not JSON."""
    declared = request.headers.get("content-type")
    if declared is not None:
        media = declared.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise ApiError(415, f"the body must be application/json, not {media or 'empty'}")
    length = request.headers.get("content-length")
    if length is not None and _DIGITS.fullmatch(length) and int(length) > cap:
        raise ApiError(413, f"the body is over {cap} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise ApiError(413, f"the body is over {cap} bytes")
    if not body.strip():
        return NO_BODY
    if declared is None:
        # A body without a type is what a browser's no-preflight request looks like.
        raise ApiError(415, "a body needs Content-Type: application/json")
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(422, f"the body is not valid JSON ({exc})") from None


def valid_id(value: str, what: str = "booking") -> str:
    if not valid_booking_id(value):
        raise ApiError(404, f"no {what} {value[:80]!r}")
    return value


def parse_query(model: type[Q], request: Request) -> Q:
    """The query as `model` (a repeated parameter counts once unless the field is a list)."""
    params, data = request.query_params, {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in params:
            data[key] = params.getlist(key) if get_origin(info.annotation) is list else params[key]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        loc = err.get("loc", ())
        raise ApiError(422, f"query parameter {loc[0]!r} {msg}" if loc else msg) from None
