"""Printing a benchmark's table and writing its JSON: shared by every script in bench/."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any


def emit(title: str, rows: list[tuple[str, ...]], data: dict[str, Any],
         json_path: str | None,
         headers: tuple[str, ...] = ("measure", "value", "goal", "ok")) -> None:
    """rows: (measure, value, goal, verdict), or one cell per column of `headers`."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    print(f"\n{title}  ({platform.machine()}, {platform.python_version()})")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        print(f"\nwritten {path}")
