"""`db.upsert`: one INSERT ... ON CONFLICT DO UPDATE on SQLite and on the session's PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from controller.db import Database, KeyValue, SlotLock, upsert

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(url)
    yield database
    database.dispose()


def kv(db: Database) -> dict[str, tuple[str, datetime]]:
    with db.reader() as session:
        return {r.key: (r.value, r.updated_at) for r in session.scalars(select(KeyValue))}


def test_inserts_then_updates_every_other_column(db: Database) -> None:
    with db.session() as session:
        upsert(session, KeyValue, {"key": "a", "value": "1", "updated_at": T0})
    with db.session() as session:
        upsert(session, KeyValue, {"key": "a", "value": "2", "updated_at": T0 + timedelta(1)})
        upsert(session, KeyValue, {"key": "b", "value": "3", "updated_at": T0})
    assert kv(db) == {"a": ("2", T0 + timedelta(1)), "b": ("3", T0)}


def test_update_may_use_the_existing_row(db: Database) -> None:
    for _ in range(3):
        with db.session() as session:
            upsert(
                session,
                SlotLock,
                {"camera_id": "cam", "counter": 1},
                update={"counter": SlotLock.counter + 1},
            )
    with db.reader() as session:
        assert session.get(SlotLock, "cam").counter == 3  # type: ignore[union-attr]


def test_writers_racing_on_a_new_key_never_collide(db: Database) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def write(n: int) -> None:
        try:
            start.wait()
            for i in range(10):
                with db.session() as session:
                    upsert(session, KeyValue, {"key": "k", "value": f"{n}.{i}", "updated_at": T0})
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list(kv(db)) == ["k"]
    assert kv(db)["k"][0].endswith(".9")
