"""The finished video built chunk by chunk and joined into one file that only grows.

While a slot is recorded, `advance(plan, live=True)` encodes every window whose segments have
all closed and appends it to ``<processed>/.<stem>.chunks/joined.mp4``; when the slot is over,
`finish` does the same for what is left, corrects the declared duration if the recording was
shorter than booked, validates the file with ffprobe and renames it into place. A build after
the fact (a rebuild, ``ezrec build``, a booking recorded before this existed) is `finish` with
nothing done yet: the same pieces, the same bytes.

What survives a kill at any instant, in the chunk folder:

- ``join.json``, the journal: every piece joined so far (its name, the joined file's size after
  it, the fragment number and decode time the next piece starts at) and the CPU spent;
- ``joined.mp4``, fsync'ed before the journal names a piece in it. A restart cuts it back to
  the last piece the journal names and whose name the current plan still gives; a piece whose
  inputs changed has another name, so it and everything after it are made again;
- chunks encoded but not joined yet (a chunk is deleted once it is joined: the joined file is
  the copy that counts).

One builder at a time per booking: the folder's ``lock`` (flock). The live side takes it only
when it is free and gives it up after each chunk, so the build that follows the slot waits at
most for one chunk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.drivers.builder import fmp4
from controller.drivers.builder.chunks import (
    Window,
    chunk_argv,
    chunk_name,
    content_end,
    edge_s,
    feed_slice,
    intro_piece,
    phase_of,
    total_frames,
    windows,
)
from controller.drivers.builder.ffmpeg_run import run_ffmpeg, validate
from controller.drivers.builder.plan import Plan
from controller.drivers.builder.spec import BuildError, BuildResult, ProgressFn, Timeline
from controller.drivers.builder.workers import Ahead, guarded, rising
from controller.fileio import Stopped, atomic_write, durable_replace, flocked, fsync_dir
from controller.recordings import chunk_dir

log = logging.getLogger("ezrec.builder")
JOURNAL, JOINED, LOCK = "join.json", "joined.mp4", "lock"
VIDEO_TRACK = 1  # ffmpeg numbers the mapped video stream first
ChunksFn = Callable[[int, int], None]  # (chunks joined, chunks in all)


class CannotJoin(BuildError):
    """The pieces do not share one codec description; the one-pass build is used instead."""


def joined_path(output: Path) -> Path:
    return chunk_dir(output) / JOINED


def joined_size(output: Path) -> int:
    """Bytes of `output`'s joined file that the journal vouches for (0 when none): what an
    upload may send while the build goes on."""
    pieces = _load(chunk_dir(output) / JOURNAL)["pieces"]
    return int(pieces[-1]["end"]) if pieces else 0


def why_not(plan: Plan) -> str | None:
    """Why this plan is not built in chunks (None: it is)."""
    spec = plan.spec
    if not spec.incremental or spec.chunk_s <= 0:
        return "chunks are switched off"
    if spec.encoder != "libx264":
        return f"{spec.encoder} cannot be joined by stream copy"
    if plan.layout == "separate":
        return "layout separate writes one file per camera"
    return None


@dataclass(frozen=True)
class Status:
    joined: int  # chunks in the joined file
    total: int  # chunks the recording has (so far, while live)
    size: int  # bytes of the joined file: they do not change any more (but the header's)
    complete: bool


def advance(
    plan: Plan,
    *,
    live: bool,
    stop: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
    on_chunks: ChunksFn | None = None,
    max_chunks: int | None = None,
) -> Status | None:
    """Encode and join what can be: while `live`, the windows whose segments have all closed
    (at most `max_chunks` of them); else every window. None when another builder holds the
    booking (live only)."""
    folder = chunk_dir(plan.spec.output)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with flocked(folder / LOCK, wait=not live, stop=stop) as held:
            if not held:
                return None
            return _Joiner(plan, folder, live, stop, on_progress, on_chunks).run(max_chunks)
    except Stopped:
        raise BuildError("stopped") from None


def finish(
    plan: Plan,
    on_progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    on_chunks: ChunksFn | None = None,
) -> BuildResult:
    """Every chunk joined, the duration set, the file validated and moved into place."""
    began = time.monotonic()
    spec = plan.spec
    folder = chunk_dir(spec.output)
    folder.mkdir(parents=True, exist_ok=True)
    with _lock_or_stop(folder, stop):
        joiner = _Joiner(plan, folder, False, stop, on_progress, on_chunks)
        status = joiner.run(None)
        journal = joiner.journal
        final = spec.output
        if not status.complete:
            raise BuildError("stopped")
        joined = folder / JOINED
        intro_s = joiner.intro_s
        total = joiner.ticks_s()  # the intro's frames included
        if not journal.get("final") or not final.is_file():
            fmp4.set_duration(joined, total)
            validate(joined, total, plan.out_w, plan.out_h, max(0.5, 4 / spec.fps))
            durable_replace(joined, final)
            journal["final"] = {"size": final.stat().st_size}
            joiner.save()
        elif final.stat().st_size != journal["final"]["size"]:
            raise BuildError(f"{final.name} changed on disk since it was built")
    if on_progress is not None:
        guarded(on_progress)(1.0)  # type: ignore[misc]
    return BuildResult(
        [final], round(total, 3), plan.out_w, plan.out_h, plan.notes, False,
        time.monotonic() - began, {final: Timeline(intro_s, intro_s, total)},
        float(journal.get("cpu_s", 0.0)), status.total,
    )  # fmt: skip


class _Joiner:
    def __init__(
        self,
        plan: Plan,
        folder: Path,
        live: bool,
        stop: threading.Event | None,
        on_progress: ProgressFn | None,
        on_chunks: ChunksFn | None,
    ) -> None:
        self.plan, self.folder, self.live, self.stop = plan, folder, live, stop
        self.on_progress, self.on_chunks = rising(guarded(on_progress)), guarded(on_chunks)
        spec = plan.spec
        seconds = spec.duration if live and spec.duration else plan.recording_s
        frames = total_frames(seconds, spec.fps)
        self.windows = windows(frames, spec.fps, spec.chunk_s, phase_of(plan))
        self.booked_s = self.windows[-1].end
        self.limit = min(content_end(f) for f in plan.feeds) if live else float("inf")
        self.journal = _load(folder / JOURNAL)
        self.intro_s = 0.0
        self.timescale = 0
        # The journal is changed by the joining thread and, for the CPU spent, by the encodes
        # ahead: every change and every write of it holds this (re-entrant: save() in a change).
        self.saving = threading.RLock()

    def ticks_s(self) -> float:
        """Length of the video joined so far (intro included), from its sample durations."""
        pieces = self.journal["pieces"]
        ticks = int(pieces[-1]["ticks"].get(str(VIDEO_TRACK), 0)) if pieces else 0
        return ticks / self.timescale if self.timescale else 0.0

    def save(self) -> None:
        with self.saving:  # two encodes may finish at once
            atomic_write(self.folder / JOURNAL, json.dumps(self.journal, sort_keys=True))

    def run(self, max_chunks: int | None) -> Status:
        plan = self.plan
        names: list[tuple[str, Window | None]] = []
        intro_file: Path | None = None
        if plan.intro is not None:
            intro_file, job, self.intro_s = intro_piece(plan)
            if job is not None:
                if self._stopped():
                    return self._status()
                self._encode(job[0], job[1], intro_file, None)
            names.append((intro_file.name, None))
        slices = {w.index: [feed_slice(f, w) for f in plan.feeds] for w in self.windows}
        names += [(chunk_name(plan, w, slices[w.index]), w) for w in self.windows]
        kept = self._reconcile([n for n, _ in names])
        joined = self.folder / JOINED
        made = 0
        # After the slot, two chunks are encoded at a time: one's start-up and its encoder's
        # drain at the end leave a core idle, which the other fills. While recording, one (the
        # cameras need the rest).
        ahead = Ahead(1 if self.live else 2)
        try:
            for position in range(kept, len(names)):
                name, window = names[position]
                if window is None:
                    assert intro_file is not None
                    piece_path = intro_file
                else:
                    if self.live and window.end > self.limit + edge_s(window.fps):
                        break  # its segments are still being recorded
                    if self._stopped() or (max_chunks is not None and made >= max_chunks):
                        break
                    for later in range(position, min(len(names), position + ahead.depth)):
                        n, w = names[later]
                        if w is not None and not (self.folder / n).is_file():
                            ahead.submit(n, self._make_chunk, w, slices[w.index],
                                         self.folder / n, later, names)  # fmt: skip
                    piece_path = self.folder / name
                    made += ahead.take(name)
                self._append(joined, fmp4.read_piece(piece_path), name, window is None)
                if window is not None:
                    piece_path.unlink(missing_ok=True)
                self._report(len(names))
        finally:
            ahead.close()
        self._forget_strays({n for n, _ in names})
        return self._status()

    # -- the pieces ------------------------------------------------------------------------
    def _make_chunk(
        self, window: Window, slices: list[Any], out: Path, position: int, names: list[Any]
    ) -> None:
        temp = out.with_name(f".{out.name}.part")
        argv, lists = chunk_argv(self.plan, window, slices, temp, self.folder)
        for path, text in lists.items():
            path.write_text(text)
        log.info("%s: chunk %d of %d (%.1f-%.1f s)%s", self.plan.spec.booking_id,
                 window.index + 1, len(self.windows), window.start, window.end,
                 " while recording" if self.live else "")
        try:
            self._encode(argv, temp, out, window, position / len(names), 1 / len(names))
        finally:
            for path in lists:
                path.unlink(missing_ok=True)

    def _encode(
        self,
        argv: list[str],
        temp: Path,
        final: Path,
        window: Window | None,
        base: float = 0.0,
        share: float = 0.0,
    ) -> None:
        expected = window.end - window.start if window is not None else self.intro_s

        def report(seconds: float) -> None:
            if self.on_progress is not None and expected > 0 and share > 0:
                self.on_progress(min(0.999, base + share * min(1.0, seconds / expected)))

        try:
            cpu = run_ffmpeg(argv, expected, report, self.stop, nice=self.plan.spec.nice)
            piece = fmp4.read_piece(temp)
        except (BuildError, fmp4.Fmp4Error, OSError) as exc:
            temp.unlink(missing_ok=True)
            if isinstance(exc, BuildError):
                raise
            raise BuildError(f"chunk {final.name} unreadable: {exc}") from None
        frames = window.frames if window is not None else round(self.intro_s * self.plan.spec.fps)
        got = round(piece.seconds(VIDEO_TRACK) * self.plan.spec.fps)
        if got != frames:
            temp.unlink(missing_ok=True)
            raise BuildError(f"chunk {final.name} has {got} frames, expected {frames}")
        durable_replace(temp, final)
        with self.saving:
            self.journal["cpu_s"] = round(float(self.journal.get("cpu_s", 0.0)) + cpu, 3)
        self.save()

    def _append(self, joined: Path, piece: fmp4.Piece, name: str, is_intro: bool) -> None:
        pieces = self.journal["pieces"]
        video = piece.tracks.get(VIDEO_TRACK)
        if video is None:
            raise CannotJoin(f"{name} has no video track {VIDEO_TRACK}")
        if not pieces:
            delay = fmp4.presentation_offset(piece, VIDEO_TRACK)
            header = fmp4.header_with_duration(
                piece.init, self.intro_s + self.booked_s, {VIDEO_TRACK: delay} if delay else None
            )
            with self.saving:  # an encode ahead may be writing the journal out this moment
                self.journal["entry"] = video.sample_entry.hex()
                self.journal["timescale"] = video.timescale
            with joined.open("wb") as fh:
                fh.write(header)
                fh.flush()
                os.fsync(fh.fileno())
            fsync_dir(joined.parent)
            seq, ticks = 1, {str(t): 0 for t in piece.tracks}
        else:
            if video.sample_entry.hex() != self.journal.get("entry"):
                raise CannotJoin(f"{name} is not encoded like the pieces before it")
            seq, ticks = int(pieces[-1]["seq"]), dict(pieces[-1]["ticks"])
        self.timescale = int(self.journal["timescale"])
        starts = {t: int(ticks.get(str(t), 0)) for t in piece.tracks}
        if not is_intro:
            starts = {VIDEO_TRACK: int(ticks.get(str(VIDEO_TRACK), 0))}
            if set(piece.tracks) != {VIDEO_TRACK}:
                raise CannotJoin(f"{name} has tracks besides the video")
        data = fmp4.rebased(piece, seq, starts)
        with joined.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            end = fh.tell()
        for track, value in piece.ticks.items():
            ticks[str(track)] = int(ticks.get(str(track), 0)) + value
        with self.saving:
            pieces.append({"name": name, "end": end, "seq": seq + piece.count, "ticks": ticks})
            self.journal.pop("final", None)
            self.save()

    def _reconcile(self, names: list[str]) -> int:
        """How many pieces of the joined file are still right; the file is cut back to them."""
        pieces = self.journal["pieces"]
        kept = 0
        while kept < min(len(pieces), len(names)) and pieces[kept]["name"] == names[kept]:
            kept += 1
        joined = self.folder / JOINED
        if self.journal.get("final") and kept == len(pieces) == len(names):
            self.timescale = int(self.journal.get("timescale", 0))
            return kept  # finished and moved into place: nothing to join
        size = joined.stat().st_size if joined.is_file() else -1
        while kept and size < int(pieces[kept - 1]["end"]):
            kept -= 1  # the file lost what the journal says (it should not; start over)
        if kept == 0:
            joined.unlink(missing_ok=True)
            self.journal = {"version": 1, "pieces": [], "cpu_s": self.journal.get("cpu_s", 0.0)}
        else:
            os.truncate(joined, int(pieces[kept - 1]["end"]))
            del pieces[kept:]
            self.journal.pop("final", None)
            self.timescale = int(self.journal.get("timescale", 0))
        self.save()
        return kept

    def _forget_strays(self, names: set[str]) -> None:
        # Chunks of an earlier plan (the segments, the logos or the layout have changed since).
        for path in self.folder.glob("chunk-*.mp4"):
            if path.name not in names:
                path.unlink(missing_ok=True)

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _report(self, n_names: int) -> None:
        joined = sum(1 for p in self.journal["pieces"] if p["name"].startswith("chunk-"))
        if self.on_chunks is not None:
            self.on_chunks(joined, len(self.windows))
        if self.on_progress is not None and not self.live:
            self.on_progress(min(0.999, len(self.journal["pieces"]) / max(1, n_names)))

    def _status(self) -> Status:
        pieces = self.journal["pieces"]
        joined = sum(1 for p in pieces if p["name"].startswith("chunk-"))
        size = int(pieces[-1]["end"]) if pieces else 0
        return Status(joined, len(self.windows), size, joined == len(self.windows))


@contextlib.contextmanager
def _lock_or_stop(folder: Path, stop: threading.Event | None) -> Iterator[None]:
    try:
        with flocked(folder / LOCK, wait=True, stop=stop):
            yield
    except Stopped:
        raise BuildError("stopped") from None


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("version") != 1:
        return {"version": 1, "pieces": [], "cpu_s": 0.0}
    return data

