"""The images to keep, recorded as their artworks are written.

With the archive on for a database (``archive_state.images_since``), the
transaction that writes a page of artworks (syncd.store) also writes a
pending archived_files row for each of their images, every result and an
upscaling's input, in one statement per page (``write_images``). A look for
work then reads only what is due, by the due index (syncd.archive.rows), at
the cost of what is due, whatever the account's size and age.

The archive is turned on once per database (``turn_on``), under the
one-syncer lock: no sync writes a page then, so every page written after
records its images, and the walk, which starts after, finds every artwork
stored before. The walk (``walk``) records those artworks' images, newest
first (the live deadlines first), in batches that commit with the walk's
place: an interrupted walk resumes where it stopped. Without the archive,
syncing writes no archived_files row at all (one look at archive_state a
page).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, insert, or_, select, update

from syncd import db
from syncd.archive.plan import RETENTION, FileStatus, Role
from syncd.models import ArchivedFile, ArchiveState, Artwork, ArtworkResult, UpscalingParameters
from syncd.records import PARAMETER_COLUMNS, ArtworkRows, from_utc_text, utc_text

log = logging.getLogger("syncd.archive")

files: Table = ArchivedFile.__table__  # type: ignore[assignment]
state_table: Table = ArchiveState.__table__  # type: ignore[assignment]
artworks: Table = Artwork.__table__  # type: ignore[assignment]
results: Table = ArtworkResult.__table__  # type: ignore[assignment]
upscaling: Table = UpscalingParameters.__table__  # type: ignore[assignment]

IMAGE_COLUMNS = (
    "artwork_id", "role", "position", "url", "status", "expires_at", "discovered_at", "attempts", "next_attempt_at",
)  # fmt: skip
_INPUT_URL = PARAMETER_COLUMNS["upscaling_parameters"].index("image_url")
WAITING_SQL = f"'{FileStatus.PENDING.value}', '{FileStatus.FAILED.value}'"
WALK_BATCH = 1000  # artworks a walk step records (one transaction each)


def pending_row(
    artwork_id: str, role: str, position: int, url: str, created_at: str, seen: str
) -> tuple[Any, ...]:
    """Pure: one image's new row, in IMAGE_COLUMNS order (times as UTC text).

    A pending image is due from its artwork's creation on (``next_attempt_at``;
    ``seen`` for one dated ahead of syncd's clock): the due index then holds
    pending images in deadline order, and the oldest is its first entry."""
    deadline = utc_text(from_utc_text(created_at) + RETENTION)
    due_since = min(created_at, seen)  # fixed-width UTC text sorts as time does
    return (artwork_id, role, position, url, FileStatus.PENDING.value, deadline, seen, 0, due_since)


def image_rows(batch: Sequence[ArtworkRows], now: datetime) -> list[tuple[Any, ...]]:
    """Pure: the rows of every image ``batch`` references."""
    seen = utc_text(now)
    found: list[tuple[Any, ...]] = []
    for r in batch:
        for _, position, url in r.results:
            found.append(pending_row(r.id, Role.RESULT.value, position, url, r.created_at, seen))
        if r.parameters_table == "upscaling_parameters" and r.parameters is not None:
            if (url := r.parameters[_INPUT_URL]) is not None:
                found.append(pending_row(r.id, Role.INPUT.value, 0, url, r.created_at, seen))
    return found


def _insert(conn: Connection, found: Sequence[tuple[Any, ...]], on_conflict: str) -> None:
    if not found:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    # Identifiers are syncd's own constants; the values are bound.
    conn.exec_driver_sql(
        f"INSERT INTO archived_files ({', '.join(IMAGE_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join([mark] * len(IMAGE_COLUMNS))}) "
        f"ON CONFLICT (artwork_id, role, position) {on_conflict}",
        list(found),
    )


def write_images(conn: Connection, batch: Sequence[ArtworkRows], now: datetime) -> None:
    """In the page's transaction: a pending row for every image of the artworks
    just inserted or rewritten, when the archive is on. An image that has its
    row keeps it; only one still waiting takes a new URL (a signed CDN URL
    changes with every listing): an archived one keeps its file, a gone one
    stays gone, one given up stays given up."""
    if not batch or not is_on(conn):
        return
    _insert(
        conn,
        image_rows(batch, now),
        "DO UPDATE SET url = excluded.url "
        f"WHERE archived_files.status IN ({WAITING_SQL}) AND archived_files.next_attempt_at IS NOT NULL "
        "AND archived_files.url <> excluded.url",
    )


# ------------------------------------------------------------------ the switch


@dataclass(frozen=True)
class State:
    images_since: datetime | None = None  # None: the archive was never on here
    walk_created_at: datetime | None = None  # the walk's place (it goes newest first)
    walk_id: str | None = None
    walked_at: datetime | None = None  # when the walk reached the oldest artwork

    @property
    def complete(self) -> bool:
        """Every stored artwork has its images recorded."""
        return self.images_since is not None and self.walked_at is not None


def load(conn: Connection) -> State:
    row = conn.execute(select(state_table).where(state_table.c.id == 1)).first()
    if row is None:
        return State()
    return State(row.images_since, row.walk_created_at, row.walk_id, row.walked_at)


def is_on(conn: Connection) -> bool:
    return (
        conn.execute(
            select(state_table.c.id).where(state_table.c.id == 1, state_table.c.images_since.is_not(None))
        ).first()
        is not None
    )


def turn_on(conn: Connection, now: datetime) -> bool:
    """Record images with their artworks from now on; True when it was off.
    The caller holds the one-syncer lock (no page is being written)."""
    if load(conn).images_since is not None:
        return False
    # Nothing stored yet (a new database): there is nothing to walk.
    empty = conn.execute(select(artworks.c.id).limit(1)).first() is None
    values = {"images_since": now, "walked_at": now if empty else None}
    found = conn.execute(update(state_table).where(state_table.c.id == 1).values(values)).rowcount
    if not found:  # the row the migration made is gone: make it again
        conn.execute(insert(state_table).values(id=1, **values))
    return True


# ------------------------------------------------------------------ the walk


def walk_step(conn: Connection, now: datetime, size: int = WALK_BATCH) -> int:
    """Record the images of the next ``size`` artworks the walk has not seen
    (newest first) and move its place, in the caller's transaction; how many
    artworks it walked (0: the walk is complete)."""
    current = load(conn)
    if current.images_since is None or current.walked_at is not None:
        return 0
    query = select(artworks.c.id, artworks.c.created_at)
    if current.walk_created_at is not None and current.walk_id is not None:
        place, place_id = current.walk_created_at, current.walk_id
        # Below the place, by the created_at index (a range that starts at the place).
        query = query.where(
            artworks.c.created_at <= place, or_(artworks.c.created_at < place, artworks.c.id < place_id)
        )
    batch = conn.execute(query.order_by(artworks.c.created_at.desc(), artworks.c.id.desc()).limit(size)).all()
    seen = utc_text(now)
    created = {artwork_id: utc_text(created_at) for artwork_id, created_at in batch}
    ids = list(created)
    found: list[tuple[Any, ...]] = []
    if ids:
        for artwork_id, position, url in conn.execute(
            select(results.c.artwork_id, results.c.position, results.c.url).where(
                results.c.artwork_id.in_(ids)
            )
        ):
            found.append(pending_row(artwork_id, Role.RESULT.value, position, url, created[artwork_id], seen))
        for artwork_id, url in conn.execute(
            select(upscaling.c.artwork_id, upscaling.c.image_url).where(
                upscaling.c.artwork_id.in_(ids), upscaling.c.image_url.is_not(None)
            )
        ):
            found.append(pending_row(artwork_id, Role.INPUT.value, 0, url, created[artwork_id], seen))
    _insert(conn, found, "DO NOTHING")  # the write path's rows (since the switch) stand
    values: dict[str, Any] = {}
    if batch:
        values.update(walk_created_at=batch[-1].created_at, walk_id=batch[-1].id)
    if len(batch) < size:
        values["walked_at"] = now
    conn.execute(update(state_table).where(state_table.c.id == 1).values(values))
    return len(batch)


def walk(
    engine: Engine,
    clock: Callable[[], datetime],
    stop: threading.Event,
    *,
    size: int = WALK_BATCH,
) -> int:
    """Walk the artworks stored before the archive was on, to the oldest; how
    many it walked now. A stop request ends it between two batches (what it
    walked is kept, and the next walk starts there)."""
    walked = 0
    while not stop.is_set():
        with db.writer(engine).begin() as conn:
            step = walk_step(conn, clock(), size)
        walked += step
        if step < size:
            break
        if walked % (100 * size) == 0:
            log.info("recorded the images of %d stored artworks so far (newest first)", walked)
    return walked
