"""The booking: its vocabulary (`states`), the state machine and what each trigger writes
(`machine`), its retry policy (`retry`), persistence (`store`, reading through `queries`, the
sync's `outbox`) and replay marks (`marks`)."""

from controller.fsm.checks import check_times
from controller.fsm.errors import BookingError, Conflict, InvalidBooking, NotFound, StaleVersion
from controller.fsm.machine import (
    TRIGGERS,
    InvalidTrigger,
    allowed_triggers,
    diagram,
    next_state,
    replay,
)
from controller.fsm.queries import Due
from controller.fsm.retry import RetryPolicy
from controller.fsm.states import FAILED, LIVE, NOT_BUILT, STATES, TERMINAL, WORKING, State
from controller.fsm.store import BookingStore

__all__ = [
    "FAILED",
    "LIVE",
    "NOT_BUILT",
    "STATES",
    "TERMINAL",
    "TRIGGERS",
    "WORKING",
    "BookingError",
    "BookingStore",
    "Conflict",
    "Due",
    "InvalidBooking",
    "InvalidTrigger",
    "NotFound",
    "RetryPolicy",
    "StaleVersion",
    "State",
    "allowed_triggers",
    "check_times",
    "diagram",
    "next_state",
    "replay",
]
