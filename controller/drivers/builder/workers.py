"""How the chunked build runs its work: chunks encoded ahead of the one being joined (`depth`
at a time, joined in order), and progress callbacks that can neither fail the build nor go
backwards while two encodes report at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger("ezrec.builder")


class Ahead:
    """At most `depth` encodes in flight, each known by the chunk's name. With depth 1 an
    encode runs in the caller's thread when it is taken, as if there were no pool."""

    def __init__(self, depth: int) -> None:
        self.depth = max(1, depth)
        self._pool = ThreadPoolExecutor(self.depth, "chunk") if self.depth > 1 else None
        self._pending: dict[str, Future[None] | tuple[Callable[..., None], tuple[Any, ...]]] = {}

    def submit(self, name: str, fn: Callable[..., None], *args: Any) -> None:
        """Start making `name` (once: a name already in flight is left as it is)."""
        if name in self._pending:
            return
        self._pending[name] = (fn, args) if self._pool is None else self._pool.submit(fn, *args)

    def take(self, name: str) -> int:
        """Wait until `name` is made (its error raised here); 1 if it was made now, else 0."""
        job = self._pending.pop(name, None)
        if job is None:
            return 0
        if isinstance(job, Future):
            job.result()
        else:
            job[0](*job[1])
        return 1

    def close(self) -> None:
        """Wait for the encodes still in flight (a stop ends them at once; after another's
        error, one finishes its chunk): no encoder may outlive the chunk folder's lock."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def guarded(fn: Callable[..., None] | None) -> Callable[..., None] | None:
    """A progress callback that fails (the database is busy) must never fail the build."""
    if fn is None:
        return None
    callback = fn

    def call(*args: Any) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("progress callback failed")

    return call


def rising(fn: Callable[[float], None] | None) -> Callable[[float], None] | None:
    """`fn` called only with a fraction above every one before (thread-safe)."""
    if fn is None:
        return None
    callback, lock, shown = fn, threading.Lock(), [-1.0]

    def call(fraction: float) -> None:
        with lock:
            if fraction <= shown[0]:
                return
            shown[0] = fraction
        callback(fraction)

    return call
