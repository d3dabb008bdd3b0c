"""QR codes of share links (segno): a PNG for the API and the email, text for the terminal."""

from __future__ import annotations

import io

import segno

# "M" survives a smudged phone screen or a print at the court's desk (15 % damage).
ERROR_LEVEL = "m"


def png(data: str, scale: int = 8) -> bytes:
    buf = io.BytesIO()
    segno.make(data, error=ERROR_LEVEL).save(buf, kind="png", scale=scale, border=4)
    return buf.getvalue()


def terminal(data: str) -> str:
    """The code drawn with block characters, two modules per line (fits a small terminal)."""
    buf = io.StringIO()
    segno.make(data, error=ERROR_LEVEL).terminal(out=buf, compact=True, border=2)
    return buf.getvalue()
