"""Object keys: ``S3_KEY_TEMPLATE`` rendered into the clean relative key a backend stores under."""

from __future__ import annotations

import re
import string
from datetime import datetime

from controller.drivers.storage.base import StorageError

# Booking ids end up in object keys and file names: keep them to a safe alphabet, so that no id
# can climb out of the prefix ("..") or smuggle in a separator, whatever the booking system sends.
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_TEMPLATE_FIELDS = frozenset({"prefix", "device", "booking", "yyyy", "mm", "dd", "hh", "date"})


class KeyScheme:
    """Renders ``S3_KEY_TEMPLATE`` into object keys (relative paths for the local backend).

    Fields: {prefix} {device} {booking} {yyyy} {mm} {dd} {hh} {date}. The date fields are taken
    from the booking's start as the caller passes it (the supervisor passes local venue time).
    The result is always a clean relative key: no empty, "." or ".." component, no leading "/".
    """

    def __init__(self, template: str, *, prefix: str, device: str) -> None:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        unknown = sorted(fields - _TEMPLATE_FIELDS)
        if unknown:
            raise StorageError(
                f"bad setting EZREC_S3_KEY_TEMPLATE: unknown field {{{unknown[0]}}} "
                f"(known: {', '.join(sorted(_TEMPLATE_FIELDS))})",
                retryable=False,
            )
        if "booking" not in fields:
            # Without the booking id two videos would overwrite each other.
            raise StorageError(
                "bad setting EZREC_S3_KEY_TEMPLATE: must contain {booking}", retryable=False
            )
        self.template = template
        self.prefix = "/".join(part for part in prefix.split("/") if part)
        self.device = device
        # Fail at start-up, not at the first upload hours later.
        self.render("check", datetime(2000, 1, 2, 3, 4, 5))

    def render(self, booking_id: str, start: datetime, suffix: str = "") -> str:
        name = f"{booking_id}{suffix}"
        if not _SAFE_COMPONENT.match(name):
            raise StorageError(
                f"booking id {name!r} cannot be used in a storage key "
                "(letters, digits, '.', '_' and '-' only)",
                retryable=False,
            )
        raw = self.template.format(
            prefix=self.prefix,
            device=self.device,
            booking=name,
            yyyy=f"{start.year:04d}",
            mm=f"{start.month:02d}",
            dd=f"{start.day:02d}",
            hh=f"{start.hour:02d}",
            date=start.strftime("%Y-%m-%d"),
        )
        # An empty prefix leaves "//" or a leading "/": those components are simply dropped.
        parts = [part for part in raw.replace("\\", "/").split("/") if part]
        if not parts or any(part in (".", "..") for part in parts):
            raise StorageError(
                f"storage key {raw!r} from EZREC_S3_KEY_TEMPLATE is not a clean relative path",
                retryable=False,
            )
        return "/".join(parts)

    def static_prefix(self) -> str:
        """The part of every key that never varies (for listing this device's own uploads)."""
        literal = ""
        for text, name, _, _ in string.Formatter().parse(self.template):
            literal += text
            if name is None:
                break
            if name not in ("prefix", "device"):
                literal += "\0"  # marks the first varying field
                break
            literal += self.prefix if name == "prefix" else self.device
        literal = literal.split("\0", 1)[0]
        head, sep, _ = literal.rpartition("/")
        parts = [part for part in head.split("/") if part]
        return "/".join(parts) + "/" if sep and parts else ""
