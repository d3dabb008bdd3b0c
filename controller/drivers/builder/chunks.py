"""One chunk of a finished video: a window of the recording, encoded on its own.

The recording's timeline (0 = the booking's start, right after the intro) is cut into windows
of `BuildSpec.chunk_s` seconds, on frame boundaries. A window is encoded by the same stages as
the one-pass graph (align, layout, overlays; `graph`), reading only the segments that cover
it, and written as a fragmented MP4 that `fmp4` joins to the others by stream copy. x264's
``stitchable`` option keeps its headers independent of the content, so every chunk and the
intro (encoded once with the same options) carry the same parameter sets and join cleanly.

A chunk's name is the hash of everything it is made from (the segments and their sizes, where
each camera sits in the window, the layout, the logos, the encoder settings): a chunk on disk
under its name is the chunk that would be made again, and anything that changes what it would
show changes its name.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg

from controller.drivers.builder.graph import (
    concat_list,
    draw_logos,
    fanout,
    fit_stream,
    intro_streams,
    layout_streams,
    logo_streams,
    rotate_stream,
    video_codec_args,
)
from controller.drivers.builder.plan import Plan, PreparedFeed, Segment, intro_seconds
from controller.drivers.builder.spec import BuildSpec
from controller.fileio import sha256_file
from controller.recordings import chunk_dir

VERSION = 1  # of the recipe below: a change that alters the bytes must bump it
# bitexact: no encoder version string, so the same inputs give the same bytes on every box.
FRAGMENTED = {
    "movflags": "+frag_keyframe+empty_moov+default_base_moof", "f": "mp4", "fflags": "+bitexact",
}  # fmt: skip
_EPS = 1e-6


def edge_s(fps: int) -> float:
    """How far past a window's edge a camera's segment may start (or before it end) and still
    be left out of that window: under half a frame, the output frame at the edge is the next
    segment's first (or the last one's last) anyway, as the fps filter rounds to the nearest.
    Two cameras started a few milliseconds apart then need one segment each per window: not
    the one before it (a whole segment decoded for one frame) nor, while recording, the one
    after it (a whole segment waited for)."""
    return 0.45 / fps


@dataclass(frozen=True)
class Window:
    index: int
    first: int  # first frame of the recording in it
    last: int  # one past its last frame
    fps: int

    @property
    def start(self) -> float:
        return self.first / self.fps

    @property
    def end(self) -> float:
        return self.last / self.fps

    @property
    def frames(self) -> int:
        return self.last - self.first


def total_frames(seconds: float, fps: int) -> int:
    """The frames the one-pass graph keeps of `seconds` (its trim after fps): the duration in
    microseconds, rescaled to 1/fps rounding half away from zero, as av_rescale_q does
    (Python's round() goes to even, one frame short at every .5)."""
    micros = round(round(seconds, 6) * 1_000_000)
    return max(1, (micros * fps + 500_000) // 1_000_000)


def windows(frames: int, fps: int, chunk_s: int, phase: int = 0) -> list[Window]:
    """The recording's `frames` cut into windows of `chunk_s` seconds, the boundaries `phase`
    frames after multiples of it (the first window and the last may be shorter; a first one
    shorter than a quarter of the others is merged into the second)."""
    size = max(1, chunk_s * fps)
    first = phase % size
    if first < size / 4:
        first += size
    cuts = [0, *range(first, frames, size), frames]
    return [Window(i, a, b, fps) for i, (a, b) in enumerate(itertools.pairwise(cuts)) if b > a]


def phase_of(plan: Plan) -> int:
    """Where the earliest camera's segments begin on the recording's timeline, in frames:
    chunks cut there decode about one segment per camera each, not two, and while recording a
    window is ready as soon as the segments over it close (cut at a later camera's edges, it
    would wait for the earliest one's next segment). Taken from the first segments' own
    lengths, which are the same whether or not the next ones exist yet (a chunk boundary must
    not move between the build while recording and the one after)."""
    fps = plan.spec.fps
    return min(round((f.segments[0].duration - f.skip + f.lead) * fps) for f in plan.feeds)


@dataclass(frozen=True)
class FeedSlice:
    """The part of one camera a window shows."""

    feed: PreparedFeed
    segments: list[Segment]
    declared: list[float]
    shift: float  # recording time of the first listed segment's first frame
    content_start: float  # recording time the camera's picture starts at in the window
    # What fills the window after the listed picture: "clone" (the camera goes on: a hole is
    # a frozen frame, as in the one-pass build) or "add" (it stopped: black).
    stop_mode: str


def content_end(f: PreparedFeed) -> float:
    """Recording time at which a camera's known picture ends."""
    return f.lead + f.available


def feed_slice(f: PreparedFeed, window: Window) -> FeedSlice | None:
    """The segments of `f` that cover `window`, or None when the camera shows nothing in it
    (not started yet, or stopped: black, as in the one-pass build)."""
    a, b = window.start, window.end
    if b <= f.lead + _EPS or a >= content_end(f) - _EPS:
        return None
    # Camera time u (0 = its first kept frame) of the window: t = u - skip + lead.
    u0, u1 = max(0.0, a - f.lead + f.skip), b - f.lead + f.skip
    chosen: list[int] = []
    at, edge = 0.0, edge_s(window.fps)
    for i, span in enumerate(f.declared):
        if at < u1 - edge and at + span > u0 + edge:
            chosen.append(i)
        at += span
    if not chosen:
        return None
    first = chosen[0]
    base = sum(f.declared[:first])
    segments = [f.segments[i] for i in chosen]
    # The last one's own length, not the gap to its successor: the chunk must not depend on
    # whether the next segment has been recorded yet, or every chunk made while recording
    # would be made again once it is.
    declared = [f.declared[i] for i in chosen[:-1]] + [segments[-1].duration]
    shift = base - f.skip + f.lead
    covered = shift + sum(declared) >= b - edge
    ended = b >= content_end(f) - _EPS
    return FeedSlice(
        f, segments, declared, shift, max(a, f.lead), "add" if ended and not covered else "clone"
    )


def _slice_facts(s: FeedSlice | None, camera: int) -> dict[str, Any]:
    if s is None:
        return {"camera": camera, "black": True}
    return {
        "camera": camera,
        "rotation": s.feed.feed.rotation,
        "size": [s.feed.width, s.feed.height],
        "segments": [[seg.path.name, _size(seg.path)] for seg in s.segments],
        "declared": [round(d, 6) for d in s.declared],
        "shift": round(s.shift, 6),
        "start": round(s.content_start, 6),
        "stop_mode": s.stop_mode,
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def chunk_name(plan: Plan, window: Window, slices: list[FeedSlice | None]) -> str:
    facts = {
        "v": VERSION,
        "window": [window.first, window.last, window.fps],
        "layout": plan.layout,
        "frame": [plan.spec.width, plan.spec.height, plan.out_w, plan.out_h],
        "feeds": [_slice_facts(s, f.feed.camera) for s, f in zip(slices, plan.feeds, strict=True)],
        "logos": [[o.path.name, x, y, w, h, o.opacity] for o, x, y, w, h in plan.overlays],
        "codec": codec_args(plan.spec, color_of(plan)),
    }
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    return f"chunk-{window.index:05d}-{digest}.mp4"


def codec_args(spec: BuildSpec, color: dict[str, str] | None = None) -> dict[str, Any]:
    """What every chunk and the intro are encoded with: one set, so that they join. The colour
    description goes into the H.264 headers: the cameras' one for every piece (`color_of`),
    so that an intro tagged otherwise still shares one codec description with them."""
    args = video_codec_args(spec) | {"pix_fmt": "yuv420p"}
    if spec.encoder == "libx264":
        args["x264-params"] = "stitchable=1"
    return args | (color or {})


_COLOR = {"color_primaries": "color_primaries", "color_transfer": "color_trc",
          "color_space": "colorspace", "color_range": "color_range"}  # fmt: skip


def color_of(plan: Plan) -> dict[str, str]:
    """The first camera's colour description as encoder options ("unknown" where it has none:
    then the headers declare none, whatever the intro's file said)."""
    stream = plan.feeds[0].segments[0].color
    return {opt: stream.get(key) or "unknown" for key, opt in _COLOR.items()}


def chunk_argv(
    plan: Plan, window: Window, slices: list[FeedSlice | None], out: Path, lists_dir: Path
) -> tuple[list[str], dict[Path, str]]:
    """The ffmpeg argv encoding `window` to `out`, and the concat lists it reads."""
    spec = plan.spec
    w, h = spec.width, spec.height
    lists: dict[Path, str] = {}
    streams = []
    # A window no camera covers (both started late, say) needs black twice: ffmpeg-python
    # takes two equal inputs for one node, so there is one source, split.
    gaps = sum(s is None for s in slices)
    blacks = iter(fanout(_black(spec, window), gaps)) if gaps else iter(())
    for f, s in zip(plan.feeds, slices, strict=True):
        if s is None:
            streams.append(next(blacks))
            continue
        listing = lists_dir / f"{out.stem}.cam{f.feed.camera}.ffconcat"
        lists[listing] = concat_list(s.segments, s.declared, None)
        v = ffmpeg.input(str(listing), f="concat", safe=0).video
        # Decoded from the first listed segment's start, placed on the recording's timeline,
        # then resampled to the output's frame grid from where the window needs picture.
        v = v.filter("setpts", f"PTS-STARTPTS+{s.shift:.6f}/TB")
        v = v.filter("fps", fps=spec.fps, start_time=round(s.content_start, 6))
        v = v.filter("setpts", "PTS-STARTPTS")
        v = rotate_stream(v, f.feed.rotation)
        rotated = f.feed.rotation in (90, 270)
        in_w, in_h = (f.height, f.width) if rotated else (f.width, f.height)
        v = fit_stream(v, in_w, in_h, w, h)
        v = v.filter(
            "tpad", start_duration=round(s.content_start - window.start, 6),
            stop_mode=s.stop_mode,
            stop_duration=round(window.end - window.start + 1.0, 6), color="black",
        )  # fmt: skip
        streams.append(v.filter("trim", end_frame=window.frames))
    v = draw_logos(layout_streams(plan, streams), logo_streams(plan))
    codec = codec_args(spec, color_of(plan))
    output = ffmpeg.output(v, str(out), an=None, **codec, **FRAGMENTED)
    argv = output.compile(overwrite_output=True)
    return [argv[0], "-hide_banner", *argv[1:]], lists


def _black(spec: BuildSpec, window: Window) -> Any:
    w, h = spec.width, spec.height
    black = ffmpeg.input(
        f"color=c=black:s={w}x{h}:r={spec.fps}", f="lavfi", t=window.end - window.start
    ).video
    return fit_stream(black, w, h, w, h).filter("trim", end_frame=window.frames)


# -- the intro, encoded once per settings --------------------------------------------------
def intro_piece(plan: Plan) -> tuple[Path, tuple[list[str], Path] | None, float]:
    """Where the intro encoded for these chunks is cached, the argv making it and the temp
    file it writes (None when it is cached already), and its length."""
    intro = plan.intro
    assert intro is not None
    spec = plan.spec
    cache = spec.cache_dir or plan.work
    source_id = intro.path.name.split(".", 1)[0]
    if not re.fullmatch(r"[0-9a-f]{64}", source_id):
        source_id = sha256_file(intro.path)  # not from the media cache: keyed on its content
    frames = max(1, round(intro.duration * spec.fps))
    facts = {
        "v": VERSION, "frame": [plan.out_w, plan.out_h, spec.fps], "frames": frames,
        "audio": intro.has_audio, "codec": codec_args(spec, color_of(plan)),
    }  # fmt: skip
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    cached = cache / f"{source_id}.intro-{key}.mp4"
    seconds = intro_seconds(intro.duration, spec.fps)
    if cached.is_file() and cached.stat().st_size > 0:
        return cached, None, seconds
    cache.mkdir(parents=True, exist_ok=True)
    iv, ia = intro_streams(plan)
    iv = iv.filter("trim", end_frame=frames)
    streams = [iv] if ia is None else [iv, ia]
    extra = {} if ia is None else {"acodec": "aac", "b:a": "128k"}
    # Two bookings may need it at once (one recorded, one finished): each writes its own temp.
    temp = cached.with_name(f".{cached.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    codec = codec_args(spec, color_of(plan))
    output = ffmpeg.output(*streams, str(temp), **codec, **extra, **FRAGMENTED)
    argv = output.compile(overwrite_output=True)
    return cached, ([argv[0], "-hide_banner", *argv[1:]], temp), seconds


def chunk_command_lines(plan: Plan) -> list[list[str]]:
    """The argv of the intro (when not cached) and of every chunk, their concat lists written
    into the chunk folder (for ``ezrec build ID --print``)."""
    folder = chunk_dir(plan.spec.output)
    folder.mkdir(parents=True, exist_ok=True)
    lines: list[list[str]] = []
    if plan.intro is not None:
        _, job, _ = intro_piece(plan)
        if job is not None:
            lines.append(job[0])
    seconds = plan.recording_s
    frames = total_frames(seconds, plan.spec.fps)
    for w in windows(frames, plan.spec.fps, plan.spec.chunk_s, phase_of(plan)):
        slices = [feed_slice(f, w) for f in plan.feeds]
        out = folder / chunk_name(plan, w, slices)
        argv, lists = chunk_argv(plan, w, slices, out, folder)
        for path, text in lists.items():
            path.write_text(text)
        lines.append(argv)
    return lines
