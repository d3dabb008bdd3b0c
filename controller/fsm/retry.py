"""Retry policy as data: exponential backoff with jitter and a bounded number of attempts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 30.0
    max_s: float = 3600.0
    max_attempts: int = 5
    # Each delay is drawn from [delay * (1 - jitter), delay] so that a fleet of boxes that all
    # lost the network at once does not come back in lockstep.
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number `attempt + 1` (attempt counts from 1)."""
        if attempt < 1:
            raise ValueError("attempt counts from 1")
        ceiling = min(self.max_s, self.base_s * 2 ** min(attempt - 1, 60))
        low = ceiling * (1.0 - self.jitter)
        return (rng or random).uniform(low, ceiling)

    def next_attempt_at(
        self, attempt: int, now: datetime, rng: random.Random | None = None
    ) -> datetime | None:
        """When to try again after the `attempt`-th failure; None once attempts are used up."""
        if attempt >= self.max_attempts:
            return None
        return now + timedelta(seconds=self.delay(attempt, rng))
