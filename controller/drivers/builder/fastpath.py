"""The zero-re-encode path: the intro encoded once to the recording's exact H.264
parameters (cached), the recording joined to it by stream copy."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

from controller.drivers.builder.graph import (
    concat_list,
    plan_encode,
    quote_path,
)
from controller.drivers.builder.plan import (
    Job,
    Plan,
    Segment,
    frame_rate,
    intro_seconds,
)
from controller.drivers.builder.spec import (
    Timeline,
    output_paths,
)
from controller.drivers.ffprobe import ProbeError, ffprobe, video_stream
from controller.fileio import durable_replace, sha256_file

_PROFILES = {"baseline": "baseline", "constrained baseline": "baseline", "main": "main"}
_PROFILES |= {"high": "high"}
_COLOR_KEYS = ("color_range", "color_space", "color_transfer", "color_primaries")

MISMATCH = "the intro cannot be encoded with the recording's H.264 parameters"


# -- the fast path: intro re-encoded once, recording joined by stream copy -----------------
def fast_path_blocker(plan: Plan) -> str | None:
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


def _keyframes(seg: Segment) -> list[float]:
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


def plan_fast(plan: Plan) -> None:
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
                plan_encode_instead(plan, "the recording's H.264 parameters are unreadable")
                return
            try:
                cached, job = _intro_job(plan, params)
            except ParamMismatch as exc:
                plan_encode_instead(plan, str(exc))
                return
            if job is not None and all(j.argv != job.argv for j in plan.jobs):
                plan.jobs.append(job)
            # No declared duration: the demuxer reads the intro's own, frame-exact.
            intro_part = ["file " + quote_path(cached)]
            intro_s = intro_seconds(plan.intro.duration, params["fps"])
        listing = plan.work / f"{final.stem}.ffconcat"
        body = concat_list(segments, declared, inpoint).splitlines()
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
        plan.jobs.append(Job(argv, [(temp, final)], total, f.width, f.height))
        # The copy starts `extra` s before the booking (its keyframe), or `lead` s after it.
        plan.timeline[final] = Timeline(intro_s, intro_s + extra - f.lead, total)
        if extra > 0.05:
            plan.notes.append(
                f"camera {f.feed.camera}: stream copy starts {extra:.1f} s before the booking "
                "(first keyframe)"
            )


def plan_encode_instead(plan: Plan, why: str) -> None:
    plan.jobs.clear()
    plan.lists.clear()
    plan.timeline.clear()
    plan.notes = [n for n in plan.notes if "stream copy starts" not in n]
    plan.notes.append(f"stream copy impossible ({why}): re-encoded")
    plan_encode(plan)


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
        "fps": frame_rate(stream.get("r_frame_rate")) or frame_rate(stream.get("avg_frame_rate")),
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


def _intro_job(plan: Plan, params: dict[str, Any]) -> tuple[Path, Job | None]:
    """The cached intro encoded like the recording, and the job making it if it is missing."""
    assert plan.intro is not None
    intro = plan.intro
    cache = plan.spec.cache_dir or plan.work
    source_id = intro.path.name.split(".", 1)[0]
    if not re.fullmatch(r"[0-9a-f]{64}", source_id):
        # Not from the media cache: key on the content so a changed intro is re-encoded.
        source_id = sha256_file(intro.path)
    key_text = json.dumps({k: v for k, v in params.items()}, sort_keys=True)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    cached = cache / f"{source_id}.intro-{key}.ts"
    mismatch = cached.with_suffix(".mismatch")
    if mismatch.exists():
        raise ParamMismatch(MISMATCH)
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
    temp = cache / f".{cached.name}.{os.getpid()}-{secrets.token_hex(4)}.part"
    plan.scratch.append(temp)
    argv += ["-f", "mpegts", "-y", str(temp)]
    seconds = intro_seconds(intro.duration, params["fps"])

    def adopt() -> None:
        # Checked before it is cached: a join with other parameter sets would be an MP4 that
        # some players decode as garbage after the intro.
        got = _first_access_unit(temp)
        if got is None or _param_sets(got[0]).hex() != params["param_sets"]:
            temp.unlink(missing_ok=True)
            mismatch.touch()  # remembered: the next booking does not try again
            raise ParamMismatch(MISMATCH)
        durable_replace(temp, cached)

    return cached, Job(argv, [], seconds, w, h, after=adopt)


class ParamMismatch(Exception):
    pass
