"""Writes: artworks upserted per page, quarantine, sync state and run records.

Every function takes a Connection inside the caller's transaction, so a page's
rows, its rejected records and the sync state commit together or not at all.
Statements are bulk (one executemany per table per page); an artwork whose
content hash is unchanged only has ``last_seen_at`` moved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, case, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, IntegrityError

from syncd import __version__
from syncd.archive import discover
from syncd.errors import database_reason
from syncd.models import (
    Artwork,
    ArtworkResult,
    RejectedRecord,
    SyncRun,
    SyncState,
    Txt2ImgParameters,
    UpscalingParameters,
)
from syncd.records import (
    PARAMETER_COLUMNS,
    PENDING_REFRESH,
    ArtworkRows,
    PageResult,
    Rejection,
    checked_id,
    refusal,
    utc_text,
)
from syncd.state import STREAM, Counts, Misses, StreamState, Unfinished

artworks: Table = Artwork.__table__  # type: ignore[assignment]
results_table: Table = ArtworkResult.__table__  # type: ignore[assignment]
rejected_table: Table = RejectedRecord.__table__  # type: ignore[assignment]
runs_table: Table = SyncRun.__table__  # type: ignore[assignment]
state_table: Table = SyncState.__table__  # type: ignore[assignment]
PARAMETER_TABLES: dict[str, Table] = {
    "txt2img_parameters": Txt2ImgParameters.__table__,  # type: ignore[dict-item]
    "upscaling_parameters": UpscalingParameters.__table__,  # type: ignore[dict-item]
}
DATA_TABLES = (
    "artworks",
    "txt2img_parameters",
    "upscaling_parameters",
    "artwork_results",
    "rejected_records",
    "sync_runs",
    "sync_state",
    "archived_files",
)


# ------------------------------------------------------------------ artworks


ARTWORK_COLUMNS = (
    "id",
    "artwork_type",
    "status",
    "duration",
    "created_at",
    "first_seen_at",
    "last_seen_at",
    "updated_at",
    "remote_deleted_at",
    "content_hash",
    "raw",
)
RESULT_COLUMNS = ("artwork_id", "position", "url")
LOOKUP_CHUNK = 500  # far below SQLite's limit on bound variables


def _placeholders(conn: Connection, count: int) -> str:
    return ", ".join(["?" if conn.dialect.paramstyle == "qmark" else "%s"] * count)


def _driver_insert(
    conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """One executemany through the driver: the hot path of a backfill.

    Rows arrive as the driver takes them (ArtworkRows are plain values; times
    are UTC text, which PostgreSQL reads into timestamptz), so SQLAlchemy's
    per-value bind processing, which cost more than the inserts, is skipped.
    """
    if not rows:
        return
    quote = conn.dialect.identifier_preparer.quote
    # Identifiers come from our own table metadata, quoted; values are bound.
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "  # noqa: S608
        f"VALUES ({_placeholders(conn, len(columns))})"
    )
    conn.exec_driver_sql(sql, rows)


_REWRITE_COLUMNS = ("artwork_type", "status", "duration", "created_at", "content_hash", "raw")


# What a database says of a value it will not take (too long, bad encoding, a
# constraint): a record's fault, unlike a database that is down or full.
RECORD_ERRORS = (DataError, IntegrityError)


def write_page(
    conn: Connection,
    page: PageResult,
    stored: Mapping[str, str],
    *,
    now: datetime,
    run_id: int,
    careful: bool = False,
) -> Counts:
    """One validated page: its rows, touches and rejected records; what it did.

    ``stored``: the content hashes of the page's ids that are stored (the page
    was validated against them). A record the database refuses (validation
    is meant to make that impossible) raises one of RECORD_ERRORS, and the
    caller writes the page again ``careful``: each record under a savepoint
    (slow on SQLite, hence not by default), what is refused quarantined with
    the database's reason, the rest written. If it refuses every record of
    the page, that is no record's fault: the error is raised.
    """
    refused: list[Rejection] = []
    if careful:
        written, refused = _write_one_by_one(conn, page.rows, now, stored)
    else:
        written = write_artworks(conn, page.rows, now, stored)
    written.unchanged += touch_seen(conn, page.unchanged_ids, now)
    quarantine(conn, [*page.rejected, *refused], stream=STREAM, run_id=run_id, now=now)
    written.pages = 1
    written.rejected = len(page.rejected) + len(refused)
    written.unknown_type = page.unknown_types
    return written


def _write_one_by_one(
    conn: Connection, batch: Sequence[ArtworkRows], now: datetime, stored: Mapping[str, str]
) -> tuple[Counts, list[Rejection]]:
    written = Counts()
    refused: list[Rejection] = []
    for rows in batch:
        savepoint = conn.begin_nested()
        try:
            written.add(write_artworks(conn, [rows], now, stored))
        except RECORD_ERRORS as exc:
            savepoint.rollback()
            if len(refused) + 1 == len(batch) > 1:
                raise  # every record: the database's trouble, not theirs
            refused.append(refusal(rows, f"the database refused it: {database_reason(exc)}"))
        else:
            savepoint.commit()
    return written, refused


def write_artworks(
    conn: Connection, batch: Sequence[ArtworkRows], now: datetime, stored: Mapping[str, str] | None = None
) -> Counts:
    """Insert new artworks, rewrite changed ones, touch unchanged ones.

    ``stored``: content hashes of the batch's stored artworks, when the caller
    looked them up in this transaction; otherwise they are looked up here.
    """
    counts = Counts()
    if not batch:
        return counts
    seen = utc_text(now)
    if stored is None:
        stored = stored_hashes(conn, [rows.id for rows in batch])
    new = [rows for rows in batch if rows.id not in stored]
    changed = [rows for rows in batch if rows.id in stored and stored[rows.id] != rows.content_hash]
    same = [rows.id for rows in batch if stored.get(rows.id) == rows.content_hash]

    _insert_new(conn, new, seen)
    if changed:
        quote = conn.dialect.identifier_preparer.quote
        assignments = ", ".join(f"{quote(c)} = {_placeholders(conn, 1)}" for c in _REWRITE_COLUMNS)
        conn.exec_driver_sql(
            f"UPDATE artworks SET {assignments}, last_seen_at = {_placeholders(conn, 1)}, "  # noqa: S608
            f"updated_at = {_placeholders(conn, 1)}, remote_deleted_at = NULL WHERE id = {_placeholders(conn, 1)}",
            [
                (r.artwork_type, r.status, r.duration, r.created_at, r.content_hash, r.raw_json, seen, seen, r.id)
                for r in changed
            ],
        )  # fmt: skip
        changed_ids = [rows.id for rows in changed]
        for table in (*PARAMETER_TABLES.values(), results_table):
            conn.execute(delete(table).where(table.c.artwork_id.in_(changed_ids)))
    touch_seen(conn, same, now)
    _insert_children(conn, new + changed)
    # With the image archive on: their images, pending, in the same transaction.
    discover.write_images(conn, new + changed, now)

    counts.inserted, counts.updated, counts.unchanged = len(new), len(changed), len(same)
    return counts


def _insert_new(conn: Connection, new: Sequence[ArtworkRows], seen: str) -> None:
    # UTC text on both dialects: SQLite stores it as is (models.UTCDateTime),
    # PostgreSQL reads it into timestamptz; psycopg adapts text faster than datetimes.
    _driver_insert(
        conn,
        artworks,
        ARTWORK_COLUMNS,
        [
            (r.id, r.artwork_type, r.status, r.duration, r.created_at, seen, seen, seen, None, r.content_hash, r.raw_json)
            for r in new
        ],
    )  # fmt: skip


def _insert_children(conn: Connection, written: Sequence[ArtworkRows]) -> None:
    """The parameter and result rows of artworks just inserted or rewritten."""
    for name, table in PARAMETER_TABLES.items():
        params = [r.parameters for r in written if r.parameters_table == name and r.parameters is not None]
        _driver_insert(conn, table, PARAMETER_COLUMNS[name], params)
    _driver_insert(conn, results_table, RESULT_COLUMNS, [row for rows in written for row in rows.results])


def stored_hashes(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    """Content hashes of the artworks among ``ids`` that are already stored.

    Once per page, through the driver: compiling an expanding IN of 500
    values cost more than the lookup itself.
    """
    found: dict[str, str] = {}
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql("SELECT id, content_hash FROM artworks WHERE id = ANY(%s)", (list(ids),))
        found.update(rows.fetchall())
        return found
    for start in range(0, len(ids), LOOKUP_CHUNK):
        chunk = tuple(ids[start : start + LOOKUP_CHUNK])
        query = f"SELECT id, content_hash FROM artworks WHERE id IN ({', '.join('?' * len(chunk))})"  # noqa: S608
        found.update(conn.exec_driver_sql(query, chunk).fetchall())
    return found


def spellings(conn: Connection, ids: Sequence[str]) -> dict[str, str]:
    """How the API spelled each of these artworks' ids (stored ``id`` -> the ``id``
    of its stored ``raw`` record), for those spelled otherwise than the stored id.

    The stored id is canonical (lower case); the API may list an id in upper
    case and answer ``GET /v1/artworks/{id}`` only for that spelling, so an
    artwork is asked for by id as the API last sent it. A raw id that is not
    the same id (not a UUID, or another one) is not used: the stored id is.
    """
    raw_id = artworks.c.raw["id"].as_string()
    found: dict[str, str] = {}
    for start in range(0, len(ids), LOOKUP_CHUNK):
        chunk = list(ids[start : start + LOOKUP_CHUNK])
        query = select(artworks.c.id, raw_id).where(artworks.c.id.in_(chunk), raw_id != artworks.c.id)
        for artwork_id, spelled in conn.execute(query):
            if isinstance(spelled, str) and checked_id(spelled) == artwork_id:
                found[artwork_id] = spelled
    return found


def touch_seen(conn: Connection, ids: Sequence[str], now: datetime) -> int:
    """Artworks seen again unchanged: only last_seen_at moves (one statement per 500)."""
    seen = utc_text(now)
    for start in range(0, len(ids), LOOKUP_CHUNK):
        chunk = list(ids[start : start + LOOKUP_CHUNK])
        if conn.dialect.name == "postgresql":
            where, params = "id = ANY(%s)", [seen, chunk]
        else:
            where, params = f"id IN ({', '.join('?' * len(chunk))})", [seen, *chunk]
        conn.exec_driver_sql(
            f"UPDATE artworks SET last_seen_at = {_placeholders(conn, 1)}, remote_deleted_at = NULL WHERE {where}",  # noqa: S608
            tuple(params),
        )
    return len(ids)


def seen_since(conn: Connection, ids: Sequence[str], since: datetime) -> dict[str, datetime]:
    """The artworks among ``ids`` that an answer carried at or after ``since``,
    with when it last did."""
    found: dict[str, datetime] = {}
    for start in range(0, len(ids), LOOKUP_CHUNK):
        chunk = list(ids[start : start + LOOKUP_CHUNK])
        query = select(artworks.c.id, artworks.c.last_seen_at).where(
            artworks.c.id.in_(chunk), artworks.c.last_seen_at >= since
        )
        found.update((artwork_id, seen_at) for artwork_id, seen_at in conn.execute(query))
    return found


def mark_remote_deleted(conn: Connection, ids: Iterable[str], now: datetime) -> int:
    ids = list(ids)
    if not ids:
        return 0
    result = conn.execute(
        update(artworks)
        .where(artworks.c.id.in_(ids), artworks.c.remote_deleted_at.is_(None))
        .values(remote_deleted_at=now)
    )
    return result.rowcount


def mark_unlisted(conn: Connection, since: datetime, now: datetime) -> int:
    """Mark deleted the artworks not seen since ``since`` (the start of the
    complete scan before the last one: both scans missed them)."""
    result = conn.execute(
        update(artworks)
        .where(artworks.c.last_seen_at < since, artworks.c.remote_deleted_at.is_(None))
        .values(remote_deleted_at=now)
    )
    return result.rowcount


def unlisted(conn: Connection, since: datetime, limit: int) -> list[str]:
    """Artworks not seen since ``since`` and not marked deleted, longest unseen first."""
    query = (
        select(artworks.c.id)
        .where(artworks.c.last_seen_at < since, artworks.c.remote_deleted_at.is_(None))
        .order_by(artworks.c.last_seen_at, artworks.c.id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def scan_misses(conn: Connection, since: datetime) -> Misses:
    """The stored artworks not marked deleted, how many of them were not seen
    since ``since`` (a scan's start), and when the latest of those was seen."""
    live = artworks.c.remote_deleted_at.is_(None)
    total = conn.execute(select(func.count()).select_from(artworks).where(live)).scalar_one()
    missed, last_seen = conn.execute(
        select(func.count(), func.max(artworks.c.last_seen_at)).where(live, artworks.c.last_seen_at < since)
    ).one()
    return Misses(int(total), int(missed), last_seen)


def forget_scan(conn: Connection, stream: str) -> None:
    """The last scan proved nothing about deletions: the next one compares with
    the complete scan before it (``previous_scan_started_at``), not with it."""
    conn.execute(
        update(state_table)
        .where(state_table.c.stream == stream)
        .values(scan_started_at=state_table.c.previous_scan_started_at)
    )


def unfinished(conn: Connection) -> list[Unfinished]:
    """The stored artworks whose status is not terminal, oldest first, with when
    an answer last carried each (the refresh plans its re-checks from that)."""
    query = (
        select(artworks.c.id, artworks.c.created_at, artworks.c.last_seen_at)
        .where(text(PENDING_REFRESH))  # the partial index's very predicate
        .order_by(artworks.c.created_at, artworks.c.id)
    )
    return [Unfinished(*row) for row in conn.execute(query)]


# ------------------------------------------------------------------ quarantine


def _upsert(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], key: str, update_set: dict[str, Any]
) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE, on SQLite and PostgreSQL alike."""
    if not rows:
        return
    dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = dialect_insert(table)
    values = {
        name: (value(stmt.excluded) if callable(value) else value) for name, value in update_set.items()
    }
    conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_=values), list(rows))


def rejections_of_run(conn: Connection, run_id: int) -> tuple[int, int]:
    """The quarantined payloads run ``run_id`` saw: first seen by it, and seen before."""
    first = rejected_table.c.first_run_id == run_id
    new, again = conn.execute(
        select(
            func.coalesce(func.sum(case((first, 1), else_=0)), 0),
            func.coalesce(func.sum(case((first, 0), else_=1)), 0),
        ).where(rejected_table.c.last_run_id == run_id)
    ).one()
    return int(new), int(again)


def quarantine(
    conn: Connection, rejections: Sequence[Rejection], *, stream: str, run_id: int, now: datetime
) -> None:
    """One row per distinct bad payload; seeing it again bumps its counters."""
    by_hash: dict[str, tuple[Rejection, int]] = {}
    for rejection in rejections:
        seen = by_hash.get(rejection.payload_hash)
        by_hash[rejection.payload_hash] = (rejection, (seen[1] if seen else 0) + 1)
    rows = [
        {
            "payload_hash": r.payload_hash,
            "artwork_id": r.artwork_id,
            "stream": stream,
            "reason": r.reason,
            "raw": r.payload,
            "first_seen_at": now,
            "last_seen_at": now,
            "first_run_id": run_id,
            "last_run_id": run_id,
            "times_seen": times,
        }
        for r, times in by_hash.values()
    ]
    _upsert(
        conn,
        rejected_table,
        rows,
        "payload_hash",
        {
            "last_seen_at": lambda ex: ex.last_seen_at,
            "last_run_id": lambda ex: ex.last_run_id,
            "reason": lambda ex: ex.reason,
            "times_seen": lambda ex: rejected_table.c.times_seen + ex.times_seen,
        },
    )


# ------------------------------------------------------------------ state


def load_state(conn: Connection, stream: str) -> StreamState:
    row = conn.execute(select(state_table).where(state_table.c.stream == stream)).mappings().first()
    return StreamState(stream=stream) if row is None else StreamState.from_row(row)


def save_state(conn: Connection, state: StreamState, now: datetime) -> None:
    row = {**state.to_row(), "updated_at": now}
    _upsert(
        conn,
        state_table,
        [row],
        "stream",
        # rate_limited_until is owned by save_rate_limit: a page commit must not
        # overwrite a deadline that the fetch thread recorded meanwhile.
        {
            name: (lambda ex, name=name: getattr(ex, name))
            for name in row
            if name not in ("stream", "rate_limited_until")
        },
    )


def forget_state(conn: Connection, stream: str) -> None:
    """The stream's cursors forgotten (``syncd db reset-state``): the next run is a backfill."""
    conn.execute(delete(state_table).where(state_table.c.stream == stream))


def save_rate_limit(conn: Connection, stream: str, until: datetime | None, now: datetime) -> None:
    """Persist a Retry-After deadline alone, without disturbing the cursor."""
    state = load_state(conn, stream)
    state.rate_limited_until = until
    row = {**state.to_row(), "updated_at": now}
    _upsert(conn, state_table, [row], "stream", {"rate_limited_until": lambda ex: ex.rate_limited_until})


# ------------------------------------------------------------------ runs


def start_run(conn: Connection, *, stream: str, mode: str, now: datetime) -> int:
    result = conn.execute(
        insert(runs_table).values(
            stream=stream,
            mode=mode,
            outcome="running",
            started_at=now,
            pages=0,
            requests=0,
            inserted=0,
            updated=0,
            unchanged=0,
            rejected=0,
            unknown_type=0,
            marked_deleted=0,
            syncd_version=__version__,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def update_run(
    conn: Connection,
    run_id: int,
    counts: Counts,
    *,
    mode: str | None = None,
    outcome: str | None = None,
    error: str | None = None,
    finished_at: datetime | None = None,
) -> None:
    values: dict[str, Any] = asdict(counts)
    if mode is not None:
        values["mode"] = mode
    if outcome is not None:
        values["outcome"] = outcome
        values["finished_at"] = finished_at
        values["error"] = error
    conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(**values))


def close_abandoned_runs(conn: Connection, now: datetime) -> int:
    """Runs left 'running' by a process that died (the caller holds the lock)."""
    result = conn.execute(
        update(runs_table)
        .where(runs_table.c.outcome == "running")
        .values(outcome="crashed", finished_at=now, error="the process ended without recording an outcome")
    )
    return result.rowcount


def table_counts(conn: Connection) -> dict[str, int]:
    """Rows per table (of those the schema has: an older one lacks the newer tables)."""
    from sqlalchemy import inspect
    from sqlalchemy import table as table_ref

    present = set(inspect(conn).get_table_names())
    return {
        name: int(conn.execute(select(func.count()).select_from(table_ref(name))).scalar_one())
        for name in DATA_TABLES
        if name in present
    }
