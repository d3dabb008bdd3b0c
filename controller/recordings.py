"""A booking's recording on disk: the one owner of the raw layout and of a booking's outputs.

Camera drivers write through this module, and the builder, the supervisor, the API and
retention read through it. The layout's names and manifests are in `controller.raw_layout`,
runs continued across a booking boundary in `controller.run_relay`; both are used through the
names exported here.

    <raw>/<booking>/cam<N>/<run:03d>-<seq:05d>.ts    MPEG-TS segments, in time order
    <raw>/<booking>/cam<N>/run-<run:03d>.json        one manifest per recording run, atomic
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from controller.raw_layout import (
    LayoutError,
    RunManifest,
    camera_dir,
    camera_dirs,
    cut_at,
    drop_empty_but_open,
    drop_empty_segments,
    manifest_path,
    manifests,
    next_run,
    read_manifest,
    read_runs,
    run_segments,
    segment_path,
    segment_run_seq,
    segment_runs,
    segment_template,
)
from controller.run_relay import Source, continue_run, end_run_at, relay, relay_all, source_of

__all__ = [
    "BookingFiles",
    "CameraFootage",
    "LayoutError",
    "RunManifest",
    "Source",
    "booking_files",
    "camera_dir",
    "camera_files",
    "chunk_dir",
    "continue_run",
    "drop_empty_but_open",
    "drop_empty_segments",
    "end_run_at",
    "footage",
    "has_footage",
    "manifest_path",
    "next_run",
    "outputs_of",
    "read_manifest",
    "read_runs",
    "relay",
    "relay_all",
    "remove_working_files",
    "run_segments",
    "segment_path",
    "segment_run_seq",
    "segment_template",
    "source_of",
    "upload_checkpoint",
    "upload_lock",
    "working_files",
]


def camera_files(cam_dir: Path) -> list[Path]:
    """Every segment of one camera of a booking, in time order, each run cut at its last_seq."""
    return _booking_segments(cam_dir, manifests(cam_dir))


def _booking_segments(cam_dir: Path, runs: dict[int, RunManifest]) -> list[Path]:
    return [
        path for run in segment_runs(cam_dir)
        for path in cut_at(run_segments(cam_dir, run), runs[run].last_seq if run in runs else None)
    ]


@dataclass(frozen=True)
class CameraFootage:
    """What one camera recorded for a booking, as the builder reads it."""

    camera: int
    segments: list[Path]  # this booking's segments in time order, possibly from several runs
    # (run, started_at) for every run with a readable manifest: the downtime between runs.
    run_starts: tuple[tuple[int, float], ...]

    @property
    def started_at(self) -> float | None:
        """Wall clock of the first segment's run, when its manifest says."""
        if not self.segments:
            return None
        first = segment_run_seq(self.segments[0])
        return dict(self.run_starts).get(first[0]) if first else None


def footage(raw_dir: Path) -> list[CameraFootage]:
    """Every camera folder of a booking's raw dir, by camera number (empty ones too)."""
    out = []
    for number, cam in camera_dirs(raw_dir):
        runs = manifests(cam)
        starts = tuple((run, m.started_at) for run, m in runs.items())
        out.append(CameraFootage(number, _booking_segments(cam, runs), starts))
    return out


# A run that overlaps a slot by less than this holds no usable part of it (the builder wants
# a tenth of a second; a killed run's end is known only from its file's last write, which lags
# the frame by the muxer's buffering).
IN_SLOT_MIN_S = 0.5


def has_footage(out_dir: Path, slot: tuple[float, float] | None = None) -> bool:
    """True when at least one non-empty segment of the booking is on disk; with `slot`
    (start, end in epoch seconds), one whose run overlaps the slot. A run wholly outside it
    (killed during the pre-roll; started as the slot ended) is no footage of the slot: the
    builder would find nothing to build from it."""
    for _, cam in camera_dirs(out_dir):
        for path in camera_files(cam):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                if stat.st_size > 0 and (slot is None or _in_slot(cam, path, stat.st_mtime, slot)):
                    return True
    return False


def _in_slot(cam: Path, path: Path, written: float, slot: tuple[float, float]) -> bool:
    run_seq = segment_run_seq(path)
    manifest = read_manifest(cam, run_seq[0]) if run_seq else None
    if manifest is None:
        return True  # no timing known: assume it is footage of the slot
    end = manifest.stopped_at if manifest.stopped_at is not None else written
    start, stop = slot
    return min(end, stop) - max(manifest.started_at, start) >= IN_SLOT_MIN_S


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

    def footage(self) -> list[CameraFootage]:
        return footage(self.raw_dir)

    def segments(self, camera: int) -> list[Path]:
        """Camera `camera`'s segments of this booking, in time order."""
        return camera_files(self.camera_dir(camera))

    def has_footage(self, slot: tuple[datetime, datetime] | None = None) -> bool:
        """At least one non-empty segment on disk; with `slot`, one recorded inside it."""
        span = (slot[0].timestamp(), slot[1].timestamp()) if slot is not None else None
        return has_footage(self.raw_dir, span)

    def relay_all(self) -> int:
        return relay_all(self.raw_dir)


def chunk_dir(output: Path) -> Path:
    """Where the chunks of a finished video are made and joined (builder.incremental)."""
    return output.parent / f".{output.stem}.chunks"


def upload_checkpoint(output: Path) -> Path:
    """The resumable upload's state of a finished video (a growing one's too)."""
    return output.with_name(output.name + ".upload.json")


def upload_lock(output: Path) -> Path:
    """Held by whoever uploads `output` (the live uploader, the upload job): one at a time."""
    return output.with_name(f".{output.name}.upload.lock")


def working_files(output: Path) -> list[Path]:
    """Everything kept beside a finished video while it is built and uploaded."""
    return [chunk_dir(output), upload_checkpoint(output), upload_lock(output)]


def remove_working_files(output: Path) -> None:
    """The chunk folder, upload checkpoint and lock of a finished video, once it is stored."""
    for extra in working_files(output):
        if extra.is_dir():
            shutil.rmtree(extra, ignore_errors=True)
        else:
            extra.unlink(missing_ok=True)


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
