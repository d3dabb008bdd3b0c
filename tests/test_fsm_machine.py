from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.fsm import (
    STATES,
    TRIGGERS,
    InvalidTrigger,
    RetryPolicy,
    diagram,
    next_state,
    replay,
)


def test_happy_path() -> None:
    assert replay(["start", "finish", "process", "upload"]) == "video_uploaded"


@pytest.mark.parametrize(
    ("state", "dest"),
    [("recording", "recording_failed"), ("completed", "processing_failed"),
     ("video_processed", "upload_failed")],
)
def test_fail_and_retry_return_to_the_work(state: str, dest: str) -> None:
    assert next_state(state, "fail") == dest
    back = next_state(dest, "retry")
    assert back == {"recording_failed": "confirmed", "processing_failed": "completed",
                    "upload_failed": "video_processed"}[dest]


def test_invalid_trigger_message() -> None:
    with pytest.raises(InvalidTrigger, match="cannot cancel a booking in state 'completed'"):
        next_state("completed", "cancel")
    with pytest.raises(InvalidTrigger, match="unknown trigger 'explode'"):
        next_state("confirmed", "explode")


@given(st.lists(st.sampled_from([*TRIGGERS, "bogus"]), max_size=30))
def test_any_trigger_sequence_stays_in_declared_states(triggers: list[str]) -> None:
    state = "confirmed"
    for trigger in triggers:
        with contextlib.suppress(InvalidTrigger):
            state = next_state(state, trigger)
        assert state in STATES


def test_terminal_states_only_take_notes() -> None:
    for state in ("video_uploaded", "cancelled", "missed"):
        for trigger in TRIGGERS:
            if trigger == "note":
                assert next_state(state, trigger) == state
            else:
                with pytest.raises(InvalidTrigger):
                    next_state(state, trigger)


def test_diagram_is_generated_from_definition() -> None:
    mermaid = diagram("mermaid")
    assert "stateDiagram-v2" in mermaid
    assert "completed --> video_processed: process" in mermaid
    dot = diagram("dot")
    assert "digraph" in dot and "upload_failed -> video_processed [label=retry]" in dot
    for state in STATES:
        assert state in mermaid and state in dot


@given(st.integers(1, 40), st.integers(0, 2**32))
def test_backoff_grows_is_capped_and_jittered(attempt: int, seed: int) -> None:
    policy = RetryPolicy(base_s=10, max_s=600, max_attempts=50, jitter=0.5)
    delay = policy.delay(attempt, random.Random(seed))
    ceiling = min(600, 10 * 2 ** (attempt - 1))
    assert ceiling * 0.5 <= delay <= ceiling


def test_attempts_run_out() -> None:
    policy = RetryPolicy(base_s=1, max_s=10, max_attempts=3)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert policy.next_attempt_at(1, now) is not None
    assert policy.next_attempt_at(2, now) is not None
    assert policy.next_attempt_at(3, now) is None


def test_docs_diagram_is_the_generated_one() -> None:
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "states.md").read_text()
    block = page.split("```mermaid\n", 1)[1].split("```", 1)[0]
    assert block.strip() == diagram("mermaid").strip()
