"""The API's answers other than a booking (that one is `controller.fsm.views.BookingView`) and
an error (`api.errors.ErrorBody`), as pydantic models: what `api.openapi` publishes for them, and
for the share links also what serialises them.

The status report and the camera list are built elsewhere (`controller.health.collect`, the
camera driver); their models say what the schemathesis tests hold those answers to.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from controller.fsm.marks import SOURCES
from controller.fsm.states import STATES
from controller.fsm.views import IsoTime

NullableTime = Annotated[
    str | None, Field(json_schema_extra={"format": "date-time"})
]  # stored as ISO text in the booking's `extra`
Count = Annotated[int, Field(ge=0)]


class Health(BaseModel):
    status: Literal["ok"]


class Supervisor(BaseModel):
    running: bool
    heartbeat_age_s: float | None
    recording: list[str] = []


class Disk(BaseModel):
    free_mb: float
    total_mb: float
    min_free_mb: float
    ok: bool


# Every state has its count, zeros included.
Queue = create_model(
    "Queue",
    __config__=ConfigDict(extra="allow"),
    **{str(state): (Count, ...) for state in STATES},  # type: ignore[call-overload]
)


class StatusReport(BaseModel):
    """What `ezrec status --json` prints: cameras, disk, bookings per state, the heartbeat."""

    device_id: str
    time: IsoTime
    supervisor: Supervisor
    cameras: list[dict[str, Any]]
    disk: Disk
    queue: Queue  # type: ignore[valid-type]
    in_progress: list[dict[str, Any]]
    last_errors: list[str]
    system: dict[str, Any]


class Camera(BaseModel):
    index: int | None
    driver: str | None
    model: str | None
    mode: Annotated[str | None, Field(description="like 1280x720@30")]
    up: bool
    detail: Annotated[str, Field(description="why it is down")]


class CameraList(BaseModel):
    source: Annotated[
        Literal["supervisor", "driver"],
        Field(description="the running supervisor's heartbeat, or the driver when it is not "
              "running"),
    ]
    cameras: list[Camera]


class MediaRefresh(BaseModel):
    status: Literal["refreshing"]
    video: list[str]
    image: list[str]


class Mark(BaseModel):
    id: int
    at: IsoTime
    source: Literal[SOURCES]  # type: ignore[valid-type]


class MarkAnswer(BaseModel):
    booking_id: str
    mark: Mark
    duplicate: Annotated[bool, Field(description="a stored mark within 3 s stands for this one")]


class ShareLink(BaseModel):
    name: Annotated[str, Field(examples=["video", "clip01"])]
    kind: Literal["video", "clip"]
    url: str
    expires_at: NullableTime


class ShareView(BaseModel):
    """A booking's share links (capabilities: only the token's bearer sees them)."""

    booking_id: str
    expires_at: NullableTime
    revoked_at: NullableTime
    links: list[ShareLink]


class PageLive(BaseModel):
    """One HTML fragment per part of the staff page, and the time they show."""

    bookings: str
    health: str
    videos: str
    time: str
    token: Annotated[
        Literal["accepted", "wrong", "none", "not_needed"],
        Field(description="What the box made of the bearer token sent with this request."),
    ]
