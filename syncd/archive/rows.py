"""The archived_files statements of the archive job: what is due, outcomes, summaries.

Rows are written with their artworks (syncd.archive.discover); here they are
read by the due index (status, next_attempt_at, expires_at), so that a look
for work costs what is due, not the account's size:

    pending, due within the API's 8 days   by next_attempt_at (= its artwork's
                                           creation): earliest deadline first
    pending, past them (history)           the same index backwards: newest first
    failed, due again                      by deadline, among those due
    the lag                                the first pending entry, and the
                                           earliest failed one still tried

Every function takes a Connection inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, or_, select, true, update

from syncd.archive.discover import artworks, files
from syncd.archive.discover import load as load_state
from syncd.archive.plan import RETENTION, Due, FileStatus, expires_at, fetch_order

WAITING = (FileStatus.PENDING, FileStatus.FAILED)
LOOKUP_CHUNK = 500  # far below SQLite's limit on bound variables
_DUE_COLUMNS = (
    files.c.artwork_id,
    files.c.role,
    files.c.position,
    files.c.url,
    files.c.expires_at,
    files.c.attempts,
)


def _due_rows(conn: Connection, *where: Any, order: Sequence[Any], limit: int) -> list[Due]:
    if limit <= 0:
        return []
    query = select(*_DUE_COLUMNS).where(*where).order_by(*order).limit(limit)
    return [Due(*row) for row in conn.execute(query)]


def due(conn: Connection, now: datetime, limit: int, *, failed_before: datetime | None = None) -> list[Due]:
    """Up to ``limit`` images due a fetch, in the order to fetch them
    (plan.fetch_order): live deadlines first, then history newest first.

    ``failed_before``: failed images count only when due again by then (a run
    passes its start: what failed during it waits for the next run)."""
    cutoff = now if failed_before is None else min(now, failed_before)
    pending = files.c.status == FileStatus.PENDING.value
    failed = and_(files.c.status == FileStatus.FAILED.value, files.c.next_attempt_at <= cutoff)
    live_since = now - RETENTION
    alive = fetch_order(
        _due_rows(
            conn,
            pending,
            files.c.next_attempt_at > live_since,
            files.c.next_attempt_at <= now,
            order=(files.c.next_attempt_at, files.c.expires_at),
            limit=limit,
        )
        + _due_rows(conn, failed, files.c.expires_at > now, order=(files.c.expires_at,), limit=limit),
        now,
    )[:limit]
    room = limit - len(alive)
    history = _due_rows(
        conn,
        pending,
        files.c.next_attempt_at <= live_since,
        order=(files.c.next_attempt_at.desc(), files.c.expires_at.desc()),
        limit=room,
    ) + _due_rows(conn, failed, files.c.expires_at <= now, order=(files.c.expires_at.desc(),), limit=room)
    return fetch_order(alive + history, now)[:limit]


def due_count(conn: Connection, now: datetime, *, failed_before: datetime | None = None) -> int:
    """How many images are due (a run's total still to do); O(those), by the index."""
    cutoff = now if failed_before is None else min(now, failed_before)
    pending = conn.execute(
        select(func.count()).where(files.c.status == FileStatus.PENDING.value, files.c.next_attempt_at <= now)
    ).scalar_one()
    failed = conn.execute(
        select(func.count()).where(
            files.c.status == FileStatus.FAILED.value, files.c.next_attempt_at <= cutoff
        )
    ).scalar_one()
    return int(pending) + int(failed)


def in_store(store: str | None) -> Any:
    """The rows whose file is in the archive ``store`` (its id): a bucket's
    exactly; a folder's, every row not in a bucket (rows before revision 0007
    have no store; the folder's marker says it is the right folder). None:
    every row."""
    if store is None:
        return true()
    if store.startswith("s3://"):
        return files.c.store == store
    return or_(files.c.store.is_(None), files.c.store.not_like("s3://%"))


def archived_by_url(
    conn: Connection, urls: Sequence[str], store: str | None = None
) -> dict[str, dict[str, Any]]:
    """The file of each of ``urls`` that some row has archived already in
    ``store`` (an upscaling's input is often another artwork's result: one
    file, no request)."""
    columns = (files.c.sha256, files.c.size_bytes, files.c.content_type, files.c.path, files.c.fetched_at)
    found: dict[str, dict[str, Any]] = {}
    ordered = sorted(set(urls))
    for start in range(0, len(ordered), LOOKUP_CHUNK):
        chunk = ordered[start : start + LOOKUP_CHUNK]
        query = select(files.c.url, *columns).where(
            files.c.url.in_(chunk), files.c.status == FileStatus.ARCHIVED.value, in_store(store)
        )
        for row in conn.execute(query):
            found.setdefault(row.url, {column.name: getattr(row, column.name) for column in columns})
    return found


def claimed(conn: Connection, urls: Sequence[str], store: str) -> dict[str, dict[str, Any]]:
    """The object each of ``urls`` was about to become in ``store`` when the
    server archiving it stopped (a claim: waiting, with a path): looked at
    before it is fetched again."""
    columns = (files.c.sha256, files.c.size_bytes, files.c.content_type, files.c.path)
    found: dict[str, dict[str, Any]] = {}
    ordered = sorted(set(urls))
    for start in range(0, len(ordered), LOOKUP_CHUNK):
        query = select(files.c.url, *columns).where(
            files.c.url.in_(ordered[start : start + LOOKUP_CHUNK]),
            files.c.status.in_([s.value for s in WAITING]),
            files.c.path.is_not(None),
            files.c.store == store,
        )
        for row in conn.execute(query):
            found.setdefault(row.url, {column.name: getattr(row, column.name) for column in columns})
    return found


def claim(
    conn: Connection, url: str, store: str, path: str, sha256: str, size: int, content_type: str
) -> None:
    """Say, before it is put, which object the image at ``url`` is about to be
    (its rows still waiting): a server taking over after a crash looks there
    before fetching it again (``claimed``)."""
    conn.execute(
        update(files)
        .where(files.c.url == url, files.c.status.in_([s.value for s in WAITING]))
        .values(store=store, path=path, sha256=sha256, size_bytes=size, content_type=content_type)
    )


# ------------------------------------------------------------------ outcomes


@dataclass(frozen=True)
class Outcome:
    """What one fetch of ``due`` ended with, to record."""

    due: Due
    status: FileStatus
    at: datetime  # when it ended (``fetched_at`` of an archived image)
    error: str | None = None
    next_attempt_at: datetime | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    content_type: str | None = None
    path: str | None = None
    store: str | None = None  # the archive that holds it (its id)
    tried: bool = True  # False: its URL was archived already, nothing was fetched


_utc = files.c.fetched_at.type
_RECORD = (
    update(files)
    .where(
        files.c.artwork_id == bindparam("k_artwork_id"),
        files.c.role == bindparam("k_role"),
        files.c.position == bindparam("k_position"),
    )
    .values(
        url=bindparam("v_url"),  # the URL tried (a newer one from a listing meanwhile is the same image)
        status=bindparam("v_status"),
        attempts=files.c.attempts + bindparam("v_tried"),
        last_error=bindparam("v_error"),
        next_attempt_at=bindparam("v_next", type_=_utc),
        sha256=func.coalesce(bindparam("v_sha256"), files.c.sha256),  # kept when a refetch fails
        size_bytes=bindparam("v_size"),
        content_type=bindparam("v_type"),
        path=bindparam("v_path"),
        store=bindparam("v_store"),
        fetched_at=bindparam("v_fetched", type_=_utc),
    )
)
# Other images at an archived URL, waiting their turn: the same file.
_SAME_URL = (
    update(files)
    .where(files.c.url == bindparam("k_url"), or_(*(files.c.status == s.value for s in WAITING)))
    .values(
        status=FileStatus.ARCHIVED.value,
        last_error=None,
        next_attempt_at=None,
        sha256=bindparam("v_sha256"),
        size_bytes=bindparam("v_size"),
        content_type=bindparam("v_type"),
        path=bindparam("v_path"),
        store=bindparam("v_store"),
        fetched_at=bindparam("v_fetched", type_=_utc),
    )
)


def record(conn: Connection, outcomes: Sequence[Outcome]) -> None:
    """Write outcomes, by image, in two statements whatever their number (the
    database is never the archive's bound). An archived URL archives every
    row waiting with it (one file, one request)."""
    if not outcomes:
        return
    conn.execute(
        _RECORD,
        [
            {
                "k_artwork_id": o.due.artwork_id,
                "k_role": o.due.role,
                "k_position": o.due.position,
                "v_url": o.due.url,
                "v_status": o.status.value,
                "v_tried": 1 if o.tried else 0,
                "v_error": o.error,
                "v_next": o.next_attempt_at,
                "v_sha256": o.sha256,
                "v_size": o.size_bytes,
                "v_type": o.content_type,
                "v_path": o.path,
                "v_store": o.store if o.path is not None else None,
                "v_fetched": o.at if o.status is FileStatus.ARCHIVED else None,
            }
            for o in outcomes
        ],
    )
    archived = [o for o in outcomes if o.status is FileStatus.ARCHIVED and o.tried]
    if archived:
        conn.execute(
            _SAME_URL,
            [
                {
                    "k_url": o.due.url,
                    "v_sha256": o.sha256,
                    "v_size": o.size_bytes,
                    "v_type": o.content_type,
                    "v_path": o.path,
                    "v_store": o.store,
                    "v_fetched": o.at,
                }
                for o in archived
            ],
        )


def reopen(conn: Connection, paths: Sequence[str], now: datetime, why: str, store: str | None = None) -> int:
    """Archived rows whose file is missing or corrupt in ``store`` become
    pending again (due from their artwork's creation, as every pending image)."""
    count = 0
    for path in paths:
        found = conn.execute(
            select(files.c.artwork_id, files.c.role, files.c.position, files.c.expires_at).where(
                files.c.path == path, files.c.status == FileStatus.ARCHIVED.value, in_store(store)
            )
        ).all()
        for artwork_id, role, position, deadline in found:
            count += conn.execute(
                update(files)
                .where(files.c.artwork_id == artwork_id, files.c.role == role, files.c.position == position)
                .values(
                    status=FileStatus.PENDING.value,
                    path=None,  # sha256 stays: what the file was, should it be gone now
                    store=None,
                    size_bytes=None,
                    content_type=None,
                    fetched_at=None,
                    last_error=why,
                    next_attempt_at=min(deadline - RETENTION, now),
                )
            ).rowcount
    return count


def archived_count(conn: Connection, store: str | None = None) -> int:
    return int(
        conn.execute(
            select(func.count()).where(files.c.status == FileStatus.ARCHIVED.value, in_store(store))
        ).scalar_one()
    )


def archived_by_store(conn: Connection) -> dict[str, int]:
    """Archived images by the archive holding them ("" for a folder's before revision 0007)."""
    query = (
        select(files.c.store, func.count())
        .where(files.c.status == FileStatus.ARCHIVED.value)
        .group_by(files.c.store)
    )
    return {str(store or ""): int(count) for store, count in conn.execute(query)}


def archived_paths(
    conn: Connection, after: str = "", limit: int = 10_000, store: str | None = None
) -> list[tuple[str, str, int | None]]:
    """(path, sha256, size_bytes) of the archived files in ``store`` after
    ``after``, once each, in path order (read in pages: an archive may hold millions)."""
    rows = conn.execute(
        select(files.c.path, files.c.sha256, files.c.size_bytes)
        .where(files.c.status == FileStatus.ARCHIVED.value, files.c.path > after, in_store(store))
        .distinct()
        .order_by(files.c.path)
        .limit(limit)
    ).all()
    return [(str(path), str(sha256), size) for path, sha256, size in rows]


def retry_failed(conn: Connection, now: datetime) -> int:
    """Every failed image is due again, with its attempts counted from zero."""
    return int(
        conn.execute(
            update(files)
            .where(files.c.status == FileStatus.FAILED.value)
            .values(attempts=0, next_attempt_at=now)
        ).rowcount
    )


# ------------------------------------------------------------------ what status and metrics show


def oldest_waiting_expiry(conn: Connection) -> datetime | None:
    """The deadline of the oldest image not yet archived and still tried, from
    two index probes; the artworks the walk has not reached count too (the
    archive turned on late, or never)."""
    first_pending = conn.execute(
        select(files.c.expires_at)
        .where(files.c.status == FileStatus.PENDING.value, files.c.next_attempt_at.is_not(None))
        .order_by(files.c.next_attempt_at, files.c.expires_at)
        .limit(1)
    ).scalar()
    first_failed = conn.execute(
        select(func.min(files.c.expires_at)).where(
            files.c.status == FileStatus.FAILED.value, files.c.next_attempt_at.is_not(None)
        )
    ).scalar()
    found = [moment for moment in (first_pending, first_failed) if moment is not None]
    if not load_state(conn).complete:
        oldest = conn.execute(select(func.min(artworks.c.created_at))).scalar()
        if oldest is not None:
            found.append(expires_at(oldest))
    return min(found, default=None)


def waiting_counts(conn: Connection) -> dict[str, int]:
    """Pending and failed images, counted on the due index (the others are
    counted by ``summary``, which reads every row)."""
    return {
        status.value: int(
            conn.execute(select(func.count()).where(files.c.status == status.value)).scalar_one()
        )
        for status in WAITING
    }


@dataclass
class Summary:
    """The archive as status and metrics show it."""

    files: dict[str, int] = field(default_factory=dict)  # by status
    bytes_archived: int = 0
    oldest_waiting_expiry: datetime | None = None  # of the images still being tried (or not yet recorded)
    overdue: int = 0  # waiting, and past the API's deletion
    given_up: int = 0  # failed, and not tried again without --retry-failed
    walk_to: datetime | None = None  # artworks created before this have no rows yet (the walk's place)
    archive_on: bool = False  # images are recorded with their artworks


def totals(conn: Connection) -> tuple[dict[str, int], int]:
    """Images by status, and the bytes archived: reads every row."""
    counts = {status.value: 0 for status in FileStatus}
    size = 0
    for status, count, total in conn.execute(
        select(files.c.status, func.count(), func.coalesce(func.sum(files.c.size_bytes), 0)).group_by(
            files.c.status
        )
    ):
        counts[str(status)] = int(count)
        if status == FileStatus.ARCHIVED.value:
            size = int(total)
    return counts, size


def summary(conn: Connection, now: datetime) -> Summary:
    """Counts, bytes, the lag's image and what is overdue or given up (``syncd status``)."""
    counts, size = totals(conn)
    result = Summary(files=counts, bytes_archived=size, oldest_waiting_expiry=oldest_waiting_expiry(conn))
    waiting = and_(files.c.status.in_([s.value for s in WAITING]), files.c.next_attempt_at.is_not(None))
    result.overdue = int(
        conn.execute(select(func.count()).where(waiting, files.c.expires_at <= now)).scalar_one()
    )
    result.given_up = int(
        conn.execute(
            select(func.count()).where(
                files.c.status == FileStatus.FAILED.value, files.c.next_attempt_at.is_(None)
            )
        ).scalar_one()
    )
    state = load_state(conn)
    result.archive_on = state.images_since is not None
    if not state.complete:
        result.walk_to = state.walk_created_at or now
    return result
