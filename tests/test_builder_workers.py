"""builder.workers: encodes ahead of the join, and progress that only rises."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.drivers.builder.spec import BuildError
from controller.drivers.builder.workers import Ahead, guarded, rising


def test_depth_one_runs_the_encode_when_it_is_taken() -> None:
    ran: list[str] = []
    ahead = Ahead(1)
    ahead.submit("a", ran.append, "a")
    assert ran == []  # nothing runs beside the caller
    assert ahead.take("a") == 1 and ran == ["a"]
    assert ahead.take("a") == 0  # made already
    ahead.close()


def test_depth_two_runs_two_at_once_and_raises_an_error_where_taken() -> None:
    both = threading.Barrier(2, timeout=10)  # each waits for the other: only two at once pass

    def encode(name: str) -> None:
        both.wait()
        if name == "b":
            raise BuildError("chunk b unreadable")

    ahead = Ahead(2)
    ahead.submit("a", encode, "a")
    ahead.submit("b", encode, "b")
    ahead.submit("b", encode, "b")  # already in flight: not twice
    assert ahead.take("a") == 1
    with pytest.raises(BuildError, match="chunk b"):
        ahead.take("b")
    ahead.close()


@given(st.lists(st.floats(0, 1), max_size=30))
def test_progress_only_rises(values: list[float]) -> None:
    shown: list[float] = []
    report = rising(shown.append)
    assert report is not None
    for v in values:
        report(v)
    assert shown == sorted(set(shown)) and all(v in values for v in shown)


def test_a_failing_progress_callback_does_not_fail_the_build() -> None:
    def broken(fraction: float) -> None:
        raise RuntimeError("database is locked")

    report = guarded(broken)
    assert report is not None
    report(0.5)
    assert guarded(None) is None and rising(None) is None
