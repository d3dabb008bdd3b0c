"""The raw recording layout's names and run manifests (read through `controller.recordings`).

    <raw>/<booking>/cam<N>/<run:03d>-<seq:05d>.ts    MPEG-TS segments, in time order
    <raw>/<booking>/cam<N>/run-<run:03d>.json        one manifest per recording run, atomic

A run is one uninterrupted stretch of one camera. Its manifest says when its first frame was
taken (wall clock) and, once it is over, when it stopped; a run that the camera went on
recording for the next booking says where this booking's part ends (`last_seq`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.fileio import atomic_write

log = logging.getLogger(__name__)


class LayoutError(Exception):
    """The raw dir cannot take another run."""


SEGMENT_RE = re.compile(r"^(\d{3})-(\d{5})\.ts$")
MANIFEST_RE = re.compile(r"^run-(\d{3})\.json$")
CAMERA_DIR_RE = re.compile(r"^cam(\d+)$")
MAX_RUN = 999  # three digits in the file names


def camera_dir(out_dir: Path, camera: int) -> Path:
    return out_dir / f"cam{camera}"


def camera_dirs(out_dir: Path) -> list[tuple[int, Path]]:
    """The camera folders of a booking's raw dir, by camera number."""
    found = []
    for path in listdir(out_dir):
        match = CAMERA_DIR_RE.match(path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return sorted(found)


def segment_path(cam_dir: Path, run: int, seq: int) -> Path:
    return cam_dir / f"{run:03d}-{seq:05d}.ts"


def segment_template(cam_dir: Path, run: int) -> str:
    """The file name pattern for ffmpeg's segment muxer."""
    return str(cam_dir / f"{run:03d}-%05d.ts")


def segment_run_seq(path: Path) -> tuple[int, int] | None:
    """(run, seq) of a segment's file name, or None when it is not a segment."""
    match = SEGMENT_RE.match(path.name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def manifest_path(cam_dir: Path, run: int) -> Path:
    return cam_dir / f"run-{run:03d}.json"


def listdir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def run_segments(cam_dir: Path, run: int) -> list[Path]:
    """This run's segments in time order (names sort by time)."""
    return sorted(p for p in listdir(cam_dir) if (rs := segment_run_seq(p)) and rs[0] == run)


def segment_runs(cam_dir: Path) -> list[int]:
    """The runs that have at least one segment in a camera folder, in order."""
    return sorted({rs[0] for p in listdir(cam_dir) if (rs := segment_run_seq(p))})


def next_run(out_dir: Path) -> int:
    """Max existing run number in any camera folder + 1, so that runs never overwrite."""
    highest = -1
    for _, cam in camera_dirs(out_dir):
        for path in listdir(cam):
            match = SEGMENT_RE.match(path.name) or MANIFEST_RE.match(path.name)
            if match:
                highest = max(highest, int(match.group(1)))
    if highest >= MAX_RUN:
        raise LayoutError(f"{out_dir}: run numbers exhausted ({MAX_RUN + 1} runs)")
    return highest + 1


def drop_empty_segments(paths: Iterable[Path]) -> list[Path]:
    """Remove zero-byte segments (an opened-but-never-written file breaks concatenation)."""
    kept = []
    for path in paths:
        try:
            if path.stat().st_size == 0:
                path.unlink()
                continue
        except FileNotFoundError:
            continue
        kept.append(path)
    return kept


def drop_empty_but_open(paths: list[Path]) -> list[Path]:
    """drop_empty_segments, except for the last segment, which a camera that goes on running
    still writes: just opened, it can be empty for a moment, and removing its name then would
    orphan what the encoder writes into it next."""
    return drop_empty_segments(paths[:-1]) + paths[-1:]


# What a manifest must give for its run to be placed in time; everything else has a default
# (a manifest written by hand or by an older version still aligns its run).
_REQUIRED = ("run", "started_at")
_MANIFEST_KEYS = ("camera", "driver", "run", "started_at", "width", "height", "fps",
                  "stopped_at", "notes")


@dataclass
class RunManifest:
    """One recording run of one camera: `cam<N>/run-<run>.json`."""

    camera: int
    driver: str
    run: int
    started_at: float  # wall-clock epoch seconds of the run's first frame (best estimate)
    width: int
    height: int
    fps: int
    stopped_at: float | None = None  # None while running, or after a crash
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # driver-specific keys, kept flat
    directory: Path | None = field(default=None, compare=False)  # where it was read from

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update({key: getattr(self, key) for key in _MANIFEST_KEYS})
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], directory: Path | None = None) -> RunManifest:
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise ValueError(f"manifest lacks {', '.join(missing)}")
        match = CAMERA_DIR_RE.match(directory.name) if directory is not None else None
        stopped = data.get("stopped_at")
        return cls(
            camera=int(data.get("camera", match.group(1) if match else 0)),
            driver=str(data.get("driver", "unknown")),
            run=int(data["run"]),
            started_at=float(data["started_at"]),
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            fps=int(data.get("fps", 0)),
            stopped_at=None if stopped is None else float(stopped),
            notes=[str(note) for note in data.get("notes", [])],
            extra={k: v for k, v in data.items() if k not in _MANIFEST_KEYS},
            directory=directory,
        )

    @property
    def last_seq(self) -> int | None:
        """The last segment of this booking's part of the run, when the camera went on."""
        value = self.extra.get("last_seq")
        return int(value) if isinstance(value, int | float) else None

    def segments(self) -> list[Path]:
        """The run's segments that belong to this booking, in time order."""
        if self.directory is None:
            return []
        return cut_at(run_segments(self.directory, self.run), self.last_seq)

    def write(self, cam_dir: Path) -> Path:
        """Atomically: a crash leaves the old manifest or the new one, never half."""
        self.directory = cam_dir
        data = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        return atomic_write(manifest_path(cam_dir, self.run), data)


def cut_at(segments: list[Path], last_seq: int | None) -> list[Path]:
    """The segments up to `last_seq` (all of them when it is None)."""
    if last_seq is None:
        return segments
    return [p for p in segments if (rs := segment_run_seq(p)) is None or rs[1] <= last_seq]


def read_manifest(cam_dir: Path, run: int) -> RunManifest | None:
    return load_manifest(manifest_path(cam_dir, run))


def load_manifest(path: Path) -> RunManifest | None:
    """The manifest at `path`, or None when it is missing or unreadable."""
    try:
        return RunManifest.from_dict(json.loads(path.read_text()), directory=path.parent)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def manifests(cam_dir: Path) -> dict[int, RunManifest]:
    """The readable manifests of one camera folder, by run."""
    found = {}
    for path in listdir(cam_dir):
        if MANIFEST_RE.match(path.name) and (manifest := load_manifest(path)) is not None:
            found[manifest.run] = manifest
    return dict(sorted(found.items()))


def read_runs(raw_dir: Path) -> dict[int, list[RunManifest]]:
    """Every run of every camera under a booking's raw dir: camera -> manifests by run.

    Never raises on what a crash can leave behind: a run with segments but no (readable)
    manifest gets one made up from the files, its started_at estimated from the first segment's
    modification time, and a note saying so.
    """
    out: dict[int, list[RunManifest]] = {}
    for number, cam in camera_dirs(raw_dir):
        runs = manifests(cam)
        for path in listdir(cam):
            if MANIFEST_RE.match(path.name) and int(path.name[4:7]) not in runs:
                log.warning("%s: unreadable manifest; rebuilt from segments", path)
        for run in segment_runs(cam):
            if run in runs:
                continue
            first = run_segments(cam, run)[0]
            runs[run] = RunManifest(
                camera=number, driver="unknown", run=run,
                started_at=first.stat().st_mtime, width=0, height=0, fps=0,
                notes=["manifest missing: started_at estimated from the first segment's mtime"],
                directory=cam,
            )
        if runs:
            out[number] = [runs[key] for key in sorted(runs)]
    return out
