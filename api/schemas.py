"""Reading and validating what clients send: JSON bodies (size-capped) and query parameters.

The patterns here are also those of the OpenAPI document (`api.openapi` imports them), so the
published schema and the checks cannot drift apart. Times must be ISO 8601 with an offset:
a naive time is refused, never guessed, because a box in the wrong zone records the wrong hour.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from starlette.requests import Request

from api.errors import ApiError

MAX_BODY_BYTES = 64 * 1024
MAX_LIST = 10_000
DEFAULT_LIST = 1_000

# JSON Schema (ECMA 262) syntax; Python checks them with re.fullmatch, so that "$" cannot
# accept a trailing newline.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
USER_PATTERN = r"^[A-Za-z0-9_.@:-]{1,128}$"
EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}$"
TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})$"
)
URL_PATTERN = r"^https?://[^\s]{1,2040}$"
TIME_HINT = (
    "must be an ISO 8601 time with a UTC offset, e.g. 2026-11-23T18:00:00+01:00 "
    "(naive times are refused, not guessed)"
)

_TIME_RE = re.compile(TIME_PATTERN)
_ID_RE = re.compile(ID_PATTERN)
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


Time = Annotated[datetime, BeforeValidator(parse_time)]
BookingId = Annotated[str, _fullmatch(ID_PATTERN, "must be 1-64 characters of A-Z a-z 0-9 _ -")]
Email = Annotated[str, _fullmatch(EMAIL_PATTERN, "must be one address such as player@example.com")]
UserId = Annotated[
    str, _fullmatch(USER_PATTERN, "must be 1-128 characters of A-Z a-z 0-9 _ . @ : -")
]
MediaUrl = Annotated[
    str,
    StringConstraints(max_length=2048),
    _fullmatch(URL_PATTERN, "must be an http:// or https:// URL without spaces"),
]


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
    end_time: Time
    id: BookingId | None = None
    user_id: UserId | None = None
    camera_id: BookingId | None = None
    media: MediaIn | None = None
    # Where the player's video links are mailed, when the box has SMTP (docs/replays.md).
    contact_email: Email | None = None


class BookingPatch(_Strict):
    start_time: Time | None = None
    end_time: Time | None = None
    # Optimistic concurrency: refuse the change if the booking moved on since it was read.
    expected_version: Annotated[int, Field(ge=0)] | None = None

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
    if not _ID_RE.fullmatch(value):
        raise ApiError(404, f"no {what} {value[:80]!r}")
    return value


def query_time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise ApiError(422, f"query parameter {name!r} {exc}") from None


def query_limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIST
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIST:
        raise ApiError(422, f"query parameter 'limit' must be an integer from 1 to {MAX_LIST}")
    return int(raw)
