"""The booking state machine, defined once (`RULES`) and run by `transitions`.

This module is the single definition: the store asks it which state a trigger leads to and
what else the trigger writes (its `Effects`), the diagram (`ezrec graph`) is drawn from it, and
the property tests replay histories through it. It knows no database, camera, file or network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from transitions import Machine

from controller.fsm.states import STATES, State

Trigger = Literal[
    "start", "finish", "process", "upload", "fail", "retry", "cancel", "miss",
    "rebuild", "reschedule", "note",
]
# A column a trigger may empty besides the state machine's own bookkeeping.
Cleared = Literal["last_error", "progress", "progress_stage"]


@dataclass(frozen=True)
class Effects:
    """What a trigger writes besides the new state and the version: applied by
    `BookingStore.fire`, which branches on these fields, never on the trigger's name."""

    # "count": one more failed attempt; "reset": back to 0; "reset_by_admin": back to 0 only
    # when an operator asks (the supervisor's own retry keeps the count, so attempts run out).
    attempts: Literal["keep", "count", "reset", "reset_by_admin"] = "keep"
    # "backoff": when to try again, from the RetryPolicy and the attempts counted (none once
    # they are used up or the failure is permanent); "clear": nothing is scheduled any more.
    next_attempt: Literal["keep", "backoff", "clear"] = "keep"
    # last_error = the caller's error (or detail): why it failed, for the operator.
    records_error: bool = False
    clears: tuple[Cleared, ...] = ()
    # The slot's times may change: they are checked, the camera locked, overlaps refused.
    checks_slot: bool = False
    # The booking system hears of the change (a reflexive note only when the caller asks).
    pushed: bool = True


# The work moved on: whatever went wrong before is history now.
ADVANCES = Effects(
    attempts="reset", next_attempt="clear", clears=("last_error", "progress", "progress_stage")
)
FAILS = Effects(attempts="count", next_attempt="backoff", records_error=True, clears=("progress",))
RETRIES = Effects(attempts="reset_by_admin", next_attempt="clear")
# A new build, not a new chance: attempts and the last error stay as they were.
REBUILDS = Effects(next_attempt="clear", clears=("progress", "progress_stage"))
RESCHEDULES = Effects(checks_slot=True)
NOTES = Effects(pushed=False)
ENDS = Effects()

# Reflexive: the booking stays where it is (`transitions`' own spelling).
STAYS: Literal["="] = "="
Edge = tuple[State | tuple[State, ...], State | Literal["="]]


@dataclass(frozen=True)
class Rule:
    """One trigger: the edges it may take (source or sources → dest) and what it writes."""

    effects: Effects
    edges: tuple[Edge, ...]


# One entry per trigger, the single definition of the machine. `retry` leaves a failure state
# for the state whose work is redone: a failed recording is re-armed (it records again while
# its slot is open), a failed build goes back to `completed` (processed again from the raw
# files), a failed upload back to `video_processed`. `note` and `reschedule` are reflexive:
# they only add a history row.
RULES: dict[Trigger, Rule] = {
    "start": Rule(ADVANCES, ((State.CONFIRMED, State.RECORDING),)),
    "finish": Rule(
        ADVANCES,
        (
            (State.RECORDING, State.COMPLETED),
            # A recording that failed and whose slot is over is finalised from the footage it
            # left (partial), whatever attempts were left: footage on disk is always delivered.
            (State.RECORDING_FAILED, State.COMPLETED),
        ),
    ),
    "process": Rule(ADVANCES, ((State.COMPLETED, State.VIDEO_PROCESSED),)),
    "upload": Rule(ADVANCES, ((State.VIDEO_PROCESSED, State.VIDEO_UPLOADED),)),
    "fail": Rule(
        FAILS,
        (
            (State.RECORDING, State.RECORDING_FAILED),
            (State.CONFIRMED, State.RECORDING_FAILED),
            (State.COMPLETED, State.PROCESSING_FAILED),
            (State.VIDEO_PROCESSED, State.UPLOAD_FAILED),
        ),
    ),
    "retry": Rule(
        RETRIES,
        (
            (State.RECORDING_FAILED, State.CONFIRMED),
            (State.PROCESSING_FAILED, State.COMPLETED),
            (State.UPLOAD_FAILED, State.VIDEO_PROCESSED),
        ),
    ),
    "cancel": Rule(
        ENDS, (((State.CONFIRMED, State.RECORDING, State.RECORDING_FAILED), State.CANCELLED),)
    ),
    "miss": Rule(ENDS, (((State.CONFIRMED, State.RECORDING_FAILED), State.MISSED),)),
    # The finished file vanished before its upload (a card swapped, a hand deleting): it is
    # built again from the raw files, which are kept until the upload is verified.
    "rebuild": Rule(
        REBUILDS, (((State.VIDEO_PROCESSED, State.UPLOAD_FAILED), State.COMPLETED),)
    ),
    "reschedule": Rule(RESCHEDULES, ((State.CONFIRMED, STAYS),)),
    "note": Rule(NOTES, ((STATES, STAYS),)),
}


def _row(trigger: str, source: State | tuple[State, ...], dest: str) -> dict[str, Any]:
    # `transitions` names an Enum state by its member name, so the machine is given the values.
    names = source.value if isinstance(source, State) else [state.value for state in source]
    return {"trigger": trigger, "source": names, "dest": str(dest)}


# The rows `transitions` is built from, in the order of RULES (the diagram keeps that order).
TRANSITIONS: list[dict[str, Any]] = [
    _row(trigger, source, dest)
    for trigger, rule in RULES.items()
    for source, dest in rule.edges
]
TRIGGERS: tuple[str, ...] = tuple(RULES)


class InvalidTrigger(Exception):
    """A trigger that does not exist, or is not allowed from the booking's current state."""

    def __init__(self, trigger: str, state: str, allowed: list[str]) -> None:
        self.trigger, self.state, self.allowed = trigger, state, allowed
        if trigger not in TRIGGERS:
            msg = f"unknown trigger {trigger!r} (known: {', '.join(TRIGGERS)})"
        else:
            can = ", ".join(allowed) or "nothing"
            msg = f"cannot {trigger} a booking in state {state!r} (allowed there: {can})"
        super().__init__(msg)


def _build(graph: bool = False, engine: str = "mermaid") -> Machine:
    kwargs: dict[str, Any] = {
        "states": [state.value for state in STATES],
        "transitions": TRANSITIONS,
        "initial": State.CONFIRMED.value,
        "auto_transitions": False,
    }
    if not graph:
        return Machine(model=None, **kwargs)
    from transitions.extensions import GraphMachine

    # `note` loops on every state and would hide the real edges; the diagram leaves it out.
    kwargs["transitions"] = [t for t in TRANSITIONS if t["trigger"] != "note"]
    return GraphMachine(
        title="EZREC booking", graph_engine=engine, show_conditions=False, **kwargs
    )


MACHINE = _build()


def next_state(state: str, trigger: str) -> State:
    """The state `trigger` leads to from `state`, or InvalidTrigger (nothing changes)."""
    if state not in STATES:
        raise ValueError(f"unknown state {state!r}")
    name = State(state).value
    if trigger in MACHINE.events:
        found = MACHINE.get_transitions(trigger=trigger, source=name)
        if found:
            dest = found[0].dest
            return State(name if dest is None else dest)
    raise InvalidTrigger(trigger, name, allowed_triggers(name))


def allowed_triggers(state: str) -> list[str]:
    # `transitions` would look a `State` up by its member name: it is asked with the value.
    return [t for t in MACHINE.get_triggers(State(state).value) if t in TRIGGERS]


def effects_of(trigger: str) -> Effects:
    """What `trigger` writes besides the state (KeyError for a trigger that does not exist)."""
    return RULES[trigger].effects  # type: ignore[index]


def replay(triggers: list[str], start: str = State.CONFIRMED) -> State:
    """The state a sequence of triggers leads to: used to check a stored history."""
    state = State(start)
    for trigger in triggers:
        state = next_state(state, trigger)
    return state


def diagram(fmt: Literal["mermaid", "dot"] = "mermaid") -> str:
    """The state diagram drawn from RULES (never by hand)."""
    machine = _build(graph=True, engine="mermaid" if fmt == "mermaid" else "graphviz")
    source = str(machine.get_combined_graph().source)
    if fmt == "mermaid":
        # transitions 0.9 writes a bare title and `Class`; Mermaid wants `title:` and `class`.
        source = source.replace("---\nEZREC booking\n---", "---\ntitle: EZREC booking\n---")
        source = source.replace("  Class ", "  class ")
    return source
