"""A page of the list as read, judged once, and the writer that stores pages.

A ``ListedPage`` is the answer to one list request: its elements as
received, each element's id and ``createdAt`` judged once (by the same
rules as validation, ``records.list_key``), and when it was read. The
planner, the store lookups and validation all take them from there.

``PageWriter`` writes pages in one open transaction and commits them with
the planner's state after the last of them and the run's counters.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, RootTransaction

from syncd import store
from syncd.errors import database_reason
from syncd.records import PageResult, classify_page, list_key
from syncd.state import Counts, StreamState
from syncd.sync.planner import Item
from syncd.sync.runs import RunRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListedPage:
    """One answer's elements, with each one's id and createdAt (None where unusable)."""

    values: list[Any]
    ids: list[str | None]
    created: list[datetime | None]
    read_at: datetime

    @classmethod
    def read(cls, values: list[Any], read_at: datetime) -> ListedPage:
        keys = [list_key(value, read_at) for value in values]
        return cls(values, [key[0] for key in keys], [key[1] for key in keys], read_at)

    @property
    def items(self) -> list[Item]:
        """What the planner judges of each element."""
        return [Item(artwork_id, created) for artwork_id, created in zip(self.ids, self.created, strict=True)]

    def known_ids(self) -> list[str]:
        return [artwork_id for artwork_id in self.ids if artwork_id is not None]

    def created_since(self, floor: datetime) -> ListedPage:
        """The elements not known to be created before ``floor`` (one whose
        createdAt is unusable stays, to be quarantined)."""
        chosen = [index for index, created in enumerate(self.created) if created is None or created >= floor]
        return self._choose(chosen)

    def keeping(self, keep: Callable[[str | None], bool]) -> ListedPage:
        """The elements whose id ``keep`` accepts."""
        return self._choose([index for index, artwork_id in enumerate(self.ids) if keep(artwork_id)])

    def _choose(self, chosen: list[int]) -> ListedPage:
        return ListedPage(
            [self.values[i] for i in chosen],
            [self.ids[i] for i in chosen],
            [self.created[i] for i in chosen],
            self.read_at,
        )


class Rewind(Exception):
    """The database refused a record: the pages since the last commit were
    rolled back, and the list is read again from the committed cursor."""


class PageWriter:
    """Pages written in one open transaction, committed with the planner's state
    after the last of them and the run's counters.

    A page is written with one statement per table. Should the database refuse
    a record (validation is meant to make that impossible), the transaction
    is rolled back, the loop reads the list again from the committed cursor
    (``Rewind``), and the pages are written ``careful``ly from then on: each
    under a savepoint, and each record of a page the database refuses under
    one of its own, so that the record is quarantined and nothing else lost.
    Savepoints only then: one per page slows SQLite's inserts by 15-20%.
    (Pages read again may miss an artwork deleted meanwhile, as after a crash;
    a refused record that validation accepted is the rare case this covers.)
    """

    def __init__(
        self,
        engine: Engine,
        run: RunRecord,
        requests: Callable[[], int],
        secrets: tuple[str, ...],
        recent_pages: int = 2,
        since: datetime | None = None,
    ) -> None:
        self.conn: Connection = engine.connect()
        self.run = run
        self.recent_pages = recent_pages
        self.secrets = secrets
        self.since = since  # artworks created before it are not stored
        self._requests = requests
        self._transaction: RootTransaction | None = None  # SQLite's BEGIN IMMEDIATE: the write lock
        self._state: tuple[StreamState, datetime] | None = None  # after the last page written
        self._written = Counts()  # what the pages since the last commit did
        self.careful = False
        self.begun_at = 0.0
        # When the freshest page that carried each artwork was read, for the
        # last pages that one still in flight can overtake (as many as can be in
        # flight, and one more).
        self._read_at: dict[str, datetime] = {}
        self._recent: deque[tuple[list[str], datetime]] = deque()
        self._rejected: set[str] = set()  # payload hashes quarantined by this run

    def write(self, page: ListedPage, state: StreamState | None) -> None:
        """Write a page; ``state`` is the planner's after it.

        None: a stray, a page fetched ahead and then not wanted. It moves
        nothing, and only the artworks not stored yet are taken from it (they
        were listed): it may be older than a page written since, whose
        version of an artwork must not be overwritten by it.
        """
        if self._transaction is None:
            self._transaction = self.conn.begin()
            self.begun_at = time.monotonic()
        read_at = page.read_at
        if self.since is not None:
            page = page.created_since(self.since)
        # Looked up once, in this transaction: validation skips what is stored
        # unchanged, and the write decides insert, rewrite or touch by them.
        stored = store.stored_hashes(self.conn, page.known_ids())
        if state is None:
            # What it writes is all it is remembered for: an artwork it left
            # alone must not count as read at its time, or the page before
            # it, when its turn comes, would skip it as superseded, and the
            # artwork would go unseen by this scan.
            page = page.keeping(lambda artwork_id: artwork_id is not None and artwork_id not in stored)
        ids = page.known_ids()
        # Pages in flight are answered in any order: a page read before one
        # already written must not write its older copy of an artwork over the
        # newer one that page carried (the overlap item, or one shifted along).
        newer = {artwork_id for artwork_id in ids if self._read_at.get(artwork_id, read_at) > read_at}
        if newer:
            page = page.keeping(lambda artwork_id: artwork_id not in newer)
        # Read by a page of this run already (the overlap item): not "unchanged"
        # again in the counts, which count artworks, not reads.
        again = {artwork_id for artwork_id in ids if artwork_id in self._read_at}
        self._remember(ids, read_at)
        result = classify_page(page.values, read_at, stored, self.secrets, ids=page.ids)
        # A record read twice by this run (the overlap, the page that confirms
        # the end) is quarantined, and counted, once.
        result.rejected = [r for r in result.rejected if r.payload_hash not in self._rejected]
        self._rejected.update(r.payload_hash for r in result.rejected)
        for rejection in result.rejected:
            log.debug("rejected record %s: %s", rejection.artwork_id or "(no id)", rejection.reason)
        try:
            written = self._write(result, stored, read_at)
        except store.RECORD_ERRORS as exc:
            if self.careful:
                raise
            log.warning(
                "the database refused a write (%s); reading the pages since the last commit again, "
                "to quarantine what it refuses",
                database_reason(exc),
            )
            self._transaction.rollback()
            self._transaction = None
            self._state = None
            self._read_at.clear()
            self._recent.clear()
            self._rejected.clear()
            self._written = Counts()
            self.careful = True
            self.run.counts = self.run.committed.copy()
            raise Rewind from None
        written.unchanged -= sum(1 for artwork_id in result.unchanged_ids if artwork_id in again)
        if state is None:
            written.pages = 0  # not a page of the scan: the run's pages are the planner's
        else:
            self._state = (state, read_at)
        self._written.add(written)
        self.run.counts = self.run.committed.copy()
        self.run.counts.add(self._written)

    def _remember(self, ids: list[str], read_at: datetime) -> None:
        for artwork_id in ids:
            if self._read_at.get(artwork_id, read_at) <= read_at:
                self._read_at[artwork_id] = read_at
        self._recent.append((ids, read_at))
        if len(self._recent) > self.recent_pages:
            old_ids, old_at = self._recent.popleft()
            for artwork_id in old_ids:
                if self._read_at.get(artwork_id) == old_at:
                    del self._read_at[artwork_id]

    def _write(self, page: PageResult, stored: dict[str, str], now: datetime) -> Counts:
        if not self.careful:
            return store.write_page(self.conn, page, stored, now=now, run_id=self.run.id)
        savepoint = self.conn.begin_nested()
        try:
            written = store.write_page(self.conn, page, stored, now=now, run_id=self.run.id)
        except store.RECORD_ERRORS:
            savepoint.rollback()
            return store.write_page(self.conn, page, stored, now=now, run_id=self.run.id, careful=True)
        savepoint.commit()
        return written

    def commit(self) -> None:
        if self._transaction is None:
            return
        if self._state is not None:
            store.save_state(self.conn, *self._state)
        self.run.counts.requests = self._requests()
        store.update_run(self.conn, self.run.id, self.run.counts, mode=str(self.run.mode))
        transaction, self._transaction = self._transaction, None
        transaction.commit()
        self.run.committed = self.run.counts.copy()
        self._written = Counts()

    def close(self) -> None:
        """Roll back what is not committed."""
        transaction, self._transaction = self._transaction, None
        if transaction is not None:
            transaction.rollback()
        self.conn.close()
