"""What a booking's fields must satisfy before it is stored, and how a new id is drawn."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from controller.fsm.errors import InvalidBooking
from controller.fsm.states import valid_booking_id

USER_ID = re.compile(r"^[A-Za-z0-9_.@:-]{1,128}$")
# Where the player's video links are mailed (extra["contact_email"]); one plain address.
EMAIL = re.compile(r"^[^@\s<>,;\"]{1,64}@[^@\s<>,;\"]{1,253}$")


def new_booking_id(now: datetime) -> str:
    return f"bk-{now:%Y%m%d-%H%M}-{secrets.token_hex(5)}"


def check_times(start: datetime, end: datetime, max_length: timedelta) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidBooking(
            "times must carry a UTC offset (e.g. 2026-11-23T18:00:00+01:00); naive times are "
            "refused, not guessed"
        )
    if end <= start:
        raise InvalidBooking(f"end {end.isoformat()} is not after start {start.isoformat()}")
    if end - start > max_length:
        raise InvalidBooking(
            f"booking is {end - start} long; the maximum is {max_length} (EZREC_MAX_BOOKING_H)"
        )


def check_fields(
    booking_id: str, user_id: str | None, camera_id: str, extra: dict[str, Any] | None
) -> None:
    """InvalidBooking naming the first field a new booking cannot have."""
    if not valid_booking_id(booking_id):
        raise InvalidBooking("id must be 1-64 characters of A-Z a-z 0-9 _ -")
    if user_id is not None and not USER_ID.fullmatch(user_id):
        raise InvalidBooking("user_id must be 1-128 characters of A-Z a-z 0-9 _ . @ : -")
    email = (extra or {}).get("contact_email")
    if email is not None and not EMAIL.fullmatch(str(email)):
        raise InvalidBooking("contact_email must be one address such as player@example.com")
    if not valid_booking_id(camera_id):
        raise InvalidBooking("camera_id must be 1-64 characters of A-Z a-z 0-9 _ -")
