"""The sync: the one place where client, planner and store meet.

Every run (backfill, incremental, full, refresh) goes through a ``Syncer``,
in this process. Its parts each have a module: the list read with the next
pages in flight (``listing``), pages judged once and written with their
cursor (``pages``), artworks asked for by id (``byid``), the ``sync_runs``
row (``runs``), and what they share: the database, the client, the stop
request and how a run waits (``context``). Here: what a run is, start to
end, and which artworks a complete scan may mark deleted (``deletions``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from syncd import store
from syncd.api.client import ApiClient
from syncd.state import STREAM, Mode, Phase, RunSummary, StreamState
from syncd.sync.byid import ByIdFetcher, Checked, refresh_backlog
from syncd.sync.context import RunContext
from syncd.sync.deletions import Checks, Verdict, judge
from syncd.sync.listing import ListRun
from syncd.sync.planner import Planner
from syncd.sync.runs import Progress, RunRecord

log = logging.getLogger(__name__)

DELETION_CHECKS = 200  # artworks one complete scan missed, asked for by id


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
    # Only artworks created at or after it (run-once --since): a bounded scan,
    # which stores nothing older and judges no deletions.
    since: datetime | None = None
    refresh_limit: int = 1000  # artworks re-checked per refresh at most
    refresh_floor: float = 10.0  # seconds: the shortest back-off of an unfinished artwork
    # Artworks whose last re-check failed, and when: they wait their back-off
    # from then (the daemon keeps this across runs).
    refresh_failures: dict[str, datetime] = field(default_factory=dict)
    commit_seconds: float = 1.0
    wait_step: float = 0.2  # how often a wait looks at the stop request (and commits)

    def __post_init__(self) -> None:
        self.context = RunContext(
            self.engine,
            self.client,
            now=self.now,
            stop=self.stop,
            wait_step=self.wait_step,
            on_page=self.on_page,
            on_rate_limited=self.on_rate_limited,
        )
        self.recorder = self.context.recorder
        self.listing = ListRun(self.context, self.page_size, commit_seconds=self.commit_seconds)
        self.by_id = ByIdFetcher(self.context)

    def sync(self, *, full: bool = False) -> RunSummary:
        """One list run: backfill, incremental or full, as the state calls for."""
        started = time.monotonic()
        with self.context.writer.begin() as conn:
            store.close_abandoned_runs(conn, self.now())
            state = store.load_state(conn, STREAM)
            planner = Planner(state, self.page_size, full=full, now=self.now(), since=self.since)
            run = self.recorder.start(conn, planner.mode)
        newest = state.head_created_at
        if (
            self.since is not None
            and state.phase == Phase.IDLE
            and newest is not None
            and self.since > newest
        ):
            log.warning(
                "run %d: --since %s is after the newest artwork stored (created %s): those created "
                "between are not stored by this run; the next full scan (run-once --full, or the "
                "daemon's daily one) stores them",
                run.id,
                self.since.isoformat(timespec="seconds"),
                newest.isoformat(timespec="seconds"),
            )
        self._wait_out_a_persisted_retry_after(state)
        withheld: str | None = None
        with self.recorder.recorded(run):
            planner = self.listing.read(planner, run, started, full=full)
            bounded = planner.since is not None  # it saw none of the older artworks
            if planner.scan_complete and planner.provably_complete and not bounded:
                withheld = self._settle_deletions(run, planner.state).withheld
            if planner.scan_complete and (bounded or withheld is not None or not planner.provably_complete):
                # Not the complete scan the next one compares with.
                with self.context.writer.begin() as conn:
                    store.forget_scan(conn, STREAM)
        if planner.reached_since:
            assert planner.since is not None
            log.info(
                "run %d: reached artworks created before %s; the scan ends there",
                run.id,
                planner.since.isoformat(timespec="seconds"),
            )
        if not planner.provably_complete:
            log.warning(
                "run %d: the list shifted more than syncd can follow; nothing is marked deleted from "
                "this run, %s",
                run.id,
                "and later scans fill any gap"
                if planner.scan_complete
                else "and the next run resumes from the last place it could prove",
            )
        rejected_new = rejected_again = 0
        if run.counts.rejected:
            with self.engine.connect() as conn:
                rejected_new, rejected_again = store.rejections_of_run(conn, run.id)
            # Said once: a record quarantined before is counted (metrics), not warned of again.
            if rejected_new:
                log.warning(
                    "run %d: %d new %s failed validation and %s in rejected_records",
                    run.id,
                    rejected_new,
                    "record" if rejected_new == 1 else "records",
                    "is" if rejected_new == 1 else "are",
                )
            if rejected_again:
                log.debug("run %d: %d quarantined records seen again", run.id, rejected_again)
        if not planner.state.list_order.is_sorted and planner.scan_complete:
            log.warning("the list is %s: every run reads it in full", planner.state.list_order)
        return RunSummary(
            run.id,
            str(run.mode),
            "success",
            run.counts,
            time.monotonic() - started,
            str(planner.state.list_order),
            deletions_withheld=withheld,
            rejected_new=rejected_new,
            rejected_again=rejected_again,
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
        with self.context.writer.begin() as conn:
            run = self.recorder.start(conn, Mode.REFRESH)
        with self.recorder.recorded(run):
            deadline = None if seconds is None else started + seconds
            self.by_id.fetch_and_store(due, run, deadline=deadline, failures=self.refresh_failures)
        return RunSummary(run.id, str(Mode.REFRESH), "success", run.counts, time.monotonic() - started, "")

    def _wait_out_a_persisted_retry_after(self, state: StreamState) -> None:
        """A Retry-After an earlier run persisted: no request before it (at most
        SYNCD_MAX_RETRY_WAIT from now, whatever an older syncd persisted)."""
        self.context.saved_deadline = until = state.rate_limited_until
        if until is None or until <= self.now():
            return
        limit = self.now() + timedelta(seconds=self.client.options.max_retry_wait)
        if until > limit:
            with self.context.writer.begin() as conn:
                store.save_rate_limit(conn, STREAM, limit, self.now())
            until = self.context.saved_deadline = limit
        log.warning(
            "waiting out the API's rate limit (Retry-After) until %s before the first request",
            until.isoformat(timespec="seconds"),
        )
        self.client.wait_until(until)

    def _settle_deletions(self, run: RunRecord, state: StreamState) -> Verdict:
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
        checked = Checked()
        self.by_id.fetch_and_store(missed, run, checked=checked)
        verdict = judge(misses, Checks(len(missed), len(checked.alive), len(checked.gone)), self.now())
        if not verdict.believed:
            log.warning("run %d: nothing is marked deleted from this scan: %s", run.id, verdict.reason)
            return verdict
        now = self.now()
        counts = run.counts.copy()
        with self.context.writer.begin() as conn:
            counts.marked_deleted += store.mark_remote_deleted(conn, checked.gone, now)
            if state.previous_scan_started_at is not None:
                counts.marked_deleted += store.mark_unlisted(conn, state.previous_scan_started_at, now)
            store.update_run(conn, run.id, counts)
        run.counts, run.committed = counts, counts.copy()
        return verdict
