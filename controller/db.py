"""Database: SQLAlchemy 2 engine and sessions, the tables, and Alembic migrations.

SQLite (WAL, busy timeout) is the embedded default; the same code runs on PostgreSQL for a
fleet, so nothing here uses SQLite-only SQL (`upsert` picks the dialect's own INSERT ... ON
CONFLICT, which both spell the same way). Times are stored as naive UTC and handed out as
UTC-aware datetimes, so that no caller ever has to guess a time zone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from controller.dbhealth import DatabaseUnavailable, describe, is_unavailable, safe_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out; naive values are refused."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: times must carry a UTC offset")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Booking(Base):
    __tablename__ = "bookings"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(String(128))
    camera_id: Mapped[str] = mapped_column(String(64))
    device_id: Mapped[str] = mapped_column(String(64))
    start_time: Mapped[datetime] = mapped_column(UTCDateTime())
    end_time: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    raw_dir: Mapped[str | None] = mapped_column(Text)
    processed_path: Mapped[str | None] = mapped_column(Text)
    video_url: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[float | None] = mapped_column(Float)
    progress_stage: Mapped[str | None] = mapped_column(String(32))
    # Chunks built and bytes uploaded, as JSON (`progress_detail`); not a state change either.
    progress_detail_json: Mapped[str | None] = mapped_column("progress_detail", Text)
    extra_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_bookings_state_start", "state", "start_time"),
        Index("ix_bookings_state_end", "state", "end_time"),
        Index("ix_bookings_state_next", "state", "next_attempt_at"),
        Index("ix_bookings_camera_start", "camera_id", "start_time"),
        Index("ix_bookings_camera_state_start", "camera_id", "state", "start_time"),
    )

    @property
    def extra(self) -> dict[str, Any]:
        return json.loads(self.extra_json or "{}")

    @property
    def progress_detail(self) -> dict[str, int] | None:
        return json.loads(self.progress_detail_json) if self.progress_detail_json else None

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "id": self.id,
            "user_id": self.user_id,
            "camera_id": self.camera_id,
            "device_id": self.device_id,
            "start_time": iso(self.start_time),
            "end_time": iso(self.end_time),
            "state": self.state,
            "version": self.version,
            "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at),
            "last_error": self.last_error,
            "raw_dir": self.raw_dir,
            "processed_path": self.processed_path,
            "video_url": self.video_url,
            "progress": self.progress,
            "progress_stage": self.progress_stage,
            "progress_detail": self.progress_detail,
            "extra": self.extra,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


class TransitionRow(Base):
    """Append-only history: one row per transition, `seq` equals the booking's new version."""

    __tablename__ = "transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    booking_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("bookings.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(Integer)
    from_state: Mapped[str | None] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    trigger: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    detail: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("booking_id", "seq", name="uq_transitions_booking_seq"),)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "from": self.from_state,
            "to": self.to_state,
            "trigger": self.trigger,
            "at": self.at.isoformat(),
            "detail": self.detail,
            "error": self.error,
        }


class MarkRow(Base):
    """A replay mark: someone at the court asked for "that was good" at `at` (wall clock).

    Written only by `controller.fsm.marks`, in the same transaction as the booking's history
    row and version bump; the clips of the finished video are cut around these times."""

    __tablename__ = "marks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    booking_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("bookings.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(32))  # button | api | cli
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_marks_booking_at", "booking_id", "at"),)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(), "source": self.source}


class OutboxRow(Base):
    """Every booking change, written in the same transaction as the change itself, waiting to
    be delivered to the booking system in order (at least once; the far side is idempotent on
    (booking_id, seq))."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    booking_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_outbox_pending", "delivered_at", "id"),)

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.payload)


class SlotLock(Base):
    """One row per camera, written first in every create/reschedule so that two writers
    checking for overlaps on the same camera are serialised (a row lock on PostgreSQL, the
    write lock on SQLite)."""

    __tablename__ = "slot_locks"

    camera_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    counter: Mapped[int] = mapped_column(Integer, default=0)


class KeyValue(Base):
    """Small runtime facts shared between processes: supervisor heartbeat, last errors."""

    __tablename__ = "kv"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


# Both dialects' INSERT has the same on_conflict_do_update(index_elements=, set_=).
_UPSERT_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def upsert(
    session: Session,
    model: type[Base],
    values: dict[str, Any],
    *,
    update: dict[str, Any | ColumnElement[Any]] | None = None,
) -> None:
    """Insert the row `values`, or, if its primary key is taken, update that row: one atomic
    statement (INSERT ... ON CONFLICT DO UPDATE), so that two writers racing on a new key
    cannot both insert. `update` says what changes on a conflict (default: every non-key
    column to the new value); its values may be SQL expressions of the existing row."""
    dialect = session.get_bind().dialect.name
    insert = _UPSERT_INSERTS.get(dialect)
    if insert is None:
        raise NotImplementedError(f"no upsert for the {dialect} dialect")
    stmt = insert(model).values(**values)
    keys = [column.name for column in model.__table__.primary_key.columns]
    if update is None:
        update = {name: stmt.excluded[name] for name in values if name not in keys}
    session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=update))


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


def _pg_timeouts(url: str) -> dict[str, Any]:
    """libpq options so that a server that vanished fails a call within seconds instead of
    blocking the supervisor's loop for the kernel's TCP timeout (minutes); the URL's own
    query parameters win."""
    wanted = {
        "connect_timeout": 5,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
    }
    try:
        given = set(make_url(url).query)
    except (ArgumentError, ValueError):
        return {}  # create_engine says what is wrong with the URL
    if not url.startswith("postgresql+psycopg"):
        return {}  # other drivers spell their options differently
    return {key: value for key, value in wanted.items() if key not in given}


def _bad_url(url: str, driver_url: str, exc: Exception) -> str:
    shown = safe_url(url)
    if isinstance(exc, NoSuchModuleError):  # a subclass of ArgumentError: test it first
        return (
            f"EZREC_DB_URL={shown}: unknown database driver (use sqlite:///PATH, or "
            "postgresql://USER@HOST/DB with pip install 'ezrec[postgres]')"
        )
    if isinstance(exc, ArgumentError | ValueError):  # ValueError: a port that is no number
        return (
            "EZREC_DB_URL is not a database URL (use sqlite:////var/lib/ezrec/state.db or "
            "postgresql://USER:PASSWORD@HOST/DATABASE)"
        )
    module = getattr(exc, "name", None) or str(exc)
    # psycopg itself missing, or its libpq wrapper ("no pq wrapper available").
    if module.split(".")[0] == "psycopg" or driver_url.startswith("postgresql+psycopg:"):
        return (
            f"EZREC_DB_URL={shown} needs PostgreSQL support (the Python module psycopg), "
            "which is not installed: pip install 'ezrec[postgres]'"
        )
    return (
        f"EZREC_DB_URL={shown} needs the Python module {module!r}, which is not installed: "
        "pip install it, or use postgresql://... with pip install 'ezrec[postgres]'"
    )


class Database:
    """The engine, a session factory and the schema version for one database URL."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        """Raises DatabaseUnavailable (one line naming EZREC_DB_URL) when the URL cannot be
        used: unparsable, an unknown or missing driver, a server that does not answer."""
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            path = url.split("sqlite:///", 1)[-1]
            if path and path != ":memory:":
                try:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise DatabaseUnavailable(
                        f"EZREC_DB_URL={url}: cannot create its directory: {exc.strerror}"
                    ) from None
            kwargs["connect_args"] = {"timeout": 10, "check_same_thread": False}
        elif url.startswith("postgresql"):
            if url.startswith("postgresql://"):
                # psycopg 3 is the driver we install; the bare scheme would ask for psycopg2.
                url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = _pg_timeouts(url)
        try:
            self.engine = create_engine(url, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
            raise DatabaseUnavailable(_bad_url(self.url, url, exc)) from None
        if self.engine.dialect.name == "sqlite":
            _sqlite_pragmas(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if migrate:
            try:
                self.migrate()
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                self.engine.dispose()
                raise DatabaseUnavailable(describe(exc, self.url)) from None

    def alembic_config(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def migrate(self) -> None:
        """Bring the schema to the newest revision (cheap when it is already there)."""
        cfg = self.alembic_config()
        head = ScriptDirectory.from_config(cfg).get_current_head()
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed when the block ends, rolled back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    def reader(self) -> Session:
        return self._sessions()

    def dispose(self) -> None:
        self.engine.dispose()
