"""Supervisor timing benchmark: 20 back-to-back 2-second bookings recorded by a real `ezrec run`
with synthetic cameras, then 60 s with nothing due.

Measured per booking, from the run manifests (wall clock of the first and last frame) and the
transition history:
  start gap      first kept frame - booking start      (> 0 means the video misses the start)
  wake lateness  the `start` transition - (start - PREROLL_S): how late the loop woke
  stop lateness  last frame - booking end               (the recording covers the whole slot
                                                          when >= 0; the build trims the rest)
and for the supervisor process (not its ffmpeg children): CPU over 60 idle seconds and peak RSS.
Goals: start/stop lateness median <= 50 ms, max <= 200 ms; idle CPU < 1 % of a core; RSS < 100 MB.

    .venv/bin/python bench/latency.py [--bookings 20] [--seconds 2] [--idle 60] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._table import emit
from controller.config import load_settings
from controller.context import open_context
from controller.db import utcnow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bookings", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="ezrec-latency-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EZREC")}
    env.update(EZREC_DATA_DIR=str(data), EZREC_CAMERA_DRIVER="synthetic",
               EZREC_WIDTH=str(args.width), EZREC_HEIGHT=str(args.height), EZREC_FPS="30",
               EZREC_SEGMENT_S="2", EZREC_PREROLL_S="1.5", EZREC_MIN_FREE_DISK_MB="100",
               EZREC_DEVICE_ID="bench", EZREC_CAMERA_BITRATE_KBPS="2000",
               EZREC_LAYOUT="side_by_side", EZREC_X264_PRESET="ultrafast")
    os.environ.update({k: v for k, v in env.items() if k.startswith("EZREC")})
    ctx = open_context(load_settings())
    ezrec = str(Path(sys.executable).with_name("ezrec"))
    proc = subprocess.Popen([ezrec, "run"], env=env, stderr=subprocess.DEVNULL)
    ps = psutil.Process(proc.pid)
    peak_rss = 0

    def sample() -> None:
        nonlocal peak_rss
        peak_rss = max(peak_rss, ps.memory_info().rss)

    try:
        first = utcnow() + timedelta(seconds=5)
        ids = []
        for i in range(args.bookings):
            start = first + timedelta(seconds=i * args.seconds)
            ids.append(ctx.store.create(start, start + timedelta(seconds=args.seconds),
                                        booking_id=f"lat{i:02d}").id)
        deadline = time.monotonic() + args.bookings * args.seconds + 300
        while time.monotonic() < deadline:
            sample()
            states = [ctx.store.get(i).state for i in ids]
            if all(s in ("video_uploaded", "processing_failed", "upload_failed",
                         "recording_failed", "missed") for s in states):
                break
            time.sleep(0.2)
        # Idle: nothing due for a long while.
        time.sleep(3)
        cpu0 = ps.cpu_times()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.idle:
            sample()
            time.sleep(1)
        cpu1 = ps.cpu_times()
        idle_cpu = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / (
            time.monotonic() - t0) * 100
    finally:
        proc.terminate()
        proc.wait(30)

    preroll = ctx.settings.preroll_s
    gaps, wakes, stops, outcomes = [], [], [], {}
    for booking_id in ids:
        b = ctx.store.get(booking_id)
        outcomes[b.state] = outcomes.get(b.state, 0) + 1
        history = ctx.store.history(booking_id)
        start_row = next((h for h in history if h.trigger == "start"), None)
        if start_row:
            due = b.start_time - timedelta(seconds=preroll)
            wakes.append((start_row.at - due).total_seconds() * 1000)
        runs = [json.loads(p.read_text()) for p in (data / "recordings" / "raw" / booking_id)
                .glob("cam*/run-000.json")]
        if runs:
            first_frame = max(r["started_at"] for r in runs)
            last_frame = min(r["stopped_at"] or 0 for r in runs)
            gaps.append((first_frame - b.start_time.timestamp()) * 1000)
            stops.append((last_frame - b.end_time.timestamp()) * 1000)
    ctx.close()

    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")

    late_start = [max(0.0, g) for g in gaps]
    late_stop = [max(0.0, -s) for s in stops]  # a stop BEFORE the end loses video
    rows = [
        ("bookings", f"{args.bookings} x {args.seconds:g} s back to back", "", ""),
        ("outcomes", ", ".join(f"{k}={v}" for k, v in sorted(outcomes.items())), "all uploaded",
         "yes" if outcomes.get("video_uploaded") == args.bookings else "NO"),
        ("start gap median (first frame - start)", f"{med(gaps):.0f} ms", "<= 50 ms late",
         "yes" if med(late_start) <= 50 else "NO"),
        ("start gap max", f"{max(gaps):.0f} ms", "<= 200 ms late",
         "yes" if max(late_start) <= 200 else "NO"),
        ("loop wake lateness median", f"{med(wakes):.1f} ms", "<= 50 ms",
         "yes" if med(wakes) <= 50 else "NO"),
        ("loop wake lateness max", f"{max(wakes):.1f} ms", "<= 200 ms",
         "yes" if max(wakes) <= 200 else "NO"),
        ("stop: last frame - end, median", f"{med(stops):.0f} ms", ">= -50 ms",
         "yes" if med(late_stop) <= 50 else "NO"),
        ("stop: last frame - end, min", f"{min(stops):.0f} ms", ">= -200 ms",
         "yes" if max(late_stop) <= 200 else "NO"),
        (f"supervisor idle CPU over {args.idle:g} s", f"{idle_cpu:.2f} % of a core", "< 1 %",
         "yes" if idle_cpu < 1 else "NO"),
        ("supervisor peak RSS", f"{peak_rss / 2**20:.0f} MB", "< 100 MB",
         "yes" if peak_rss < 100 * 2**20 else "NO"),
    ]
    emit("bench/latency.py: supervisor timing (synthetic cameras "
         f"{args.width}x{args.height}@30)", rows, {
             "bookings": args.bookings, "seconds": args.seconds, "outcomes": outcomes,
             "start_gap_ms": gaps, "wake_lateness_ms": wakes, "stop_offset_ms": stops,
             "start_gap_median_ms": med(gaps), "wake_lateness_median_ms": med(wakes),
             "wake_lateness_max_ms": max(wakes), "stop_offset_median_ms": med(stops),
             "idle_cpu_percent": idle_cpu, "peak_rss_mb": peak_rss / 2**20,
         }, args.json_path)


if __name__ == "__main__":
    main()
