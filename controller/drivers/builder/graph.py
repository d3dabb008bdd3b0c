"""The one-pass filter graph, one function per stage: inputs, align, layout, overlays,
intro, encode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ffmpeg

from controller.drivers.builder.plan import (
    Job,
    Plan,
    PreparedFeed,
    Segment,
    even_px,
    intro_seconds,
)
from controller.drivers.builder.spec import (
    BuildSpec,
    Timeline,
    output_paths,
)


# -- stage: inputs -------------------------------------------------------------------------
def concat_list(segments: list[Segment], declared: list[float], inpoint: float | None) -> str:
    lines = ["ffconcat version 1.0"]
    for i, (seg, dur) in enumerate(zip(segments, declared, strict=True)):
        lines.append("file " + quote_path(seg.path))
        if i == 0 and inpoint is not None:
            lines.append(f"inpoint {inpoint:.6f}")
            dur -= inpoint - seg.start
        lines.append(f"duration {dur:.6f}")
    return "\n".join(lines) + "\n"


def quote_path(path: Path) -> str:
    # ffconcat quoting: single quotes, and a quote inside as '\''.
    return "'" + str(path.resolve()).replace("'", "'\\''") + "'"


def _feed_input(plan: Plan, f: PreparedFeed) -> Any:
    listing = plan.work / f"cam{f.feed.camera}.ffconcat"
    plan.lists[listing] = concat_list(f.segments, f.declared, None)
    return ffmpeg.input(str(listing), f="concat", safe=0)


# -- stage: align + normalise each camera --------------------------------------------------
def _normalised_feed(plan: Plan, f: PreparedFeed, w: int, h: int) -> Any:
    spec = plan.spec
    v = _feed_input(plan, f).video.filter("setpts", "PTS-STARTPTS")
    if f.skip > 0:
        # Shift by the skip, not to the first kept frame: a hole (a restart's downtime) that
        # spans the cut stays a hole, which fps below fills with the first kept frame.
        skip = round(f.skip, 6)
        v = v.filter("trim", start=skip).filter("setpts", f"PTS-{skip}/TB")
    v = v.filter("fps", fps=spec.fps, start_time=0)
    v = rotate_stream(v, f.feed.rotation)
    in_w, in_h = (f.height, f.width) if f.feed.rotation in (90, 270) else (f.width, f.height)
    v = fit_stream(v, in_w, in_h, w, h)
    end_pad = max(0.0, plan.recording_s - f.lead - f.available) + 1.0  # +1 s: rounding slack
    v = v.filter(
        "tpad", start_duration=round(f.lead, 6), stop_mode="add",
        stop_duration=round(end_pad, 6), color="black",
    )  # fmt: skip
    return v.filter("trim", duration=round(plan.recording_s, 6))


def rotate_stream(v: Any, rotation: int) -> Any:
    if rotation == 90:
        return v.filter("transpose", 1)  # clockwise
    if rotation == 270:
        return v.filter("transpose", 2)
    if rotation == 180:
        return v.filter("hflip").filter("vflip")
    return v


def fit_stream(v: Any, in_w: int, in_h: int, w: int, h: int) -> Any:
    """Scale into w x h keeping the aspect ratio, black bars where it does not fill."""
    if (in_w, in_h) != (w, h):
        scale = min(w / in_w, h / in_h)
        sw, sh = min(w, even_px(in_w * scale)), min(h, even_px(in_h * scale))
        v = v.filter("scale", sw, sh)
        if (sw, sh) != (w, h):
            v = v.filter("pad", w, h, (w - sw) // 2, (h - sh) // 2, color="black")
    # Cheap no-ops when they already hold, and they make concat/stack accept every input.
    return v.filter("setsar", "1").filter("format", "yuv420p")


# -- stage: layout -------------------------------------------------------------------------
def layout_streams(plan: Plan, streams: list[Any]) -> Any:
    spec = plan.spec
    if plan.layout == "side_by_side":
        return ffmpeg.filter(streams, "hstack", inputs=len(streams))
    if plan.layout == "stacked":
        return ffmpeg.filter(streams, "vstack", inputs=len(streams))
    if plan.layout == "pip":
        main = streams[0]
        margin = max(8, spec.height // 30)
        small_w, small_h = even_px(spec.width / 4), even_px(spec.height / 4)
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
def logo_streams(plan: Plan) -> list[tuple[Any, int, int]]:
    """Each logo scaled, with its opacity, ready to overlay at (x, y)."""
    out = []
    for o, x, y, w, h in plan.overlays:
        # A still PNG is one frame; overlay repeats it (eof_action=repeat), no -loop needed.
        logo = ffmpeg.input(str(o.path)).video.filter("scale", w, h).filter("format", "rgba")
        if o.opacity < 1.0:
            logo = logo.filter("colorchannelmixer", aa=round(o.opacity, 3))
        out.append((logo, x, y))
    return out


def draw_logos(v: Any, logos: list[tuple[Any, int, int]]) -> Any:
    for logo, x, y in logos:
        v = v.overlay(logo, x=x, y=y)
    return v


# -- stage: intro --------------------------------------------------------------------------
def intro_streams(plan: Plan) -> tuple[Any, Any | None]:
    """The intro normalised to the output frame: (video, audio or None)."""
    intro = plan.intro
    assert intro is not None
    src = ffmpeg.input(str(intro.path))
    iv = src.video.filter("setpts", "PTS-STARTPTS").filter("fps", fps=plan.spec.fps)
    iv = fit_stream(iv, intro.width, intro.height, plan.out_w, plan.out_h)
    if not intro.has_audio:
        return iv, None
    ia = (
        src.audio.filter("aresample", 48000)
        .filter("aformat", sample_fmts="fltp", channel_layouts="stereo")
        .filter("atrim", duration=round(intro.duration, 6))
    )
    return iv, ia


def _with_intro(
    plan: Plan, v: Any, iv: Any, ia: Any | None, silence: Any | None
) -> tuple[Any, Any | None]:
    """(video, audio) with the intro in front; audio only when the intro has some."""
    if ia is None or silence is None:
        return ffmpeg.concat(iv, v, v=1, a=0), None
    # The recording is silent: it gets a silent track so the intro's sound can be kept.
    joined = ffmpeg.concat(iv, ia, v, silence, v=1, a=1).node
    return joined[0], joined[1]


def fanout(stream: Any, n: int, audio: bool = False) -> list[Any]:
    """``n`` copies of a stream (ffmpeg-python needs an explicit split to reuse one)."""
    if n == 1 or stream is None:
        return [stream] * n
    node = stream.asplit() if audio else stream.split()
    return [node[i] for i in range(n)]


# -- stage: encode -------------------------------------------------------------------------
def encode_args(spec: BuildSpec) -> dict[str, Any]:
    args: dict[str, Any] = {"pix_fmt": "yuv420p", "movflags": "+faststart", "f": "mp4"}
    return args | video_codec_args(spec)


def video_codec_args(spec: BuildSpec) -> dict[str, Any]:
    """The encoder and its rate control. A ceiling caps the bitrate over any 1 s (x264's VBV,
    buffer = one second at the ceiling): a chunk, which starts with the buffer 90 % full, may
    exceed it by at most 0.9 s worth over its whole length (9 % for 10 s chunks)."""
    cap = spec.max_bitrate_kbps
    if spec.encoder == "libx264":
        args: dict[str, Any] = {"vcodec": "libx264", "preset": spec.preset, "crf": spec.crf}
        if cap:
            args |= {"maxrate": f"{cap}k", "bufsize": f"{cap}k"}
        return args
    rate = min(spec.bitrate_kbps or 8000, cap or 10**9)
    return {"vcodec": spec.encoder, "b:v": f"{rate}k"}


def plan_encode(plan: Plan) -> None:
    """The one-pass graph: every camera -> layout -> overlays -> intro -> one encode."""
    spec = plan.spec
    plan.fast = False
    w, h = spec.width, spec.height
    groups = [[f] for f in plan.feeds] if plan.layout == "separate" else [plan.feeds]
    outs = output_paths(spec, [g[0].feed.camera for g in groups])
    outputs = []
    intro_s = intro_seconds(plan.intro.duration, spec.fps) if plan.intro else 0.0
    total = intro_s + plan.recording_s
    files: list[tuple[Path, Path]] = []
    # Shared inputs (intro, logos, silence) are built once and split per output.
    n = len(groups)
    logos = [[(copy, x, y) for copy in fanout(logo, n)] for logo, x, y in logo_streams(plan)]
    iv = ia = silence = None
    if plan.intro is not None:
        iv, ia = intro_streams(plan)
        if ia is not None:
            src = ffmpeg.input(
                "anullsrc=r=48000:cl=stereo", f="lavfi", t=round(plan.recording_s, 6)
            )
            silence = src.audio
    ivs, ias, silences = fanout(iv, n), fanout(ia, n, True), fanout(silence, n, True)
    for i, (group, final) in enumerate(zip(groups, outs, strict=True)):
        v = layout_streams(plan, [_normalised_feed(plan, f, w, h) for f in group])
        v = draw_logos(v, [per_output[i] for per_output in logos])
        a = None
        if ivs[i] is not None:
            v, a = _with_intro(plan, v, ivs[i], ias[i], silences[i])
        temp = plan.work / f"{final.stem}.part.mp4"
        streams = [v] if a is None else [v, a]
        extra = {} if a is None else {"acodec": "aac", "b:a": "128k"}
        outputs.append(ffmpeg.output(*streams, str(temp), **encode_args(spec), **extra))
        files.append((temp, final))
        # Every feed is aligned on the booking start, right after the intro.
        plan.timeline[final] = Timeline(intro_s, intro_s, total)
    # One process, one graph, every output (layout separate writes one file per camera).
    argv = ffmpeg.merge_outputs(*outputs).compile(overwrite_output=True)
    argv = [argv[0], "-hide_banner", *argv[1:]]
    plan.jobs.append(Job(argv, files, total, plan.out_w, plan.out_h))
