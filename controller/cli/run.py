"""The `ezrec` verbs that run the pipeline: `run` (the supervisor), `demo` (one booking from
booking to stored video, with progress bars) and `build` (one booking's video, now)."""

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

from controller.cli.bookings import show_booking
from controller.cli.context import context
from controller.cli.output import out, when
from controller.db import utcnow
from controller.fsm.states import FAILED, TERMINAL, State


def _logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.command()
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


@click.command()
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
        return state in TERMINAL or state in FAILED

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
                if b.state == State.RECORDING:
                    bars.start_task(tasks["recording"])
                    elapsed = (utcnow() - b.start_time).total_seconds()
                    bars.update(tasks["recording"], completed=min(1.0, elapsed / seconds))
                elif b.state != State.CONFIRMED:
                    bars.update(tasks["recording"], completed=1.0)
                stage = {"processing": "processing", "uploading": "uploading"}.get(
                    b.progress_stage or ""
                )
                if stage and b.progress is not None:
                    bars.start_task(tasks[stage])
                    bars.update(tasks[stage], completed=b.progress)
                if b.state in (State.VIDEO_PROCESSED, State.VIDEO_UPLOADED):
                    bars.update(tasks["processing"], completed=1.0)
                if b.state == State.VIDEO_UPLOADED:
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
    if final.state != State.VIDEO_UPLOADED:
        show_booking(c, booking.id, as_json=False)
        click.echo(
            f"error: demo ended in {final.state}: {final.last_error or 'see history above'}",
            err=True,
        )
        sys.exit(1)
    outputs = final.extra.get("outputs") or [final.processed_path]
    out.print(f"finished video: {', '.join(str(p) for p in outputs)}", markup=False)
    out.print(f"stored at:      {final.video_url}", markup=False)


@click.command()
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
    columns = (TextColumn("building {task.fields[chunks]}"), BarColumn(), TaskProgressColumn())
    with Progress(*columns, console=out) as bars:
        task = bars.add_task("build", total=1.0, chunks="")

        def chunks(built: int, total: int) -> None:
            bars.update(task, chunks=f"(chunks {built}/{total})")

        try:
            result = builder.build(spec, on_progress=lambda f: bars.update(task, completed=f),
                                   on_chunks=chunks)
        except builder.BuildError as exc:
            raise click.ClickException(f"build of {booking_id} failed: {exc}") from None
    out.print(json.dumps({"outputs": [str(p) for p in result.outputs],
                          "duration_s": result.duration_s, "notes": result.notes,
                          "chunks": result.chunks, "cpu_s": round(result.cpu_s, 2)}))
