"""Everything decided before ffmpeg runs: segments probed and pruned, feeds aligned,
overlays placed; the plan that the graph or the fast path fills with ffmpeg jobs."""

from __future__ import annotations

import functools
import os
import secrets
import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from controller.drivers.builder.spec import (
    POSITIONS,
    BuildSpec,
    Feed,
    Overlay,
    Timeline,
)
from controller.drivers.ffprobe import ProbeError, ffprobe, video_stream
from controller.recordings import segment_run_seq

TS_PACKET = 188  # an MPEG-TS file is a whole number of these
MAX_GAP_S = 6 * 3600.0  # a "gap" longer than this is a clock or timestamp error, not downtime


# -- probing -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    path: Path
    run: int
    seq: int
    start: float  # first timestamp in the file (s)
    duration: float
    width: int
    height: int
    fps: float
    codec: str
    # The stream's colour description as ffprobe names it (color_space, color_range, ...).
    color: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class PreparedFeed:
    feed: Feed
    segments: list[Segment]
    declared: list[float]  # concat-demuxer durations: the segment plus any gap after it
    origin: float  # wall-clock time of the first kept frame (epoch s)
    known_start: bool
    skip: float = 0.0  # seconds cut at the start (pre-roll)
    lead: float = 0.0  # seconds of black before the first frame (camera started late)
    available: float = 0.0  # seconds of timeline after the skip

    @property
    def length(self) -> float:
        return sum(self.declared)

    @property
    def width(self) -> int:
        return self.segments[0].width

    @property
    def height(self) -> int:
        return self.segments[0].height


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    width: int
    height: int
    duration: float
    has_audio: bool


def frame_rate(text: str | None) -> float:
    try:
        num, _, den = (text or "0/1").partition("/")
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


def _probe_segment(path: Path) -> Segment | str:
    """A segment's timing and size, or why it cannot be used."""
    try:
        st = path.stat()
    except OSError as exc:
        return str(exc)
    if st.st_size == 0:
        return "empty file"
    # A closed segment never changes: while a slot is recorded, the builder plans the booking
    # again every few seconds and must not probe hundreds of segments each time.
    return _probe_closed(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _probe_closed(path: Path, _size: int, _mtime_ns: int) -> Segment | str:
    try:
        info = ffprobe(path, "-show_format", "-show_streams")
    except (OSError, ProbeError) as exc:
        return str(exc)
    stream = video_stream(info)
    if stream is None or not stream.get("width"):
        return "no video stream"
    fmt = info.get("format", {})
    try:
        duration = float(fmt.get("duration") or stream.get("duration") or 0)
        start = float(fmt.get("start_time") or stream.get("start_time") or 0)
    except ValueError:
        return "no timestamps"
    if duration <= 0:
        return "no frames"
    run, seq = segment_run_seq(path) or (0, 0)
    fps = frame_rate(stream.get("avg_frame_rate")) or frame_rate(stream.get("r_frame_rate")) or 0.0
    keys = ("color_space", "color_range", "color_transfer", "color_primaries")
    color = {k: str(stream[k]) for k in keys if stream.get(k) not in (None, "", "unknown")}
    return Segment(
        path, run, seq, start, duration, int(stream["width"]), int(stream["height"]), fps,
        str(stream.get("codec_name", "")), color,
    )  # fmt: skip


def _torn(path: Path) -> bool:
    try:
        return path.stat().st_size % TS_PACKET != 0
    except OSError:
        return False


def probe_media(path: Path) -> MediaInfo | str:
    try:
        info = ffprobe(path, "-show_format", "-show_streams")
    except ProbeError as exc:
        return str(exc)
    stream = video_stream(info)
    if stream is None or not stream.get("width"):
        return "no video stream"
    try:
        duration = float(stream.get("duration") or info.get("format", {}).get("duration") or 0)
    except ValueError:
        duration = 0.0
    has_audio = any(s.get("codec_type") == "audio" for s in info.get("streams", []))
    return MediaInfo(path, int(stream["width"]), int(stream["height"]), duration, has_audio)


def _declared_durations(feed: Feed, segments: list[Segment]) -> tuple[list[float], float]:
    """Per-segment durations that include the gap after each, and the first segment's delay.

    Within one run the segment muxer keeps timestamps continuous, so a pruned or lost segment
    shows as a jump in start times; between runs the manifests' wall-clock starts give the
    downtime. Declaring these gaps to the concat demuxer leaves a hole in the timestamps that
    the fps filter fills (a frozen frame), so the camera stays in sync with the others.
    """
    starts = dict(feed.run_starts)
    typical = statistics.median(s.duration for s in segments)
    declared: list[float] = []
    first_of_run: dict[int, Segment] = {}
    for seg in segments:
        first_of_run.setdefault(seg.run, seg)
    for i, seg in enumerate(segments):
        span = seg.duration
        nxt = segments[i + 1] if i + 1 < len(segments) else None
        if nxt is not None and nxt.run == seg.run:
            gap = nxt.start - seg.start
        elif nxt is not None and seg.run in starts and nxt.run in starts:
            run_first = first_of_run[seg.run]
            lost_before = (run_first.seq - _first_seq(feed, seg.run)) * typical
            elapsed = seg.start - run_first.start + lost_before
            lost_next = (nxt.seq - _first_seq(feed, nxt.run)) * typical
            gap = starts[nxt.run] - starts[seg.run] - elapsed + lost_next
        else:
            gap = span
        # Only trust a "gap" that does not make frames overlap and is not absurd.
        declared.append(gap if span - 0.05 <= gap <= span + MAX_GAP_S else span)
    # Leading segments of the first run that were pruned: the kept video starts later.
    first = segments[0]
    delay = (first.seq - _first_seq(feed, first.run)) * typical
    return declared, delay


def _first_seq(feed: Feed, run: int) -> int:
    seqs = [rs[1] for p in feed.segments if (rs := segment_run_seq(p)) and rs[0] == run]
    return min(seqs, default=0)


# -- the plan: everything decided before ffmpeg runs --------------------------------------
@dataclass
class Job:
    """One ffmpeg run: its argv, the files it writes and what they must look like."""

    argv: list[str]
    outputs: list[tuple[Path, Path]]  # (temp, final): validated, then renamed into place
    expected_s: float
    width: int
    height: int
    after: Callable[[], None] | None = None  # e.g. check and adopt a cached intro


@dataclass
class Plan:
    spec: BuildSpec
    layout: str
    feeds: list[PreparedFeed]
    intro: MediaInfo | None
    overlays: list[tuple[Overlay, int, int, int, int]]  # overlay, x, y, w, h
    recording_s: float
    out_w: int
    out_h: int
    work: Path
    lists: dict[Path, str] = field(default_factory=dict)
    scratch: list[Path] = field(default_factory=list)  # removed whatever happens
    jobs: list[Job] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fast: bool = False
    timeline: dict[Path, Timeline] = field(default_factory=dict)  # per final output

    def write_inputs(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        for path, text in self.lists.items():
            path.write_text(text)


def work_dir(spec: BuildSpec) -> Path:
    """A scratch folder of this attempt's own: an attempt never writes where another did."""
    return spec.output.parent / f".{spec.output.stem}.work-{os.getpid()}-{secrets.token_hex(4)}"


def stale_work_dirs(spec: BuildSpec) -> list[Path]:
    """Scratch folders of earlier attempts at this output (killed with the supervisor)."""
    return sorted(spec.output.parent.glob(f".{spec.output.stem}.work*"))


def prepare_feeds(spec: BuildSpec, notes: list[str]) -> list[PreparedFeed]:
    """Probe every segment (in parallel: a long booking has hundreds) and prune bad ones."""
    all_paths = [p for f in spec.feeds for p in f.segments]
    with ThreadPoolExecutor(max_workers=4) as pool:
        probed = dict(zip(all_paths, pool.map(_probe_segment, all_paths), strict=True))
    prepared: list[PreparedFeed] = []
    for feed in spec.feeds:
        good: list[Segment] = []
        for path in feed.segments:
            result = probed[path]
            if isinstance(result, str):
                notes.append(f"camera {feed.camera}: skipped unreadable {path.name} ({result})")
                continue
            good.append(result)
            if path.suffix == ".ts" and _torn(path):
                # What a power cut leaves: the last write cut mid-packet. The demuxer drops the
                # torn packet and the rest plays; the history should still say so.
                notes.append(f"camera {feed.camera}: {path.name} ends mid-packet (power cut?); "
                             "built from its playable part")
        if not good:
            why = "no segments" if not feed.segments else "no readable segment"
            notes.append(f"camera {feed.camera} has no video ({why})")
            continue
        declared, delay = _declared_durations(feed, good)
        known = feed.started_at is not None
        origin = (feed.started_at or 0.0) + delay
        prepared.append(PreparedFeed(feed, good, declared, origin, known))
    return prepared


def align_feeds(spec: BuildSpec, feeds: list[PreparedFeed], notes: list[str]) -> None:
    """Set each feed's skip (pre-roll to cut) and lead (black to add) against the anchor."""
    known = [f.origin for f in feeds if f.known_start]
    if spec.start_at is not None:
        anchor = spec.start_at
    elif known:
        anchor = min(known)
    else:
        anchor = 0.0
    for f in feeds:
        rel = f.origin - anchor if f.known_start else 0.0
        if not f.known_start and spec.start_at is not None:
            notes.append(f"camera {f.feed.camera}: no start time, assumed to start on time")
        f.skip, f.lead = (-rel, 0.0) if rel < 0 else (0.0, rel)
        f.available = max(0.0, f.length - f.skip)


def recording_length(spec: BuildSpec, feeds: list[PreparedFeed]) -> float:
    """The recording's length: the longest feed (the others are padded), capped by the booking."""
    length = max((f.lead + f.available for f in feeds if f.available > 0), default=0.0)
    return min(length, spec.duration) if spec.duration is not None else length


def layout_size(layout: str, n: int, w: int, h: int) -> tuple[int, int]:
    if layout == "side_by_side":
        return w * n, h
    if layout == "stacked":
        return w, h * n
    return w, h


def even_px(value: float) -> int:
    return max(2, round(value / 2) * 2)


def place_overlays(
    overlays: list[tuple[Overlay, int, int]], out_w: int, out_h: int
) -> list[tuple[Overlay, int, int, int, int]]:
    """x, y, w, h of each logo; logos sharing a position form one row, side by side."""
    placed: list[tuple[Overlay, int, int, int, int]] = []
    for position in POSITIONS:
        group = [(o, iw, ih) for o, iw, ih in overlays if o.position == position]
        if not group:
            continue
        margin = min(group[0][0].margin, out_w // 8, out_h // 8)
        widths = [o.width_frac * out_w for o, _, _ in group]
        room = out_w - 2 * margin - margin * (len(group) - 1)
        if sum(widths) > room:  # too many or too wide for one row: shrink them all alike
            widths = [w * room / sum(widths) for w in widths]
        sizes = []
        for (_, iw, ih), wf in zip(group, widths, strict=True):
            w = max(2, int(wf) // 2 * 2)
            sizes.append((w, min(max(2, int(w * ih / iw) // 2 * 2), (out_h - 2 * margin) // 2 * 2)))
        row_w = sum(w for w, _ in sizes) + margin * (len(sizes) - 1)
        if position.endswith("left") or position == "left":
            x = margin
        elif position.endswith("right") or position == "right":
            x = out_w - margin - row_w
        else:
            x = (out_w - row_w) // 2
        for (o, _, _), (w, h) in zip(group, sizes, strict=True):
            if position.startswith("top"):
                y = margin
            elif position.startswith("bottom"):
                y = out_h - margin - h
            else:
                y = (out_h - h) // 2
            placed.append((o, max(0, x), max(0, y), w, h))
            x += w + margin
    return placed


def intro_seconds(duration: float, fps: float) -> float:
    frames = max(1, round(duration * fps)) if fps > 0 else 1
    return frames / fps if fps > 0 else duration
