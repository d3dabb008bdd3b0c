"""Benchmark: the one-pass video builder against the seed's multi-pass approach and the floor.

Same inputs for every variant: two cameras (60 s, 1280x720, 30 fps, H.264 MPEG-TS segments in
the raw layout), a 5 s 1080p intro and a PNG logo; same encoder settings (libx264, the settings'
preset and CRF, yuv420p). The cameras and the intro are lavfi test patterns of similar, moving
content (testsrc2 / testsrc), so that the comparison measures the pipelines and not how hard
one clip is to compress. Variants:

  onepass    our builder as it runs: both cameras side by side + logo encoded in chunks, joined
             by stream copy to the intro it encoded once for these settings and cached (the
             cache is warm, as for every booking but the first after a settings change)
  graph      our builder's one-pass graph (BuildSpec.incremental=False): cameras, logo and
             the intro in one graph, one encode (the intro encoded again for each booking)
  multipass  the seed's way: merge (encode), then prepend the intro (encode), then overlay
             the logo (encode): each pass re-encodes the whole video
  floor      a bare single encode of a plain hstack of the two cameras: no intro, no logo
  fastpath   our builder, layout single, intro, no logo: stream copy, the recording is never
             re-encoded (what a Raspberry Pi 5 without an H.264 encoder relies on)

    .venv/bin/python bench/pipeline.py [--seconds 60] [--json bench/results/pipeline.json]

Wall times are the median of --repeat interleaved runs (the machine may be shared); the CPU
time of the ffmpeg processes is reported too, as it is much less sensitive to other load.
Prints a table; --json writes onepass_s, multipass_s, floor_s, multipass_over_onepass,
onepass_over_floor, onepass_realtime_x (and more).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.drivers.builder import (
    BuildSpec,
    Overlay,
    build,
    feeds_from_raw_dir,
    validate,
)
from controller.recordings import chunk_dir

PRESET, CRF = "veryfast", 23
ENCODE = ["-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-pix_fmt", "yuv420p"]
T0 = 1_700_000_000.0


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_inputs(root: Path, seconds: int, w: int, h: int, fps: int, intro_s: int) -> None:
    """Camera segments (10 s each, like the synthetic driver), an intro and a logo; cached."""
    for cam, src in ((0, "testsrc2"), (1, "testsrc")):
        cam_dir = root / "raw" / f"cam{cam}"
        if (cam_dir / "run-000.json").exists():
            continue
        cam_dir.mkdir(parents=True, exist_ok=True)
        print(f"making camera {cam}: {seconds} s {w}x{h} {fps} fps ...", flush=True)
        ffmpeg(
            "-f", "lavfi", "-i", f"{src}=size={w}x{h}:rate={fps}", "-t", str(seconds),
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", str(fps),
            "-b:v", "8M", "-pix_fmt", "yuv420p", "-f", "segment", "-segment_time", "10",
            "-segment_format", "mpegts", str(cam_dir / "000-%05d.ts"),
        )  # fmt: skip
        manifest = {"camera": cam, "driver": "bench", "run": 0, "started_at": T0, "width": w,
                    "height": h, "fps": fps, "stopped_at": T0 + seconds, "notes": []}  # fmt: skip
        (cam_dir / "run-000.json").write_text(json.dumps(manifest))
    if not (root / "intro.mp4").exists():
        ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate={fps}", "-t", str(intro_s),
               *ENCODE, str(root / "intro.mp4"))  # fmt: skip
    if not (root / "logo.png").exists():
        ffmpeg("-f", "lavfi", "-i", "color=c=red@0.8:s=256x128,format=rgba",
               "-frames:v", "1", str(root / "logo.png"))  # fmt: skip


def concat_list(root: Path, cam: int) -> Path:
    listing = root / f"cam{cam}.ffconcat"
    segs = sorted((root / "raw" / f"cam{cam}").glob("*.ts"))
    listing.write_text("ffconcat version 1.0\n" + "".join(f"file '{p}'\n" for p in segs))
    return listing


def timed(fn: Any) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child processes) of one call."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def run_onepass(root: Path, out: Path, w: int, h: int, fps: int, chunks: bool = True) -> None:
    spec = BuildSpec(
        "bench", feeds_from_raw_dir(root / "raw"), out, "side_by_side", w, h, fps,
        start_at=T0, intro=root / "intro.mp4",
        overlays=[Overlay(root / "logo.png", "venue_logo", "top_right")],
        preset=PRESET, crf=CRF, cache_dir=root / "media", incremental=chunks,
    )  # fmt: skip
    # A fresh build each time: no chunk of an earlier run is reused (the cached intro is).
    shutil.rmtree(chunk_dir(out), ignore_errors=True)
    out.unlink(missing_ok=True)
    build(spec)


def run_fastpath(root: Path, out: Path, w: int, h: int, fps: int) -> bool:
    spec = BuildSpec(
        "bench", feeds_from_raw_dir(root / "raw"), out, "single", w, h, fps,
        start_at=T0, intro=root / "intro.mp4", preset=PRESET, crf=CRF, cache_dir=root / "media",
    )  # fmt: skip
    return build(spec).fast_path


def run_multipass(root: Path, out: Path, w: int, h: int, fps: int) -> None:
    a, b = concat_list(root, 0), concat_list(root, 1)
    merged, with_intro = root / "mp-merged.mp4", root / "mp-intro.mp4"
    # Pass 1: merge the two cameras.
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(a), "-f", "concat", "-safe", "0", "-i", str(b),
           "-filter_complex", "[0:v][1:v]hstack=inputs=2[v]", "-map", "[v]", *ENCODE,
           str(merged))  # fmt: skip
    # Pass 2: prepend the intro.
    ffmpeg("-i", str(root / "intro.mp4"), "-i", str(merged), "-filter_complex",
           f"[0:v]scale={2 * w}:{h}:force_original_aspect_ratio=decrease,"
           f"pad={2 * w}:{h}:(ow-iw)/2:(oh-ih)/2,fps={fps},setsar=1,format=yuv420p[i];"
           "[1:v]setsar=1[m];[i][m]concat=n=2:v=1:a=0[v]", "-map", "[v]", *ENCODE,
           str(with_intro))  # fmt: skip
    # Pass 3: overlay the logo.
    ffmpeg("-i", str(with_intro), "-i", str(root / "logo.png"), "-filter_complex",
           f"[1:v]scale={round(0.12 * 2 * w / 2) * 2}:-2[l];[0:v][l]overlay=W-w-24:24[v]",
           "-map", "[v]", *ENCODE, "-movflags", "+faststart", str(out))  # fmt: skip


def run_floor(root: Path, out: Path) -> None:
    a, b = concat_list(root, 0), concat_list(root, 1)
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(a), "-f", "concat", "-safe", "0", "-i", str(b),
           "-filter_complex", "[0:v][1:v]hstack=inputs=2[v]", "-map", "[v]", *ENCODE,
           "-movflags", "+faststart", str(out))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--intro-seconds", type=int, default=5)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant (median)")
    parser.add_argument("--work", type=Path, help="keep inputs here (reused by the next run)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    w, h, fps = args.width, args.height, args.fps

    with tempfile.TemporaryDirectory(prefix="ezrec-bench-") as tmp:
        root = args.work or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        make_inputs(root, args.seconds, w, h, fps, args.intro_seconds)
        total_s = args.seconds + args.intro_seconds
        for old in (root / "media").glob("*.intro-*"):
            old.unlink()  # the first fast-path run must pay for its intro encode
        print("encoding the intro for the chunks once (cached, as on a box) ...", flush=True)
        run_onepass(root, root / "warm.mp4", w, h, fps)
        variants = {
            "floor": lambda: run_floor(root, root / "floor.mp4"),
            "onepass": lambda: run_onepass(root, root / "onepass.mp4", w, h, fps),
            "graph": lambda: run_onepass(root, root / "graph.mp4", w, h, fps, chunks=False),
            "multipass": lambda: run_multipass(root, root / "multipass.mp4", w, h, fps),
        }
        walls: dict[str, list[float]] = {name: [] for name in variants}
        cpus: dict[str, list[float]] = {name: [] for name in variants}
        # Interleaved, so a burst of load from elsewhere hits every variant alike.
        for i in range(args.repeat):
            for name, fn in variants.items():
                print(f"run {i + 1}/{args.repeat}: {name} ...", flush=True)
                wall, cpu = timed(fn)
                walls[name].append(wall)
                cpus[name].append(cpu)
        results: dict[str, Any] = {}
        for name in variants:
            results[f"{name}_s"] = round(statistics.median(walls[name]), 2)
            results[f"{name}_cpu_s"] = round(statistics.median(cpus[name]), 2)
            results[f"{name}_runs_s"] = [round(x, 2) for x in walls[name]]
        print("running fastpath (intro encoded once, then copy) ...", flush=True)
        results["fastpath_first_s"] = round(
            timed(lambda: run_fastpath(root, root / "f1.mp4", w, h, fps))[0], 2
        )
        fast = [timed(lambda: run_fastpath(root, root / "f2.mp4", w, h, fps))[0] for _ in range(3)]
        results["fastpath_s"] = round(statistics.median(fast), 2)
        validate(root / "onepass.mp4", total_s, 2 * w, h, tolerance=0.5)
        validate(root / "graph.mp4", total_s, 2 * w, h, tolerance=0.5)
        validate(root / "multipass.mp4", total_s, 2 * w, h, tolerance=0.5)
        validate(root / "floor.mp4", args.seconds, 2 * w, h, tolerance=0.5)
        validate(root / "f2.mp4", total_s, w, h, tolerance=0.5)

    r = results
    r["multipass_over_onepass"] = round(r["multipass_s"] / r["onepass_s"], 2)
    r["onepass_over_floor"] = round(r["onepass_s"] / r["floor_s"], 3)
    r["multipass_over_onepass_cpu"] = round(r["multipass_cpu_s"] / r["onepass_cpu_s"], 2)
    r["onepass_over_floor_cpu"] = round(r["onepass_cpu_s"] / r["floor_cpu_s"], 3)
    r["graph_over_floor"] = round(r["graph_s"] / r["floor_s"], 3)
    r["graph_over_floor_cpu"] = round(r["graph_cpu_s"] / r["floor_cpu_s"], 3)
    r["repeat"] = args.repeat
    r["onepass_realtime_x"] = round(total_s / r["onepass_s"], 2)
    r["multipass_realtime_x"] = round(total_s / r["multipass_s"], 2)
    r["floor_realtime_x"] = round(args.seconds / r["floor_s"], 2)
    r["fastpath_realtime_x"] = round(total_s / r["fastpath_s"], 1)
    r["inputs"] = f"2 x {args.seconds} s {w}x{h} {fps} fps + {args.intro_seconds} s intro + logo"
    r["encoder"] = f"libx264 -preset {PRESET} -crf {CRF}"
    r["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    r["graph_realtime_x"] = round(total_s / r["graph_s"], 2)
    r["goals"] = {"multipass_over_onepass": ">= 2.0", "onepass_over_floor": "<= 1.05"}

    rows = [
        ("onepass (ours)", r["onepass_s"], r["onepass_realtime_x"],
         "2 cams + logo in chunks + cached intro"),
        ("graph", r["graph_s"], r["graph_realtime_x"], "2 cams + intro + logo, one graph"),
        ("multipass (seed)", r["multipass_s"], r["multipass_realtime_x"], "3 encodes"),
        ("floor", r["floor_s"], r["floor_realtime_x"], "hstack only, no intro/logo"),
        ("fastpath, 1st", r["fastpath_first_s"], None, "single + intro: intro encoded"),
        ("fastpath", r["fastpath_s"], r["fastpath_realtime_x"], "single + intro: copy only"),
    ]
    cpu = {"onepass (ours)": "onepass", "graph": "graph", "multipass (seed)": "multipass",
           "floor": "floor"}  # fmt: skip
    print(f"\n{'variant':<18} {'wall s':>8} {'cpu s':>8} {'x realtime':>11}  what")
    for name, secs, rt, what in rows:
        cpu_s = f"{r[cpu[name] + '_cpu_s']:.1f}" if name in cpu else ""
        print(f"{name:<18} {secs:>8.2f} {cpu_s:>8} {'' if rt is None else f'{rt:.2f}':>11}  {what}")
    print(
        f"\nmultipass / onepass = {r['multipass_over_onepass']:.2f} wall, "
        f"{r['multipass_over_onepass_cpu']:.2f} cpu  (goal >= 2.0)"
    )
    print(
        f"onepass / floor     = {r['onepass_over_floor']:.3f} wall, "
        f"{r['onepass_over_floor_cpu']:.3f} cpu (goal <= 1.05)"
    )
    print(
        f"graph / floor       = {r['graph_over_floor']:.3f} wall, "
        f"{r['graph_over_floor_cpu']:.3f} cpu (the intro encoded each time)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
