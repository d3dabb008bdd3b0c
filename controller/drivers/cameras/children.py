"""Child processes tied to the controller's life: cameras, encoders, anything long-running.

A child that outlives a killed supervisor keeps a camera busy or writes into a file the next
attempt writes too. The kernel kills these children (PR_SET_PDEATHSIG) when the supervisor dies,
however it dies; each runs in its own session so that a Ctrl-C meant for the supervisor reaches
only the supervisor, which then stops them cleanly.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import Queue
from typing import Any

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not Linux
        return None


_prctl = _load_prctl()


class _Spawner:
    """Starts children from one long-lived thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not the process: a
    child started from a short-lived worker thread would be killed when that thread ends. This
    daemon thread lives as long as the process, so the signal means "the supervisor died".
    """

    def __init__(self) -> None:
        self._queue: Queue[tuple[list[str], dict[str, Any], Future[subprocess.Popen[bytes]]]]
        self._queue = Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="ezrec-spawner", daemon=True
                )
                self._thread.start()
        future: Future[subprocess.Popen[bytes]] = Future()
        self._queue.put((cmd, kwargs, future))
        return future.result()

    def _run(self) -> None:
        while True:
            cmd, kwargs, future = self._queue.get()
            try:
                future.set_result(subprocess.Popen(cmd, **kwargs))
            except BaseException as exc:  # handed to the caller, who decides
                future.set_exception(exc)


_spawner = _Spawner()


def spawn_child(cmd: list[str], *, nice: int = 0, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen in its own process group, killed by the kernel (SIGKILL) if the supervisor dies.

    Its own process group (new session) so that a Ctrl-C in the terminal reaches only the
    supervisor, which then stops the recording cleanly instead of ffmpeg dying mid-write.
    `nice` > 0 lowers the child's CPU priority: a build encode must never take CPU time a
    camera's encoder needs (a late camera frame is a lost frame; a late chunk just waits).
    """
    parent = os.getpid()
    prctl = _prctl

    def child_setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            # The parent may have died between fork and prctl: then nobody would kill us.
            if os.getppid() != parent:
                os._exit(1)
        if nice > 0:
            os.nice(nice)

    return _spawner.popen(cmd, preexec_fn=child_setup, start_new_session=True, **kwargs)
