"""The archived_files statements: discovery, what is due, outcomes, summaries.

Every function takes a Connection inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, and_, func, insert, literal, or_, select, union_all, update

from syncd.archive.plan import DISCOVERY_WINDOW, Due, FileStatus, Role, expires_at, fetch_order
from syncd.models import ArchivedFile, Artwork, ArtworkResult, UpscalingParameters

files: Table = ArchivedFile.__table__  # type: ignore[assignment]
artworks: Table = Artwork.__table__  # type: ignore[assignment]
results: Table = ArtworkResult.__table__  # type: ignore[assignment]
upscaling: Table = UpscalingParameters.__table__  # type: ignore[assignment]
WAITING = (FileStatus.PENDING, FileStatus.FAILED)


@dataclass
class Discovered:
    new: int = 0
    changed: int = 0  # an image not yet archived whose URL changed: the new one is fetched
    known: int = 0  # of the new, those whose URL is archived already (one file, no request)


def _unrecorded(now: datetime) -> Any:
    """The images of recent artworks that have no row, or a row still waiting
    (pending, or failed and to be tried again) whose URL changed
    (``recorded_url`` tells which). Each branch reads only the window's
    artworks (by the created_at index), never all history."""
    recent = (
        select(artworks.c.id, artworks.c.created_at)
        .where(artworks.c.created_at >= now - DISCOVERY_WINDOW)
        .subquery("recent")
    )
    referenced = union_all(
        select(
            results.c.artwork_id,
            literal(Role.RESULT.value).label("role"),
            results.c.position,
            results.c.url,
            recent.c.created_at,
        ).join(recent, recent.c.id == results.c.artwork_id),
        select(
            upscaling.c.artwork_id,
            literal(Role.INPUT.value).label("role"),
            literal(0).label("position"),
            upscaling.c.image_url.label("url"),
            recent.c.created_at,
        )
        .join(recent, recent.c.id == upscaling.c.artwork_id)
        .where(upscaling.c.image_url.is_not(None)),
    ).subquery("referenced")
    waiting = and_(files.c.status.in_([s.value for s in WAITING]), files.c.next_attempt_at.is_not(None))
    return (
        select(
            referenced.c.artwork_id,
            referenced.c.role,
            referenced.c.position,
            referenced.c.url,
            referenced.c.created_at,
            files.c.url.label("recorded_url"),
        )
        .outerjoin(
            files,
            and_(
                files.c.artwork_id == referenced.c.artwork_id,
                files.c.role == referenced.c.role,
                files.c.position == referenced.c.position,
            ),
        )
        .where(
            or_(
                files.c.url.is_(None),
                # Only a waiting image takes a new URL (a signed CDN URL changes with
                # every listing): an archived one keeps its file, a gone one stays
                # gone, one given up stays given up, and none starts its back-off again.
                and_(files.c.url != referenced.c.url, waiting),
            ),
        )
    )


def undiscovered(conn: Connection, now: datetime) -> tuple[int, datetime | None]:
    """Images the archive has no row for yet (it adds them at its next run):
    how many, and the oldest one's artwork creation. Read only, for status."""
    query = _unrecorded(now).where(files.c.url.is_(None)).subquery()
    count, oldest = conn.execute(select(func.count(), func.min(query.c.created_at))).one()
    return int(count), oldest


def unrecorded(conn: Connection, now: datetime) -> list[Any]:
    """What ``discover`` would write (read first, outside a write transaction)."""
    return list(conn.execute(_unrecorded(now)))


def discover(conn: Connection, now: datetime, found_rows: Sequence[Any]) -> Discovered:
    """Add a pending row for every image in ``found_rows`` (``unrecorded``) that
    has none, and give a waiting row whose URL changed the new URL.

    A new image whose URL is archived already (an upscaling of a generated
    image names that image) is recorded archived at once, with the same file.
    """
    found = Discovered()
    new: list[dict[str, Any]] = []
    for row in found_rows:
        if row.recorded_url is None:
            new.append(
                {
                    "artwork_id": row.artwork_id,
                    "role": row.role,
                    "position": row.position,
                    "url": row.url,
                    "status": FileStatus.PENDING.value,
                    "expires_at": expires_at(row.created_at),
                    "discovered_at": now,
                    "attempts": 0,
                    "next_attempt_at": now,
                    "sha256": None,
                    "size_bytes": None,
                    "content_type": None,
                    "path": None,
                    "fetched_at": None,
                }
            )
        else:
            found.changed += 1
            conn.execute(
                update(files).where(_key(row.artwork_id, row.role, row.position)).values(url=row.url)
            )
    archived = _archived_by_url(conn, sorted({image["url"] for image in new}))
    for image in new:
        same = archived.get(image["url"])
        if same is not None:
            found.known += 1
            image.update(same, status=FileStatus.ARCHIVED.value, next_attempt_at=None)
    if new:
        conn.execute(insert(files), new)
    found.new = len(new)
    return found


LOOKUP_CHUNK = 500  # far below SQLite's limit on bound variables


def _archived_by_url(conn: Connection, urls: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The file of each of ``urls`` that some row has archived already."""
    columns = (files.c.sha256, files.c.size_bytes, files.c.content_type, files.c.path, files.c.fetched_at)
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(urls), LOOKUP_CHUNK):
        chunk = urls[start : start + LOOKUP_CHUNK]
        query = select(files.c.url, *columns).where(
            files.c.url.in_(chunk), files.c.status == FileStatus.ARCHIVED.value
        )
        for row in conn.execute(query):
            found.setdefault(row.url, {column.name: getattr(row, column.name) for column in columns})
    return found


def _key(artwork_id: str, role: str, position: int) -> Any:
    return and_(files.c.artwork_id == artwork_id, files.c.role == role, files.c.position == position)


def due(conn: Connection, now: datetime, limit: int) -> list[Due]:
    """Up to ``limit`` images due a fetch, in the order to fetch them (plan.fetch_order)."""
    columns = (
        files.c.artwork_id,
        files.c.role,
        files.c.position,
        files.c.url,
        files.c.expires_at,
        files.c.attempts,
    )
    ready = files.c.next_attempt_at <= now
    alive = conn.execute(
        select(*columns).where(ready, files.c.expires_at > now).order_by(files.c.expires_at).limit(limit)
    ).all()
    expired = conn.execute(
        select(*columns)
        .where(ready, files.c.expires_at <= now)
        .order_by(files.c.expires_at.desc())
        .limit(max(0, limit - len(alive)))
    ).all()
    return fetch_order([Due(*row) for row in (*alive, *expired)], now)


@dataclass(frozen=True)
class Outcome:
    """What one fetch of ``due`` ended with, to record."""

    due: Due
    status: FileStatus
    error: str | None = None
    next_attempt_at: datetime | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    content_type: str | None = None
    path: str | None = None


def record(conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> None:
    """Write outcomes, by image (its URL is the one tried). An archived URL
    archives every row waiting with it (one file, one request)."""
    for outcome in outcomes:
        d = outcome.due
        archived = outcome.status is FileStatus.ARCHIVED
        values: dict[str, Any] = {
            "url": d.url,  # the URL tried (a newer one from a listing meanwhile is the same image)
            "status": outcome.status.value,
            "attempts": files.c.attempts + 1,
            "last_error": outcome.error,
            "next_attempt_at": outcome.next_attempt_at,
        }
        if archived:
            values.update(
                sha256=outcome.sha256,
                size_bytes=outcome.size_bytes,
                content_type=outcome.content_type,
                path=outcome.path,
                fetched_at=now,
            )
        conn.execute(update(files).where(_key(d.artwork_id, d.role, d.position)).values(values))
        if archived:
            # Other images at the same URL waiting their turn: the same file.
            conn.execute(
                update(files)
                .where(files.c.url == d.url, files.c.status.in_([s.value for s in WAITING]))
                .values({**values, "attempts": files.c.attempts, "last_error": None})
            )


def reopen(conn: Connection, paths: Sequence[str], now: datetime, why: str) -> int:
    """Archived rows whose file is missing or corrupt become pending again."""
    count = 0
    for path in paths:
        count += conn.execute(
            update(files)
            .where(files.c.path == path, files.c.status == FileStatus.ARCHIVED.value)
            .values(
                status=FileStatus.PENDING.value,
                path=None,  # sha256 stays: what the file was, should it be gone now
                size_bytes=None,
                content_type=None,
                fetched_at=None,
                last_error=why,
                next_attempt_at=now,
            )
        ).rowcount
    return count


def archived_count(conn: Connection) -> int:
    return int(
        conn.execute(select(func.count()).where(files.c.status == FileStatus.ARCHIVED.value)).scalar_one()
    )


def archived_paths(conn: Connection) -> list[tuple[str, str, int | None]]:
    """(path, sha256, size_bytes) of every archived file, once each."""
    rows = conn.execute(
        select(files.c.path, files.c.sha256, files.c.size_bytes)
        .where(files.c.status == FileStatus.ARCHIVED.value, files.c.path.is_not(None))
        .distinct()
        .order_by(files.c.path)
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


@dataclass
class Summary:
    """The archive as status and metrics show it."""

    files: dict[str, int] = field(default_factory=dict)  # by status
    bytes_archived: int = 0
    oldest_waiting_expiry: datetime | None = None  # of the images still being tried (or not yet seen)
    overdue: int = 0  # waiting, and past the API's deletion
    given_up: int = 0  # failed, and not tried again without --retry-failed
    undiscovered: int = 0  # referenced by a recent artwork, and not in the table yet


def summary(conn: Connection, now: datetime, *, undiscovered_too: bool = False) -> Summary:
    """Counts and the oldest waiting image; ``undiscovered_too`` counts the
    images no archive run has seen yet as waiting (``syncd status``: an archive
    that never ran must not look on time)."""
    result = Summary(files={status.value: 0 for status in FileStatus})
    for status, count, size in conn.execute(
        select(files.c.status, func.count(), func.coalesce(func.sum(files.c.size_bytes), 0)).group_by(
            files.c.status
        )
    ):
        result.files[str(status)] = int(count)
        if status == FileStatus.ARCHIVED.value:
            result.bytes_archived = int(size)
    waiting = and_(files.c.status.in_([s.value for s in WAITING]), files.c.next_attempt_at.is_not(None))
    oldest, overdue = conn.execute(
        select(
            func.min(files.c.expires_at), func.count(files.c.expires_at).filter(files.c.expires_at <= now)
        ).where(waiting)
    ).one()
    result.oldest_waiting_expiry = oldest  # min() keeps the column's type: a UTC datetime
    if undiscovered_too:
        result.undiscovered, first_created = undiscovered(conn, now)
        if first_created is not None:
            first = expires_at(first_created)
            if result.oldest_waiting_expiry is None or first < result.oldest_waiting_expiry:
                result.oldest_waiting_expiry = first
    result.overdue = int(overdue or 0)
    result.given_up = int(
        conn.execute(
            select(func.count()).where(
                files.c.status == FileStatus.FAILED.value, files.c.next_attempt_at.is_(None)
            )
        ).scalar_one()
    )
    return result
