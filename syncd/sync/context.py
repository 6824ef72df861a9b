"""What the parts of a run share: the database and the client, the clock, the
stop request, and how they wait.

The loop's own thread never blocks in a socket read: requests run on
``InFlight``'s threads, and a wait on one looks at the stop request every
``wait_step`` (a stop ends a run within that time, even while a request
hangs), commits the pages written so far (never holding the write lock while
waiting on the network), and persists a new Retry-After deadline, so that a
restarted syncd waits it out too and `syncd status` shows it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Engine

from syncd import store
from syncd.api.client import ApiClient
from syncd.db import writer
from syncd.errors import Interrupted
from syncd.net.inflight import InFlight
from syncd.state import STREAM
from syncd.sync.pages import PageWriter
from syncd.sync.planner import Reach
from syncd.sync.runs import Progress, RunRecord, RunRecorder

log = logging.getLogger(__name__)
T = TypeVar("T")


class Abandoned(Exception):
    """A request still unanswered a second after its deadline: left behind."""


class RunContext:
    def __init__(
        self,
        engine: Engine,
        client: ApiClient,
        *,
        now: Callable[[], datetime],
        stop: threading.Event,
        wait_step: float = 0.2,
        on_page: Callable[[Progress], None] | None = None,
        on_rate_limited: Callable[[datetime], None] | None = None,
    ) -> None:
        self.engine = engine
        self.writer = writer(engine)
        self.client = client
        self.now = now
        self.stop = stop
        self.wait_step = wait_step  # how often a wait looks at the stop request (and commits)
        self.on_page = on_page
        self.on_rate_limited = on_rate_limited  # a new Retry-After deadline (metrics)
        self.saved_deadline: datetime | None = None  # the Retry-After deadline persisted last
        self.recorder = RunRecorder(
            self.writer, now=now, requests=lambda: client.stats.requests, redact=client.redact
        )

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise Interrupted("stopped by a signal; committed pages are kept")

    @contextmanager
    def requests(self) -> Iterator[InFlight]:
        """Request threads for one loop, at most SYNCD_MAX_IN_FLIGHT."""
        requests = InFlight(self.client.options.max_in_flight)
        try:
            yield requests
        finally:
            # Never wait for a request in flight: a stop must not hang on it.
            requests.close()

    def await_(self, pending: Future[T], pages: PageWriter | None = None, *, until: float | None = None) -> T:
        """The future's result; meanwhile looks at the stop request, and never holds
        the write lock while waiting on the network. ``until`` (monotonic): no
        longer than that (FutureTimeout)."""
        while True:
            self.check_stop()
            step = self.wait_step
            if until is not None:
                step = max(0.0, min(step, until - time.monotonic()))
            try:
                result = pending.result(timeout=step)
            except FutureTimeout:
                # A page due within moments is waited for first: each commit
                # rewrites the index pages that a page of UUIDs touched.
                if pages is not None:
                    pages.commit()
                self.save_rate_limit(pages)
                if until is not None and time.monotonic() >= until:
                    raise
                continue
            self.save_rate_limit(pages)
            return result

    def await_answer(self, pending: Future[T], deadline: float | None) -> T:
        """``await_``, giving up on a request unanswered a second after ``deadline`` (Abandoned)."""
        try:
            return self.await_(pending, until=None if deadline is None else deadline + 1.0)
        except FutureTimeout:
            if deadline is not None and not pending.done():
                raise Abandoned from None
            raise

    def save_rate_limit(self, pages: PageWriter | None = None) -> None:
        """Persist a new Retry-After deadline (once each), log it, tell the
        metrics. The pages written so far commit first: one writer at a time."""
        deadline = self.client.rate_limited_until
        if deadline is None or deadline == self.saved_deadline:
            return
        if pages is not None:
            pages.commit()
            # On the loop's own connection: one taken from the pool beside it
            # would stay there, a second SQLite connection for good.
            with pages.conn.begin():
                store.save_rate_limit(pages.conn, STREAM, deadline, self.now())
        else:
            with self.writer.begin() as conn:
                store.save_rate_limit(conn, STREAM, deadline, self.now())
        self.saved_deadline = deadline
        log.warning(
            "rate limited by the API: no request before %s (Retry-After)",
            deadline.isoformat(timespec="seconds"),
        )
        if self.on_rate_limited is not None:
            self.on_rate_limited(deadline)

    def report(self, run: RunRecord, started: float, reach: Reach | None = None) -> None:
        """Tell the progress callback where the run is."""
        if self.on_page is None:
            return
        counts = run.counts
        self.on_page(
            Progress(
                str(run.mode),
                counts.pages,
                counts.artworks,
                self.recorder.requests_of(run),
                time.monotonic() - started,
                request_rate=self.client.limiter.rate,
                in_flight=self.client.stats.in_flight,
                run_id=run.id,
                counts=counts.copy(),
                limiter_wait=self.client.limiter_wait(),
                reach=reach,
            )
        )
