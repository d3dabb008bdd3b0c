"""Parsing the times people type: ISO 8601 with an offset, or `now` / `+90s` / `+5m` / `-20s`.

Naive timestamps are refused rather than guessed: a box in the wrong time zone would record
the wrong hour, silently.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^([+-])(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class TimeFormatError(ValueError):
    pass


def parse_time(text: str, now: datetime | None = None) -> datetime:
    text = text.strip()
    now = now or datetime.now(UTC)
    if text == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        seconds = float(match.group(2)) * _UNITS[match.group(3)]
        return now + timedelta(seconds=seconds if match.group(1) == "+" else -seconds)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeFormatError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-11-23T18:00:00+01:00) "
            "nor now / +90s / +5m / +1h / -20s"
        ) from None
    if value.tzinfo is None:
        raise TimeFormatError(
            f"{text!r} has no UTC offset; write e.g. {text}+01:00 or {text}Z (naive times are "
            "refused, not guessed)"
        )
    return value.astimezone(UTC)
