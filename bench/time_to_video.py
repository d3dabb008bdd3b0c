"""Time to video: how long after a booking's slot ends its video reaches `video_uploaded`, and
what its build costs in CPU.

A real `ezrec run` (synthetic cameras, 2 x 1280x720 @ 30 fps, layout side_by_side, a 4 s 1080p
intro and a venue logo, both generated; S3 storage on a moto server on 127.0.0.1) records one
booking of each of --lengths, one after the other: each is booked a few seconds ahead of its
pre-roll, so the cameras record the whole slot, and the next is booked once the previous is
uploaded. Measured per booking, from its transition history (the supervisor's own timestamps,
so the polling here does not blur them):

  end->completed   slot end to the recording finalised (`completed`)
  end->processed   slot end to the finished video built (`video_processed`)
  end->uploaded    slot end to the video stored and verified (`video_uploaded`)  goal <= 10 s
  build CPU        the booking's extra["build_cpu_s"]: CPU (user+sys) of every ffmpeg process
                   its build ran, chunks encoded while recording included, as the product
                   records it; "n/a" when it does not
  one-pass CPU     after `ezrec run` has stopped, the same raw files built again in this
                   process with the one-pass builder (BuildSpec incremental=False when the
                   field exists): CPU of its ffmpeg/ffprobe children (getrusage deltas); the
                   median of --onepass-runs builds (3: one build alone varied by 40 % here)
  ratio            build CPU / one-pass CPU                                     goal <= 1.10
  chunks alone     the same raw files built in chunks after the fact, alone on the machine
                   (nothing reused, the intro cached): what the chunks cost without the
                   cameras beside them; build CPU above it is the price of sharing the cores

Cases, each with a fresh data dir, bucket and `ezrec run`: loopback (S3 on 127.0.0.1), and a
venue uplink (the S3 endpoint behind tests/_throttle.py's UplinkProxy, upstream capped at
--uplink-mbit). --both, the default, runs both (8 Mbit/s unless --uplink-mbit says);
--uplink-mbit alone runs only the uplink case, --loopback only the loopback one.

    .venv/bin/python bench/time_to_video.py [--lengths 20,120] [--both | --loopback]
        [--uplink-mbit 8] [--env EZREC_KEY=VALUE ...] [--timeout S] [--work DIR]
        [--json bench/results/time_to_video.json]

--env adds a setting to the environment of `ezrec run` (and of the in-process one-pass build),
e.g. --env EZREC_X264_PRESET=ultrafast. Wall times depend on the machine's load: the JSON keeps
the load average before and after, nproc, the ffmpeg version and the settings.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._table import emit
from controller import video_jobs
from controller.config import ConfigError, Settings, load_settings
from controller.context import Context, open_context
from controller.db import Booking, utcnow
from controller.drivers import builder
from controller.drivers.media_cache import MediaCache
from controller.drivers.nudge import send_nudge

ROOT = Path(__file__).resolve().parent.parent
EZREC = str(Path(sys.executable).with_name("ezrec"))
GOAL_END_TO_UPLOADED_S = 10.0
GOAL_CPU_RATIO = 1.10
DEFAULT_UPLINK_MBIT = 8.0
GIVE_UP = ("missed", "cancelled")  # a booking in one of these will never be uploaded
HEADERS = ("uplink", "length", "end->completed", "end->processed", "end->uploaded", "video",
           "build CPU", "one-pass CPU", "ratio", "chunks alone", "ok")  # fmt: skip


class BenchError(Exception):
    """The benchmark cannot go on; str() is the one line printed."""


# -- arguments --------------------------------------------------------------------------------
def _lengths(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of seconds: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"lengths must be whole seconds >= 1: {text!r}")
    return values


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--lengths", type=_lengths, default=[20, 120],
                        help="booking lengths in seconds, comma-separated (default 20,120)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--both", action="store_true",
                       help="loopback, then the uplink case (the default)")
    which.add_argument("--loopback", action="store_true", help="only the loopback case")
    parser.add_argument("--uplink-mbit", type=float, metavar="MBIT",
                        help=f"upstream cap of the uplink case (default {DEFAULT_UPLINK_MBIT:g}); "
                             "alone: only that case")
    parser.add_argument("--env", type=_env_pair, action="append", default=[],
                        metavar="KEY=VALUE", help="added to the environment of `ezrec run`")
    parser.add_argument("--intro-seconds", type=float, default=4.0)
    parser.add_argument("--lead", type=float, default=3.0,
                        help="seconds from booking it to its pre-roll (default 3)")
    parser.add_argument("--timeout", type=float,
                        help="seconds after its slot end a booking may take to be uploaded "
                             "(default 300 + 5 x its length)")
    parser.add_argument("--onepass-runs", type=int, default=3,
                        help="one-pass rebuilds per booking, the median is the reference")
    parser.add_argument("--work", type=Path, help="keep the data dirs here (else a temp dir)")
    parser.add_argument("--json", dest="json_path", metavar="FILE")
    args = parser.parse_args(argv)
    if args.uplink_mbit is not None and args.uplink_mbit <= 0:
        parser.error("--uplink-mbit must be > 0")
    if args.loopback and args.uplink_mbit is not None:
        parser.error("--loopback and --uplink-mbit exclude each other")
    if args.intro_seconds <= 0:
        parser.error("--intro-seconds must be > 0")
    if args.onepass_runs < 1:
        parser.error("--onepass-runs must be >= 1")
    rate = args.uplink_mbit or DEFAULT_UPLINK_MBIT
    if args.loopback:
        args.cases = [None]
    elif args.uplink_mbit is not None and not args.both:
        args.cases = [rate]
    else:
        args.cases = [None, rate]
    args.env = dict(args.env)
    return args


# -- formatting -------------------------------------------------------------------------------
def uplink_label(mbit: float | None) -> str:
    return "loopback" if mbit is None else f"{mbit:g} Mbit/s"


def _s(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} s"


def verdict(row: dict[str, Any]) -> str:
    uploaded = row.get("end_to_uploaded_s")
    ratio = row.get("cpu_ratio")
    ok = uploaded is not None and uploaded <= GOAL_END_TO_UPLOADED_S
    if ratio is not None:
        ok = ok and ratio <= GOAL_CPU_RATIO
    return "yes" if ok else "NO"


def table_rows(bookings: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One row per (uplink, length), then the goals."""
    rows: list[tuple[str, ...]] = []
    for b in bookings:
        size = b.get("video_bytes")
        rows.append((
            b["uplink"], f"{b['length_s']} s", _s(b.get("end_to_completed_s"), 2),
            _s(b.get("end_to_processed_s")), _s(b.get("end_to_uploaded_s")),
            "n/a" if size is None else f"{size / 2**20:.1f} MiB",
            _s(b.get("build_cpu_s")), _s(b.get("onepass_cpu_s")),
            "n/a" if b.get("cpu_ratio") is None else f"{b['cpu_ratio']:.2f}",
            _s(b.get("chunked_cpu_s")), verdict(b),
        ))  # fmt: skip
    rows.append(("goal", "", "", "", f"<= {GOAL_END_TO_UPLOADED_S:g} s", "", "", "",
                 f"<= {GOAL_CPU_RATIO:.2f}", "", ""))  # fmt: skip
    return rows


# -- the world --------------------------------------------------------------------------------
def ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *map(str, args)], check=True,
                   timeout=300)  # fmt: skip


def make_media(root: Path, intro_s: float) -> tuple[Path, Path]:
    """A 1080p testsrc intro and a translucent PNG logo, as a venue would configure them."""
    intro, logo = root / "intro.mp4", root / "logo.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=1920x1080:rate=30", "-t", f"{intro_s:g}",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", intro)
    ffmpeg("-f", "lavfi", "-i", "color=c=red@0.8:s=256x128,format=rgba", "-frames:v", "1", logo)
    return intro, logo


def ffmpeg_version() -> str:
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"ffmpeg is not usable: {exc}") from None
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def run_env(data: Path, intro: Path, logo: Path, bucket: str, endpoint: str,
            extra: dict[str, str]) -> dict[str, str]:
    from tests._s3server import _UNSET, FAKE_AWS_ENV

    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith("EZREC") and k not in _UNSET}  # fmt: skip
    env.update(FAKE_AWS_ENV)
    env.update(
        EZREC_DATA_DIR=str(data), EZREC_DEVICE_ID="bench", EZREC_CAMERA_DRIVER="synthetic",
        EZREC_CAMERAS="2", EZREC_WIDTH="1280", EZREC_HEIGHT="720", EZREC_FPS="30",
        EZREC_LAYOUT="side_by_side", EZREC_INTRO=str(intro), EZREC_LOGO=str(logo),
        EZREC_STORAGE_URL=f"s3://{bucket}/ttv", EZREC_S3_ENDPOINT_URL=endpoint,
        EZREC_MIN_FREE_DISK_MB="100", PYTHONPATH=str(ROOT),
    )  # fmt: skip
    env.update(extra)
    return env


def in_process_settings(env: dict[str, str]) -> Settings:
    """The same settings as the `ezrec run` of this case (a bad --env fails here, in one line)."""
    for key in [k for k in os.environ if k.upper().startswith("EZREC")]:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.upper().startswith("EZREC")})
    try:
        return load_settings()
    except ConfigError as exc:
        raise BenchError(str(exc)) from None


def last_line(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
        if lines:
            return lines[-1].strip()
    return "(no output)"


class Supervisor:
    """`ezrec run` in its own session, so that every process it starts is stopped with it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([EZREC, "run"], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"ezrec run exited with {self.proc.returncode}: "
                             f"{last_line(self.log)}")  # fmt: skip

    def wait_ready(self, ctx: Context, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check()
            beat = ctx.store.kv_get("supervisor")
            if beat is not None and beat[0].get("pid") == self.proc.pid:
                return
            time.sleep(0.1)
        raise BenchError(f"ezrec run made no first pass within {timeout:g} s: "
                         f"{last_line(self.log)}")  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        # Anything of its session still alive (cameras of a supervisor that did not stop).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


# -- measuring --------------------------------------------------------------------------------
def wait_uploaded(ctx: Context, run: Supervisor, booking_id: str, end: datetime,
                  timeout: float, label: str) -> Booking:
    deadline = end + timedelta(seconds=timeout)
    while True:
        booking = ctx.store.get(booking_id)
        if booking.state == "video_uploaded":
            return booking
        late = utcnow() > deadline
        if booking.state in GIVE_UP or late:
            what = f"within {timeout:g} s of its slot end" if late else "and never will"
            raise BenchError(
                f"booking {booking_id} ({label}) did not reach video_uploaded {what}: stuck in "
                f"{booking.state} (last_error: {booking.last_error or 'none'})"
            )
        run.check()
        time.sleep(0.2)


def timings(ctx: Context, booking: Booking) -> dict[str, Any]:
    """Slot end to the (last) arrival in each state, from the history rows."""
    history = ctx.store.history(booking.id)
    end = booking.end_time

    def arrived(state: str) -> datetime | None:
        return next((h.at for h in reversed(history) if h.to_state == state), None)

    out: dict[str, Any] = {"history": [h.to_dict() for h in history]}
    at = {s: arrived(s) for s in ("completed", "video_processed", "video_uploaded")}
    for state, key in (("completed", "completed"), ("video_processed", "processed"),
                       ("video_uploaded", "uploaded")):
        when = at[state]
        out[f"end_to_{key}_s"] = None if when is None else (when - end).total_seconds()
    if at["completed"] and at["video_processed"]:
        out["build_wall_s"] = (at["video_processed"] - at["completed"]).total_seconds()
    if at["video_processed"] and at["video_uploaded"]:
        out["upload_wall_s"] = (at["video_uploaded"] - at["video_processed"]).total_seconds()
    out["failures"] = sum(1 for h in history if h.trigger == "fail")
    return out


def rebuild(settings: Settings, booking: Booking, out_dir: Path, *, incremental: bool,
            tag: str) -> tuple[float, float, builder.BuildResult, int]:  # fmt: skip
    """The booking's raw files built again in this process (into a folder of its own, so no
    chunk is reused): CPU of the ffmpeg/ffprobe children, wall, the result, the bytes."""
    spec, _notes = video_jobs.build_spec(settings, booking, MediaCache(settings.media_dir))
    folder = out_dir / tag
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    changes: dict[str, Any] = {"output": folder / f"{booking.id}.mp4"}
    if "incremental" in {f.name for f in dataclasses.fields(spec)}:
        changes["incremental"] = incremental
    spec = dataclasses.replace(spec, **changes)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        result = builder.build(spec)
    except builder.BuildError as exc:
        raise BenchError(f"rebuild ({tag}) of {booking.id} failed: {exc}") from None
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    size = sum(p.stat().st_size for p in result.outputs)
    shutil.rmtree(folder)
    return cpu, wall, result, size


def onepass_cpu(settings: Settings, booking: Booking, out_dir: Path,
                runs: int = 3) -> dict[str, Any]:  # fmt: skip
    """The median of `runs` one-pass rebuilds, and one chunked rebuild alone."""
    cpus, walls = [], []
    for n in range(runs):
        cpu, wall, result, size = rebuild(settings, booking, out_dir, incremental=False,
                                          tag=f"onepass{n}")  # fmt: skip
        cpus.append(cpu)
        walls.append(wall)
    chunked_cpu, chunked_wall, _, _ = rebuild(settings, booking, out_dir, incremental=True,
                                              tag="chunked")  # fmt: skip
    return {"onepass_cpu_s": statistics.median(cpus), "onepass_cpu_runs": cpus,
            "onepass_wall_s": statistics.median(walls), "onepass_bytes": size,
            "onepass_duration_s": result.duration_s, "onepass_fast_path": result.fast_path,
            "chunked_cpu_s": chunked_cpu, "chunked_wall_s": chunked_wall}  # fmt: skip


def run_case(args: argparse.Namespace, mbit: float | None, root: Path, media: tuple[Path, Path],
             server: Any) -> dict[str, Any]:
    from tests._throttle import UplinkProxy

    label = uplink_label(mbit)
    slug = "loopback" if mbit is None else f"uplink{mbit:g}".replace(".", "_")
    data = root / slug
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    bucket = server.new_bucket()
    load_before = os.getloadavg()
    bookings: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        endpoint = server.endpoint_url
        if mbit is not None:
            proxy = UplinkProxy((server.host, server.port), rate_bps=mbit * 1e6 / 8)
            stack.callback(proxy.close)
            endpoint = proxy.url
        env = run_env(data, *media, bucket, endpoint, args.env)
        settings = in_process_settings(env)
        ctx = open_context(settings)
        stack.callback(ctx.close)
        # What the CLI and the API do after a change: wake the loop for the new booking.
        ctx.store.on_outbox.append(lambda: send_nudge(data))
        print(f"[{label}] starting ezrec run (data in {data})", flush=True)
        run = Supervisor(env, data / "ezrec-run.log")
        stack.callback(run.stop)
        run.wait_ready(ctx)
        for length in args.lengths:
            booking_id = f"ttv-{slug}-{length}s"
            start = utcnow() + timedelta(seconds=settings.preroll_s + args.lead)
            end = start + timedelta(seconds=length)
            ctx.store.create(start, end, booking_id=booking_id, user_id="bench")
            timeout = args.timeout if args.timeout is not None else 300 + 5 * length
            print(f"[{label}] {booking_id}: {length} s from {start:%H:%M:%S}, waiting for "
                  f"video_uploaded (up to {timeout:g} s after its end)", flush=True)
            booking = wait_uploaded(ctx, run, booking_id, end, timeout, label)
            row: dict[str, Any] = {"uplink": label, "uplink_mbit": mbit, "id": booking_id,
                                   "length_s": length, "start": start.isoformat(),
                                   "end": end.isoformat(), **timings(ctx, booking)}  # fmt: skip
            extra = booking.extra
            cpu = extra.get("build_cpu_s")
            row["build_cpu_s"] = float(cpu) if isinstance(cpu, int | float) else None
            row["video_duration_s"] = extra.get("duration_s")
            videos = [o for o in extra.get("uploaded") or [] if o.get("kind") == "video"]
            row["video_bytes"] = sum(int(o.get("size") or 0) for o in videos) or None
            if row["video_bytes"] and row.get("upload_wall_s"):
                row["upload_mbit_s"] = row["video_bytes"] * 8 / 1e6 / row["upload_wall_s"]
            print(f"[{label}] {booking_id}: uploaded {_s(row['end_to_uploaded_s'])} after its "
                  f"end", flush=True)
            bookings.append(row)
        run.stop()
        rebuild_dir = data / "onepass"
        rebuild_dir.mkdir()
        for row in bookings:
            print(f"[{label}] {row['id']}: {args.onepass_runs} one-pass rebuild(s) and one "
                  "in chunks ...", flush=True)
            row.update(onepass_cpu(settings, ctx.store.get(row["id"]), rebuild_dir,
                                   args.onepass_runs))  # fmt: skip
            if row["build_cpu_s"] is not None and row["onepass_cpu_s"] > 0:
                row["cpu_ratio"] = row["build_cpu_s"] / row["onepass_cpu_s"]
            else:
                row["cpu_ratio"] = None
        public = settings.public_dict()
    return {"uplink": label, "uplink_mbit": mbit, "bucket": bucket, "settings": public,
            "env_extra": args.env, "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "bookings": bookings}  # fmt: skip


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests._s3server import _UNSET, FAKE_AWS_ENV, MotoServer

    # A SIGTERM ends the run like Ctrl-C: the finally blocks stop every process we started.
    signal.signal(signal.SIGTERM, _interrupt)
    for key in _UNSET:
        os.environ.pop(key, None)
    os.environ.update(FAKE_AWS_ENV)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    root = args.work or Path(tempfile.mkdtemp(prefix="ezrec-ttv-"))
    root.mkdir(parents=True, exist_ok=True)
    keep = args.work is not None
    server = None
    try:
        version = ffmpeg_version()
        load_before = os.getloadavg()
        media = make_media(root, args.intro_seconds)
        server = MotoServer()
        server.start()
        cases = [run_case(args, mbit, root, media, server) for mbit in args.cases]
    except BenchError as exc:
        keep = True
        print(f"time_to_video: {exc} (files kept in {root})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("time_to_video: interrupted", file=sys.stderr)
        return 130
    finally:
        if server is not None:
            server.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)

    bookings = [b for case in cases for b in case["bookings"]]
    load_after = os.getloadavg()
    nproc = os.cpu_count()
    data = {
        "lengths_s": args.lengths, "cases": cases, "nproc": nproc,
        "affinity": len(os.sched_getaffinity(0)), "ffmpeg": version,
        "loadavg_before": load_before, "loadavg_after": load_after, "env_extra": args.env,
        "intro_s": args.intro_seconds, "inputs": "2 synthetic cameras 1280x720 @ 30 fps, "
        f"side_by_side, {args.intro_seconds:g} s 1920x1080 testsrc intro, PNG venue logo",
        "goals": {"end_to_uploaded_s": f"<= {GOAL_END_TO_UPLOADED_S:g}",
                  "cpu_ratio": f"<= {GOAL_CPU_RATIO:.2f}"},
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }  # fmt: skip
    print(f"\nnproc {nproc}; load average {' '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{' '.join(f'{x:.2f}' for x in load_after)} after; {version}")
    emit("bench/time_to_video.py: slot end -> video uploaded (2 x 1280x720@30, side_by_side, "
         "intro + logo, S3)", table_rows(bookings), data, args.json_path, headers=HEADERS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
