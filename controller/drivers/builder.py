"""The video builder: a booking's raw camera segments -> one finished, validated MP4.

One ffmpeg process, one filter graph, one encode (the seed system re-encoded the whole video
once per step: merge, then intro, then logo). The graph is built with ffmpeg-python, one
function per stage:

    inputs   each camera's segments joined by the concat demuxer (no re-encode), the unreadable
             ones pruned first; gaps (a lost segment, the downtime between two runs after a
             crash) kept as declared durations so the cameras stay in sync
    align    pre-roll trimmed, feeds aligned on the booking start, the shorter padded in black
    layout   side_by_side / stacked / pip / single / separate, with per-camera rotation
    overlay  venue logo, user logo, sponsors; the ones sharing a position sit side by side
    intro    normalised to the output (size, fps, SAR, pixel format) and concatenated in front
    encode   H.264 yuv420p +faststart

When nothing has to be drawn on the recording (layout single or separate, no overlay, no
rotation) there is a faster way: the intro alone is encoded to the recording's exact H.264
parameters (cached in the media dir) and joined to the segments by stream copy, so the
recording is never re-encoded: what a Raspberry Pi 5, which has no H.264 encoder, needs.

Every output is written to a temporary name, checked with ffprobe (video stream, duration,
size) and only then renamed into place: a broken file is never what gets uploaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ffmpeg

from controller.drivers.media import ProbeError, ffprobe, video_stream

log = logging.getLogger("ezrec.builder")

if TYPE_CHECKING:
    from controller.config import Settings

LAYOUTS = ("side_by_side", "stacked", "pip", "single", "separate")
POSITIONS = (
    "top_left", "top", "top_right", "left", "right", "bottom_left", "bottom", "bottom_right"
)  # fmt: skip
SEGMENT_SUFFIXES = (".ts", ".mp4", ".m4s", ".mkv")
MAX_GAP_S = 6 * 3600.0  # a "gap" longer than this is a clock or timestamp error, not downtime
STOP_GRACE_S = 5.0  # how long ffmpeg gets to finish cleanly after 'q' before it is killed
_SEGMENT_NAME = re.compile(r"^(\d+)-(\d+)$")
_PROFILES = {"baseline": "baseline", "constrained baseline": "baseline", "main": "main"}
_PROFILES |= {"high": "high"}
_COLOR_KEYS = ("color_range", "color_space", "color_transfer", "color_primaries")

MISMATCH = "the intro cannot be encoded with the recording's H.264 parameters"

ProgressFn = Callable[[float], None]


# -- public data ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Feed:
    """One camera's recording: its segments in time order, possibly from several runs."""

    camera: int
    segments: list[Path]
    started_at: float | None  # wall-clock epoch of the first frame (from the first run)
    rotation: int = 0  # 0/90/180/270, clockwise
    # (run, started_at) for every run with a manifest: the downtime between runs is kept.
    run_starts: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Overlay:
    path: Path  # a cached, checked PNG (alpha) from the media cache
    name: str  # "venue_logo", "user_logo", "sponsor1".."sponsor3"
    position: str  # one of POSITIONS
    width_frac: float = 0.12  # logo width relative to the output frame width
    margin: int = 24
    opacity: float = 1.0


@dataclass
class BuildSpec:
    booking_id: str
    feeds: list[Feed]
    output: Path  # for layout "separate": <stem>-cam<N>.mp4 next to it
    layout: str
    width: int  # per-camera size every feed is normalised to
    height: int
    fps: int
    start_at: float | None = None  # booking start (epoch): the pre-roll before it is cut
    duration: float | None = None  # booking length (s): the video never exceeds it
    intro: Path | None = None
    overlays: list[Overlay] = field(default_factory=list)
    encoder: str = "libx264"
    preset: str = "veryfast"
    crf: int = 23
    bitrate_kbps: int | None = None  # for encoders without CRF (h264_v4l2m2m)
    cache_dir: Path | None = None  # where re-encoded intros are kept (the media dir)
    fast_path: bool = True  # allow the stream-copy path when nothing is drawn on the recording


@dataclass
class BuildResult:
    outputs: list[Path]
    duration_s: float  # of the first output, intro included
    width: int
    height: int
    notes: list[str]  # degradations, for the booking's history
    fast_path: bool = False
    elapsed_s: float = 0.0


class BuildError(Exception):
    """The build failed; str(exc) is the reason stored as the booking's last_error."""


# -- inputs: raw dir -> feeds --------------------------------------------------------------
def feeds_from_raw_dir(raw_dir: Path, rotations: Sequence[int] = ()) -> list[Feed]:
    """The feeds of a booking's raw dir (``cam<N>/<run>-<seq>.ts`` + ``run-<run>.json``)."""
    feeds: list[Feed] = []
    if not raw_dir.is_dir():
        return feeds
    cams = [p for p in raw_dir.iterdir() if p.is_dir() and re.fullmatch(r"cam\d+", p.name)]
    for cam_dir in sorted(cams, key=lambda p: int(p.name[3:])):
        camera = int(cam_dir.name[3:])
        segments = sorted(
            p for p in cam_dir.iterdir() if p.suffix in SEGMENT_SUFFIXES and p.is_file()
        )
        run_starts: list[tuple[int, float]] = []
        for manifest in sorted(cam_dir.glob("run-*.json")):
            try:
                data = json.loads(manifest.read_text())
                run_starts.append((int(data["run"]), float(data["started_at"])))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a manifest without a start only costs the alignment of that run
        run_starts.sort()
        first_run = _run_of(segments[0]) if segments else None
        started = dict(run_starts).get(first_run) if first_run is not None else None
        rotation = int(rotations[camera]) if camera < len(rotations) else 0
        feeds.append(Feed(camera, segments, started, rotation, tuple(run_starts)))
    return feeds


def spec_from_settings(
    settings: Settings,
    booking_id: str,
    feeds: list[Feed],
    output: Path,
    start_at: float | None,
    duration: float | None,
    intro: Path | None,
    overlays: list[Overlay],
) -> BuildSpec:
    """A BuildSpec with the layout, size and encoder the settings ask for."""
    wide = settings.layout in ("side_by_side", "stacked")
    kbps = settings.camera_bitrate_kbps * (settings.cameras if wide else 1)
    return BuildSpec(
        booking_id=booking_id,
        feeds=[replace(f, rotation=settings.rotation_for(f.camera)) for f in feeds],
        output=output,
        layout=settings.layout,
        width=settings.width,
        height=settings.height,
        fps=settings.fps,
        start_at=start_at,
        duration=duration,
        intro=intro,
        overlays=overlays,
        encoder=settings.video_encoder,
        preset=settings.x264_preset,
        crf=settings.crf,
        bitrate_kbps=kbps,
        cache_dir=settings.media_dir,
    )


def overlays_from_settings(
    settings: Settings,
    venue_logo: Path | None = None,
    user_logo: Path | None = None,
    sponsors: Sequence[Path | None] = (),
) -> list[Overlay]:
    """The five overlay slots of the seed system, placed where the settings say."""
    common = {
        "width_frac": settings.logo_width,
        "margin": settings.logo_margin,
        "opacity": settings.logo_opacity,
    }
    out: list[Overlay] = []
    if venue_logo is not None:
        out.append(Overlay(venue_logo, "venue_logo", settings.logo_position, **common))
    if user_logo is not None:
        out.append(Overlay(user_logo, "user_logo", settings.user_logo_position, **common))
    for i, sponsor in enumerate(list(sponsors)[:3], start=1):
        if sponsor is not None:
            out.append(Overlay(sponsor, f"sponsor{i}", settings.sponsor_position, **common))
    return out


def output_paths(spec: BuildSpec, cameras: Iterable[int] | None = None) -> list[Path]:
    """Where the finished video(s) go: one file, or one per camera for layout separate."""
    if spec.layout != "separate":
        return [spec.output]
    cams = list(cameras) if cameras is not None else [f.camera for f in spec.feeds]
    return [spec.output.with_name(f"{spec.output.stem}-cam{c}{spec.output.suffix}") for c in cams]


# -- probing -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Segment:
    path: Path
    run: int
    seq: int
    start: float  # first timestamp in the file (s)
    duration: float
    width: int
    height: int
    fps: float
    codec: str


@dataclass
class _PreparedFeed:
    feed: Feed
    segments: list[_Segment]
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
class _Media:
    path: Path
    width: int
    height: int
    duration: float
    has_audio: bool


def _run_of(path: Path) -> int:
    match = _SEGMENT_NAME.match(path.stem)
    return int(match.group(1)) if match else 0


def _rate(text: str | None) -> float:
    try:
        num, _, den = (text or "0/1").partition("/")
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


def _probe_segment(path: Path) -> _Segment | str:
    """A segment's timing and size, or why it cannot be used."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
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
    match = _SEGMENT_NAME.match(path.stem)
    run, seq = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    fps = _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")) or 0.0
    return _Segment(
        path, run, seq, start, duration, int(stream["width"]), int(stream["height"]), fps,
        str(stream.get("codec_name", "")),
    )  # fmt: skip


def _probe_media(path: Path) -> _Media | str:
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
    return _Media(path, int(stream["width"]), int(stream["height"]), duration, has_audio)


def _declared_durations(feed: Feed, segments: list[_Segment]) -> tuple[list[float], float]:
    """Per-segment durations that include the gap after each, and the first segment's delay.

    Within one run the segment muxer keeps timestamps continuous, so a pruned or lost segment
    shows as a jump in start times; between runs the manifests' wall-clock starts give the
    downtime. Declaring these gaps to the concat demuxer leaves a hole in the timestamps that
    the fps filter fills (a frozen frame), so the camera stays in sync with the others.
    """
    starts = dict(feed.run_starts)
    typical = statistics.median(s.duration for s in segments)
    declared: list[float] = []
    first_of_run: dict[int, _Segment] = {}
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
    seqs = [
        int(m.group(2))
        for p in feed.segments
        if (m := _SEGMENT_NAME.match(p.stem)) and int(m.group(1)) == run
    ]
    return min(seqs, default=0)


# -- the plan: everything decided before ffmpeg runs --------------------------------------
@dataclass
class _Job:
    """One ffmpeg run: its argv, the files it writes and what they must look like."""

    argv: list[str]
    outputs: list[tuple[Path, Path]]  # (temp, final): validated, then renamed into place
    expected_s: float
    width: int
    height: int
    after: Callable[[], None] | None = None  # e.g. check and adopt a cached intro


@dataclass
class _Plan:
    spec: BuildSpec
    layout: str
    feeds: list[_PreparedFeed]
    intro: _Media | None
    overlays: list[tuple[Overlay, int, int, int, int]]  # overlay, x, y, w, h
    recording_s: float
    out_w: int
    out_h: int
    work: Path
    lists: dict[Path, str] = field(default_factory=dict)
    scratch: list[Path] = field(default_factory=list)  # removed whatever happens
    jobs: list[_Job] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fast: bool = False

    def write_inputs(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        for path, text in self.lists.items():
            path.write_text(text)


def _work_dir(spec: BuildSpec) -> Path:
    return spec.output.parent / f".{spec.output.stem}.work"


def _prepare_feeds(spec: BuildSpec, notes: list[str]) -> list[_PreparedFeed]:
    """Probe every segment (in parallel: a long booking has hundreds) and prune bad ones."""
    all_paths = [p for f in spec.feeds for p in f.segments]
    with ThreadPoolExecutor(max_workers=4) as pool:
        probed = dict(zip(all_paths, pool.map(_probe_segment, all_paths), strict=True))
    prepared: list[_PreparedFeed] = []
    for feed in spec.feeds:
        good: list[_Segment] = []
        for path in feed.segments:
            result = probed[path]
            if isinstance(result, str):
                notes.append(f"camera {feed.camera}: skipped unreadable {path.name} ({result})")
            else:
                good.append(result)
        if not good:
            why = "no segments" if not feed.segments else "no readable segment"
            notes.append(f"camera {feed.camera} has no video ({why})")
            continue
        declared, delay = _declared_durations(feed, good)
        known = feed.started_at is not None
        origin = (feed.started_at or 0.0) + delay
        prepared.append(_PreparedFeed(feed, good, declared, origin, known))
    return prepared


def _align(spec: BuildSpec, feeds: list[_PreparedFeed], notes: list[str]) -> None:
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


def _length(spec: BuildSpec, feeds: list[_PreparedFeed]) -> float:
    """The recording's length: the longest feed (the others are padded), capped by the booking."""
    length = max((f.lead + f.available for f in feeds if f.available > 0), default=0.0)
    return min(length, spec.duration) if spec.duration is not None else length


def _layout_size(layout: str, n: int, w: int, h: int) -> tuple[int, int]:
    if layout == "side_by_side":
        return w * n, h
    if layout == "stacked":
        return w, h * n
    return w, h


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _place_overlays(
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


def _plan(spec: BuildSpec) -> _Plan:
    if spec.layout not in LAYOUTS:
        raise BuildError(f"unknown layout {spec.layout!r} (one of {', '.join(LAYOUTS)})")
    if spec.width < 16 or spec.height < 16 or spec.fps < 1:
        raise BuildError(f"bad output size {spec.width}x{spec.height} at {spec.fps} fps")
    for f in spec.feeds:
        if f.rotation not in (0, 90, 180, 270):
            raise BuildError(f"camera {f.camera}: rotation {f.rotation} is not 0/90/180/270")
    notes: list[str] = []
    feeds = _prepare_feeds(spec, notes)
    if not feeds:
        raise BuildError("no camera has any readable video")
    _align(spec, feeds, notes)
    cap = spec.duration if spec.duration is not None else float("inf")
    in_window = [f for f in feeds if f.available > 0 and f.lead < cap]
    for f in feeds:
        if f not in in_window:
            notes.append(f"camera {f.feed.camera} has no video inside the booking")
    if not in_window:
        raise BuildError("no recorded video inside the booking window")
    feeds = in_window

    layout = spec.layout
    if layout in ("side_by_side", "stacked", "pip") and len(feeds) < 2:
        notes.append(f"only camera {feeds[0].feed.camera} has video: single layout")
        layout = "single"
    if layout == "single":
        feeds = feeds[:1]
    recording_s = _length(spec, feeds)
    if recording_s < 0.1:
        raise BuildError("no recorded video inside the booking window")
    # The frame follows the cameras that have video: a missing one leaves no black hole.
    out_w, out_h = _layout_size(layout, len(feeds), spec.width, spec.height)

    intro: _Media | None = None
    if spec.intro is not None:
        probed = _probe_media(spec.intro)
        if isinstance(probed, str) or probed.duration <= 0:
            reason = probed if isinstance(probed, str) else "no duration"
            notes.append(f"intro unreadable ({reason}): built without it")
        else:
            intro = probed

    logos: list[tuple[Overlay, int, int]] = []
    for o in spec.overlays:
        if o.position not in POSITIONS:
            raise BuildError(f"{o.name}: unknown position {o.position!r}")
        probed = _probe_media(o.path) if o.path.is_file() else "missing"
        if isinstance(probed, str):
            notes.append(f"{o.name} unreadable ({probed}): built without it")
        else:
            logos.append((o, probed.width, probed.height))
    placed = _place_overlays(logos, out_w, out_h)

    plan = _Plan(spec, layout, feeds, intro, placed, recording_s, out_w, out_h, _work_dir(spec))
    plan.notes = notes
    fast_ok = (
        spec.fast_path
        and layout in ("single", "separate")
        and not placed
        and all(f.feed.rotation == 0 for f in feeds)
    )
    if fast_ok:
        blocker = _fast_path_blocker(plan)
        if blocker is None:
            _plan_fast(plan)
            return plan
        plan.notes.append(f"stream copy impossible ({blocker}): re-encoded")
    _plan_encode(plan)
    return plan


# -- stage: inputs -------------------------------------------------------------------------
def _concat_list(segments: list[_Segment], declared: list[float], inpoint: float | None) -> str:
    lines = ["ffconcat version 1.0"]
    for i, (seg, dur) in enumerate(zip(segments, declared, strict=True)):
        lines.append("file " + _quote(seg.path))
        if i == 0 and inpoint is not None:
            lines.append(f"inpoint {inpoint:.6f}")
            dur -= inpoint - seg.start
        lines.append(f"duration {dur:.6f}")
    return "\n".join(lines) + "\n"


def _quote(path: Path) -> str:
    # ffconcat quoting: single quotes, and a quote inside as '\''.
    return "'" + str(path.resolve()).replace("'", "'\\''") + "'"


def _feed_input(plan: _Plan, f: _PreparedFeed) -> Any:
    listing = plan.work / f"cam{f.feed.camera}.ffconcat"
    plan.lists[listing] = _concat_list(f.segments, f.declared, None)
    return ffmpeg.input(str(listing), f="concat", safe=0)


# -- stage: align + normalise each camera --------------------------------------------------
def _normalised_feed(plan: _Plan, f: _PreparedFeed, w: int, h: int) -> Any:
    spec = plan.spec
    v = _feed_input(plan, f).video.filter("setpts", "PTS-STARTPTS")
    if f.skip > 0:
        v = v.filter("trim", start=round(f.skip, 6)).filter("setpts", "PTS-STARTPTS")
    v = v.filter("fps", fps=spec.fps)
    v = _rotate(v, f.feed.rotation)
    in_w, in_h = (f.height, f.width) if f.feed.rotation in (90, 270) else (f.width, f.height)
    v = _fit(v, in_w, in_h, w, h)
    end_pad = max(0.0, plan.recording_s - f.lead - f.available) + 1.0  # +1 s: rounding slack
    v = v.filter(
        "tpad", start_duration=round(f.lead, 6), stop_mode="add",
        stop_duration=round(end_pad, 6), color="black",
    )  # fmt: skip
    return v.filter("trim", duration=round(plan.recording_s, 6))


def _rotate(v: Any, rotation: int) -> Any:
    if rotation == 90:
        return v.filter("transpose", 1)  # clockwise
    if rotation == 270:
        return v.filter("transpose", 2)
    if rotation == 180:
        return v.filter("hflip").filter("vflip")
    return v


def _fit(v: Any, in_w: int, in_h: int, w: int, h: int) -> Any:
    """Scale into w x h keeping the aspect ratio, black bars where it does not fill."""
    if (in_w, in_h) != (w, h):
        scale = min(w / in_w, h / in_h)
        sw, sh = min(w, _even(in_w * scale)), min(h, _even(in_h * scale))
        v = v.filter("scale", sw, sh)
        if (sw, sh) != (w, h):
            v = v.filter("pad", w, h, (w - sw) // 2, (h - sh) // 2, color="black")
    # Cheap no-ops when they already hold, and they make concat/stack accept every input.
    return v.filter("setsar", "1").filter("format", "yuv420p")


# -- stage: layout -------------------------------------------------------------------------
def _layout(plan: _Plan, streams: list[Any]) -> Any:
    spec = plan.spec
    if plan.layout == "side_by_side":
        return ffmpeg.filter(streams, "hstack", inputs=len(streams))
    if plan.layout == "stacked":
        return ffmpeg.filter(streams, "vstack", inputs=len(streams))
    if plan.layout == "pip":
        main = streams[0]
        margin = max(8, spec.height // 30)
        small_w, small_h = _even(spec.width / 4), _even(spec.height / 4)
        corners = [
            (spec.width - small_w - margin, spec.height - small_h - margin),
            (margin, spec.height - small_h - margin),
            (spec.width - small_w - margin, margin),
        ]
        for small, (x, y) in zip(streams[1:], corners, strict=False):
            main = main.overlay(small.filter("scale", small_w, small_h), x=x, y=y)
        return main
    return streams[0]


# -- stage: overlays -----------------------------------------------------------------------
def _logos(plan: _Plan) -> list[tuple[Any, int, int]]:
    """Each logo scaled, with its opacity, ready to overlay at (x, y)."""
    out = []
    for o, x, y, w, h in plan.overlays:
        # A still PNG is one frame; overlay repeats it (eof_action=repeat), no -loop needed.
        logo = ffmpeg.input(str(o.path)).video.filter("scale", w, h).filter("format", "rgba")
        if o.opacity < 1.0:
            logo = logo.filter("colorchannelmixer", aa=round(o.opacity, 3))
        out.append((logo, x, y))
    return out


def _overlay(v: Any, logos: list[tuple[Any, int, int]]) -> Any:
    for logo, x, y in logos:
        v = v.overlay(logo, x=x, y=y)
    return v


# -- stage: intro --------------------------------------------------------------------------
def _intro(plan: _Plan) -> tuple[Any, Any | None]:
    """The intro normalised to the output frame: (video, audio or None)."""
    intro = plan.intro
    assert intro is not None
    src = ffmpeg.input(str(intro.path))
    iv = src.video.filter("setpts", "PTS-STARTPTS").filter("fps", fps=plan.spec.fps)
    iv = _fit(iv, intro.width, intro.height, plan.out_w, plan.out_h)
    if not intro.has_audio:
        return iv, None
    ia = (
        src.audio.filter("aresample", 48000)
        .filter("aformat", sample_fmts="fltp", channel_layouts="stereo")
        .filter("atrim", duration=round(intro.duration, 6))
    )
    return iv, ia


def _with_intro(
    plan: _Plan, v: Any, iv: Any, ia: Any | None, silence: Any | None
) -> tuple[Any, Any | None]:
    """(video, audio) with the intro in front; audio only when the intro has some."""
    if ia is None or silence is None:
        return ffmpeg.concat(iv, v, v=1, a=0), None
    # The recording is silent: it gets a silent track so the intro's sound can be kept.
    joined = ffmpeg.concat(iv, ia, v, silence, v=1, a=1).node
    return joined[0], joined[1]


def _fanout(stream: Any, n: int, audio: bool = False) -> list[Any]:
    """``n`` copies of a stream (ffmpeg-python needs an explicit split to reuse one)."""
    if n == 1 or stream is None:
        return [stream] * n
    node = stream.asplit() if audio else stream.split()
    return [node[i] for i in range(n)]


# -- stage: encode -------------------------------------------------------------------------
def _encode_args(spec: BuildSpec) -> dict[str, Any]:
    args: dict[str, Any] = {"pix_fmt": "yuv420p", "movflags": "+faststart", "f": "mp4"}
    if spec.encoder == "libx264":
        args |= {"vcodec": "libx264", "preset": spec.preset, "crf": spec.crf}
    else:
        args |= {"vcodec": spec.encoder, "b:v": f"{spec.bitrate_kbps or 8000}k"}
    return args


def _plan_encode(plan: _Plan) -> None:
    """The one-pass graph: every camera -> layout -> overlays -> intro -> one encode."""
    spec = plan.spec
    plan.fast = False
    w, h = spec.width, spec.height
    groups = [[f] for f in plan.feeds] if plan.layout == "separate" else [plan.feeds]
    outs = output_paths(spec, [g[0].feed.camera for g in groups])
    outputs = []
    intro_s = _intro_seconds(plan.intro.duration, spec.fps) if plan.intro else 0.0
    total = intro_s + plan.recording_s
    files: list[tuple[Path, Path]] = []
    # Shared inputs (intro, logos, silence) are built once and split per output.
    n = len(groups)
    logos = [[(copy, x, y) for copy in _fanout(logo, n)] for logo, x, y in _logos(plan)]
    iv = ia = silence = None
    if plan.intro is not None:
        iv, ia = _intro(plan)
        if ia is not None:
            src = ffmpeg.input(
                "anullsrc=r=48000:cl=stereo", f="lavfi", t=round(plan.recording_s, 6)
            )
            silence = src.audio
    ivs, ias, silences = _fanout(iv, n), _fanout(ia, n, True), _fanout(silence, n, True)
    for i, (group, final) in enumerate(zip(groups, outs, strict=True)):
        v = _layout(plan, [_normalised_feed(plan, f, w, h) for f in group])
        v = _overlay(v, [per_output[i] for per_output in logos])
        a = None
        if ivs[i] is not None:
            v, a = _with_intro(plan, v, ivs[i], ias[i], silences[i])
        temp = plan.work / f"{final.stem}.part.mp4"
        streams = [v] if a is None else [v, a]
        extra = {} if a is None else {"acodec": "aac", "b:a": "128k"}
        outputs.append(ffmpeg.output(*streams, str(temp), **_encode_args(spec), **extra))
        files.append((temp, final))
    # One process, one graph, every output (layout separate writes one file per camera).
    argv = ffmpeg.merge_outputs(*outputs).compile(overwrite_output=True)
    argv = [argv[0], "-hide_banner", *argv[1:]]
    plan.jobs.append(_Job(argv, files, total, plan.out_w, plan.out_h))


# -- the fast path: intro re-encoded once, recording joined by stream copy -----------------
def _fast_path_blocker(plan: _Plan) -> str | None:
    for f in plan.feeds:
        codecs = {s.codec for s in f.segments}
        sizes = {(s.width, s.height) for s in f.segments}
        if codecs != {"h264"}:
            return f"camera {f.feed.camera} is {', '.join(sorted(codecs))}, not H.264 alone"
        if len(sizes) > 1:
            return f"camera {f.feed.camera} changes size between segments"
        # A camera restarted with other encoder settings: one MP4 cannot declare both.
        firsts = {s.run: s for s in reversed(f.segments)}.values()
        units = [_first_access_unit(s.path) for s in firsts]
        if any(u is None for u in units):
            return f"camera {f.feed.camera}: H.264 headers unreadable"
        if len({_param_sets(u[0]) for u in units if u is not None}) > 1:
            return f"camera {f.feed.camera} changes H.264 parameters between runs"
    return None


def _keyframes(seg: _Segment) -> list[float]:
    try:
        info = ffprobe(
            seg.path, "-select_streams", "v:0", "-skip_frame", "nokey",
            "-show_entries", "frame=pts_time,best_effort_timestamp_time", "-show_frames",
        )  # fmt: skip
    except ProbeError:
        return []
    times = []
    for frame in info.get("frames", []):
        t = frame.get("pts_time", frame.get("best_effort_timestamp_time"))
        if t not in (None, "N/A"):
            times.append(float(t))
    return sorted(times)


def _plan_fast(plan: _Plan) -> None:
    spec = plan.spec
    plan.fast = True
    outs = output_paths(spec, [f.feed.camera for f in plan.feeds])
    for f, final in zip(plan.feeds, outs, strict=True):
        segments, declared = list(f.segments), list(f.declared)
        # Stream copy can only start on a keyframe: the last one at or before the booking
        # start, so the booking is never cut (up to one GOP of pre-roll is kept).
        skip, cum, inpoint, extra = f.skip, 0.0, None, 0.0
        while segments and cum + declared[0] <= skip and len(segments) > 1:
            cum += declared.pop(0)
            segments.pop(0)
        if skip > cum:
            target = segments[0].start + (skip - cum)
            keys = [k for k in _keyframes(segments[0]) if k <= target + 1e-3]
            if keys:
                inpoint = keys[-1]
                extra = target - inpoint
            else:
                extra = skip - cum  # no keyframe before the target: keep the whole segment
        content = sum(declared) - (inpoint - segments[0].start if inpoint is not None else 0.0)
        keep = min(content, extra + max(0.0, plan.recording_s - f.lead))
        intro_part: list[str] = []
        intro_s = 0.0
        if plan.intro is not None:
            params = _stream_params(segments[0].path)
            if params is None or not 1 <= params["fps"] <= 240:
                _plan_encode_instead(plan, "the recording's H.264 parameters are unreadable")
                return
            try:
                cached, job = _intro_job(plan, params)
            except _ParamMismatch as exc:
                _plan_encode_instead(plan, str(exc))
                return
            if job is not None and all(j.argv != job.argv for j in plan.jobs):
                plan.jobs.append(job)
            # No declared duration: the demuxer reads the intro's own, frame-exact.
            intro_part = ["file " + _quote(cached)]
            intro_s = _intro_seconds(plan.intro.duration, params["fps"])
        listing = plan.work / f"{final.stem}.ffconcat"
        body = _concat_list(segments, declared, inpoint).splitlines()
        plan.lists[listing] = "\n".join([body[0], *intro_part, *body[1:]]) + "\n"
        temp = plan.work / f"{final.stem}.part.mp4"
        total = intro_s + keep
        argv = ["ffmpeg", "-hide_banner", "-f", "concat", "-safe", "0"]
        argv += ["-i", str(listing)]
        if plan.intro is not None and plan.intro.has_audio:
            # Only the intro's few seconds of sound are encoded; the track simply ends there.
            argv += ["-i", str(plan.intro.path), "-map", "0:v:0", "-map", "1:a:0"]
            argv += ["-c:v", "copy", "-c:a", "aac", "-b:a", "128k"]
        else:
            argv += ["-map", "0:v:0", "-c", "copy"]
        argv += ["-t", f"{total:.6f}", "-movflags", "+faststart", "-f", "mp4", "-y", str(temp)]
        plan.jobs.append(_Job(argv, [(temp, final)], total, f.width, f.height))
        if extra > 0.05:
            plan.notes.append(
                f"camera {f.feed.camera}: stream copy starts {extra:.1f} s before the booking "
                "(first keyframe)"
            )


def _plan_encode_instead(plan: _Plan, why: str) -> None:
    plan.jobs.clear()
    plan.lists.clear()
    plan.notes = [n for n in plan.notes if "stream copy starts" not in n]
    plan.notes.append(f"stream copy impossible ({why}): re-encoded")
    _plan_encode(plan)


def _intro_seconds(duration: float, fps: float) -> float:
    frames = max(1, round(duration * fps)) if fps > 0 else 1
    return frames / fps if fps > 0 else duration


def _stream_params(segment: Path) -> dict[str, Any] | None:
    """Everything the intro must share with the recording for a clean H.264 join."""
    try:
        info = ffprobe(segment, "-show_streams", "-select_streams", "v:0")
    except ProbeError:
        return None
    stream = video_stream(info)
    if stream is None:
        return None
    first = _first_access_unit(segment)
    if first is None:
        return None
    raw, trace = first
    options = ""
    at = raw.find(b"x264 - core")
    if at >= 0:
        end = raw.find(b"\x00", at)
        text = raw[at : end if end > 0 else at + 4096].decode("ascii", "replace")
        options = text.partition(" - options: ")[2]
    fixed = re.search(r"fixed_frame_rate_flag\s+\S+\s+=\s+(\d)", trace)
    return {
        "width": int(stream["width"]),
        "height": int(stream["height"]),
        "fps": _rate(stream.get("r_frame_rate")) or _rate(stream.get("avg_frame_rate")),
        "fps_text": stream.get("r_frame_rate") or stream.get("avg_frame_rate"),
        "pix_fmt": stream.get("pix_fmt", "yuv420p"),
        "profile": str(stream.get("profile", "")).lower(),
        "level": int(stream.get("level") or 0),
        "sar": stream.get("sample_aspect_ratio", "1:1"),
        "color": [stream.get(k) for k in _COLOR_KEYS],
        "x264": options,
        "cfr": bool(fixed and fixed.group(1) == "1"),
        "param_sets": _param_sets(raw).hex(),
    }


def _first_access_unit(path: Path) -> tuple[bytes, str] | None:
    """The first H.264 access unit (Annex B) and ffmpeg's trace of its headers."""
    try:
        st = path.stat()
    except OSError:
        return None
    # Keyed on size and mtime: the fast-path checks read the same segment twice per build.
    return _first_access_unit_of(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _first_access_unit_of(path: str, _size: int, _mtime_ns: int) -> tuple[bytes, str] | None:
    cmd = ["ffmpeg", "-nostdin", "-v", "info", "-i", path, "-map", "0:v:0", "-c", "copy"]
    cmd += ["-frames:v", "1", "-bsf:v", "trace_headers", "-f", "h264", "pipe:1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0 or not proc.stdout:
        return None
    return proc.stdout, proc.stderr.decode(errors="replace")


def _nal_units(raw: bytes) -> list[bytes]:
    parts = re.split(rb"\x00\x00\x01", raw)
    return [p.rstrip(b"\x00") for p in parts[1:] if p]


def _param_sets(raw: bytes) -> bytes:
    """The SPS and PPS NAL units, the bytes a decoder must see identical across the join."""
    return b"".join(n for n in _nal_units(raw) if n and n[0] & 0x1F in (7, 8))


_X264_KEYS = {
    # SEI option name -> x264 --param name, for what changes headers or must match anyway.
    "cabac": "cabac", "ref": "ref", "me": "me", "subme": "subme", "psy": "psy",
    "mixed_ref": "mixed-refs", "me_range": "merange", "chroma_me": "chroma-me",
    "trellis": "trellis", "8x8dct": "8x8dct", "fast_pskip": "fast-pskip",
    "sliced_threads": "sliced-threads", "slices": "slices", "nr": "nr",
    "decimate": "dct-decimate", "interlaced": "interlaced", "bluray_compat": "bluray-compat",
    "constrained_intra": "constrained-intra", "bframes": "bframes", "b_pyramid": "b-pyramid",
    "b_adapt": "b-adapt", "b_bias": "b-bias", "direct": "direct", "weightb": "weightb",
    "open_gop": "open-gop", "weightp": "weightp", "keyint": "keyint",
    "keyint_min": "min-keyint", "scenecut": "scenecut", "intra_refresh": "intra-refresh",
    "rc_lookahead": "rc-lookahead", "mbtree": "mbtree", "crf": "crf", "qp": "qp",
    "bitrate": "bitrate", "qcomp": "qcomp", "qpmin": "qpmin", "qpmax": "qpmax",
    "qpstep": "qpstep", "ip_ratio": "ipratio", "pb_ratio": "pbratio",
    "vbv_maxrate": "vbv-maxrate", "vbv_bufsize": "vbv-bufsize", "stitchable": "stitchable",
}  # fmt: skip


def _x264_params(options: str, cfr: bool) -> str:
    """The SEI's option string turned back into -x264-params (where the names differ)."""
    sei = dict(item.split("=", 1) for item in options.split() if "=" in item)
    out = [f"force-cfr={int(cfr)}"]
    for key, value in sei.items():
        if key in _X264_KEYS:
            out.append(f"{_X264_KEYS[key]}={value}")
    if "deblock" in sei:
        on, _, ab = sei["deblock"].partition(":")
        out.append(f"deblock={ab.replace(':', ',')}" if on == "1" else "no-deblock=1")
    if "deadzone" in sei:
        inter, _, intra = sei["deadzone"].partition(",")
        out += [f"deadzone-inter={inter}", f"deadzone-intra={intra}"]
    if "psy_rd" in sei:
        out.append(f"psy-rd={sei['psy_rd'].replace(':', ',')}")
    if "aq" in sei:
        mode, _, strength = sei["aq"].partition(":")
        out.append(f"aq-mode={mode}" + (f":aq-strength={strength}" if strength else ""))
    if "chroma_qp_offset" in sei:
        # The SEI shows the offset after x264 lowered it for psy-rd/psy-trellis: undo that.
        offset = int(sei["chroma_qp_offset"])
        psy = sei.get("psy") == "1"
        rd, _, trellis_s = sei.get("psy_rd", "0:0").partition(":")
        if psy and int(sei.get("subme", "0")) >= 6 and float(rd) > 0:
            offset += 1 if float(rd) < 0.25 else 2
        if psy and int(sei.get("trellis", "0")) and float(trellis_s or 0) > 0:
            offset += 1 if float(trellis_s) < 0.25 else 2
        out.append(f"chroma-qp-offset={offset}")
    if "threads" in sei and sei.get("sliced_threads") == "1":
        out.append(f"threads={sei['threads']}")  # sliced threads: thread count = slice count
    return ":".join(out)


def _intro_job(plan: _Plan, params: dict[str, Any]) -> tuple[Path, _Job | None]:
    """The cached intro encoded like the recording, and the job making it if it is missing."""
    assert plan.intro is not None
    intro = plan.intro
    cache = plan.spec.cache_dir or plan.work
    source_id = intro.path.name.split(".", 1)[0]
    if not re.fullmatch(r"[0-9a-f]{64}", source_id):
        # Not from the media cache: key on the content so a changed intro is re-encoded.
        source_id = _file_sha256(intro.path)
    key_text = json.dumps({k: v for k, v in params.items()}, sort_keys=True)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    cached = cache / f"{source_id}.intro-{key}.ts"
    mismatch = cached.with_suffix(".mismatch")
    if mismatch.exists():
        raise _ParamMismatch(MISMATCH)
    if cached.is_file() and cached.stat().st_size > 0:
        return cached, None
    w, h, fps = params["width"], params["height"], params["fps_text"]
    chain = (
        f"fps={fps},scale={w}:{h}:force_original_aspect_ratio=decrease,"
        f"pad={w}:{h}:(ow-iw)/2:(oh-ih)/2:color=black,setsar={params['sar'].replace(':', '/')},"
        f"format={params['pix_fmt']}"
    )
    argv = ["ffmpeg", "-hide_banner", "-i", str(intro.path), "-map", "0:v:0"]
    argv += ["-vf", chain, "-c:v", "libx264"]
    profile = _PROFILES.get(params["profile"])
    if profile:
        argv += ["-profile:v", profile]
    if params["level"] > 0:
        argv += ["-level", str(params["level"])]
    for opt, value in zip(
        ("-color_range", "-colorspace", "-color_trc", "-color_primaries"),
        params["color"],
        strict=True,
    ):
        if value and value != "unknown":
            argv += [opt, str(value)]
    if params["x264"]:
        argv += ["-x264-params", _x264_params(params["x264"], params["cfr"])]
    else:
        argv += ["-preset", plan.spec.preset, "-crf", str(plan.spec.crf)]
    cache.mkdir(parents=True, exist_ok=True)
    temp = cache / f".{cached.name}.part"
    plan.scratch.append(temp)
    argv += ["-f", "mpegts", "-y", str(temp)]
    seconds = _intro_seconds(intro.duration, params["fps"])

    def adopt() -> None:
        # Checked before it is cached: a join with other parameter sets would be an MP4 that
        # some players decode as garbage after the intro.
        got = _first_access_unit(temp)
        if got is None or _param_sets(got[0]).hex() != params["param_sets"]:
            temp.unlink(missing_ok=True)
            mismatch.touch()  # remembered: the next booking does not try again
            raise _ParamMismatch(MISMATCH)
        os.replace(temp, cached)

    return cached, _Job(argv, [], seconds, w, h, after=adopt)


class _ParamMismatch(Exception):
    pass


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- public entry points -------------------------------------------------------------------
def command_lines(spec: BuildSpec) -> list[list[str]]:
    """The exact ffmpeg argv(s) ``build`` runs, in order (for ``ezrec build ID --print``).

    The concat lists they name are written into the work dir, so the lines can be pasted.
    """
    plan = _plan(spec)
    plan.write_inputs()
    return [job.argv for job in plan.jobs]


def build(
    spec: BuildSpec,
    on_progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
) -> BuildResult:
    """Build the finished video(s) of ``spec``; raises BuildError with the reason."""
    began = time.monotonic()
    plan = _plan(spec)
    try:
        plan.write_inputs()
        try:
            _run_jobs(plan, on_progress, stop)
        except _ParamMismatch as exc:
            _plan_encode_instead(plan, str(exc))
            plan.write_inputs()
            _run_jobs(plan, on_progress, stop)
        outputs = _finish(plan)
    finally:
        shutil.rmtree(plan.work, ignore_errors=True)
        for path in plan.scratch:
            path.unlink(missing_ok=True)
    if on_progress is not None:
        on_progress(1.0)
    job = next(j for j in plan.jobs if j.outputs)
    return BuildResult(
        outputs, round(job.expected_s, 3), job.width, job.height, plan.notes, plan.fast,
        time.monotonic() - began,
    )  # fmt: skip


def _run_jobs(plan: _Plan, on_progress: ProgressFn | None, stop: threading.Event | None) -> None:
    total = sum(j.expected_s for j in plan.jobs) or 1.0
    done = 0.0
    for job in plan.jobs:

        def report(seconds: float, base: float = done) -> None:
            if on_progress is not None:
                on_progress(min(0.999, (base + seconds) / total))

        _run_ffmpeg(job.argv, job.expected_s, report, stop)
        if job.after is not None:
            job.after()
        done += job.expected_s


def _finish(plan: _Plan) -> list[Path]:
    # Every output is checked before any is renamed: "separate" is all cameras or nothing.
    tolerance = max(0.5, 4 / plan.spec.fps)
    for job in plan.jobs:
        for temp, _ in job.outputs:
            validate(temp, job.expected_s, job.width, job.height, tolerance)
    finals: list[Path] = []
    for job in plan.jobs:
        for temp, final in job.outputs:
            _durable_replace(temp, final)
            finals.append(final)
    return finals


def _durable_replace(temp: Path, final: Path) -> None:
    # fsync before and after the rename: a power cut must leave the old or the new file whole.
    with temp.open("rb") as fh:
        os.fsync(fh.fileno())
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run_ffmpeg(
    argv: list[str],
    expected_s: float,
    report: Callable[[float], None],
    stop: threading.Event | None,
) -> None:
    """Run one ffmpeg with -progress on stdout, stderr drained, stoppable; raise on failure."""
    cmd = [argv[0], "-progress", "pipe:1", "-nostats", *argv[1:]]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C meant for the supervisor must not kill the encode
    )  # fmt: skip
    tail: deque[str] = deque(maxlen=30)

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.decode(errors="replace").rstrip())

    def read_progress() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            if key == "out_time_us" and value.lstrip("-").isdigit():
                try:
                    report(max(0, int(value)) / 1e6 if expected_s > 0 else 0.0)
                except Exception:  # a failing progress callback must never stall the encode
                    log.exception("progress callback failed")

    threads = [threading.Thread(target=t, daemon=True) for t in (drain_stderr, read_progress)]
    for t in threads:
        t.start()
    stopped = False
    while proc.poll() is None:
        if stop is None:
            proc.wait()
        elif stop.wait(0.2):
            stopped = True
            _stop_process(proc)
            break
    proc.wait()
    for t in threads:
        t.join(timeout=5)
    if stopped:
        raise BuildError("stopped")
    if proc.returncode != 0:
        errors = [line for line in tail if line.strip()]
        detail = errors[-1] if errors else "no output"
        raise BuildError(f"ffmpeg failed (exit {proc.returncode}): {detail}")


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    # 'q' lets ffmpeg close its output properly; a signal only if it does not listen.
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"q")
        proc.stdin.close()
    except (OSError, ValueError):
        pass
    for sig, wait in ((None, STOP_GRACE_S), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def validate(
    path: Path, expected_duration: float, width: int, height: int, tolerance: float = 0.5
) -> None:
    """Raise BuildError unless ``path`` is an MP4 with the size and duration expected."""
    try:
        info = ffprobe(path, "-show_format", "-show_streams")
    except ProbeError as exc:
        raise BuildError(f"output unreadable: {exc}") from None
    stream = video_stream(info)
    if stream is None:
        raise BuildError("output has no video stream")
    got_w, got_h = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if (got_w, got_h) != (width, height):
        raise BuildError(f"output is {got_w}x{got_h}, expected {width}x{height}")
    try:
        duration = float(info.get("format", {}).get("duration") or stream.get("duration") or 0)
    except ValueError:
        duration = 0.0
    if abs(duration - expected_duration) > tolerance:
        raise BuildError(
            f"output lasts {duration:.2f} s, expected {expected_duration:.2f} s "
            f"(tolerance {tolerance:.2f} s)"
        )
    # A header can be right about a file whose frames are not: decode the first frame.
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-map", "0:v:0"]
    cmd += ["-frames:v", "1", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BuildError(f"output not decodable: {lines[-1] if lines else 'unknown error'}")
