"""A no-op incremental run in a few milliseconds: standard library only.

Most `syncd run-once` calls from cron or a timer find nothing new. Loading
the sync engine costs more than the run (SQLAlchemy, pydantic and httpx take
about 0.3 s to import), so `run-once` first tries this path on an SQLite
database whose last scan is complete and where nothing is waiting:

* one list request (the planner's first, the newest page), with the
  standard library's HTTP client;
* when every element of it is stored with exactly this content and the
  planner needs no further page, the run is complete: it moves those
  artworks' ``last_seen_at``, the sync state and a ``sync_runs`` row, exactly
  as the engine would (a test runs both on copies of one database and
  compares every table), under the same lock, in one transaction.

Anything else (a new or changed artwork, a second page needed, an error
status, a timeout, a proxy, PostgreSQL, a crashed run to close, a Retry-After
deadline, an older schema) hands the run to the engine, which starts from
the beginning. A 429 first records its Retry-After deadline, so the engine
waits it out; otherwise the engine's first request is only a repeat of this
one. The engine still does the refresh of unfinished artworks, when any.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, quote, urlencode, urlsplit

import orjson

from syncd import SCHEMA_REVISION, __version__
from syncd.config import Settings
from syncd.errors import DatabaseError
from syncd.lockfile import hold_file_lock
from syncd.recordkeys import KNOWN_TYPES, PENDING_REFRESH, content_hash, list_key, utc_text
from syncd.summary import STREAM, Counts, RunSummary
from syncd.sync.planner import Item, Mode, Planner, StreamState

log = logging.getLogger("syncd")

SQLITE_URL_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy")


@dataclass
class QuickRun:
    summary: RunSummary
    refresh_pending: bool  # unfinished artworks to re-fetch: the engine's job


def sqlite_file(url: str) -> Path | None:
    """The file of a plain ``sqlite:///path`` URL; None for anything else."""
    for prefix in SQLITE_URL_PREFIXES:
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            # Query strings, URIs and %-escapes: SQLAlchemy's reading of them rules.
            if not rest or "?" in rest or "%" in rest or rest == ":memory:" or rest.startswith("file:"):
                return None
            return Path(rest)
    return None


def first_backfill_likely(settings: Settings) -> bool:
    """Whether a run-once will backfill into a new SQLite file (cheap: the
    no-op run checks it first)."""
    path = sqlite_file(settings.database_url)
    return path is not None and not path.exists()


def try_quick_run(settings: Settings, now: datetime | None = None) -> QuickRun | None:
    """The run, when it is a no-op this path can prove; None hands it to the engine."""
    path = sqlite_file(settings.database_url)
    if path is None or not path.is_file() or _behind_a_proxy():
        return None
    started = time.monotonic()
    try:
        connection = _connect(path)
    except sqlite3.Error:
        return None  # the engine says what is wrong with the file
    with hold_file_lock(path), connection as conn:
        now = now or datetime.now(UTC)
        state = _ready_state(conn, now)
        if state is None:
            return None
        planner = Planner(state, settings.page_size, full=False, now=now)
        request = planner.next_request()
        if planner.mode is not Mode.INCREMENTAL or request is None:
            return None
        items = _first_page(settings, conn, request.skip, request.limit, now)
        if items is None:
            return None
        planner.observe(request, [Item(*list_key(value, now)) for value in items])
        if (
            planner.mode is not Mode.INCREMENTAL
            or planner.next_request() is not None
            or planner.scan_complete
        ):
            return None
        unchanged = _all_stored_unchanged(conn, items)
        if unchanged is None:
            return None
        counts = Counts(
            pages=1,
            requests=1,
            unchanged=len(unchanged),
            unknown_type=sum(1 for value in items if value.get("artworkType") not in KNOWN_TYPES),
        )
        try:
            run_id = _record(conn, planner.state, unchanged, counts, now)
            refresh_pending = _refresh_pending(conn)
        except sqlite3.Error as exc:
            raise DatabaseError(f"database error during the sync: {exc}") from None
    summary = RunSummary(
        run_id,
        str(Mode.INCREMENTAL),
        "success",
        counts,
        time.monotonic() - started,
        str(planner.state.list_order),
    )
    log.info("%s", summary.line())
    return QuickRun(summary, refresh_pending)


# ------------------------------------------------------------ database


def _connect(path: Path) -> closing[sqlite3.Connection]:
    # The same settings as syncd.db's engine (WAL is a property of the file).
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error:
        conn.close()
        raise
    return closing(conn)


def _ready_state(conn: sqlite3.Connection, now: datetime) -> StreamState | None:
    """The stream's state when nothing stands in the way of a quick run."""
    try:
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        if revision != [(SCHEMA_REVISION,)]:
            return None  # no schema, or one the engine must upgrade
        if conn.execute("SELECT 1 FROM sync_runs WHERE outcome = 'running' LIMIT 1").fetchone():
            return None  # a crashed run for the engine to close
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM sync_state WHERE stream = ?", (STREAM,)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.row_factory = None
    if row is None:
        return None
    state = StreamState.from_row(row)
    if state.rate_limited_until is not None and state.rate_limited_until > now:
        return None
    return state


def _all_stored_unchanged(conn: sqlite3.Connection, items: list[Any]) -> list[str] | None:
    """The page's distinct ids when every element is stored with this very content."""
    by_id: dict[str, str] = {}
    for value in items:
        if not isinstance(value, dict) or not isinstance(value.get("id"), str):
            return None
        try:
            by_id[value["id"]] = content_hash(value)
        except (TypeError, orjson.JSONEncodeError):
            return None
    ids = list(by_id)
    stored: dict[str, str] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        query = f"SELECT id, content_hash FROM artworks WHERE id IN ({', '.join('?' * len(chunk))})"  # noqa: S608
        try:
            stored.update(conn.execute(query, chunk).fetchall())
        except sqlite3.Error:
            return None  # the engine will say what is wrong
    if stored != by_id:
        return None  # new or changed artworks: the engine's work
    return ids


def _record(
    conn: sqlite3.Connection, state: StreamState, ids: list[str], counts: Counts, now: datetime
) -> int:
    """What the engine writes for a no-op page, in one transaction."""
    stamp = utc_text(now)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            conn.execute(
                f"UPDATE artworks SET last_seen_at = ?, remote_deleted_at = NULL WHERE id IN ({', '.join('?' * len(chunk))})",  # noqa: S608
                [stamp, *chunk],
            )
        row = state.to_row()
        del row["stream"], row["rate_limited_until"]  # the deadline is save_rate_limit's
        values = {k: utc_text(v) if isinstance(v, datetime) else v for k, v in row.items()}
        values["updated_at"] = stamp
        assignments = ", ".join(f"{name} = ?" for name in values)
        conn.execute(
            f"UPDATE sync_state SET {assignments} WHERE stream = ?",  # noqa: S608
            [*values.values(), state.stream],
        )
        cursor = conn.execute(
            "INSERT INTO sync_runs (stream, mode, outcome, started_at, finished_at, pages, requests,"
            " inserted, updated, unchanged, rejected, unknown_type, marked_deleted, error, syncd_version)"
            " VALUES (?, ?, 'success', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            (
                STREAM,
                str(Mode.INCREMENTAL),
                stamp,
                stamp,
                counts.pages,
                counts.requests,
                counts.inserted,
                counts.updated,
                counts.unchanged,
                counts.rejected,
                counts.unknown_type,
                counts.marked_deleted,
                __version__,
            ),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _refresh_pending(conn: sqlite3.Connection) -> bool:
    """Whether a stored, listed artwork has a status that is not terminal (one
    seek in the partial index that holds just those, ix_artworks_pending_refresh)."""
    query = f"SELECT 1 FROM artworks WHERE {PENDING_REFRESH} LIMIT 1"  # noqa: S608 (our constant)
    return conn.execute(query).fetchone() is not None


def _save_rate_limit(conn: sqlite3.Connection, until: datetime, now: datetime) -> None:
    conn.execute(
        "UPDATE sync_state SET rate_limited_until = ?, updated_at = ? WHERE stream = ?",
        (utc_text(until), utc_text(now), STREAM),
    )


# ------------------------------------------------------------ HTTP


def _behind_a_proxy() -> bool:
    # httpx honours proxy variables; http.client does not: leave those to the engine.
    return any(os.environ.get(name) or os.environ.get(name.upper()) for name in PROXY_VARIABLES)


def _first_page(
    settings: Settings, conn: sqlite3.Connection, skip: int, limit: int, now: datetime
) -> list[Any] | None:
    """The list page as parsed JSON elements; None (after noting a 429's deadline) otherwise."""
    url, key = settings.require_api()
    parts = urlsplit(url)
    target = f"{quote(parts.path.rstrip('/'))}/v1/artworks?{urlencode({'skip': skip, 'limit': limit})}"
    answer = http_get(
        parts,
        target,
        {
            "Authorization": f"Bearer {key.reveal()}",
            "Accept": "application/json",
            "User-Agent": f"syncd/{__version__}",
        },
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )
    if answer is None:
        return None  # the engine retries, with backoff
    status, headers, body = answer
    if status == 429:
        from syncd.api.backoff import parse_retry_after  # rare: not worth loading up front

        delay = parse_retry_after(headers.get("retry-after"), now)
        if delay:
            _save_rate_limit(conn, now + timedelta(seconds=delay), now)
        return None
    if status != 200:
        return None
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return items if isinstance(items, list) else None


def http_get(
    parts: SplitResult,
    target: str,
    headers: dict[str, str],
    *,
    connect_timeout: float,
    read_timeout: float,
) -> tuple[int, dict[str, str], bytes] | None:
    """One HTTP/1.1 GET on a fresh connection: (status, headers, body), or None.

    Deliberately minimal (http.client and the email package it loads cost
    this path more than the request): Connection: close, identity encoding,
    a body framed by Content-Length, chunks or the end of the connection.
    Anything it does not understand is None, and the engine (httpx) takes
    over: being wrong here costs one repeated request, never data.
    """
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host if ':' not in host else f'[{host}]'}{'' if parts.port is None else f':{port}'}",
        "Connection: close",
        "Accept-Encoding: identity",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    request = "\r\n".join(lines) + "\r\n\r\n"
    if not request.isascii() or any(c in value for value in headers.values() for c in "\r\n"):
        return None
    chunks: list[bytes] = []
    try:
        # bytes: an ASCII host name needs no IDNA codec (its import costs more than the lookup)
        address: Any = (host.encode("ascii"), port)  # typeshed wants str; the C call takes bytes
        sock = socket.create_connection(address, timeout=connect_timeout)
        try:
            if secure:
                import ssl  # only for https: a few milliseconds

                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            sock.settimeout(read_timeout)
            sock.sendall(request.encode("ascii"))
            while data := sock.recv(1 << 16):
                chunks.append(data)
        finally:
            sock.close()
    except OSError:
        return None
    head, separator, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not separator:
        return None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        return None
    fields = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon:
            return None
        fields[name.strip().lower()] = value.strip()
    if fields.get("transfer-encoding", "identity").lower() == "chunked":
        unchunked = _unchunk(body)
        if unchunked is None:
            return None
        body = unchunked
    elif "transfer-encoding" in fields or fields.get("content-encoding", "identity") != "identity":
        return None
    elif "content-length" in fields and fields["content-length"] != str(len(body)):
        return None  # cut short
    return int(code), fields, body


def _unchunk(body: bytes) -> bytes | None:
    out: list[bytes] = []
    position = 0
    while True:
        end = body.find(b"\r\n", position)
        if end < 0:
            return None
        try:
            size = int(body[position:end].split(b";")[0], 16)
        except ValueError:
            return None
        start = end + 2
        if size == 0:
            return b"".join(out)
        if start + size + 2 > len(body) or body[start + size : start + size + 2] != b"\r\n":
            return None
        out.append(body[start : start + size])
        position = start + size + 2
