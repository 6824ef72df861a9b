"""The sync loop: the one place where client, planner and store meet.

For each page: fetch (the next page is already being fetched while this one is
validated and written), let the planner judge it, then write its rows, its
rejected records, the planner's new state and the run's counters in ONE
transaction. A crash between pages loses nothing: the cursor never runs ahead
of the rows it covers.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Engine

from syncd import store
from syncd.api.client import ApiClient
from syncd.db import writer
from syncd.errors import ApiError, AuthError, Interrupted, SyncdError
from syncd.recordkeys import list_key
from syncd.rows import ArtworkRows, Rejection
from syncd.summary import STREAM, Counts, RunSummary
from syncd.sync.planner import Item, Mode, Planner, Request
from syncd.sync.validation import HelperMode, PageValidator, ValidatedPage
from syncd.sync.writing import PageWriter

log = logging.getLogger(__name__)

REFRESH_BATCH = 50
# A run that has written this many pages and wants more is a long one: worth
# starting a validation helper process (about 0.2 s of the other core).
LONG_RUN_PAGES = 2


T = TypeVar("T")


class Fetched(NamedTuple):
    items: list[Any]  # the page's elements as received, for the planner
    now: datetime  # when the page was read
    validated: Future[ValidatedPage]  # its validation, under way


@dataclass
class Progress:
    """Handed to the progress callback after each committed page."""

    mode: str
    pages: int
    artworks: int
    requests: int
    seconds: float


@dataclass
class Syncer:
    """Runs syncs of the artworks stream against one database with one client."""

    engine: Engine
    client: ApiClient
    page_size: int
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    stop: threading.Event = field(default_factory=threading.Event)
    on_page: Callable[[Progress], None] | None = None
    refresh_limit: int = 1000
    commit_seconds: float = 1.0
    lock_wait_seconds: float = 0.2  # wait this long for a page before committing
    validation: HelperMode | str = HelperMode.AUTO
    writes: HelperMode | str = HelperMode.AUTO  # the writer process (syncd.sync.writing)

    def __post_init__(self) -> None:
        self._writer = writer(self.engine)

    # ------------------------------------------------------------ public

    def sync(self, *, full: bool = False) -> RunSummary:
        """One list run: backfill, incremental or full, as the state calls for."""
        started = time.monotonic()
        with self._writer.begin() as conn:
            store.close_abandoned_runs(conn, self.now())
            state = store.load_state(conn, STREAM)
            planner = Planner(state, self.page_size, full=full, now=self.now())
            run_id = store.start_run(conn, stream=STREAM, mode=str(planner.mode), now=self.now())
        if state.rate_limited_until is not None:
            self.client.wait_until(state.rate_limited_until)
        # Long-lived objects (libraries, schema, models) need no more cycle
        # scans; pages come and go, and full scans of everything cost ~10%.
        gc.freeze()
        counts = Counts()
        with self._recorded(run_id, counts, lambda: planner.mode):
            self._list_loop(planner, run_id, counts, started)
        if counts.rejected:
            log.warning(
                "run %d: %d records failed validation and are in rejected_records", run_id, counts.rejected
            )
        if not planner.state.list_order.is_sorted and planner.scan_complete:
            log.warning("the list is %s: every run reads it in full", planner.state.list_order)
        seconds = time.monotonic() - started
        return RunSummary(
            run_id, str(planner.mode), "success", counts, seconds, str(planner.state.list_order)
        )

    def refresh(self) -> RunSummary | None:
        """Re-fetch stored artworks whose status is not terminal; None when there are none."""
        with self.engine.connect() as conn:
            pending = store.pending_refresh(conn, self.refresh_limit)
        if not pending:
            return None
        started = time.monotonic()
        with self._writer.begin() as conn:
            run_id = store.start_run(conn, stream=STREAM, mode=str(Mode.REFRESH), now=self.now())
        counts = Counts()
        with self._recorded(run_id, counts, lambda: Mode.REFRESH):
            for offset in range(0, len(pending), REFRESH_BATCH):
                self._check_stop()
                self._refresh_batch(pending[offset : offset + REFRESH_BATCH], run_id, counts)
        return RunSummary(run_id, str(Mode.REFRESH), "success", counts, time.monotonic() - started, "")

    @contextmanager
    def _recorded(self, run_id: int, counts: Counts, mode: Callable[[], Mode]) -> Iterator[None]:
        """Record the run's outcome in sync_runs, success or why not, with its counters."""
        requests_before = self.client.stats.requests
        try:
            yield
        except BaseException as exc:
            counts.requests = self.client.stats.requests - requests_before
            self._record_failure(run_id, counts, mode(), exc)
            raise
        counts.requests = self.client.stats.requests - requests_before
        with self._writer.begin() as conn:
            store.update_run(
                conn, run_id, counts, mode=str(mode()), outcome="success", finished_at=self.now()
            )

    # ------------------------------------------------------------ list

    def _fetch(
        self,
        request: Request,
        validator: PageValidator,
        validation: ThreadPoolExecutor,
        look_up: bool,
        writes: PageWriter,
    ) -> Fetched:
        """Runs in the fetch thread: the page, and its validation under way.

        Three stages overlap: this thread fetches page k+2 while page k+1 is
        validated (in the validation thread, or the helper process behind it)
        and page k is written (in the loop's thread, or the writer process).
        """
        page = self.client.fetch_list_page(request.skip, request.limit)
        now = self.now()
        known: dict[str, str] = {}
        if look_up:  # only to skip validating what is stored unchanged; the writer decides
            ids = [v["id"] for v in page.items if isinstance(v, dict) and isinstance(v.get("id"), str)]
            with self.engine.connect() as conn:  # a reader: never waits for the writer (WAL)
                known = store.stored_hashes(conn, ids)
        # A page bound for the writer process passes through this one unloaded.
        validated = validation.submit(
            validator.validate, page.body, page.items, now, known, wire=writes.process_started
        )
        return Fetched(page.items, now, validated)

    def _list_loop(self, planner: Planner, run_id: int, counts: Counts, started: float) -> None:
        requests_before = self.client.stats.requests
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncd-fetch")
        validation = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncd-validate")
        validator = PageValidator(self.validation, database_in_process=self.engine.dialect.name == "sqlite")
        # A run into an empty table (a first backfill) has nothing stored to
        # skip validating: no lookup per page before validation, nor before writing.
        with self.engine.connect() as reader:
            look_up = store.has_artworks(reader)
        writes = PageWriter(self.engine, run_id, counts, self.writes, first_backfill=not look_up)

        def fetch(request: Request | None) -> Future[Fetched] | None:
            if request is None:
                return None
            return pool.submit(self._fetch, request, validator, validation, look_up, writes)

        request = planner.next_request()
        pending = fetch(request)
        last_commit = time.monotonic()

        def commit() -> None:
            nonlocal last_commit
            counts.requests = self.client.stats.requests - requests_before
            writes.commit()
            last_commit = time.monotonic()

        try:
            while pending is not None and request is not None:
                if not pending.done() and not wait([pending], timeout=self.lock_wait_seconds).done:
                    # Never hold the write lock while waiting on the network: the
                    # fetch thread may need it (to record a Retry-After deadline).
                    # A page due within moments is waited for first: each commit
                    # rewrites the index pages a page of UUIDs touched.
                    commit()
                items, now, validated = self._await(pending)
                planner.observe(request, [Item(*list_key(value, now)) for value in items])
                state = replace(planner.state)
                mode = planner.mode
                request = planner.next_request()
                # Fetch the next page while this one is validated and written.
                pending = fetch(request)
                # A first backfill (nothing stored) that wants a second page is
                # long enough: its helpers start at once, their imports
                # overlapping the next requests.
                if request is not None and (counts.pages >= LONG_RUN_PAGES or not look_up):
                    validator.expect_long_run()
                    if mode is Mode.BACKFILL:  # inserts; incremental and full runs mostly touch
                        writes.expect_long_run()
                page = self._await(validated)
                # Deletions are marked only after a scan proven to have missed nothing.
                proven_scan = planner.scan_complete and planner.provably_complete and request is None
                writes.write(
                    page,
                    state,
                    now,
                    run_mode=str(mode),
                    unlisted_since=state.scan_started_at if proven_scan else None,
                )
                counts.requests = self.client.stats.requests - requests_before
                # Whole pages commit with their cursor; a second's worth of pages
                # per commit keeps SQLite's commits off the hot path.
                if request is None or time.monotonic() - last_commit >= self.commit_seconds:
                    commit()
                if self.on_page is not None:
                    done = counts.inserted + counts.updated + counts.unchanged
                    self.on_page(
                        Progress(str(mode), counts.pages, done, counts.requests, time.monotonic() - started)
                    )
            commit()
            writes.finish()
        except (Interrupted, ApiError):
            # A stop, or a page that could not be fetched: the pages written so
            # far are whole, with their cursor. Keep them.
            commit()
            writes.finish()
            raise
        except BaseException:
            writes.abort()
            raise
        finally:
            writes.close()
            # Never wait here for a request in flight: a stop must not hang on it.
            pool.shutdown(wait=False, cancel_futures=True)
            validation.shutdown(wait=False, cancel_futures=True)
            validator.close()
            log.debug(
                "run %d: %d pages validated in the helper process, %d written by the writer process",
                run_id,
                validator.pages_in_helper,
                writes.pages_in_writer,
            )

    def _await(self, pending: Future[T]) -> T:
        """The future's result; checks for a stop request while waiting."""
        while True:
            self._check_stop()
            try:
                return pending.result(timeout=0.2)
            except FutureTimeout:
                continue

    # ------------------------------------------------------------ refresh

    def _refresh_batch(self, ids: list[str], run_id: int, counts: Counts) -> None:
        from syncd.records import classify  # pydantic: loaded when needed

        fetched: list[tuple[str, Any]] = []
        for artwork_id in ids:
            self._check_stop()
            fetched.append((artwork_id, self.client.get_artwork(artwork_id)))
        now = self.now()
        with self._writer.begin() as conn:
            gone = [artwork_id for artwork_id, value in fetched if value is None]
            counts.marked_deleted += store.mark_remote_deleted(conn, gone, now)
            rows: list[ArtworkRows] = []
            rejected: list[Rejection] = []
            for _, value in fetched:
                if value is not None:
                    outcome = classify(value, now)
                    if isinstance(outcome, Rejection):
                        rejected.append(outcome)
                    else:
                        rows.append(outcome)
            written = store.write_artworks(conn, rows, now)
            store.quarantine(conn, rejected, stream=STREAM, run_id=run_id, now=now)
            written.rejected = len(rejected)
            counts.add(written)
            store.update_run(conn, run_id, counts)

    # ------------------------------------------------------------ failure

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted("stopped by a signal; committed pages are kept")

    def _record_failure(self, run_id: int, counts: Counts, mode: Mode, exc: BaseException) -> None:
        if isinstance(exc, Interrupted):
            outcome = "interrupted"
        elif isinstance(exc, AuthError):
            outcome = "auth_failed"
        else:
            outcome = "failed"
        message = str(exc) if isinstance(exc, SyncdError | ApiError) else f"{type(exc).__name__}: {exc}"
        try:
            with self._writer.begin() as conn:
                store.update_run(
                    conn,
                    run_id,
                    counts,
                    mode=str(mode),
                    outcome=outcome,
                    error=message[:2000],
                    finished_at=self.now(),
                )
        except Exception:  # the database itself may be what failed
            log.exception("could not record the outcome of run %d", run_id)
