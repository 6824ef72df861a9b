"""The sync loop: the one place where client, planner and store meet.

Every run (backfill, incremental, full, refresh) goes through here, in this
process. For each page: the next request is already in flight while the
planner judges this page and the store writes it. A page's rows, its rejected
records, the planner's state after it and the run's counters commit in ONE
transaction (whole pages, about once a second, and before any wait on the
network). A crash between pages loses nothing: the cursor never runs ahead of
the rows it covers, and ``sync_runs`` counts only what was committed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Connection, Engine, RootTransaction

from syncd import store
from syncd.api.client import ApiClient
from syncd.api.pace import Unwanted
from syncd.db import writer
from syncd.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    Interrupted,
    SyncdError,
    database_reason,
)
from syncd.records import PageResult, classify_page, list_key, page_ids, storable_text
from syncd.state import STREAM, Counts, Mode, RunSummary, StreamState
from syncd.sync.deletions import Checks, Verdict, judge
from syncd.sync.inflight import InFlight
from syncd.sync.planner import Item, Planner, Request
from syncd.sync.refresh import plan_refresh

log = logging.getLogger(__name__)

REFRESH_BATCH = 50  # artworks fetched by id per transaction
DELETION_CHECKS = 200  # artworks one complete scan missed, asked for by id
FAILURES_IN_A_ROW = 3  # artworks by id failing one after another: the API is failing, stop
T = TypeVar("T")


class Fetched(NamedTuple):
    items: list[Any]  # the page's elements as received
    now: datetime  # when the page was read


@dataclass
class Progress:
    """Handed to the progress callback after each written page."""

    mode: str
    pages: int
    artworks: int
    requests: int
    seconds: float
    request_rate: float = 0.0  # the limiter's rate now, requests/s
    in_flight: int = 0  # requests sent and not yet answered, now
    run_id: int = 0
    counts: Counts = field(default_factory=Counts)  # the run's, so far (committed or not)
    limiter_wait: float = 0.0  # seconds until the limiter lets the next request go


@dataclass
class _Run:
    """One ``sync_runs`` row in progress: what was done, and what of it is committed."""

    id: int
    mode: Mode
    requests_before: int
    counts: Counts = field(default_factory=Counts)
    committed: Counts = field(default_factory=Counts)


@dataclass
class _Checked:
    """By-id checks of artworks a scan missed: the ids answered with a record, and with 404."""

    alive: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


class _Abandoned(Exception):
    """A request still unanswered a second after the refresh's deadline: left behind."""


class _Rewind(Exception):
    """The database refused a record: the pages since the last commit were
    rolled back, and the list is read again from the committed cursor."""


def _artwork_id(value: object) -> str | None:
    ids = page_ids([value])
    return ids[0] if ids else None


def _not_stored(value: object, stored: dict[str, str]) -> bool:
    """A record with a usable id that is not in the database yet."""
    artwork_id = _artwork_id(value)
    return artwork_id is not None and artwork_id not in stored


class _Pages:
    """Pages written in one open transaction, committed with the planner's state
    after the last of them and the run's counters.

    A page is written with one statement per table. Should the database refuse
    a record (validation is meant to make that impossible), the transaction
    is rolled back, the loop reads the list again from the committed cursor
    (``_Rewind``), and the pages are written ``careful``ly from then on: each
    under a savepoint, and each record of a page the database refuses under
    one of its own, so that the record is quarantined and nothing else lost.
    Savepoints only then: one per page slows SQLite's inserts by 15-20%.
    (Pages read again may miss an artwork deleted meanwhile, as after a crash;
    a refused record that validation accepted is the rare case this covers.)
    """

    def __init__(
        self,
        engine: Engine,
        run: _Run,
        requests: Callable[[], int],
        secrets: tuple[str, ...],
        recent_pages: int = 2,
    ) -> None:
        self.conn: Connection = engine.connect()
        self.run = run
        self.recent_pages = recent_pages
        self.secrets = secrets
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

    def write(self, fetched: Fetched, state: StreamState | None) -> None:
        """Write a page; ``state`` is the planner's after it.

        None: a stray, a page fetched ahead and then not wanted. It moves
        nothing, and only the artworks not stored yet are taken from it (they
        were listed): it may be older than a page written since, whose
        version of an artwork must not be overwritten by it.
        """
        if self._transaction is None:
            self._transaction = self.conn.begin()
            self.begun_at = time.monotonic()
        # Looked up once, in this transaction: validation skips what is stored
        # unchanged, and the write decides insert, rewrite or touch by them.
        ids = page_ids(fetched.items)
        stored = store.stored_hashes(self.conn, ids)
        items = fetched.items
        if state is None:
            items = [value for value in items if _not_stored(value, stored)]
            # What it writes is all it is remembered for: an artwork it left
            # alone must not count as read at its time, or the page before
            # it, when its turn comes, would skip it as superseded, and the
            # artwork would go unseen by this scan.
            ids = page_ids(items)
        # Pages in flight are answered in any order: a page read before one
        # already written must not write its older copy of an artwork over the
        # newer one that page carried (the overlap item, or one shifted along).
        newer = {artwork_id for artwork_id in ids if self._read_at.get(artwork_id, fetched.now) > fetched.now}
        if newer:
            items = [value for value in items if _artwork_id(value) not in newer]
        # Read by a page of this run already (the overlap item): not "unchanged"
        # again in the counts, which count artworks, not reads.
        again = {artwork_id for artwork_id in ids if artwork_id in self._read_at}
        self._remember(ids, fetched.now)
        page = classify_page(items, fetched.now, stored, self.secrets)
        # A record read twice by this run (the overlap, the page that confirms
        # the end) is quarantined, and counted, once.
        page.rejected = [r for r in page.rejected if r.payload_hash not in self._rejected]
        self._rejected.update(r.payload_hash for r in page.rejected)
        for rejection in page.rejected:
            log.debug("rejected record %s: %s", rejection.artwork_id or "(no id)", rejection.reason)
        try:
            written = self._write(page, stored, fetched.now)
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
            raise _Rewind from None
        written.unchanged -= sum(1 for artwork_id in page.unchanged_ids if artwork_id in again)
        if state is None:
            written.pages = 0  # not a page of the scan: the run's pages are the planner's
        else:
            self._state = (state, fetched.now)
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


@dataclass(frozen=True)
class RefreshBacklog:
    due: list[str]  # due a re-check now, most overdue first
    unfinished: int  # stored artworks whose status is not terminal


def refresh_backlog(
    engine: Engine, now: datetime, *, floor: float, failures: dict[str, datetime]
) -> RefreshBacklog:
    """The unfinished artworks, and those due a re-check at ``now`` (see
    syncd.sync.refresh). ``failures`` forgets the artworks answered, finished
    or gone since their re-check failed."""
    with engine.connect() as conn:
        unfinished = store.unfinished(conn)
    checked = {artwork.id: artwork.checked_at for artwork in unfinished}
    for artwork_id, failed_at in list(failures.items()):
        if artwork_id not in checked or checked[artwork_id] >= failed_at:
            del failures[artwork_id]
    due = plan_refresh(unfinished, now, floor=timedelta(seconds=floor), failed=failures)
    return RefreshBacklog(due, len(unfinished))


@dataclass
class Syncer:
    """Runs syncs of the artworks stream against one database with one client."""

    engine: Engine
    client: ApiClient
    page_size: int
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    stop: threading.Event = field(default_factory=threading.Event)
    on_page: Callable[[Progress], None] | None = None
    on_rate_limited: Callable[[datetime], None] | None = None  # a new Retry-After deadline (metrics)
    refresh_limit: int = 1000  # artworks re-checked per refresh at most
    refresh_floor: float = 10.0  # seconds: the shortest back-off of an unfinished artwork
    # Artworks whose last re-check failed, and when: they wait their back-off
    # from then (the daemon keeps this across runs).
    refresh_failures: dict[str, datetime] = field(default_factory=dict)
    commit_seconds: float = 1.0
    wait_step: float = 0.2  # how often a wait looks at the stop request (and commits)

    def __post_init__(self) -> None:
        self._writer = writer(self.engine)
        self._saved_deadline: datetime | None = None

    # ------------------------------------------------------------ public

    def sync(self, *, full: bool = False) -> RunSummary:
        """One list run: backfill, incremental or full, as the state calls for."""
        started = time.monotonic()
        with self._writer.begin() as conn:
            store.close_abandoned_runs(conn, self.now())
            state = store.load_state(conn, STREAM)
            planner = Planner(state, self.page_size, full=full, now=self.now())
            run = self._start_run(conn, planner.mode)
        self._saved_deadline = state.rate_limited_until
        if state.rate_limited_until is not None and state.rate_limited_until > self.now():
            # At most SYNCD_MAX_RETRY_WAIT, whatever an older syncd persisted.
            limit = self.now() + timedelta(seconds=self.client.options.max_retry_wait)
            if state.rate_limited_until > limit:
                with self._writer.begin() as conn:
                    store.save_rate_limit(conn, STREAM, limit, self.now())
                state.rate_limited_until = self._saved_deadline = limit
            log.warning(
                "waiting out the API's rate limit (Retry-After) until %s before the first request",
                state.rate_limited_until.isoformat(timespec="seconds"),
            )
            self.client.wait_until(state.rate_limited_until)
        withheld: str | None = None
        with self._recorded(run):
            planner = self._list_loop(planner, run, started, full=full)
            if planner.scan_complete and planner.provably_complete:
                withheld = self._settle_deletions(run, planner.state).withheld
            if planner.scan_complete and (withheld is not None or not planner.provably_complete):
                # Not the complete scan the next one compares with.
                with self._writer.begin() as conn:
                    store.forget_scan(conn, STREAM)
        if not planner.provably_complete:
            log.warning(
                "run %d: the list shifted more than syncd can follow; nothing is marked deleted from "
                "this run, %s",
                run.id,
                "and later scans fill any gap"
                if planner.scan_complete
                else "and the next run resumes from the last place it could prove",
            )
        if run.counts.rejected:
            log.warning(
                "run %d: %d records failed validation and are in rejected_records",
                run.id,
                run.counts.rejected,
            )
        if not planner.state.list_order.is_sorted and planner.scan_complete:
            log.warning("the list is %s: every run reads it in full", planner.state.list_order)
        seconds = time.monotonic() - started
        return RunSummary(
            run.id,
            str(run.mode),
            "success",
            run.counts,
            seconds,
            str(planner.state.list_order),
            deletions_withheld=withheld,
        )

    def refresh(self, *, seconds: float | None = None) -> RunSummary | None:
        """Re-check the unfinished artworks that are due; None when none is.

        ``seconds``: how long the refresh may take (the daemon's share of its
        interval): no request is sent after it, and one still unanswered a
        second later is left for the next refresh. Unbounded when None.
        """
        backlog = refresh_backlog(
            self.engine, self.now(), floor=self.refresh_floor, failures=self.refresh_failures
        )
        due = backlog.due[: self.refresh_limit]
        if not due:
            return None
        with self.engine.connect() as conn:
            quiet_until = store.load_state(conn, STREAM).rate_limited_until
        if quiet_until is not None and quiet_until > self.now():
            if seconds is not None:  # the daemon: its next refresh comes soon enough
                log.debug("refresh skipped: the API asked for quiet until %s", quiet_until.isoformat())
                return None
            self.client.wait_until(quiet_until)  # clamped to SYNCD_MAX_RETRY_WAIT
        started = time.monotonic()
        with self._writer.begin() as conn:
            run = self._start_run(conn, Mode.REFRESH)
        with self._recorded(run):
            deadline = None if seconds is None else started + seconds
            self._fetch_and_store(due, run, deadline=deadline, failures=self.refresh_failures)
        return RunSummary(run.id, str(Mode.REFRESH), "success", run.counts, time.monotonic() - started, "")

    # ------------------------------------------------------------ list

    def _fetch_page(self, request: Request, dropped: threading.Event | None = None) -> Fetched:
        """In a request thread: one page, and when it was read. Once ``dropped``
        is set, the request is not sent (or retried) any more: ``Unwanted``."""
        wanted = None if dropped is None else (lambda: not dropped.is_set())
        items = self.client.fetch_list_page(request.skip, request.limit, wanted)
        return Fetched(items, self.now())

    def _list_loop(self, planner: Planner, run: _Run, started: float, *, full: bool) -> Planner:
        """Read the list as the planner says; the planner at the end (a rewind makes a new one)."""
        pages = _Pages(
            self._writer,
            run,
            lambda: self.client.stats.requests - run.requests_before,
            self.client.secrets,
            recent_pages=self.client.options.max_in_flight + 1,
        )
        try:
            while True:
                try:
                    self._read_list(planner, run, pages, started)
                    return planner
                except _Rewind:
                    with self.engine.connect() as conn:
                        state = store.load_state(conn, STREAM)
                    planner = Planner(state, self.page_size, full=full, now=self.now())
        finally:
            pages.close()

    def _read_list(self, planner: Planner, run: _Run, pages: _Pages, started: float) -> None:
        """Read pages in the planner's order, with the next ones in flight.

        In a scan, the pages the planner expects next are fetched ahead (as
        many as answer within the API's latency at the allowed rate and the
        pace pages are written, up to SYNCD_MAX_IN_FLIGHT). Each is judged
        only when its turn comes, against the page written before it: one that
        does not connect moves no cursor, and the planner asks again. A page
        fetched ahead that the planner no longer wants is still stored once it
        arrives (its artworks were listed), and one not yet sent is not sent.
        Pages are written and committed in order.
        """
        ahead: dict[Request, tuple[Future[Fetched], threading.Event]] = {}
        # Sent ahead and no longer wanted: stored when they come, never retried.
        strays: list[Future[Fetched]] = []
        page_seconds: float | None = None  # what writing a page takes (moving average)

        def fetch(request: Request | None) -> None:
            """Have ``request`` and the pages expected after it in flight: as many
            as the loop can take (no more than answer within the API's latency at
            the allowed rate, nor faster than pages are written)."""
            if request is None:
                expected: list[Request] = []
                wanted: list[Request] = []
            else:
                # A page already in flight stays wanted while the planner still
                # expects it, even if the window has since narrowed.
                expected = [request, *planner.lookahead(self.client.options.max_in_flight)]
                if page_seconds is None:  # how fast pages are written is not known yet: one ahead
                    wanted = expected[: min(2, self.client.in_flight_target())]
                else:
                    wanted = expected[: self.client.in_flight_target(1 / max(page_seconds, 1e-6))]
            for stale in ahead.keys() - set(expected):  # the planner went another way
                future, dropped = ahead.pop(stale)
                dropped.set()  # not sent if it has not been, not retried if it fails
                if not future.cancel():
                    strays.append(future)
            for ahead_request in wanted:
                if ahead_request not in ahead:
                    dropped = threading.Event()
                    ahead[ahead_request] = (
                        requests.submit(self._fetch_page, ahead_request, dropped),
                        dropped,
                    )

        def store_strays(finishing: bool) -> None:
            """Store the strays that have come (at the end, waiting for those on the
            wire: one attempt each at most, for they are not retried)."""
            for future in [f for f in strays if finishing or f.done()]:
                strays.remove(future)
                try:
                    stray = self._await(future, pages)
                except Unwanted:
                    continue
                except AuthError:
                    raise  # the key was rejected: that ends the run, wherever it shows
                except ApiError as exc:
                    log.debug("a page fetched ahead and not needed failed: %s", exc)
                    continue
                if stray.items:  # past the end of the list, pages asked ahead come back empty
                    pages.write(stray, None)

        with self._requests() as requests:
            try:
                request = planner.next_request()
                while request is not None:
                    fetch(request)
                    fetched = self._await(ahead.pop(request)[0], pages)
                    writing = time.monotonic()
                    planner.observe(request, [Item(*list_key(value, fetched.now)) for value in fetched.items])
                    state, run.mode = replace(planner.state), planner.mode
                    request = planner.next_request()
                    fetch(request)
                    pages.write(fetched, state)
                    store_strays(finishing=request is None)
                    if request is None or time.monotonic() - pages.begun_at >= self.commit_seconds:
                        pages.commit()
                    took = time.monotonic() - writing
                    page_seconds = took if page_seconds is None else 0.8 * page_seconds + 0.2 * took
                    self._report(run, started)
                pages.commit()
            except (Interrupted, ApiError):
                # A stop, or a page that could not be fetched: the pages written
                # so far are whole, with their cursor. Keep them.
                pages.commit()
                raise
            finally:
                for _, dropped in ahead.values():
                    dropped.set()  # nothing more is sent for this loop (a rewind starts another)

    def _report(self, run: _Run, started: float) -> None:
        if self.on_page is not None:
            counts = run.counts
            requests = self.client.stats.requests - run.requests_before
            self.on_page(
                Progress(
                    str(run.mode),
                    counts.pages,
                    counts.artworks,
                    requests,
                    time.monotonic() - started,
                    request_rate=self.client.limiter.rate,
                    in_flight=self.client.stats.in_flight,
                    run_id=run.id,
                    counts=counts.copy(),
                    limiter_wait=self.client.limiter_wait(),
                )
            )

    # ------------------------------------------------------------ artworks by id

    def _settle_deletions(self, run: _Run, state: StreamState) -> Verdict:
        """After a complete scan: mark deleted what it missed, if it may be believed.

        The artworks it missed are asked for by id first (at most
        DELETION_CHECKS, those unseen longest first): one answered with its
        record is stored, and means the scan did not see the whole list. Then
        syncd.sync.deletions judges. Believed: those answered 404 are marked,
        and so are those the complete scan before it missed too (not seen
        since that one began). Withheld: nothing is marked (said once, and
        counted in the metrics).
        """
        assert state.scan_started_at is not None
        with self.engine.connect() as conn:
            misses = store.scan_misses(conn, state.scan_started_at)
            missed = store.unlisted(conn, state.scan_started_at, DELETION_CHECKS)
        checked = _Checked()
        self._fetch_and_store(missed, run, checked=checked)
        verdict = judge(misses, Checks(len(missed), len(checked.alive), len(checked.gone)), self.now())
        if not verdict.believed:
            log.warning("run %d: nothing is marked deleted from this scan: %s", run.id, verdict.reason)
            return verdict
        now = self.now()
        counts = run.counts.copy()
        with self._writer.begin() as conn:
            counts.marked_deleted += store.mark_remote_deleted(conn, checked.gone, now)
            if state.previous_scan_started_at is not None:
                counts.marked_deleted += store.mark_unlisted(conn, state.previous_scan_started_at, now)
            store.update_run(conn, run.id, counts)
        run.counts, run.committed = counts, counts.copy()
        return verdict

    def _fetch_and_store(
        self,
        ids: list[str],
        run: _Run,
        *,
        deadline: float | None = None,
        failures: dict[str, datetime] | None = None,
        checked: _Checked | None = None,
    ) -> None:
        """GET each artwork: store what the API returns, mark deleted what it answers 404 for
        (or, with ``checked``, note which were answered and which were 404, and mark nothing).

        Requests run concurrently, paced by the client (its rate, and the
        request workers bound how many are in flight); the next batch is
        queued before this one is written, so the pipeline never drains
        between two batches. After ``deadline`` (monotonic) nothing more is
        sent, and what is not answered within a second of it is left.

        An artwork whose request fails (retries exhausted, an unusable
        answer) is noted in ``failures`` and skipped: the others go on. Only
        FAILURES_IN_A_ROW of them in a row stop the run (the API is down, not
        that artwork); a rejected key stops it at once.
        """
        started = time.monotonic()
        batches = (ids[offset : offset + REFRESH_BATCH] for offset in range(0, len(ids), REFRESH_BATCH))
        dropped = threading.Event()  # set at the deadline: nothing more is sent
        failed_in_a_row = 0

        def wanted() -> bool:
            return not dropped.is_set()

        with self._requests() as requests:

            def submit(batch: list[str]) -> list[tuple[str, Future[Any]]]:
                return [
                    (artwork_id, requests.submit(self.client.get_artwork, artwork_id, wanted))
                    for artwork_id in batch
                ]

            queued = submit(next(batches, []))
            while queued:
                self._check_stop()
                futures = queued
                if deadline is not None and time.monotonic() >= deadline:
                    dropped.set()
                queued = [] if dropped.is_set() else submit(next(batches, []))
                fetched: list[tuple[str, Any]] = []
                given_up: ApiError | None = None
                for artwork_id, future in futures:
                    try:
                        value = self._await_answer(future, deadline)
                    except Unwanted:  # never sent: the next refresh asks
                        continue
                    except _Abandoned:  # on the wire past the deadline: to the back of the queue
                        if failures is not None:
                            failures[artwork_id] = self.now()
                        continue
                    except BadRequestError as exc:  # about this artwork only: the others go on
                        log.warning("artwork %s skipped: %s", artwork_id, exc)
                        continue
                    except AuthError:
                        raise
                    except ApiError as exc:
                        if failures is not None:
                            failures[artwork_id] = self.now()
                        failed_in_a_row += 1
                        if failed_in_a_row >= FAILURES_IN_A_ROW:
                            given_up = exc
                            break
                        log.warning("artwork %s not re-checked (tried again later): %s", artwork_id, exc)
                        continue
                    finally:
                        if deadline is not None and time.monotonic() >= deadline:
                            dropped.set()
                    failed_in_a_row = 0
                    fetched.append((artwork_id, value))
                self._store_fetched(fetched, run, checked)  # what came before the API gave up, too
                self._report(run, started)
                if given_up is not None:
                    dropped.set()
                    raise given_up

    def _store_fetched(self, fetched: list[tuple[str, Any]], run: _Run, checked: _Checked | None) -> None:
        """Artworks fetched by id, in one transaction: written like a list page
        (later duplicates win, what is invalid or refused is quarantined), the
        404s marked deleted (or, with ``checked``, noted there), every id
        answered counted as seen."""
        now = self.now()
        gone = [artwork_id for artwork_id, value in fetched if value is None]
        answered = [artwork_id for artwork_id, value in fetched if value is not None]
        values = [value for _, value in fetched if value is not None]
        counts = run.counts.copy()
        if checked is not None:
            checked.gone += gone
            checked.alive += answered
            gone = []
        with self._writer.begin() as conn:
            counts.marked_deleted += store.mark_remote_deleted(conn, gone, now)
            stored = store.stored_hashes(conn, page_ids(values))
            page = classify_page(values, now, stored, self.client.secrets)
            savepoint = conn.begin_nested()
            try:
                written = store.write_page(conn, page, stored, now=now, run_id=run.id)
            except store.RECORD_ERRORS:
                savepoint.rollback()
                written = store.write_page(conn, page, stored, now=now, run_id=run.id, careful=True)
            else:
                savepoint.commit()
            # Answered, the artwork exists, even when its record was quarantined.
            store.touch_seen(conn, sorted(set(answered) - {rows.id for rows in page.rows}), now)
            written.pages = 0
            counts.add(written)
            counts.requests = self.client.stats.requests - run.requests_before
            store.update_run(conn, run.id, counts)
        run.counts, run.committed = counts, counts.copy()

    # ------------------------------------------------------------ waiting

    @contextmanager
    def _requests(self) -> Iterator[InFlight]:
        requests = InFlight(self.client.options.max_in_flight)
        try:
            yield requests
        finally:
            # Never wait for a request in flight: a stop must not hang on it.
            requests.close()

    def _await(self, pending: Future[T], pages: _Pages | None = None, *, until: float | None = None) -> T:
        """The future's result; meanwhile looks at the stop request, and never holds
        the write lock while waiting on the network. ``until`` (monotonic): no
        longer than that (FutureTimeout)."""
        while True:
            self._check_stop()
            step = (
                self.wait_step if until is None else max(0.0, min(self.wait_step, until - time.monotonic()))
            )
            try:
                result = pending.result(timeout=step)
            except FutureTimeout:
                # A page due within moments is waited for first: each commit
                # rewrites the index pages that a page of UUIDs touched.
                if pages is not None:
                    pages.commit()
                self._save_rate_limit(pages)
                if until is not None and time.monotonic() >= until:
                    raise
                continue
            self._save_rate_limit(pages)
            return result

    def _await_answer(self, pending: Future[T], deadline: float | None) -> T:
        """``_await``, giving up on a request unanswered a second after ``deadline`` (_Abandoned)."""
        try:
            return self._await(pending, until=None if deadline is None else deadline + 1.0)
        except FutureTimeout:
            if deadline is not None and not pending.done():
                raise _Abandoned from None
            raise

    def _save_rate_limit(self, pages: _Pages | None) -> None:
        """Persist a new Retry-After deadline (once each), so that a restarted
        syncd waits it out too and `syncd status` shows it; log it, tell the
        metrics. The pages written so far commit first: one writer at a time."""
        deadline = self.client.rate_limited_until
        if deadline is None or deadline == self._saved_deadline:
            return
        if pages is not None:
            pages.commit()
            # On the loop's own connection: one taken from the pool beside it
            # would stay there, a second SQLite connection for good.
            with pages.conn.begin():
                store.save_rate_limit(pages.conn, STREAM, deadline, self.now())
        else:
            with self._writer.begin() as conn:
                store.save_rate_limit(conn, STREAM, deadline, self.now())
        self._saved_deadline = deadline
        log.warning(
            "rate limited by the API: no request before %s (Retry-After)",
            deadline.isoformat(timespec="seconds"),
        )
        if self.on_rate_limited is not None:
            self.on_rate_limited(deadline)

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted("stopped by a signal; committed pages are kept")

    # ------------------------------------------------------------ runs

    def _start_run(self, conn: Connection, mode: Mode) -> _Run:
        run_id = store.start_run(conn, stream=STREAM, mode=str(mode), now=self.now())
        return _Run(run_id, mode, self.client.stats.requests)

    @contextmanager
    def _recorded(self, run: _Run) -> Iterator[None]:
        """Record the run's outcome in sync_runs, success or why not, with what it committed."""
        try:
            yield
        except BaseException as exc:
            self._record_failure(run, exc)
            raise
        counts = run.counts
        counts.requests = self.client.stats.requests - run.requests_before
        with self._writer.begin() as conn:
            store.update_run(
                conn, run.id, counts, mode=str(run.mode), outcome="success", finished_at=self.now()
            )

    def _record_failure(self, run: _Run, exc: BaseException) -> None:
        if isinstance(exc, Interrupted | KeyboardInterrupt):
            outcome = "interrupted"
        elif isinstance(exc, AuthError):
            outcome = "auth_failed"
        else:
            outcome = "failed"
        message = str(exc) if isinstance(exc, SyncdError) else f"{type(exc).__name__}: {exc}"
        message = storable_text(self.client.redact(message))
        counts = run.committed.copy()
        counts.requests = self.client.stats.requests - run.requests_before
        run.counts = counts
        try:
            with self._writer.begin() as conn:
                store.update_run(
                    conn,
                    run.id,
                    counts,
                    mode=str(run.mode),
                    outcome=outcome,
                    error=message[:2000],
                    finished_at=self.now(),
                )
        except Exception:  # the database itself may be what failed
            log.exception("could not record the outcome of run %d", run.id)
