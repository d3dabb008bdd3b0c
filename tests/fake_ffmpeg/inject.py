"""A fake `ffmpeg` that makes a camera's recording fail the way a test asks, then runs the real one.

Why a fake executable on PATH: the cameras' failures are injected at the boundary the drivers
really have (the ffmpeg process they spawn and watch), so production code carries no test hook,
and the same injection reaches an `ezrec run` or `ezrec demo` subprocess through its
environment alone (PATH and the variable below), with the real exit codes and signals.

`EZRECTEST_FFMPEG_FAIL` holds comma-separated `<camera>:<kind>[=<seconds>]` entries:

    1:start           camera 1 fails to start (exits 1 with a message, like a bad device)
    1:die_after=2     camera 1's ffmpeg exits by itself after 2 s of video (exit code 0)
    1:kill_after=2    camera 1's ffmpeg is SIGKILLed after 2 s (a crash: open segment cut short)
    1:stall_after=2   camera 1's ffmpeg is frozen (SIGSTOP) after 2 s: alive, but no frames

A camera's recording is recognised by its segment muxer's output (`.../cam<N>/<run>-%05d.ts`);
every other ffmpeg call (stills, probes, the builder's encodes) runs unchanged. The variable is
read at every start, so a test can change it between recordings. Standard library only: this
runs in a bare interpreter (`python -S -E`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import NamedTuple

FAIL_ENV = "EZRECTEST_FFMPEG_FAIL"
KINDS = ("start", "die_after", "kill_after", "stall_after")
HERE = Path(__file__).resolve().parent
_RECORDING = re.compile(r"/cam(\d+)/\d{3}-%05d\.ts$")
# Runs as its own small process (its command line names neither ffmpeg nor the data dir, so
# the tests' process scans do not count it): signals its parent, the ffmpeg, after a while,
# unless that ffmpeg is gone by then.
_WATCHER = """
import os, sys, time
pid, seconds, sig = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    if os.getppid() != pid:
        sys.exit(0)
    time.sleep(0.05)
if os.getppid() == pid:
    os.kill(pid, sig)
"""


class Injection(NamedTuple):
    kind: str
    seconds: float = 0.0


def parse_failures(text: str) -> dict[int, Injection]:
    """`"1:start,0:die_after=2"` -> {1: Injection("start"), 0: Injection("die_after", 2.0)}."""
    out: dict[int, Injection] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        cam, sep, spec = entry.partition(":")
        kind, _, seconds = spec.partition("=")
        try:
            if not sep or not cam.strip().isdigit() or kind not in KINDS:
                raise ValueError
            value = float(seconds) if seconds else 0.0
            if (kind == "start") != (not seconds) or value < 0:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"{FAIL_ENV}: bad entry {entry!r}; expected <camera>:start or "
                "<camera>:die_after|kill_after|stall_after=<seconds>"
            ) from None
        out[int(cam)] = Injection(kind, value)
    return out


def real_ffmpeg() -> str:
    path = os.pathsep.join(
        d for d in os.environ.get("PATH", "").split(os.pathsep)
        if d and Path(d).resolve() != HERE
    )
    found = shutil.which("ffmpeg", path=path)
    if not found:
        sys.exit("fake ffmpeg: no real ffmpeg on PATH")
    return found


def recording_camera(args: list[str]) -> int | None:
    match = _RECORDING.search(args[-1]) if args else None
    return int(match.group(1)) if match else None


def _watch(seconds: float, sig: int) -> None:
    """Fork the watcher that sends `sig` to this process (ffmpeg by then) after `seconds`."""
    pid = os.getpid()
    if os.fork() == 0:
        # Not holding ffmpeg's pipes: the driver must see their end when ffmpeg dies.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execv(sys.executable, [sys.executable, "-S", "-E", "-c", _WATCHER, str(pid),
                                  str(seconds), str(sig)])


def main(args: list[str]) -> None:
    real = real_ffmpeg()
    camera = recording_camera(args)
    fault = parse_failures(os.environ.get(FAIL_ENV, "")).get(camera) if camera is not None \
        else None
    if fault is not None and fault.kind == "start":
        sys.stderr.write(f"{FAIL_ENV}: camera {camera} refuses to start\n")
        sys.exit(1)
    if fault is not None and fault.kind == "die_after" and "-i" in args:
        at = args.index("-i")  # an input option: the input ends after that many seconds
        args = [*args[:at], "-t", f"{fault.seconds:g}", *args[at:]]
    elif fault is not None and fault.kind == "kill_after":
        _watch(fault.seconds, signal.SIGKILL)
    elif fault is not None and fault.kind == "stall_after":
        _watch(fault.seconds, signal.SIGSTOP)
    os.execv(real, [real, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
