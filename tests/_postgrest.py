"""A loopback stand-in for Supabase: the PostgREST subset (and the one Storage call) that the
real `supabase` client sends for the cloud sync, over in-memory tables.

It speaks what supabase-py 2.x puts on the wire (read from the installed `postgrest` and
`storage3` packages): `GET /rest/v1/<table>?select=..&col=eq.v&col=gte.v&col=in.(a,b)
&order=col.asc&limit=n`, `POST` (insert; with `Prefer: resolution=merge-duplicates` and
`on_conflict=` an upsert), `PATCH` with filters, and `POST /storage/v1/object/sign/<bucket>/
<key>`. Errors come back as PostgREST's JSON (`code`, `message`, `details`, `hint`) with its
SQLSTATE codes, so that the client raises what it raises against a real server.

Tables have declared columns (an unknown column is PGRST204, as with a real schema cache),
a unique key, and optional foreign keys. Every request is recorded. `down("refuse")` closes
the listening socket (connection refused), `down("error")` answers 503; `up()` heals.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest


@dataclass
class Table:
    columns: set[str]
    key: str = "id"  # the unique column an upsert without on_conflict merges on
    unique: set[str] = field(default_factory=set)
    foreign: dict[str, tuple[str, str]] = field(default_factory=dict)  # col -> (table, col)
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Request:
    method: str
    path: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    body: Any

    @property
    def table(self) -> str:
        return self.path.removeprefix("/rest/v1/")

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)


class PostgrestError(Exception):
    def __init__(self, status: int, code: str, message: str, details: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def seed_schema() -> dict[str, Table]:
    """The seed system's tables, with the columns the sync is documented to use."""
    return {
        "bookings": Table(
            {"id", "user_id", "camera_id", "start_time", "end_time", "date", "status",
             "video_url", "recording_id", "created_at"},
        ),
        "videos": Table(
            {"id", "user_id", "booking_id", "video_url", "storage_path", "filename", "date",
             "duration_seconds", "uploaded_at", "size", "created_at", "clips", "share_url",
             "share_expires_at"},
            key="id",
            unique={"booking_id"},
            foreign={"booking_id": ("bookings", "id")},
        ),
        "user_settings": Table(
            {"user_id", "intro_video_path", "logo_path", "sponsor_logo1_path",
             "sponsor_logo2_path", "sponsor_logo3_path"},
            key="user_id",
        ),
        "system_status": Table(
            {"device_id", "status", "is_recording", "cpu_usage", "memory_usage",
             "disk_free_mb", "temperature_c", "cameras_up", "queue", "last_errors",
             "last_seen", "details"},
            key="device_id",
        ),
        "cameras": Table({"id", "name", "status", "last_seen"}),
    }


def _coerce(value: Any) -> Any:
    """A stored value and a filter's text compared the way PostgreSQL would."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    text = str(value)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _split_in(text: str) -> list[str]:
    inner = text.strip()
    if not (inner.startswith("(") and inner.endswith(")")):
        raise PostgrestError(400, "PGRST100", f"failed to parse filter (in.{text})")
    items = []
    for part in inner[1:-1].split(","):
        part = part.strip()
        if len(part) >= 2 and part[0] == part[-1] == '"':
            part = part[1:-1]
        items.append(part)
    return items


def _split_top(text: str) -> list[str]:
    """`a.eq.1,b.in.(2,3)` -> its items, commas inside parentheses kept."""
    items, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            items.append(current)
            current = ""
            continue
        depth += (char == "(") - (char == ")")
        current += char
    return [*items, current] if current else items


def _any_of(row: dict[str, Any], expr: str) -> bool:
    """PostgREST's `or=(col.op.value,...)`."""
    if not (expr.startswith("(") and expr.endswith(")")):
        raise PostgrestError(400, "PGRST100", f"failed to parse logic tree ({expr})")
    for item in _split_top(expr[1:-1]):
        column, _, inner = item.partition(".")
        if _matches(row, column, inner):
            return True
    return False


def _like(value: Any, pattern: str) -> bool:
    regex = "".join(".*" if c in "*%" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, str(value), flags=re.IGNORECASE | re.DOTALL) is not None


def _matches(row: dict[str, Any], column: str, expr: str) -> bool:
    if column == "or":
        return _any_of(row, expr)
    negate = expr.startswith("not.")
    if negate:
        expr = expr[4:]
    op, _, arg = expr.partition(".")
    value = row.get(column)
    if value is None and op != "is":
        return False  # SQL: NULL compared to anything is NULL, negated or not
    if op == "is":
        ok = (value is None) if arg == "null" else (str(value).lower() == arg)
    elif op == "eq":
        ok = value is not None and (str(value) == arg or _coerce(value) == _coerce(arg))
    elif op == "neq":
        ok = value is not None and not (str(value) == arg or _coerce(value) == _coerce(arg))
    elif op == "ilike":
        ok = value is not None and _like(value, arg)
    elif op == "in":
        ok = value is not None and str(value) in _split_in(arg)
    elif op in ("gt", "gte", "lt", "lte"):
        if value is None:
            return False
        left, right = _coerce(value), _coerce(arg)
        try:
            ok = {
                "gt": left > right,
                "gte": left >= right,
                "lt": left < right,
                "lte": left <= right,
            }[op]
        except TypeError:
            raise PostgrestError(
                400, "22007", f"invalid input syntax for comparison: {arg!r}"
            ) from None
    else:
        raise PostgrestError(400, "PGRST100", f"unsupported operator {op!r}")
    return not ok if negate else ok


RESERVED = {"select", "order", "limit", "offset", "on_conflict", "columns"}


class FakeSupabase:
    """The server plus its tables; `url` is what goes into EZREC_SUPABASE_URL."""

    def __init__(self, key: str = "anon-test-key", tables: dict[str, Table] | None = None):
        self.key = key
        self.tables = tables if tables is not None else seed_schema()
        self.requests: list[Request] = []
        self.objects: set[tuple[str, str]] = set()  # (bucket, key) that can be signed
        self.mode = "up"
        self.lock = threading.Lock()
        self.connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._serve()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- life cycle ------------------------------------------------------------------------

    def _serve(self) -> None:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        ThreadingHTTPServer.allow_reuse_address = True
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def _stop_serving(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        # Kept-alive connections would go on being served: cut them, as a dead link would.
        with self.lock:
            open_now, self.connections = list(self.connections), set()
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def down(self, how: str = "refuse") -> None:
        """"refuse": nothing listens on the port; "error": every request gets a 503."""
        if how not in ("refuse", "error"):
            raise ValueError(how)
        self.mode = how
        if how == "refuse":
            self._stop_serving()

    def up(self) -> None:
        if self._server is None:
            self._serve()
        self.mode = "up"

    def close(self) -> None:
        self._stop_serving()

    # -- helpers for tests -----------------------------------------------------------------

    def rows(self, table: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.tables[table].rows]

    def row(self, table: str, **where: Any) -> dict[str, Any] | None:
        for r in self.rows(table):
            if all(r.get(k) == v for k, v in where.items()):
                return r
        return None

    def add(self, table: str, **values: Any) -> dict[str, Any]:
        with self.lock:
            row = dict(values)
            self.tables[table].rows.append(row)
            return row

    def set(self, table: str, match: dict[str, Any], **values: Any) -> None:
        with self.lock:
            for r in self.tables[table].rows:
                if all(r.get(k) == v for k, v in match.items()):
                    r.update(values)

    def writes(self, table: str | None = None) -> list[Request]:
        return [
            r for r in self.requests
            if r.method in ("POST", "PATCH") and (table is None or r.table == table)
        ]

    # -- PostgREST semantics ---------------------------------------------------------------

    def handle_rest(self, req: Request) -> tuple[int, Any, dict[str, str]]:
        name = req.table
        if name not in self.tables:
            raise PostgrestError(
                404, "PGRST205", f"Could not find the table 'public.{name}' in the schema cache"
            )
        table = self.tables[name]
        filters = [(k, v) for k, v in req.params if k not in RESERVED]
        for column, expr in filters:
            if column == "or":
                for item in _split_top(expr.strip("()")):
                    self._check_column(name, item.partition(".")[0])
            else:
                self._check_column(name, column)
        prefer = {p.strip() for p in req.headers.get("prefer", "").split(",") if p.strip()}
        with self.lock:
            if req.method in ("GET", "HEAD"):
                rows = [r for r in table.rows if all(_matches(r, c, e) for c, e in filters)]
                order = req.param("order")
                if order:
                    for part in reversed(order.split(",")):
                        column, _, direction = part.partition(".")
                        self._check_column(name, column)
                        rows.sort(
                            key=lambda r, c=column: (r.get(c) is None, _coerce(r.get(c))),
                            reverse=direction.startswith("desc"),
                        )
                offset = int(req.param("offset") or 0)
                limit = req.param("limit")
                rows = rows[offset:offset + int(limit)] if limit else rows[offset:]
                return 200, [dict(r) for r in rows], {}
            if req.method == "POST":
                body = req.body if isinstance(req.body, list) else [req.body]
                merge = "resolution=merge-duplicates" in prefer
                ignore = "resolution=ignore-duplicates" in prefer
                conflict = req.param("on_conflict") or table.key
                out = [self._insert(name, table, dict(r), conflict, merge, ignore) for r in body]
                out = [r for r in out if r is not None]
                return self._answer(201, out, prefer)
            if req.method == "PATCH":
                if not isinstance(req.body, dict):
                    raise PostgrestError(400, "PGRST102", "Empty or invalid json")
                for column in req.body:
                    self._check_column(name, column)
                changed = []
                for r in table.rows:
                    if all(_matches(r, c, e) for c, e in filters):
                        r.update(req.body)
                        changed.append(dict(r))
                return self._answer(200, changed, prefer)
        raise PostgrestError(405, "PGRST117", f"Unsupported HTTP method: {req.method}")

    def _answer(
        self, status: int, rows: list[dict[str, Any]], prefer: set[str]
    ) -> tuple[int, Any, dict[str, str]]:
        if "return=representation" in prefer:
            return status, rows, {}
        return (204 if status == 200 else status), None, {}

    def _check_column(self, table: str, column: str) -> None:
        if column not in self.tables[table].columns:
            raise PostgrestError(
                400, "PGRST204",
                f"Could not find the '{column}' column of '{table}' in the schema cache",
            )

    def _insert(
        self,
        name: str,
        table: Table,
        row: dict[str, Any],
        conflict: str,
        merge: bool,
        ignore: bool,
    ) -> dict[str, Any] | None:
        for column in row:
            self._check_column(name, column)
        for column, (other, other_col) in table.foreign.items():
            value = row.get(column)
            if value is not None and not any(
                r.get(other_col) == value for r in self.tables[other].rows
            ):
                raise PostgrestError(
                    409, "23503",
                    f'insert or update on table "{name}" violates foreign key constraint',
                    f'Key ({column})=({value}) is not present in table "{other}".',
                )
        existing = next(
            (r for r in table.rows
             if row.get(conflict) is not None and r.get(conflict) == row.get(conflict)),
            None,
        )
        for column in table.unique | {table.key}:
            if column == conflict or row.get(column) is None:
                continue
            if any(r is not existing and r.get(column) == row[column] for r in table.rows):
                raise PostgrestError(
                    409, "23505", f'duplicate key value violates unique constraint "{column}"'
                )
        if existing is not None:
            if ignore:
                return None
            if not merge:
                raise PostgrestError(
                    409, "23505", f'duplicate key value violates unique constraint "{conflict}"'
                )
            existing.update(row)
            return dict(existing)
        if "id" in table.columns and row.get("id") is None:
            row["id"] = secrets.token_hex(8)
        table.rows.append(row)
        return dict(row)

    # -- Storage: signed URLs --------------------------------------------------------------

    def handle_sign(self, req: Request) -> tuple[int, Any, dict[str, str]]:
        rest = req.path.removeprefix("/storage/v1/object/sign/")
        bucket, _, key = rest.partition("/")
        key = unquote(key)
        if (bucket, key) not in self.objects:
            return 400, {"statusCode": "404", "error": "not_found",
                         "message": "Object not found"}, {}
        expires = (req.body or {}).get("expiresIn")
        token = f"tok-{secrets.token_hex(4)}-{expires}"
        return 200, {"signedURL": f"/object/sign/{bucket}/{key}?token={token}"}, {}


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeSupabase
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet test output
        pass

    def setup(self) -> None:
        super().setup()
        with self.server_fake.lock:
            self.server_fake.connections.add(self.connection)

    def finish(self) -> None:
        with self.server_fake.lock:
            self.server_fake.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def _dispatch(self) -> None:
        fake = self.server_fake
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        req = Request(
            method=self.command,
            path=parts.path,
            params=parse_qsl(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        with fake.lock:
            fake.requests.append(req)
        try:
            if fake.mode == "error":
                raise PostgrestError(503, "PGRST000", "Could not connect to the database")
            if req.headers.get("apikey") != fake.key or req.headers.get(
                "authorization"
            ) != f"Bearer {fake.key}":
                raise PostgrestError(401, "PGRST301", "JWT invalid or missing")
            if parts.path.startswith("/rest/v1/"):
                status, payload, headers = fake.handle_rest(req)
            elif parts.path.startswith("/storage/v1/object/sign/") and self.command == "POST":
                status, payload, headers = fake.handle_sign(req)
            else:
                raise PostgrestError(404, "PGRST000", f"no route {self.command} {parts.path}")
        except PostgrestError as exc:
            status, headers = exc.status, {}
            payload = {"code": exc.code, "message": exc.message, "details": exc.details,
                       "hint": None}
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_HEAD = do_DELETE = _dispatch


@pytest.fixture
def fake_supabase() -> Iterator[FakeSupabase]:
    server = FakeSupabase()
    yield server
    server.close()
