"""A database that is not there: how to tell, how to say it in one line, how long to wait.

`Database` turns a URL it cannot use into `DatabaseUnavailable`; a database lost later shows as
SQLAlchemy's OperationalError and friends, which `is_unavailable` recognises. The CLI prints
`describe(...)` and exits non-zero, the API answers 503, and the supervisor's loop keeps its
recordings running and retries with `Outage`'s backoff. Nothing here imports the tables, so
the API and the CLI can use it without a session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger("ezrec.db")


class DatabaseUnavailable(Exception):
    """EZREC_DB_URL cannot be used (bad URL, missing driver, server down); one line for a
    person, naming the setting and what to do."""


def is_unavailable(exc: BaseException) -> bool:
    """True for "the database cannot be reached or used right now", as opposed to a bug.

    OperationalError covers a refused or dropped connection, a failed login, a database that
    does not exist and SQLite's "database is locked" / "unable to open database file";
    InterfaceError a connection closed under us; the pool's TimeoutError no free connection.
    """
    if isinstance(exc, DatabaseUnavailable | OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def safe_url(url: str) -> str:
    """The URL with its password masked: it is printed and logged."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable)"


def reason(exc: BaseException) -> str:
    """The driver's own first line ("connection refused", "database is locked"), without
    SQLAlchemy's statement dump and background link."""
    if isinstance(exc, DatabaseUnavailable):
        return str(exc)
    inner = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
    return lines[0] if lines else type(inner).__name__


def describe(exc: BaseException, url: str | None = None) -> str:
    """One line naming EZREC_DB_URL and what to do."""
    if isinstance(exc, DatabaseUnavailable):
        return str(exc)
    where = f"EZREC_DB_URL={safe_url(url)}" if url else "EZREC_DB_URL"
    why = reason(exc)
    if "locked" in why:
        hint = "another process held it longer than the busy timeout; try again"
    elif url and url.startswith("sqlite"):
        hint = "check that the file's directory exists, is writable and has free space"
    else:
        hint = "check that the server is running and reachable, and the URL and password"
    return f"the database ({where}) cannot be used: {why}; {hint}"


class Outage:
    """A database outage as the supervisor sees it: since when, and how long to wait before
    the next try (exponential, from `first_s` up to `max_s`, so a server that is restarting
    is found again within seconds and a long outage costs one cheap try every `max_s`)."""

    def __init__(
        self,
        *,
        first_s: float = 0.5,
        max_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first_s, self.max_s, self.clock = first_s, max_s, clock
        self.since: float | None = None
        self.failures = 0
        self.last_reason = ""

    @property
    def down(self) -> bool:
        return self.since is not None

    def age_s(self) -> float:
        return 0.0 if self.since is None else self.clock() - self.since

    def failed(self, exc: BaseException, url: str | None = None) -> float:
        """Record one failed attempt; returns the seconds to wait before the next one."""
        self.last_reason = reason(exc)
        if self.since is None:
            self.since = self.clock()
            # One line when it starts, not one per retry: the log must stay readable.
            log.error("%s; recordings go on, retrying", describe(exc, url))
        elif self.failures % 30 == 0:
            log.warning("database still unreachable after %.0f s: %s", self.age_s(),
                        self.last_reason)
        self.failures += 1
        return min(self.max_s, self.first_s * 2 ** (self.failures - 1))

    def recovered(self) -> float | None:
        """The database answered again: returns how long it was away (None if it was not)."""
        if self.since is None:
            return None
        away = self.age_s()
        log.warning("database reachable again after %.0f s (%d failed tries)", away,
                    self.failures)
        self.since, self.failures, self.last_reason = None, 0, ""
        return away
