"""Where a run's pages are written: in this process, or in a writer process.

Each page is written with the planner's state after it; ``commit`` makes the
pages written since the last commit durable together with that state and the
run's counters (one transaction: the cursor never runs ahead of its rows).

A long run into SQLite hands its writes to a helper process
(``python -m syncd.sync.writing``, see ``syncd.sync.helper``) once that has
started: binding rows for the driver is Python code, and in syncd's own process
it waited for the fetch and validation threads (the GIL) between rows. syncd
commits what it wrote itself, then sends each page (as the validation helper
sent it, unloaded) with its state; the writer answers each message in order,
with the page's counts, and syncd reads the answers one message behind, so the
writer always has the next page waiting.

Failure keeps the same guarantees as writing here: the writer commits only
when told; if syncd dies or aborts, its input closes and it rolls back what is
not committed; if the writer dies or a write fails, the run fails with a
DatabaseError (what was committed stays, the next run reads the rest again).
"""

from __future__ import annotations

import gc
import logging
import pickle
from datetime import datetime
from typing import IO, Any

from sqlalchemy import Connection, Engine, RootTransaction
from sqlalchemy.exc import SQLAlchemyError

from syncd import store
from syncd.db import create_db_engine, sqlite_path, writer
from syncd.errors import DatabaseError, database_reason
from syncd.rows import PageResult, Rejection
from syncd.summary import STREAM, Counts
from syncd.sync.helper import (
    GREETING,
    HelperFailed,
    HelperProcess,
    available_cpus,
    read_frame,
    run_helper,
    write_frame,
)
from syncd.sync.planner import StreamState
from syncd.sync.validation import HelperMode, ValidatedPage, load_page

log = logging.getLogger(__name__)


def write_page(
    conn: Connection,
    page: PageResult,
    *,
    now: datetime,
    run_id: int,
    unlisted_since: datetime | None,
    previous_ids: set[str] | None = None,
) -> Counts:
    """One page's rows, touches and rejected records; what it did.

    ``unlisted_since``: after a scan proven to have missed nothing, artworks
    not seen since it began are marked deleted. ``previous_ids``, in a first
    backfill: the ids of the page written before (updated here). The rows of
    this page are then assumed new, except those (consecutive pages overlap),
    and inserted without a lookup (see store.write_artworks).
    """
    if previous_ids is None:
        written = store.write_artworks(conn, page.rows, now)
    else:
        again = [rows for rows in page.rows if rows.id in previous_ids]
        fresh = [rows for rows in page.rows if rows.id not in previous_ids]
        written = store.write_artworks(conn, again, now)
        written.add(store.write_artworks(conn, fresh, now, assume_new=True))
        previous_ids.clear()
        previous_ids.update(rows.id for rows in page.rows)
    written.unchanged += store.touch_seen(conn, page.unchanged_ids, now)
    store.quarantine(conn, page.rejected, stream=STREAM, run_id=run_id, now=now)
    written.pages = 1
    written.rejected = len(page.rejected)
    written.unknown_type = page.unknown_types
    if unlisted_since is not None:
        written.marked_deleted = store.mark_unlisted(conn, unlisted_since, now)
    return written


def _log_rejections(rejections: list[tuple[str | None, str]]) -> None:
    for artwork_id, reason in rejections:
        log.debug("rejected record %s: %s", artwork_id or "(no id)", reason)


def _rejection_notes(rejected: list[Rejection]) -> list[tuple[str | None, str]]:
    return [(rejection.artwork_id, rejection.reason) for rejection in rejected]


class _Pages:
    """Pages written on one connection, committed with the planner's state after
    the last one and the run's counters: syncd's own writes and the writer
    process's alike."""

    def __init__(self, conn: Connection, run_id: int, counts: Counts, previous_ids: set[str] | None) -> None:
        self.conn = conn
        self.run_id = run_id
        self.counts = counts
        self.previous_ids = previous_ids  # see write_page
        self._transaction: RootTransaction | None = None  # begun to write: SQLite's BEGIN IMMEDIATE locks
        self._state: tuple[StreamState, datetime] | None = None  # after the last page written

    def write(
        self, page: PageResult, state: StreamState, now: datetime, unlisted_since: datetime | None
    ) -> Counts:
        if self._transaction is None:
            self._transaction = self.conn.begin()
        written = write_page(
            self.conn,
            page,
            now=now,
            run_id=self.run_id,
            unlisted_since=unlisted_since,
            previous_ids=self.previous_ids,
        )
        self.counts.add(written)
        self._state = (state, now)
        return written

    def commit(self, run_mode: str) -> None:
        if self._transaction is None:
            return
        assert self._state is not None
        store.save_state(self.conn, *self._state)
        store.update_run(self.conn, self.run_id, self.counts, mode=run_mode)
        transaction, self._transaction = self._transaction, None
        transaction.commit()

    def rollback(self) -> None:
        if self._transaction is not None:
            transaction, self._transaction = self._transaction, None
            transaction.rollback()

    @property
    def in_transaction(self) -> bool:
        return self._transaction is not None


class PageWriter:
    """Writes one run's pages; used from one thread (the sync loop's).

    ``counts`` is the run's: each page's counts are added to it once the
    page is written (one page late with a writer process). ``counts.requests``
    is the caller's to keep current; it goes with each commit.
    """

    def __init__(
        self,
        engine: Engine,
        run_id: int,
        counts: Counts,
        mode: HelperMode | str = HelperMode.AUTO,
        *,
        first_backfill: bool = False,
    ) -> None:
        self.engine = writer(engine)
        self.run_id = run_id
        # Nothing was stored when the run began: rows are assumed new (write_page).
        self.first_backfill = first_backfill
        self._previous_ids: set[str] | None = set() if first_backfill else None
        self.counts = counts
        self.mode = HelperMode(mode)
        self.pages_in_writer = 0
        self._run_mode = ""
        self._here: _Pages | None = None  # writing in this process, until a hand-over
        # Writing in the writer process:
        self._process: HelperProcess | None = None
        self._handed_over = False  # pages now go to the process
        self._answers_due = 0
        self._failed = False
        if self.mode is HelperMode.ON:
            self.start_process()

    # ------------------------------------------------------------ choosing

    @property
    def process_started(self) -> bool:
        """Whether pages will go to a writer process (then they are best passed unloaded)."""
        return self._process is not None

    def expect_long_run(self) -> None:
        """A hint from the sync loop: more pages are coming than a short run has."""
        if self.mode is HelperMode.AUTO and self.engine.dialect.name == "sqlite" and available_cpus() > 1:
            self.start_process()

    def start_process(self) -> None:
        if self._process is not None or self._failed:
            return
        if self.engine.dialect.name == "sqlite" and sqlite_path(self.engine) is None:
            return  # an in-memory database exists in this process only
        try:
            self._process = HelperProcess.start("syncd.sync.writing")
            self._process.send(
                pickle.dumps(
                    (self.engine.url.render_as_string(hide_password=False), self.run_id, self.first_backfill)
                )
            )
        except (OSError, HelperFailed) as exc:
            # Before the hand-over nothing depends on it: write here.
            log.warning("writer process: cannot start it (%s); writing in this process instead", exc)
            self._failed = True
            self._close_process()

    def _hand_over(self) -> bool:
        """Whether pages go to the writer process; hands over once it is ready."""
        if self._handed_over:
            return True
        if self._process is None:
            return False
        try:
            if not self._process.ready(wait=self.mode is HelperMode.ON):
                return False
        except (OSError, HelperFailed) as exc:
            log.warning("writer process: it failed to start (%s); writing in this process instead", exc)
            self._failed = True
            self._close_process()
            return False
        # One writer at a time: what was written here commits first.
        self._close_here(commit=True)
        self._handed_over = True
        self._request(("adopt", self.counts, sorted(self._previous_ids or ())))
        return True

    # ------------------------------------------------------------ writing

    def write(
        self,
        page: ValidatedPage,
        state: StreamState,
        now: datetime,
        *,
        run_mode: str,
        unlisted_since: datetime | None = None,
    ) -> None:
        """Write a page; ``state`` is the planner's state after it, saved with the next commit."""
        self._run_mode = run_mode
        if self._hand_over():
            wire = page if isinstance(page, bytes) else page.to_wire()
            self._request(("page", wire, state, now, unlisted_since))
            self.pages_in_writer += 1
            return
        if self._here is None:
            self._here = _Pages(self.engine.connect(), self.run_id, self.counts, self._previous_ids)
        loaded = load_page(page)
        self._here.write(loaded, state, now, unlisted_since)
        _log_rejections(_rejection_notes(loaded.rejected))

    def commit(self, *, wait: bool = False) -> None:
        """Make the pages written so far durable, with the state after the last one.

        A writer process commits in its own time (it has the next page to
        write meanwhile); ``wait`` returns only once it has.
        """
        if self._handed_over:
            self._request(("commit", self.counts.requests, self._run_mode))
            if wait:
                self._receive_answers(keep=0)
        elif self._here is not None:
            self._here.commit(self._run_mode)

    def finish(self) -> None:
        """Wait until everything sent is done (after ``commit``); raises the writer's failure."""
        if self._handed_over and self._process is not None:
            self._request(("close",))
            self._receive_answers(keep=0)
            self._close_process(timeout=30)

    def abort(self) -> None:
        """Roll back what is not committed."""
        if self._here is not None:
            self._here.rollback()
        self._close_process()  # its input closes: it rolls back

    def close(self) -> None:
        if (self._here is not None and self._here.in_transaction) or self._process is not None:
            self.abort()
        self._close_here(commit=False)

    def _close_here(self, *, commit: bool) -> None:
        here, self._here = self._here, None
        if here is not None:
            if commit:
                here.commit(self._run_mode)
            here.conn.close()

    # ------------------------------------------------------------ talking to the process

    def _request(self, message: tuple[Any, ...]) -> None:
        """Send a message; then read answers until only this one is due.

        Reading one behind keeps the next page waiting in the pipe while the
        writer works on this one.
        """
        assert self._process is not None
        try:
            self._process.send(pickle.dumps(message))
        except HelperFailed:
            self._receive_answers(keep=0)  # the reason it gave, if it gave one
            raise self._gone("it stopped reading") from None
        self._answers_due += 1
        self._receive_answers(keep=1)

    def _receive_answers(self, *, keep: int) -> None:
        assert self._process is not None
        while self._answers_due > keep:
            try:
                answer = pickle.loads(self._process.receive())  # noqa: S301 (our child)
            except (HelperFailed, OSError, EOFError, pickle.UnpicklingError) as exc:
                raise self._gone(str(exc)) from None
            self._answers_due -= 1
            kind = answer[0]
            if kind == "page":
                _, counts, rejections = answer
                self.counts.add(counts)
                _log_rejections(rejections)
            elif kind == "error":
                _, database, reason = answer
                self._answers_due = 0
                self._close_process()
                if database:
                    raise DatabaseError(f"database error during the sync: {reason}")
                raise RuntimeError(f"the writer process failed: {reason}")

    def _gone(self, why: str) -> DatabaseError:
        self._answers_due = 0
        self._close_process()
        return DatabaseError(
            f"the writer process ended unexpectedly ({why}); pages written since the last "
            "commit are not saved, and the next run reads them again"
        )

    def _close_process(self, timeout: float = 2.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.close(timeout)


# ------------------------------------------------------------ in the writer process


class _Writes:
    """The writer process's side: one connection, one transaction at a time."""

    def __init__(self, url: str, run_id: int, first_backfill: bool) -> None:
        self.engine = writer(create_db_engine(url))
        self.pages = _Pages(self.engine.connect(), run_id, Counts(), set() if first_backfill else None)

    def handle(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        kind = message[0]
        if kind == "adopt":  # the run so far, from syncd's own writes
            _, self.pages.counts, previous_ids = message
            if self.pages.previous_ids is not None:
                self.pages.previous_ids = set(previous_ids)
            return ("ok",)
        if kind == "page":
            _, wire, state, now, unlisted_since = message
            page = PageResult.from_wire(wire)
            written = self.pages.write(page, state, now, unlisted_since)
            return ("page", written, _rejection_notes(page.rejected))
        if kind == "commit":
            _, self.pages.counts.requests, run_mode = message
            self.pages.commit(run_mode)
            return ("committed",)
        if kind == "close":
            return ("closed",)
        raise ValueError(f"unknown message {kind!r}")

    def close(self) -> None:
        self.pages.rollback()
        self.pages.conn.close()
        self.engine.dispose()


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The writer's loop: one answer per message, until its input closes or it is told to."""
    opening = read_frame(requests)
    if opening is None:
        return
    url, run_id, first_backfill = pickle.loads(opening)  # noqa: S301 (our parent)
    writes: _Writes | None = None
    failure: tuple[Any, ...] | None = None
    try:
        writes = _Writes(url, run_id, first_backfill)
    except SQLAlchemyError as exc:
        failure = ("error", True, database_reason(exc))
    gc.freeze()  # the imports and the schema are here to stay
    write_frame(answers, GREETING)
    try:
        while (frame := read_frame(requests)) is not None:
            if failure is not None:
                write_frame(answers, pickle.dumps(failure))
                return
            assert writes is not None
            message = pickle.loads(frame)  # noqa: S301 (our parent)
            try:
                answer = writes.handle(message)
            except SQLAlchemyError as exc:
                answer = ("error", True, database_reason(exc))
            except Exception as exc:
                answer = ("error", False, f"{type(exc).__name__}: {exc}")
            write_frame(answers, pickle.dumps(answer))
            if answer[0] in ("error", "closed"):
                return
    finally:
        if writes is not None:
            writes.close()  # rolls back what was not committed


if __name__ == "__main__":
    run_helper(serve)
