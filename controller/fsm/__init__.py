"""The booking: its vocabulary (`states`), the state machine and what each trigger writes
(`machine`), its retry policy (`retry`), persistence (`store`, reading through `queries`, the
sync's `outbox`) and replay marks (`marks`)."""

from controller.fsm.checks import check_times
from controller.fsm.errors import BookingError, Conflict, InvalidBooking, NotFound, StaleVersion
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
from controller.fsm.queries import Due
from controller.fsm.retry import RetryPolicy
from controller.fsm.store import BookingStore

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
