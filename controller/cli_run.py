"""The `ezrec` verbs that run things: `run`, `demo`, `status`, `doctor`, `build`."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from datetime import timedelta
from typing import Any

import click
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from controller.cli import context, json_option, main, out, print_json, show_booking, when
from controller.db import utcnow
from controller.fsm import FAILED_STATES, TERMINAL_STATES


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@main.command()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def run(ctx: click.Context, verbose: bool) -> None:
    """Run the supervisor in the foreground (what systemd starts)."""
    from controller.supervisor import create_supervisor

    _logging(verbose)
    c = context(ctx)
    supervisor = create_supervisor(c.settings, c.store)

    def on_signal(signum: int, _frame: Any) -> None:
        logging.getLogger("ezrec").info("signal %s: stopping", signal.Signals(signum).name)
        supervisor.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    supervisor.run()


@main.command()
@click.option("--seconds", type=click.IntRange(1, 3600), default=10, show_default=True,
              help="Length of the demo booking.")
@click.pass_context
def demo(ctx: click.Context, seconds: int) -> None:
    """Book a slot starting now, record, build and store it; print where the video is."""
    from controller.supervisor import create_supervisor

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    c = context(ctx)
    now = utcnow()
    booking = c.store.create(
        now, now + timedelta(seconds=seconds), user_id="demo",
        camera_id=f"{c.settings.device_id}-demo",
    )
    out.print(
        f"demo booking {booking.id}: {seconds} s from {when(booking.start_time)}, "
        f"data in {c.settings.data_dir}",
        markup=False,
    )
    supervisor = create_supervisor(c.settings, c.store)

    def finished() -> bool:
        state = c.store.get(booking.id).state
        failed_for_good = state in FAILED_STATES
        return state in TERMINAL_STATES or failed_for_good

    worker = threading.Thread(target=supervisor.run, kwargs={"until": finished}, daemon=True)
    worker.start()
    columns = (
        TextColumn("{task.description:<11}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=out, transient=False) as bars:
            tasks = {
                name: bars.add_task(name, total=1.0, start=False)
                for name in ("recording", "processing", "uploading")
            }
            while True:
                alive = worker.is_alive()  # read first, so the last pass shows the end state
                b = c.store.get(booking.id)
                if b.state == "recording":
                    bars.start_task(tasks["recording"])
                    elapsed = (utcnow() - b.start_time).total_seconds()
                    bars.update(tasks["recording"], completed=min(1.0, elapsed / seconds))
                elif b.state not in ("confirmed",):
                    bars.update(tasks["recording"], completed=1.0)
                stage = {"processing": "processing", "uploading": "uploading"}.get(
                    b.progress_stage or ""
                )
                if stage and b.progress is not None:
                    bars.start_task(tasks[stage])
                    bars.update(tasks[stage], completed=b.progress)
                if b.state in ("video_processed", "video_uploaded"):
                    bars.update(tasks["processing"], completed=1.0)
                if b.state == "video_uploaded":
                    bars.start_task(tasks["uploading"])
                    bars.update(tasks["uploading"], completed=1.0)
                if not alive:
                    break
                time.sleep(0.25)
    except KeyboardInterrupt:
        supervisor.request_stop()
        worker.join(timeout=15)
        raise click.ClickException(
            f"interrupted; `ezrec show {booking.id}` tells where it is"
        ) from None
    worker.join()
    final = c.store.get(booking.id)
    if final.state != "video_uploaded":
        show_booking(c, booking.id, as_json=False)
        click.echo(
            f"error: demo ended in {final.state}: {final.last_error or 'see history above'}",
            err=True,
        )
        sys.exit(1)
    outputs = final.extra.get("outputs") or [final.processed_path]
    out.print(f"finished video: {', '.join(str(p) for p in outputs)}", markup=False)
    out.print(f"stored at:      {final.video_url}", markup=False)


@main.command()
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Health: supervisor, cameras, disk, queue per state, last errors."""
    from controller.status import collect

    c = context(ctx)
    report = collect(c.settings, c.store)
    if as_json:
        print_json(report)
        return
    sup = report["supervisor"]
    age = sup.get("heartbeat_age_s")
    running = "running" if sup["running"] else "NOT running"
    out.print(
        f"supervisor  {running}"
        + (f" (heartbeat {age:.0f} s ago: {sup.get('status')})" if age is not None else ""),
        markup=False,
    )
    disk = report["disk"]
    flag = "" if disk["ok"] else f"  LOW: below EZREC_MIN_FREE_DISK_MB={disk['min_free_mb']}"
    if not disk["reserve_ok"]:
        flag = "  FULL: the database's reserve was used (EZREC_DISK_RESERVE_MB): free some space"
    out.print(f"disk        {disk['free_mb']:.0f} MB free of {disk['total_mb']:.0f} MB{flag}",
              markup=False)
    for cam in report["cameras"]:
        up = "up" if cam.get("up") else "DOWN"
        out.print(f"camera {cam.get('index')}    {up} {cam.get('driver', '')} "
                  f"{cam.get('mode', '')} {cam.get('detail', '')}".rstrip(), markup=False)
    queue = "  ".join(f"{k}={v}" for k, v in report["queue"].items() if v)
    out.print(f"bookings    {queue or 'none'}", markup=False)
    for item in report["in_progress"]:
        pct = "" if item["progress"] is None else f" {item['progress'] * 100:.0f}%"
        out.print(f"  {item['id']}: {item['state']} {item['stage'] or ''}{pct}".rstrip(),
                  markup=False)
    sysinfo = report["system"]
    temp = sysinfo.get("temperature_c")
    out.print(
        f"system      cpu {sysinfo.get('cpu_percent', 0):.0f}%  "
        f"memory {sysinfo.get('memory_percent', 0):.0f}%"
        + (f"  {temp:.0f} °C" if temp is not None else ""),
        markup=False,
    )
    for item in report["needs_operator"]:
        out.print(f"NEEDS YOU   {item['id']} ({item['state']}): {item['error']} - {item['fix']}",
                  markup=False)
    if report["last_errors"]:
        out.print("last errors", markup=False)
        for line in report["last_errors"][-10:]:
            out.print(f"  {line}", markup=False)


@main.command()
@click.argument("booking_id")
@click.option("--print", "print_only", is_flag=True, help="Only print the ffmpeg command line(s).")
@click.option("--dry-run", "print_only", is_flag=True, hidden=True)
@click.pass_context
def build(ctx: click.Context, booking_id: str, print_only: bool) -> None:
    """Build a booking's video now (or, with --print, show the exact ffmpeg command)."""
    import shlex

    from controller import video_jobs
    from controller.drivers import builder
    from controller.drivers.media_cache import MediaCache

    c = context(ctx)
    booking = c.store.get(booking_id)
    cache = MediaCache(c.settings.media_dir)
    try:
        spec, notes = video_jobs.build_spec(c.settings, booking, cache)
    except builder.BuildError as exc:
        raise click.ClickException(str(exc)) from None
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if print_only:
        for argv in builder.command_lines(spec):
            click.echo(shlex.join(argv))
        return
    with Progress(*(TextColumn("building"), BarColumn(), TaskProgressColumn()),
                  console=out) as bars:
        task = bars.add_task("build", total=1.0)
        result = builder.build(spec, on_progress=lambda f: bars.update(task, completed=f))
    out.print(json.dumps({"outputs": [str(p) for p in result.outputs],
                          "duration_s": result.duration_s, "notes": result.notes}))


def _check_ffmpeg(encoder: str) -> tuple[bool, str]:
    import shutil
    import subprocess

    if not shutil.which("ffmpeg") or not shutil.which("ffprobe"):
        return False, "ffmpeg/ffprobe not found: sudo apt-get install ffmpeg"
    first = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True,
                           check=False).stdout.splitlines()[0]
    encoders = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True,
                              text=True, check=False).stdout
    if f" {encoder} " not in encoders:
        return False, f"{first}: encoder {encoder} missing (EZREC_VIDEO_ENCODER)"
    return True, f"{first.removeprefix('ffmpeg version ').split(' Copyright')[0]} with {encoder}"


def _check_clock() -> tuple[bool, str]:
    import shutil
    import subprocess

    from controller.supervisor import SANE_CLOCK_AFTER

    now = utcnow()
    if now < SANE_CLOCK_AFTER:
        return False, f"clock reads {now.isoformat()}: set the time / enable NTP (timedatectl)"
    line = f"clock {now.astimezone().isoformat(timespec='seconds')}"
    if shutil.which("timedatectl"):
        synced = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                                capture_output=True, text=True, check=False).stdout.strip()
        if synced == "no":
            return False, line + ": not NTP-synchronised (timedatectl set-ntp true)"
        if synced == "yes":
            line += ", NTP-synchronised"
    return True, line


def _check_cloud(settings: Any) -> tuple[bool, str]:
    from controller.drivers import supabase

    found = supabase.check(settings)
    return found.ok, found.detail


@main.command()
@json_option
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check ffmpeg, cameras, storage, cloud credentials, disk and clock; say what to fix."""
    from controller.context import open_cameras, open_storage
    from controller.drivers import system
    from controller.drivers.media_cache import MediaCache
    from controller.drivers.storage import StorageError

    c = context(ctx)
    s = c.settings
    checks: list[tuple[str, bool, str]] = []
    infos: list[tuple[str, str]] = []
    checks.append(("ffmpeg", *_check_ffmpeg(s.video_encoder)))
    used = None
    try:
        driver = open_cameras(s)
        used = driver.name
        probes = driver.probe()
        driver.close()
        if not probes:
            checks.append(("cameras", False, f"{s.camera_driver}: no camera found"))
        for p in probes:
            checks.append((f"camera {p.camera}", p.ok, f"[{driver.name}] {p.line}"))
    except Exception as exc:
        checks.append(("cameras", False, f"{s.camera_driver}: {exc}"))
    # What the other real drivers see, for an operator choosing or wiring cameras.
    for name in ("picamera2", "v4l2"):
        if name == used:
            continue
        try:
            other = open_cameras(s.model_copy(update={"camera_driver": name}))
            lines = [p.line for p in other.probe()] or ["no camera found"]
            other.close()
        except Exception as exc:
            lines = [str(exc)]
        infos.extend((name, line) for line in lines)
    try:
        checks.append(("storage", True, open_storage(s).check()))
    except StorageError as exc:
        checks.append(("storage", False, str(exc)))
    except Exception as exc:
        checks.append(("storage", False, f"{s.storage_url}: {exc}"))
    checks.append(("cloud", *_check_cloud(s)))
    from controller.cli_replays import replay_checks

    checks.extend(replay_checks(s))  # the button, share links, the players' email
    free = system.free_disk_mb(s.data_dir)
    checks.append(("disk", free >= s.min_free_disk_mb,
                   f"{free:.0f} MB free in {s.data_dir} (EZREC_MIN_FREE_DISK_MB="
                   f"{s.min_free_disk_mb})"))
    checks.append(("clock", *_check_clock()))
    cache = MediaCache(s.media_dir)
    for name, source, kind in [("intro", s.intro, "video"), ("logo", s.logo, "image")] + [
        (f"sponsor{i}", src, "image") for i, src in enumerate(s.sponsor_logos, 1)
    ]:
        if source:
            found = cache.resolve(source, kind)  # type: ignore[arg-type]
            checks.append((name, found.path is not None, found.note or f"{source}: ok"))
    checks.append(("database", True, f"{s.db_url.split('@')[-1]}: "
                   f"{sum(c.store.counts().values())} bookings"))
    if as_json:
        print_json([{"check": n, "ok": ok, "detail": d} for n, ok, d in checks]
                   + [{"check": n, "ok": None, "detail": d, "info": True} for n, d in infos])
    else:
        width = max(len(n) for n in [c[0] for c in checks] + [i[0] for i in infos])
        for name, ok, detail in checks:
            out.print(f"{'ok  ' if ok else 'FAIL'}  {name:<{width}}  {detail}", markup=False)
        for name, detail in infos:
            out.print(f"info  {name:<{width}}  {detail}", markup=False)
    if not all(ok for _, ok, _ in checks):
        sys.exit(1)
