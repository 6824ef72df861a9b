"""A list run: the list read as the planner says, the next pages in flight.

For each page: the next request is already in flight while the planner
judges this page and the page writer stores it. A page's rows, its rejected
records, the planner's state after it and the run's counters commit in ONE
transaction (whole pages, about once a second, and before any wait on the
network). A crash between pages loses nothing: the cursor never runs ahead of
the rows it covers, and ``sync_runs`` counts only what was committed.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import replace

from syncd import store
from syncd.errors import ApiError, AuthError, Interrupted
from syncd.net.inflight import InFlight
from syncd.net.pace import Unwanted
from syncd.state import STREAM
from syncd.sync.context import RunContext
from syncd.sync.pages import ListedPage, PageWriter, Rewind
from syncd.sync.planner import Planner, Request
from syncd.sync.runs import RunRecord

log = logging.getLogger(__name__)


class ListRun:
    """Reads the list for one run, as its planner says."""

    def __init__(self, context: RunContext, page_size: int, *, commit_seconds: float = 1.0) -> None:
        self.context = context
        self.client = context.client
        self.page_size = page_size
        self.commit_seconds = commit_seconds

    def read(self, planner: Planner, run: RunRecord, started: float, *, full: bool) -> Planner:
        """Read the list as the planner says; the planner at the end (a rewind makes a new one)."""
        pages = PageWriter(
            self.context.writer,
            run,
            lambda: self.context.recorder.requests_of(run),
            self.client.secrets,
            recent_pages=self.client.options.max_in_flight + 1,
            since=planner.since,
        )
        try:
            while True:
                try:
                    self._read(planner, run, pages, started)
                    return planner
                except Rewind:
                    with self.context.engine.connect() as conn:
                        state = store.load_state(conn, STREAM)
                    planner = Planner(
                        state, self.page_size, full=full, now=self.context.now(), since=planner.since
                    )
        finally:
            pages.close()

    def _fetch_page(self, request: Request, dropped: threading.Event | None = None) -> ListedPage:
        """In a request thread: one page, judged, and when it was read. Once
        ``dropped`` is set, the request is not sent (or retried) any more: ``Unwanted``."""
        wanted = None if dropped is None else (lambda: not dropped.is_set())
        values = self.client.fetch_list_page(request.skip, request.limit, wanted)
        return ListedPage.read(values, self.context.now())

    def _read(self, planner: Planner, run: RunRecord, pages: PageWriter, started: float) -> None:
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
        ahead = _Ahead(self, planner)
        with self.context.requests() as requests:
            try:
                request = planner.next_request()
                while request is not None:
                    ahead.fetch(requests, request)
                    page = self.context.await_(ahead.take(request), pages)
                    writing = time.monotonic()
                    planner.observe(request, page.items)
                    state, run.mode = replace(planner.state), planner.mode
                    request = planner.next_request()
                    ahead.fetch(requests, request)
                    pages.write(page, state)
                    ahead.store_strays(pages, finishing=request is None)
                    if request is None or time.monotonic() - pages.begun_at >= self.commit_seconds:
                        pages.commit()
                    ahead.wrote_page(time.monotonic() - writing)
                    self.context.report(run, started, planner.reach())
                pages.commit()
            except (Interrupted, ApiError):
                # A stop, or a page that could not be fetched: the pages written
                # so far are whole, with their cursor. Keep them.
                pages.commit()
                raise
            finally:
                ahead.drop_all()  # nothing more is sent for this loop (a rewind starts another)


class _Ahead:
    """The pages in flight for one loop: the next one and those expected after it,
    and strays (sent ahead, no longer wanted: stored when they come, never retried)."""

    def __init__(self, run: ListRun, planner: Planner) -> None:
        self.run, self.planner, self.client = run, planner, run.client
        self.in_flight: dict[Request, tuple[Future[ListedPage], threading.Event]] = {}
        self.strays: list[Future[ListedPage]] = []
        self.page_seconds: float | None = None  # what writing a page takes (moving average)

    def wrote_page(self, seconds: float) -> None:
        self.page_seconds = seconds if self.page_seconds is None else 0.8 * self.page_seconds + 0.2 * seconds

    def take(self, request: Request) -> Future[ListedPage]:
        return self.in_flight.pop(request)[0]

    def fetch(self, requests: InFlight, request: Request | None) -> None:
        """Have ``request`` and the pages expected after it in flight: as many
        as the loop can take (no more than answer within the API's latency at
        the allowed rate, nor faster than pages are written)."""
        if request is None:
            expected: list[Request] = []
            wanted: list[Request] = []
        else:
            # A page already in flight stays wanted while the planner still
            # expects it, even if the window has since narrowed.
            expected = [request, *self.planner.lookahead(self.client.options.max_in_flight)]
            if self.page_seconds is None:  # how fast pages are written is not known yet: one ahead
                wanted = expected[: min(2, self.client.in_flight_target())]
            else:
                wanted = expected[: self.client.in_flight_target(1 / max(self.page_seconds, 1e-6))]
        for stale in self.in_flight.keys() - set(expected):  # the planner went another way
            future, dropped = self.in_flight.pop(stale)
            dropped.set()  # not sent if it has not been, not retried if it fails
            if not future.cancel():
                self.strays.append(future)
        for ahead in wanted:
            if ahead not in self.in_flight:
                dropped = threading.Event()
                self.in_flight[ahead] = (requests.submit(self.run._fetch_page, ahead, dropped), dropped)

    def store_strays(self, pages: PageWriter, *, finishing: bool) -> None:
        """Store the strays that have come (at the end, waiting for those on the
        wire: one attempt each at most, for they are not retried)."""
        for future in [f for f in self.strays if finishing or f.done()]:
            self.strays.remove(future)
            try:
                stray = self.run.context.await_(future, pages)
            except Unwanted:
                continue
            except AuthError:
                raise  # the key was rejected: that ends the run, wherever it shows
            except ApiError as exc:
                log.debug("a page fetched ahead and not needed failed: %s", exc)
                continue
            if stray.values:  # past the end of the list, pages asked ahead come back empty
                pages.write(stray, None)

    def drop_all(self) -> None:
        for _, dropped in self.in_flight.values():
            dropped.set()
