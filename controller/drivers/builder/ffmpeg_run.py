"""Running one ffmpeg (progress parsed, stderr drained, stoppable) and checking what it
wrote before it replaces anything."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from controller.drivers.builder.spec import (
    BuildError,
)
from controller.drivers.cameras.children import spawn_child
from controller.drivers.ffprobe import ProbeError, ffprobe, video_stream

log = logging.getLogger("ezrec.builder")

KILL_WAIT_S = 5.0  # a SIGKILLed ffmpeg is reaped well within this (kernel time only)


def run_ffmpeg(
    argv: list[str],
    expected_s: float,
    report: Callable[[float], None],
    stop: threading.Event | None,
    nice: int = 0,
) -> float:
    """Run one ffmpeg with -progress on stdout, stderr drained, stoppable; raise on failure.

    Returns the CPU seconds (user + system) the process used: what a build costs in total is
    the sum of these, whether it ran in chunks while recording or in one pass afterwards."""
    cmd = [argv[0], "-progress", "pipe:1", "-nostats", *argv[1:]]
    # Tied to our life: after a SIGKILL of the supervisor no encoder goes on writing.
    proc = spawn_child(
        cmd, nice=nice, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    tail: deque[str] = deque(maxlen=30)

    def drain_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line.decode(errors="replace").rstrip())

    def read_progress() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            key, _, value = raw.decode(errors="replace").strip().partition("=")
            if key == "out_time_us" and value.lstrip("-").isdigit():
                try:
                    report(max(0, int(value)) / 1e6 if expected_s > 0 else 0.0)
                except Exception:  # a failing progress callback must never stall the encode
                    log.exception("progress callback failed")

    threads = [threading.Thread(target=t, daemon=True) for t in (drain_stderr, read_progress)]
    for t in threads:
        t.start()
    # Its exit is seen at once (a chunk's next step waits on it; polling every 0.2 s cost a
    # tenth of a second a chunk), a stop within 0.1 s.
    exited = threading.Event()
    threading.Thread(target=lambda: exited.set() if _exited(proc, block=True) else None,
                     daemon=True).start()  # fmt: skip
    stopped = False
    while not exited.wait(None if stop is None else 0.1):
        if stop is not None and stop.is_set():
            stopped = True
            _stop_process(proc)
            break
    cpu = _cpu_seconds(proc.pid)
    proc.wait()
    # The last progress lines and error text, but a progress callback that is slow (a busy
    # database) must not hold up a shutdown that systemd bounds.
    deadline = time.monotonic() + 5
    for t in threads:
        while t.is_alive() and time.monotonic() < deadline:
            if stop is not None and stop.is_set():
                break
            t.join(timeout=0.1)
    if stopped:
        raise BuildError("stopped")
    if proc.returncode != 0:
        errors = [line for line in tail if line.strip()]
        detail = errors[-1] if errors else "no output"
        raise BuildError(f"ffmpeg failed (exit {proc.returncode}): {detail}")
    return cpu


def _exited(proc: subprocess.Popen[bytes], *, block: bool) -> bool:
    """Whether the child has exited, leaving it unreaped (a zombie still shows its CPU times
    in /proc, which a reaped child does not)."""
    flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
    try:
        return os.waitid(os.P_PID, proc.pid, flags) is not None
    except ChildProcessError:  # already reaped elsewhere
        return True


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    # Fields 14 and 15 of stat(5), utime and stime; the split after "comm)" starts at field 3.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    # A stopped build is thrown away (BuildError("stopped"); the next attempt starts over in a
    # scratch folder of its own), so nothing is gained by letting ffmpeg finish its output: on
    # 'q' or SIGTERM it flushes every encoder first, which on a loaded Pi takes seconds of a
    # shutdown systemd bounds (TimeoutStopSec). It is killed at once.
    with contextlib.suppress(OSError, ValueError):
        assert proc.stdin is not None
        proc.stdin.close()
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait(KILL_WAIT_S)


def validate(
    path: Path, expected_duration: float, width: int, height: int, tolerance: float = 0.5
) -> None:
    """Raise BuildError unless ``path`` is an MP4 with the size and duration expected."""
    try:
        info = ffprobe(path, "-show_format", "-show_streams")
    except ProbeError as exc:
        raise BuildError(f"output unreadable: {exc}") from None
    stream = video_stream(info)
    if stream is None:
        raise BuildError("output has no video stream")
    got_w, got_h = int(stream.get("width") or 0), int(stream.get("height") or 0)
    if (got_w, got_h) != (width, height):
        raise BuildError(f"output is {got_w}x{got_h}, expected {width}x{height}")
    try:
        duration = float(info.get("format", {}).get("duration") or stream.get("duration") or 0)
    except ValueError:
        duration = 0.0
    if abs(duration - expected_duration) > tolerance:
        raise BuildError(
            f"output lasts {duration:.2f} s, expected {expected_duration:.2f} s "
            f"(tolerance {tolerance:.2f} s)"
        )
    # A header can be right about a file whose frames are not: decode the first frame.
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-map", "0:v:0"]
    cmd += ["-frames:v", "1", "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BuildError(f"output not decodable: {lines[-1] if lines else 'unknown error'}")
