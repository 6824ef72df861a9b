"""A run's ``sync_runs`` row: started, counted as pages commit, and its outcome
recorded, success or why not, with what it committed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine

from syncd import store
from syncd.errors import AuthError, Interrupted, SyncdError
from syncd.records import storable_text
from syncd.state import STREAM, Counts, Mode
from syncd.sync.planner import Reach

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """One ``sync_runs`` row in progress: what was done, and what of it is committed."""

    id: int
    mode: Mode
    requests_before: int  # the client's request count when the run began
    counts: Counts = field(default_factory=Counts)
    committed: Counts = field(default_factory=Counts)


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
    reach: Reach | None = None  # how far the list is read in createdAt (None: by-id fetches)


class RunRecorder:
    """Starts runs and records how each ended.

    ``requests``: the client's request count (each run counts its own from
    where it stood at its start); ``redact``: what keeps the key out of a
    stored error message.
    """

    def __init__(
        self,
        writer: Engine,
        *,
        now: Callable[[], datetime],
        requests: Callable[[], int],
        redact: Callable[[str], str],
    ) -> None:
        self._writer, self._now, self._requests, self._redact = writer, now, requests, redact

    def start(self, conn: Connection, mode: Mode) -> RunRecord:
        run_id = store.start_run(conn, stream=STREAM, mode=str(mode), now=self._now())
        return RunRecord(run_id, mode, self._requests())

    def requests_of(self, run: RunRecord) -> int:
        """The requests ``run`` has sent so far."""
        return self._requests() - run.requests_before

    @contextmanager
    def recorded(self, run: RunRecord) -> Iterator[None]:
        """Record the run's outcome in sync_runs, success or why not, with what it committed."""
        try:
            yield
        except BaseException as exc:
            self._record_failure(run, exc)
            raise
        counts = run.counts
        counts.requests = self.requests_of(run)
        with self._writer.begin() as conn:
            store.update_run(
                conn, run.id, counts, mode=str(run.mode), outcome="success", finished_at=self._now()
            )

    def _record_failure(self, run: RunRecord, exc: BaseException) -> None:
        if isinstance(exc, Interrupted | KeyboardInterrupt):
            outcome = "interrupted"
        elif isinstance(exc, AuthError):
            outcome = "auth_failed"
        else:
            outcome = "failed"
        message = str(exc) if isinstance(exc, SyncdError) else f"{type(exc).__name__}: {exc}"
        message = storable_text(self._redact(message))
        counts = run.committed.copy()
        counts.requests = self.requests_of(run)
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
                    finished_at=self._now(),
                )
        except Exception:  # the database itself may be what failed
            log.exception("could not record the outcome of run %d", run.id)
