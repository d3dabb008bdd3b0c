"""A build from start to end: plan, run the jobs, validate, rename into place."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from controller.drivers.builder.chunks import chunk_command_lines
from controller.drivers.builder.fastpath import (
    ParamMismatch,
    fast_path_blocker,
    plan_encode_instead,
    plan_fast,
)
from controller.drivers.builder.ffmpeg_run import (
    run_ffmpeg,
    validate,
)
from controller.drivers.builder.graph import (
    plan_encode,
)
from controller.drivers.builder.incremental import (
    CannotJoin,
    ChunksFn,
    chunk_dir,
    finish,
    why_not,
)
from controller.drivers.builder.plan import (
    MediaInfo,
    Plan,
    align_feeds,
    layout_size,
    place_overlays,
    prepare_feeds,
    probe_media,
    recording_length,
    stale_work_dirs,
    work_dir,
)
from controller.drivers.builder.spec import (
    LAYOUTS,
    POSITIONS,
    BuildError,
    BuildResult,
    BuildSpec,
    Overlay,
    ProgressFn,
)
from controller.fileio import durable_replace


def make_plan(spec: BuildSpec) -> Plan:
    """Check the spec, probe the inputs and decide every one-pass or stream-copy ffmpeg job;
    nothing runs yet."""
    return _plan_jobs(decide(spec))


def _plan_jobs(plan: Plan) -> Plan:
    if can_copy(plan):
        blocker = fast_path_blocker(plan)
        if blocker is None:
            plan_fast(plan)
            return plan
        plan.notes.append(f"stream copy impossible ({blocker}): re-encoded")
    plan_encode(plan)
    return plan


def can_copy(plan: Plan) -> bool:
    """Nothing is drawn on the recording: it may be joined to the intro by stream copy."""
    return (
        plan.spec.fast_path
        and plan.layout in ("single", "separate")
        and not plan.overlays
        and all(f.feed.rotation == 0 for f in plan.feeds)
    )


def decide(spec: BuildSpec) -> Plan:
    """The spec checked, every segment probed, the feeds aligned and the media placed: what
    every way of building (one pass, stream copy, chunks) starts from."""
    if spec.layout not in LAYOUTS:
        raise BuildError(f"unknown layout {spec.layout!r} (one of {', '.join(LAYOUTS)})")
    if spec.width < 16 or spec.height < 16 or spec.fps < 1:
        raise BuildError(f"bad output size {spec.width}x{spec.height} at {spec.fps} fps")
    for f in spec.feeds:
        if f.rotation not in (0, 90, 180, 270):
            raise BuildError(f"camera {f.camera}: rotation {f.rotation} is not 0/90/180/270")
    notes: list[str] = []
    feeds = prepare_feeds(spec, notes)
    if not feeds:
        raise BuildError("no camera has any readable video")
    align_feeds(spec, feeds, notes)
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
    recording_s = recording_length(spec, feeds)
    if recording_s < 0.1:
        raise BuildError("no recorded video inside the booking window")
    # The frame follows the cameras that have video: a missing one leaves no black hole.
    out_w, out_h = layout_size(layout, len(feeds), spec.width, spec.height)

    intro: MediaInfo | None = None
    if spec.intro is not None:
        probed = probe_media(spec.intro)
        if isinstance(probed, str) or probed.duration <= 0:
            reason = probed if isinstance(probed, str) else "no duration"
            notes.append(f"intro unreadable ({reason}): built without it")
        else:
            intro = probed

    logos: list[tuple[Overlay, int, int]] = []
    for o in spec.overlays:
        if o.position not in POSITIONS:
            raise BuildError(f"{o.name}: unknown position {o.position!r}")
        probed = probe_media(o.path) if o.path.is_file() else "missing"
        if isinstance(probed, str):
            notes.append(f"{o.name} unreadable ({probed}): built without it")
        else:
            logos.append((o, probed.width, probed.height))
    placed = place_overlays(logos, out_w, out_h)

    plan = Plan(spec, layout, feeds, intro, placed, recording_s, out_w, out_h, work_dir(spec))
    plan.notes = notes
    return plan


# -- public entry points -------------------------------------------------------------------
def command_lines(spec: BuildSpec) -> list[list[str]]:
    """The exact ffmpeg argv(s) ``build`` runs, in order (for ``ezrec build ID --print``): the
    intro and every chunk for a build in chunks (then joined in Python, `fmp4`), or the one-pass
    or stream-copy jobs.

    The concat lists they name are written into the work dir, so the lines can be pasted.
    """
    plan = decide(spec)
    if in_chunks(plan):
        return chunk_command_lines(plan)
    _plan_jobs(plan)
    plan.write_inputs()
    return [job.argv for job in plan.jobs]


def in_chunks(plan: Plan) -> bool:
    return why_not(plan) is None and not can_copy(plan)


def build(
    spec: BuildSpec,
    on_progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    on_chunks: ChunksFn | None = None,
) -> BuildResult:
    """Build the finished video(s) of ``spec``; raises BuildError with the reason.

    The merged layouts are built in chunks (`incremental`: the chunks made while the slot was
    recorded are reused); `on_chunks(joined, total)` follows them."""
    began = time.monotonic()
    for stale in stale_work_dirs(spec):
        # Their encoders died with the supervisor that ran them (children.spawn_child).
        shutil.rmtree(stale, ignore_errors=True)
    plan = decide(spec)
    if in_chunks(plan):
        try:
            return finish(plan, on_progress, stop, on_chunks)
        except CannotJoin as exc:
            plan = decide(spec)
            plan.notes.append(f"chunks cannot be joined ({exc}): built in one pass")
            shutil.rmtree(chunk_dir(spec.output), ignore_errors=True)
    _plan_jobs(plan)
    try:
        plan.write_inputs()
        try:
            cpu = _run_jobs(plan, on_progress, stop)
        except ParamMismatch as exc:
            plan_encode_instead(plan, str(exc))
            plan.write_inputs()
            cpu = _run_jobs(plan, on_progress, stop)
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
        time.monotonic() - began, dict(plan.timeline), cpu,
    )  # fmt: skip


def _run_jobs(plan: Plan, on_progress: ProgressFn | None, stop: threading.Event | None) -> float:
    total = sum(j.expected_s for j in plan.jobs) or 1.0
    done = cpu = 0.0
    for job in plan.jobs:

        def report(seconds: float, base: float = done) -> None:
            if on_progress is not None:
                on_progress(min(0.999, (base + seconds) / total))

        cpu += run_ffmpeg(job.argv, job.expected_s, report, stop, nice=plan.spec.nice)
        if job.after is not None:
            job.after()
        done += job.expected_s
    return cpu


def _finish(plan: Plan) -> list[Path]:
    # Every output is checked before any is renamed: "separate" is all cameras or nothing.
    tolerance = max(0.5, 4 / plan.spec.fps)
    for job in plan.jobs:
        for temp, _ in job.outputs:
            validate(temp, job.expected_s, job.width, job.height, tolerance)
    finals: list[Path] = []
    for job in plan.jobs:
        for temp, final in job.outputs:
            durable_replace(temp, final)
            finals.append(final)
    return finals
