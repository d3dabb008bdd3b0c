"""Cutting a replay clip out of a finished video, re-encoding as little as possible.

Stream copy can only start on a keyframe, and the finished video has one every few seconds.
So a clip [a, b) is made of up to three pieces joined by the concat demuxer:

    head   [a, first keyframe)          re-encoded, frame-exact
    middle [first keyframe, last one)   stream copy, untouched
    tail   [last keyframe, b)           re-encoded, frame-exact (copied when b is a cut point)

The edges are encoded with the video's own H.264 parameters (read from its headers and its
x264 options, as the builder's fast path does for the intro), so the pieces share one SPS/PPS
and the MP4 plays as one stream. When that is impossible (a hardware encoder's stream, no
keyframe inside the clip) the whole clip is re-encoded: at most a few tens of seconds.

Clips carry no sound: the recording is silent (only the intro has audio, and no clip reaches
into the intro). Every clip is written to a temporary name, checked with ffprobe and only then
renamed into place, like the video itself.
"""

from __future__ import annotations

import itertools
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from controller.drivers.builder.fastpath import (
    _PROFILES,
    _first_access_unit,
    _param_sets,
    _stream_params,
    _x264_params,
)
from controller.drivers.builder.ffmpeg_run import run_ffmpeg, validate
from controller.drivers.builder.spec import BuildError
from controller.drivers.ffprobe import ProbeError, ffprobe
from controller.fileio import durable_replace


@dataclass(frozen=True)
class CutResult:
    path: Path
    duration_s: float
    copied_s: float  # seconds taken over by stream copy (the rest was re-encoded)
    method: str  # "copy" | "smart" (edges re-encoded) | "encode"


@dataclass(frozen=True)
class _Frame:
    pts: float
    key: bool


def _frames(source: Path, start_s: float, end_s: float) -> list[_Frame]:
    """The video packets from a little before `start_s` to a little after `end_s`."""
    lo, hi = max(0.0, start_s - 1.0), end_s + 1.0
    try:
        info = ffprobe(
            source, "-select_streams", "v:0", "-read_intervals", f"{lo:.3f}%{hi:.3f}",
            "-show_entries", "packet=pts_time,flags",
        )  # fmt: skip
    except ProbeError as exc:
        raise BuildError(f"clip source unreadable: {exc}") from None
    frames = []
    for packet in info.get("packets", []):
        pts = packet.get("pts_time")
        if pts in (None, "N/A"):
            continue
        frames.append(_Frame(float(pts), "K" in str(packet.get("flags", ""))))
    return sorted(frames, key=lambda f: f.pts)


def _encoder_args(params: dict[str, object] | None, preset: str, crf: int) -> list[str]:
    args = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]
    if params is None or not params.get("x264"):
        return [*args, "-preset", preset, "-crf", str(crf)]
    profile = _PROFILES.get(str(params["profile"]))
    if profile:
        args += ["-profile:v", profile]
    level = int(params["level"] or 0)  # type: ignore[call-overload]
    if level > 0:
        args += ["-level", str(level)]
    colours = params["color"]
    assert isinstance(colours, list)
    for opt, value in zip(
        ("-color_range", "-colorspace", "-color_trc", "-color_primaries"), colours, strict=True
    ):
        if value and value != "unknown":
            args += [opt, str(value)]
    return [*args, "-x264-params", _x264_params(str(params["x264"]), bool(params["cfr"]))]


def cut_clip(
    source: Path,
    start_s: float,
    end_s: float,
    output: Path,
    *,
    preset: str = "veryfast",
    crf: int = 23,
    stop: threading.Event | None = None,
) -> CutResult:
    """Write the frames of `source` shown in [start_s, end_s) to `output` (an MP4)."""
    frames = _frames(source, start_s, end_s)
    if not frames:
        raise BuildError(f"{source.name} has no frames around {start_s:.1f} s")
    fd = _frame_duration(frames)
    chosen = [f for f in frames if start_s - fd / 2 <= f.pts < end_s - fd / 2]
    if not chosen:
        raise BuildError(f"{source.name} has no frames in {start_s:.1f}-{end_s:.1f} s")
    after = [f for f in frames if f.pts >= end_s - fd / 2]
    try:
        probe = ffprobe(source, "-show_streams", "-select_streams", "v:0")
        stream = probe["streams"][0]
        width, height = int(stream["width"]), int(stream["height"])
    except (ProbeError, KeyError, IndexError, ValueError) as exc:
        raise BuildError(f"clip source unreadable: {exc}") from None
    work = output.parent / f".{output.stem}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    temp = work / f"{output.stem}.part.mp4"
    expected = len(chosen) * fd
    try:
        copied, method = _smart(source, chosen, after, fd, work, temp, preset, crf, stop)
        try:
            validate(temp, expected, width, height, tolerance=max(0.25, 3 * fd))
        except BuildError:
            if method == "encode":
                raise
            # A join the decoder does not accept: the slow way, which always works.
            copied, method = _encode_all(source, chosen, fd, temp, preset, crf, stop)
            validate(temp, expected, width, height, tolerance=max(0.25, 3 * fd))
        durable_replace(temp, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return CutResult(output, round(expected, 3), round(copied, 3), method)


def _frame_duration(frames: list[_Frame]) -> float:
    steps = sorted(b.pts - a.pts for a, b in itertools.pairwise(frames) if b.pts > a.pts)
    return steps[len(steps) // 2] if steps else 1 / 30


def _smart(
    source: Path,
    chosen: list[_Frame],
    after: list[_Frame],
    fd: float,
    work: Path,
    temp: Path,
    preset: str,
    crf: int,
    stop: threading.Event | None,
) -> tuple[float, str]:
    keys = [i for i, f in enumerate(chosen) if f.key]
    params = _stream_params(source)
    # The tail can be copied too when the clip ends where a new GOP starts (or the video ends).
    clean_end = not after or after[0].key
    if not keys or params is None or not params.get("x264"):
        return _encode_all(source, chosen, fd, temp, preset, crf, stop)
    first = keys[0]
    last = len(chosen) if clean_end else keys[-1]
    if last <= first:
        return _encode_all(source, chosen, fd, temp, preset, crf, stop)
    pieces: list[Path] = []
    encoder = _encoder_args(params, preset, crf)
    if first > 0:
        head = work / "head.ts"
        _encode_piece(source, chosen[0].pts, first, fd, encoder, head, stop)
        pieces.append(head)
    middle = work / "middle.ts"
    argv = ["ffmpeg", "-hide_banner", "-ss", f"{chosen[first].pts + min(0.001, fd / 4):.6f}"]
    argv += ["-i", str(source), "-map", "0:v:0", "-c", "copy", "-frames:v", str(last - first)]
    argv += ["-f", "mpegts", "-y", str(middle)]
    run_ffmpeg(argv, (last - first) * fd, lambda _s: None, stop)
    pieces.append(middle)
    if last < len(chosen):
        tail = work / "tail.ts"
        _encode_piece(source, chosen[last].pts, len(chosen) - last, fd, encoder, tail, stop)
        pieces.append(tail)
    # Edges whose parameter sets differ from the copied middle would decode as garbage.
    want = params["param_sets"]
    for piece in pieces:
        if piece is middle:
            continue
        got = _first_access_unit(piece)
        if got is None or _param_sets(got[0]).hex() != want:
            return _encode_all(source, chosen, fd, temp, preset, crf, stop)
    listing = work / "pieces.ffconcat"
    listing.write_text("ffconcat version 1.0\n" + "".join(f"file '{p.name}'\n" for p in pieces))
    argv = ["ffmpeg", "-hide_banner", "-f", "concat", "-safe", "0", "-i", str(listing)]
    argv += ["-map", "0:v:0", "-c", "copy", "-movflags", "+faststart", "-f", "mp4"]
    argv += ["-y", str(temp)]
    run_ffmpeg(argv, len(chosen) * fd, lambda _s: None, stop)
    copied = (last - first) * fd
    return copied, "copy" if len(pieces) == 1 else "smart"


def _encode_piece(
    source: Path,
    start: float,
    count: int,
    fd: float,
    encoder: list[str],
    out: Path,
    stop: threading.Event | None,
) -> None:
    # Input seeking while decoding is frame-exact: frames before `start` are decoded and
    # dropped. A third of a frame early, so that rounding never loses the first one.
    argv = ["ffmpeg", "-hide_banner", "-ss", f"{max(0.0, start - fd / 3):.6f}"]
    argv += ["-i", str(source), "-map", "0:v:0", "-an", "-frames:v", str(count), *encoder]
    argv += ["-f", "mpegts", "-y", str(out)]
    run_ffmpeg(argv, count * fd, lambda _s: None, stop)


def _encode_all(
    source: Path,
    chosen: list[_Frame],
    fd: float,
    temp: Path,
    preset: str,
    crf: int,
    stop: threading.Event | None,
) -> tuple[float, str]:
    argv = ["ffmpeg", "-hide_banner", "-ss", f"{max(0.0, chosen[0].pts - fd / 3):.6f}"]
    argv += ["-i", str(source), "-map", "0:v:0", "-an", "-frames:v", str(len(chosen))]
    argv += [*_encoder_args(None, preset, crf), "-movflags", "+faststart", "-f", "mp4"]
    argv += ["-y", str(temp)]
    run_ffmpeg(argv, len(chosen) * fd, lambda _s: None, stop)
    return 0.0, "encode"
