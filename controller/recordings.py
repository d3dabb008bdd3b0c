"""A booking's raw recording on disk: the layout camera drivers write and everything else reads.

    <raw>/<booking>/cam<N>/<run:03d>-<seq:05d>.ts    MPEG-TS segments, in time order
    <raw>/<booking>/cam<N>/run-<run:03d>.json        one manifest per recording run, atomic

A run is one uninterrupted stretch of one camera. Its manifest says when its first frame was
taken (wall clock) and, once it is over, when it stopped. A run can also be *continued* from
another booking's run: when back-to-back bookings share cameras that cannot be opened twice, the
camera keeps running across the boundary and the next booking's run is made of hard links to the
segments the camera writes from the boundary on (the segment holding the boundary belongs to both
bookings, so no frame is lost). Such a manifest names its source (`continued_from`), and the run
it was taken from names where it stopped counting (`last_seq`); `relay()` makes the links, and
is idempotent, so a restart after a crash finishes what the running driver had not linked yet.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class LayoutError(Exception):
    """The raw dir cannot take another run."""


SEGMENT_RE = re.compile(r"^(\d{3})-(\d{5})\.ts$")
MANIFEST_RE = re.compile(r"^run-(\d{3})\.json$")
CAMERA_DIR_RE = re.compile(r"^cam(\d+)$")
MAX_RUN = 999  # three digits in the file names


def camera_dir(out_dir: Path, camera: int) -> Path:
    return out_dir / f"cam{camera}"


def segment_path(cam_dir: Path, run: int, seq: int) -> Path:
    return cam_dir / f"{run:03d}-{seq:05d}.ts"


def segment_template(cam_dir: Path, run: int) -> str:
    """The file name pattern for ffmpeg's segment muxer."""
    return str(cam_dir / f"{run:03d}-%05d.ts")


def manifest_path(cam_dir: Path, run: int) -> Path:
    return cam_dir / f"run-{run:03d}.json"


def run_segments(cam_dir: Path, run: int) -> list[Path]:
    """This run's segments in time order (names sort by time)."""
    if not cam_dir.is_dir():
        return []
    found = []
    for path in cam_dir.iterdir():
        match = SEGMENT_RE.match(path.name)
        if match and int(match.group(1)) == run:
            found.append(path)
    return sorted(found)


def next_run(out_dir: Path) -> int:
    """Max existing run number in any camera folder + 1, so that runs never overwrite."""
    highest = -1
    if out_dir.is_dir():
        for cam in out_dir.iterdir():
            if not (cam.is_dir() and CAMERA_DIR_RE.match(cam.name)):
                continue
            for path in cam.iterdir():
                match = SEGMENT_RE.match(path.name) or MANIFEST_RE.match(path.name)
                if match:
                    highest = max(highest, int(match.group(1)))
    if highest >= MAX_RUN:
        raise LayoutError(f"{out_dir}: run numbers exhausted ({MAX_RUN + 1} runs)")
    return highest + 1


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
        missing = [key for key in _MANIFEST_KEYS if key not in data and key != "notes"]
        if missing:
            raise ValueError(f"manifest lacks {', '.join(missing)}")
        stopped = data.get("stopped_at")
        return cls(
            camera=int(data["camera"]),
            driver=str(data["driver"]),
            run=int(data["run"]),
            started_at=float(data["started_at"]),
            width=int(data["width"]),
            height=int(data["height"]),
            fps=int(data["fps"]),
            stopped_at=None if stopped is None else float(stopped),
            notes=[str(note) for note in data.get("notes", [])],
            extra={k: v for k, v in data.items() if k not in _MANIFEST_KEYS},
            directory=directory,
        )

    def segments(self) -> list[Path]:
        if self.directory is None:
            return []
        limit = _last_seq(self)
        return [
            p for p in run_segments(self.directory, self.run)
            if limit is None or int(p.name[4:9]) <= limit
        ]

    def write(self, cam_dir: Path) -> Path:
        """Atomically (tmp + fsync + os.replace): a crash leaves the old or the new, never half."""
        cam_dir.mkdir(parents=True, exist_ok=True)
        self.directory = cam_dir
        target = manifest_path(cam_dir, self.run)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        data = json.dumps(self.to_dict(), indent=2, sort_keys=True).encode() + b"\n"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(cam_dir)
        return target


def _fsync_dir(path: Path) -> None:
    # The rename is only durable across a power cut once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_runs(raw_dir: Path) -> dict[int, list[RunManifest]]:
    """Every run of every camera under a booking's raw dir: camera -> manifests by run.

    Never raises on what a crash can leave behind: a run with segments but no (readable)
    manifest gets one made up from the files, its started_at estimated from the first segment's
    modification time, and a note saying so.
    """
    out: dict[int, list[RunManifest]] = {}
    if not raw_dir.is_dir():
        return out
    for cam in sorted(raw_dir.iterdir()):
        match = CAMERA_DIR_RE.match(cam.name)
        if not (match and cam.is_dir()):
            continue
        number = int(match.group(1))
        runs: dict[int, RunManifest] = {}
        seg_runs: dict[int, list[Path]] = {}
        for path in cam.iterdir():
            if m := MANIFEST_RE.match(path.name):
                try:
                    runs[int(m.group(1))] = RunManifest.from_dict(
                        json.loads(path.read_text()), directory=cam
                    )
                except (OSError, ValueError, TypeError) as exc:
                    log.warning("%s: unreadable manifest (%s); rebuilt from segments", path, exc)
            elif m := SEGMENT_RE.match(path.name):
                seg_runs.setdefault(int(m.group(1)), []).append(path)
        for run, paths in seg_runs.items():
            if run in runs:
                continue
            first = min(paths)
            runs[run] = RunManifest(
                camera=number, driver="unknown", run=run,
                started_at=first.stat().st_mtime, width=0, height=0, fps=0,
                notes=["manifest missing: started_at estimated from the first segment's mtime"],
                directory=cam,
            )
        if runs:
            out[number] = [runs[key] for key in sorted(runs)]
    return out


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


def _last_seq(manifest: RunManifest | None) -> int | None:
    if manifest is None:
        return None
    value = manifest.extra.get("last_seq")
    return int(value) if isinstance(value, int | float) else None


def run_files(cam_dir: Path, run: int) -> list[Path]:
    """A run's segments that belong to this booking: all of them, or up to its `last_seq`
    when the camera went on recording for the next booking."""
    segments = run_segments(cam_dir, run)
    limit = _last_seq(read_manifest(cam_dir, run))
    if limit is None:
        return segments
    return [p for p in segments if int(p.name[4:9]) <= limit]


def camera_files(cam_dir: Path) -> list[Path]:
    """Every segment of one camera of a booking, in time order, each run cut at its last_seq."""
    runs = sorted(
        {int(m.group(1)) for p in _listdir(cam_dir) if (m := SEGMENT_RE.match(p.name))}
    )
    return [path for run in runs for path in run_files(cam_dir, run)]


# A run that overlaps a slot by less than this holds no usable part of it (the builder wants
# a tenth of a second; a killed run's end is known only from its file's last write, which lags
# the frame by the muxer's buffering).
IN_SLOT_MIN_S = 0.5


def has_footage(out_dir: Path, slot: tuple[float, float] | None = None) -> bool:
    """True when at least one non-empty segment of the booking is on disk; with `slot`
    (start, end in epoch seconds), one whose run overlaps the slot. A run wholly outside it
    (killed during the pre-roll; started as the slot ended) is no footage of the slot: the
    builder would find nothing to build from it."""
    for cam in _listdir(out_dir):
        if not (CAMERA_DIR_RE.match(cam.name) and cam.is_dir()):
            continue
        for path in camera_files(cam):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                if stat.st_size > 0 and (slot is None or _in_slot(cam, path, stat.st_mtime, slot)):
                    return True
    return False


def _in_slot(cam: Path, path: Path, written: float, slot: tuple[float, float]) -> bool:
    match = SEGMENT_RE.match(path.name)
    manifest = read_manifest(cam, int(match.group(1))) if match else None
    if manifest is None:
        return True  # no timing known: assume it is footage of the slot
    end = manifest.stopped_at if manifest.stopped_at is not None else written
    start, stop = slot
    return min(end, stop) - max(manifest.started_at, start) >= IN_SLOT_MIN_S


def read_manifest(cam_dir: Path, run: int) -> RunManifest | None:
    try:
        return RunManifest.from_dict(
            json.loads(manifest_path(cam_dir, run).read_text()), directory=cam_dir
        )
    except (OSError, ValueError, TypeError):
        return None


def _listdir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


# -- runs continued across a booking boundary ---------------------------------------------


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


def continue_run(
    source: Source, cam_dir: Path, run: int, started_at: float, base: RunManifest,
    booking: str,
) -> RunManifest:
    """Start a run made of the source's segments from `source.seq` on; returns its manifest."""
    manifest = RunManifest(
        camera=base.camera, driver=base.driver, run=run, started_at=started_at,
        width=base.width, height=base.height, fps=base.fps,
        extra={k: v for k, v in base.extra.items() if k not in ("last_seq", "continued_from")}
        | {"continued_from": source.to_dict(), "continued_for": booking},
    )
    manifest.write(cam_dir)
    relay(manifest)
    return manifest


def end_run_at(manifest: RunManifest, cam_dir: Path, last_seq: int, stopped_at: float) -> None:
    """The camera goes on for the next booking: this run ends with segment `last_seq`."""
    manifest.extra["last_seq"] = last_seq
    manifest.stopped_at = stopped_at
    manifest.write(cam_dir)


def relay(manifest: RunManifest) -> int:
    """Link the source segments a continued run has not linked yet; returns how many."""
    source = Source.from_dict(manifest.extra.get("continued_from"))
    if source is None or manifest.directory is None:
        return 0
    limit = _last_seq(manifest)
    made = 0
    for path in run_segments(source.cam_dir, source.run):
        seq = int(SEGMENT_RE.match(path.name).group(2)) - source.seq  # type: ignore[union-attr]
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
    for cam in _listdir(out_dir):
        if not (CAMERA_DIR_RE.match(cam.name) and cam.is_dir()):
            continue
        for path in _listdir(cam):
            if (m := MANIFEST_RE.match(path.name)) and (
                manifest := read_manifest(cam, int(m.group(1)))
            ):
                made += relay(manifest)
    return made


@dataclass(frozen=True)
class BookingFiles:
    """One booking's files on disk: its raw recording and its finished outputs.

    The record owns its files (pyCA's `RecordedEvent.directory()`): the supervisor, the jobs,
    the API and retention ask this object where a booking's files are and whether there is
    footage, instead of joining paths themselves.
    """

    booking_id: str
    raw_dir: Path  # <data>/recordings/raw/<booking>
    processed_path: Path  # <data>/recordings/processed/<booking>.mp4 (the merged layouts)

    @classmethod
    def under(cls, raw_root: Path, processed_root: Path, booking_id: str) -> BookingFiles:
        return cls(booking_id, raw_root / booking_id, processed_root / f"{booking_id}.mp4")

    def camera_dir(self, camera: int) -> Path:
        return camera_dir(self.raw_dir, camera)

    def runs(self) -> dict[int, list[RunManifest]]:
        return read_runs(self.raw_dir)

    def has_footage(self, slot: tuple[datetime, datetime] | None = None) -> bool:
        """At least one non-empty segment on disk; with `slot`, one recorded inside it."""
        span = (slot[0].timestamp(), slot[1].timestamp()) if slot is not None else None
        return has_footage(self.raw_dir, span)

    def relay_all(self) -> int:
        return relay_all(self.raw_dir)


def outputs_of(stored_outputs: Iterable[str] | None, processed_path: str | None) -> list[Path]:
    """The finished files a booking's row records: several for `separate`, else the one video."""
    stored = list(stored_outputs or [])
    if stored:
        return [Path(p) for p in stored]
    return [Path(processed_path)] if processed_path else []


class _Dirs(Protocol):
    @property
    def raw_dir(self) -> Path: ...
    @property
    def processed_dir(self) -> Path: ...


def booking_files(settings: _Dirs, booking_id: str) -> BookingFiles:
    """The files of `booking_id` under the configured data dir (`Settings` is a `_Dirs`)."""
    return BookingFiles.under(settings.raw_dir, settings.processed_dir, booking_id)
