"""The booking state machine, defined once with `transitions`.

This module is the single definition: the store asks it which state a trigger leads to, the
diagram (`ezrec graph`) is drawn from it, and the property tests replay histories through it.
It knows no database, camera, file or network.
"""

from __future__ import annotations

from typing import Any, Literal

from transitions import Machine

from controller.fsm.states import FAILED, LIVE, STATES, TERMINAL, State

# Plain-string names for the edges below: `transitions` names an Enum state by its member
# name, so the machine is given the values. (Callers say `State.X`; these aliases go once none
# is left.)
CONFIRMED = State.CONFIRMED.value
RECORDING = State.RECORDING.value
COMPLETED = State.COMPLETED.value
VIDEO_PROCESSED = State.VIDEO_PROCESSED.value
VIDEO_UPLOADED = State.VIDEO_UPLOADED.value
RECORDING_FAILED = State.RECORDING_FAILED.value
PROCESSING_FAILED = State.PROCESSING_FAILED.value
UPLOAD_FAILED = State.UPLOAD_FAILED.value
CANCELLED = State.CANCELLED.value
MISSED = State.MISSED.value
FAILED_STATES = FAILED
TERMINAL_STATES = TERMINAL
LIVE_STATES = LIVE

Trigger = Literal[
    "start", "finish", "process", "upload", "fail", "retry", "cancel", "miss",
    "rebuild", "reschedule", "note",
]

# One row per edge. `retry` leaves a failure state for the state whose work is redone:
# a failed recording is re-armed (it records again while its slot is open), a failed build
# goes back to `completed` (processed again from the raw files), a failed upload back to
# `video_processed`. `note` and `reschedule` are reflexive: they only add a history row.
TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "start", "source": CONFIRMED, "dest": RECORDING},
    {"trigger": "finish", "source": RECORDING, "dest": COMPLETED},
    # A recording that failed and whose slot is over is finalised from the footage it left
    # (partial), whatever attempts were left: footage on disk is always delivered.
    {"trigger": "finish", "source": RECORDING_FAILED, "dest": COMPLETED},
    {"trigger": "process", "source": COMPLETED, "dest": VIDEO_PROCESSED},
    {"trigger": "upload", "source": VIDEO_PROCESSED, "dest": VIDEO_UPLOADED},
    {"trigger": "fail", "source": RECORDING, "dest": RECORDING_FAILED},
    {"trigger": "fail", "source": CONFIRMED, "dest": RECORDING_FAILED},
    {"trigger": "fail", "source": COMPLETED, "dest": PROCESSING_FAILED},
    {"trigger": "fail", "source": VIDEO_PROCESSED, "dest": UPLOAD_FAILED},
    {"trigger": "retry", "source": RECORDING_FAILED, "dest": CONFIRMED},
    {"trigger": "retry", "source": PROCESSING_FAILED, "dest": COMPLETED},
    {"trigger": "retry", "source": UPLOAD_FAILED, "dest": VIDEO_PROCESSED},
    {"trigger": "cancel", "source": [CONFIRMED, RECORDING, RECORDING_FAILED], "dest": CANCELLED},
    {"trigger": "miss", "source": [CONFIRMED, RECORDING_FAILED], "dest": MISSED},
    # The finished file vanished before its upload (a card swapped, a hand deleting): it is
    # built again from the raw files, which are kept until the upload is verified.
    {"trigger": "rebuild", "source": [VIDEO_PROCESSED, UPLOAD_FAILED], "dest": COMPLETED},
    {"trigger": "reschedule", "source": CONFIRMED, "dest": "="},
    {"trigger": "note", "source": [state.value for state in STATES], "dest": "="},
]
TRIGGERS: tuple[str, ...] = tuple(dict.fromkeys(t["trigger"] for t in TRANSITIONS))


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
        "initial": CONFIRMED,
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
    if trigger in MACHINE.events:
        found = MACHINE.get_transitions(trigger=trigger, source=str(state))
        if found:
            dest = found[0].dest
            return State(state if dest is None else dest)
    raise InvalidTrigger(trigger, state, allowed_triggers(state))


def allowed_triggers(state: str) -> list[str]:
    return [t for t in MACHINE.get_triggers(state) if t in TRIGGERS]


def replay(triggers: list[str], start: str = CONFIRMED) -> State:
    """The state a sequence of triggers leads to: used to check a stored history."""
    state = State(start)
    for trigger in triggers:
        state = next_state(state, trigger)
    return state


def diagram(fmt: Literal["mermaid", "dot"] = "mermaid") -> str:
    """The state diagram drawn from TRANSITIONS (never by hand)."""
    machine = _build(graph=True, engine="mermaid" if fmt == "mermaid" else "graphviz")
    source = str(machine.get_combined_graph().source)
    if fmt == "mermaid":
        # transitions 0.9 writes a bare title and `Class`; Mermaid wants `title:` and `class`.
        source = source.replace("---\nEZREC booking\n---", "---\ntitle: EZREC booking\n---")
        source = source.replace("  Class ", "  class ")
    return source
