"""The errors a booking change raises; every one but StaleVersion is the caller's to fix."""

from __future__ import annotations


class BookingError(Exception):
    """Base of every error a caller can fix; the message is meant for a person."""


class NotFound(BookingError):
    pass


class InvalidBooking(BookingError):
    pass


class Conflict(BookingError):
    def __init__(self, message: str, other_id: str | None = None) -> None:
        super().__init__(message)
        self.other_id = other_id


class StaleVersion(BookingError):
    def __init__(self, booking_id: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"booking {booking_id} changed meanwhile (version {actual}, expected {expected}); "
            "nothing was written: read it again and retry"
        )
        self.booking_id, self.expected, self.actual = booking_id, expected, actual
