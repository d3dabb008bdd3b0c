"""The booking's vocabulary: its states, the named sets of them, and the booking-id pattern.

Defined once here; everything else says `State.RECORDING` or `FAILED`, never the string. The
values are the contract of DESIGN.md (they are stored in the database and shown to users), and
`State` is a `StrEnum`, so a state read back from the database compares equal to its member.
"""

from __future__ import annotations

import re
from enum import StrEnum


class State(StrEnum):
    CONFIRMED = "confirmed"
    RECORDING = "recording"
    COMPLETED = "completed"
    VIDEO_PROCESSED = "video_processed"
    VIDEO_UPLOADED = "video_uploaded"
    RECORDING_FAILED = "recording_failed"
    PROCESSING_FAILED = "processing_failed"
    UPLOAD_FAILED = "upload_failed"
    CANCELLED = "cancelled"
    MISSED = "missed"


STATES: tuple[State, ...] = tuple(State)
FAILED = frozenset({State.RECORDING_FAILED, State.PROCESSING_FAILED, State.UPLOAD_FAILED})
# Nothing more happens to these without an operator.
TERMINAL = frozenset({State.VIDEO_UPLOADED, State.CANCELLED, State.MISSED})
# A booking in one of these still holds its camera's time slot.
LIVE = frozenset({State.CONFIRMED, State.RECORDING, State.RECORDING_FAILED})
# The supervisor has work in hand for these: recording, building or uploading.
WORKING = frozenset({State.RECORDING, State.COMPLETED, State.VIDEO_PROCESSED})
# No finished video exists yet: what is in use for a build (media, raw files) must stay.
NOT_BUILT = frozenset(
    {
        State.CONFIRMED,
        State.RECORDING,
        State.RECORDING_FAILED,
        State.COMPLETED,
        State.PROCESSING_FAILED,
    }
)

# A booking id is safe as a file name, a URL path segment and an object-storage key component.
BOOKING_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
BOOKING_ID = re.compile(BOOKING_ID_PATTERN)


def valid_booking_id(value: object) -> bool:
    return isinstance(value, str) and BOOKING_ID.fullmatch(value) is not None
