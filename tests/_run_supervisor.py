"""`ezrec run`, for the crash tests, with the long jobs slowed down so that a SIGKILL can land
in the middle of them. Product code has no such hooks: this wraps the real job functions.

    python tests/_run_supervisor.py [--slow build|upload] [--pause S]
"""

from __future__ import annotations

import argparse
import signal
import time
from typing import Any

from controller import video_jobs
from controller.context import open_context
from controller.supervisor import create_supervisor


def slowed(fn: Any, pause: float) -> Any:
    def wrapper(settings: Any, booking: Any, driver: Any, progress: Any, stop: Any) -> Any:
        paused = False

        def slow_progress(fraction: float, **detail: int) -> None:
            nonlocal paused
            progress(fraction, **detail)
            if not paused and fraction > 0:
                paused = True
                print(f"PAUSED {booking.id}", flush=True)
                time.sleep(pause)

        return fn(settings, booking, driver, slow_progress, stop)

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow", choices=["build", "upload"])
    parser.add_argument("--pause", type=float, default=30.0)
    args = parser.parse_args()
    ctx = open_context()
    sup = create_supervisor(ctx.settings, ctx.store)
    if args.slow == "build":
        sup.build_fn = slowed(video_jobs.build_video, args.pause)
    elif args.slow == "upload":
        sup.upload_fn = slowed(video_jobs.upload_video, args.pause)
    signal.signal(signal.SIGTERM, lambda *_: sup.request_stop())
    sup.run()


if __name__ == "__main__":
    main()
