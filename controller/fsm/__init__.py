"""The booking state machine (`machine`), its retry policy (`retry`) and persistence (`store`)."""

from controller.fsm.machine import (
    FAILED_STATES,
    LIVE_STATES,
    STATES,
    TERMINAL_STATES,
    TRIGGERS,
    InvalidTrigger,
    allowed_triggers,
    diagram,
    next_state,
    replay,
)
from controller.fsm.retry import RetryPolicy
from controller.fsm.store import (
    BookingError,
    BookingStore,
    Conflict,
    Due,
    InvalidBooking,
    NotFound,
    StaleVersion,
    check_times,
)

__all__ = [
    "FAILED_STATES",
    "LIVE_STATES",
    "STATES",
    "TERMINAL_STATES",
    "TRIGGERS",
    "BookingError",
    "BookingStore",
    "Conflict",
    "Due",
    "InvalidBooking",
    "InvalidTrigger",
    "NotFound",
    "RetryPolicy",
    "StaleVersion",
    "allowed_triggers",
    "check_times",
    "diagram",
    "next_state",
    "replay",
]
