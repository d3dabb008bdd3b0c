"""Runs continued across a booking boundary (read through `controller.recordings`).

When back-to-back bookings share cameras that cannot be opened twice, the camera keeps running
across the boundary and the next booking's run is made of the segments the camera writes from
the boundary on (the segment holding the boundary belongs to both bookings, so no frame is
lost). The first booking's run then names where it stopped counting (`last_seq`). When the
camera goes on writing into the first booking's folder (an ffmpeg process cannot be told to
write elsewhere), the new run names its source (`continued_from`) and `relay()` hard-links the
source's segments into it; relay is idempotent, so a restart after a crash finishes what the
running driver had not linked yet.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.raw_layout import (
    MANIFEST_RE,
    RunManifest,
    camera_dirs,
    listdir,
    load_manifest,
    run_segments,
    segment_path,
    segment_run_seq,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where a continued run's segments are written: another run's folder, from `seq` on."""

    cam_dir: Path
    run: int
    seq: int

    def to_dict(self) -> dict[str, Any]:
        return {"dir": str(self.cam_dir), "run": self.run, "seq": self.seq}

    @classmethod
    def from_dict(cls, data: Any) -> Source | None:
        try:
            return cls(Path(data["dir"]), int(data["run"]), int(data["seq"]))
        except (TypeError, KeyError, ValueError):
            return None


def source_of(manifest: RunManifest) -> Source | None:
    """The run a continued run takes its segments from, if it is one."""
    return Source.from_dict(manifest.extra.get("continued_from"))


def continue_run(
    base: RunManifest, cam_dir: Path, run: int, started_at: float, booking: str,
    from_booking: str, source: Source | None = None,
) -> RunManifest:
    """Start the next booking's run of a camera that goes on recording; returns its manifest.

    `source` is where the camera goes on writing when that is not `cam_dir` itself: its
    segments from `source.seq` on are linked in (now and by every later `relay`).
    """
    extra = {k: v for k, v in base.extra.items() if k not in ("last_seq", "continued_from")}
    extra |= {"continued_for": booking, "continued_from_booking": from_booking}
    if source is not None:
        extra["continued_from"] = source.to_dict()
    manifest = RunManifest(
        camera=base.camera, driver=base.driver, run=run, started_at=started_at,
        width=base.width, height=base.height, fps=base.fps, extra=extra,
    )
    manifest.write(cam_dir)
    relay(manifest)
    return manifest


def end_run_at(manifest: RunManifest, last_seq: int, stopped_at: float) -> None:
    """The camera goes on for the next booking: this run ends with segment `last_seq`."""
    assert manifest.directory is not None, "a run being recorded has been written"
    manifest.extra["last_seq"] = last_seq
    manifest.stopped_at = stopped_at
    manifest.write(manifest.directory)


def relay(manifest: RunManifest) -> int:
    """Link the source segments a continued run has not linked yet; returns how many."""
    source = source_of(manifest)
    if source is None or manifest.directory is None:
        return 0
    limit = manifest.last_seq
    made = 0
    for path in run_segments(source.cam_dir, source.run):
        seq = segment_run_seq(path)[1] - source.seq  # type: ignore[index]
        if seq < 0 or (limit is not None and seq > limit):
            continue
        target = segment_path(manifest.directory, manifest.run, seq)
        if target.exists():
            continue
        try:
            os.link(path, target)
            made += 1
        except FileExistsError:
            continue
        except OSError as exc:  # the source vanished or another filesystem: copy is no answer
            log.warning("%s: could not link %s (%s)", target, path, exc)
    return made


def relay_all(out_dir: Path) -> int:
    """Finish the links of every continued run of a booking (after a restart)."""
    made = 0
    for _, cam in camera_dirs(out_dir):
        for path in listdir(cam):
            if MANIFEST_RE.match(path.name) and (manifest := load_manifest(path)):
                made += relay(manifest)
    return made
