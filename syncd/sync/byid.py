"""Artworks asked for by id: the refresh of unfinished ones, and the checks of
those a complete scan missed.

Requests run concurrently, paced by the client (its rate, and the request
workers bound how many are in flight); the next batch is queued before this
one is written, so the pipeline never drains between two batches. Each batch
is written like a list page, in one transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from syncd import store
from syncd.errors import ApiError, AuthError, BadRequestError
from syncd.net.pace import Unwanted
from syncd.records import classify_page
from syncd.sync.context import Abandoned, RunContext
from syncd.sync.pages import ListedPage
from syncd.sync.refresh import plan_refresh
from syncd.sync.runs import RunRecord

log = logging.getLogger(__name__)

BATCH = 50  # artworks fetched by id per transaction
# A refresh's 404 is believed only for an artwork no answer (a list page, a GET)
# has carried for this long: sooner, the API contradicts itself (a replica
# behind, a cache, an id it answers only as it spelled it), and the artwork is
# asked again once this has passed.
DELETION_GRACE = timedelta(minutes=10)
FAILURES_IN_A_ROW = 3  # artworks by id failing one after another: the API is failing, stop


@dataclass
class Checked:
    """By-id checks of artworks a scan missed: the ids answered with a record, and with 404."""

    alive: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


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


class ByIdFetcher:
    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.client = context.client

    def fetch_and_store(
        self,
        ids: list[str],
        run: RunRecord,
        *,
        deadline: float | None = None,
        failures: dict[str, datetime] | None = None,
        checked: Checked | None = None,
    ) -> None:
        """GET each artwork: store what the API returns, mark deleted what it answers 404 for
        (or, with ``checked``, note which were answered and which were 404, and mark nothing).

        After ``deadline`` (monotonic) nothing more is sent, and what is not
        answered within a second of it is left. An artwork whose request
        fails (retries exhausted, an unusable answer) is noted in
        ``failures`` and skipped: the others go on. Only FAILURES_IN_A_ROW of
        them in a row stop the run (the API is down, not that artwork); a
        rejected key stops it at once.
        """
        context = self.context
        started = time.monotonic()
        batches = (ids[offset : offset + BATCH] for offset in range(0, len(ids), BATCH))
        dropped = threading.Event()  # set at the deadline: nothing more is sent
        failed_in_a_row = 0

        def wanted() -> bool:
            return not dropped.is_set()

        def failed(artwork_id: str) -> None:
            if failures is not None:
                failures[artwork_id] = context.now()

        # Asked for as the API spelled them (an upper-case id it answers only
        # so); answers are still judged, stored and marked by the stored id.
        with context.engine.connect() as conn:
            spelled = store.spellings(conn, ids)

        with context.requests() as requests:

            def submit(batch: list[str]) -> list[tuple[str, Future[Any]]]:
                return [
                    (
                        artwork_id,
                        requests.submit(self.client.get_artwork, spelled.get(artwork_id, artwork_id), wanted),
                    )
                    for artwork_id in batch
                ]

            queued = submit(next(batches, []))
            while queued:
                context.check_stop()
                futures = queued
                if deadline is not None and time.monotonic() >= deadline:
                    dropped.set()
                queued = [] if dropped.is_set() else submit(next(batches, []))
                fetched: list[tuple[str, Any]] = []
                given_up: ApiError | None = None
                for artwork_id, future in futures:
                    try:
                        value = context.await_answer(future, deadline)
                    except Unwanted:  # never sent: the next refresh asks
                        continue
                    except Abandoned:  # on the wire past the deadline: to the back of the queue
                        failed(artwork_id)
                        continue
                    except BadRequestError as exc:  # about this artwork only: the others go on
                        log.warning("artwork %s skipped: %s", artwork_id, exc)
                        continue
                    except AuthError:
                        raise
                    except ApiError as exc:
                        failed(artwork_id)
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
                # What came before the API gave up, too.
                self._store(fetched, run, checked, failures)
                context.report(run, started)
                if given_up is not None:
                    dropped.set()
                    raise given_up

    def _store(
        self,
        fetched: list[tuple[str, Any]],
        run: RunRecord,
        checked: Checked | None,
        failures: dict[str, datetime] | None = None,
    ) -> None:
        """Artworks fetched by id, in one transaction: written like a list page
        (later duplicates win, what is invalid or refused is quarantined), the
        404s marked deleted (or, with ``checked``, noted there), every id
        answered counted as seen.

        A 404 for an artwork an answer carried less than DELETION_GRACE ago
        is not believed yet: nothing is marked, and (in ``failures``) the
        artwork is due again just after the grace, when a 404 is believed."""
        context = self.context
        now = context.now()
        gone = [artwork_id for artwork_id, value in fetched if value is None]
        answered = [artwork_id for artwork_id, value in fetched if value is not None]
        page = ListedPage.read([value for _, value in fetched if value is not None], now)
        counts = run.counts.copy()
        if checked is not None:
            checked.gone += gone
            checked.alive += answered
            gone = []
        with context.writer.begin() as conn:
            recent = store.seen_since(conn, gone, now - DELETION_GRACE) if gone else {}
            for artwork_id, seen_at in sorted(recent.items()):
                log.info(
                    "artwork %s answered 404 by id, but an answer carried it %.0f s ago: "
                    "not marked deleted (asked again after %s)",
                    artwork_id,
                    (now - seen_at).total_seconds(),
                    DELETION_GRACE,
                )
                if failures is not None:  # its next check: just after the grace (see plan_refresh)
                    failures[artwork_id] = seen_at + DELETION_GRACE
            gone = [artwork_id for artwork_id in gone if artwork_id not in recent]
            counts.marked_deleted += store.mark_remote_deleted(conn, gone, now)
            stored = store.stored_hashes(conn, page.known_ids())
            result = classify_page(page.values, now, stored, self.client.secrets, ids=page.ids)
            savepoint = conn.begin_nested()
            try:
                written = store.write_page(conn, result, stored, now=now, run_id=run.id)
            except store.RECORD_ERRORS:
                savepoint.rollback()
                written = store.write_page(conn, result, stored, now=now, run_id=run.id, careful=True)
            else:
                savepoint.commit()
            # Answered, the artwork exists, even when its record was quarantined.
            store.touch_seen(conn, sorted(set(answered) - {rows.id for rows in result.rows}), now)
            written.pages = 0
            counts.add(written)
            counts.requests = context.recorder.requests_of(run)
            store.update_run(conn, run.id, counts)
        run.counts, run.committed = counts, counts.copy()
