"""``syncd daemon``: APScheduler jobs, the one-syncer lock per tick, signals, sd_notify.

Jobs (sync, refresh and full share one worker thread, so they never overlap;
each coalesced, one instance):

    sync     every SYNCD_INTERVAL (+ up to 10% jitter, at most 30 s), first at once
    refresh  every SYNCD_REFRESH_INTERVAL: re-check the unfinished artworks whose
             back-off has passed (syncd.sync.refresh), for at most REFRESH_SHARE
             of the shorter of the two intervals, so that a sync due meanwhile
             starts at most that (and a second) late
    full     every SYNCD_FULL_SYNC_INTERVAL, counted from the last complete scan
    archive  (with SYNCD_ARCHIVE_DIR) every SYNCD_ARCHIVE_INTERVAL and after every
             sync that stored something, on a thread of its own, so that a
             backlog of downloads never delays a sync; under the one-archiver
             lock; no room on the disk is logged once while it lasts

Every tick takes the one-syncer lock or skips (another process is syncing:
two daemons on one PostgreSQL form an active/standby pair, and the standby
takes over within one interval when the active one dies). A failed run is
logged with its reason and the scheduler goes on; a rejected key is tried
again only at the next tick, never in a loop.

Stopping: the first SIGTERM/SIGINT stops scheduling and asks the run in
flight to stop (see ``syncd.signals``): it commits the pages it wrote, is
recorded as ``interrupted``, and the process exits 0 within a second or so,
even while a request hangs. Later signals change nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from syncd import app, db, locks, store
from syncd.config import Settings
from syncd.errors import (
    ArchiveStorageError,
    ExitCode,
    Interrupted,
    LockHeldError,
    SchemaError,
    SyncdError,
    database_reason,
    one_line,
)
from syncd.metrics import Metrics
from syncd.notify import notify, watchdog_interval
from syncd.state import STREAM
from syncd.sync.byid import refresh_backlog
from syncd.sync.runs import Progress

log = logging.getLogger("syncd.daemon")


# The share of its interval a refresh may take: the rest is the syncs'.
REFRESH_SHARE = 0.5
ARCHIVE_GAUGES_EVERY = 30.0  # seconds between gauge updates during an archive run
ARCHIVE_TOTALS_EVERY = 600.0  # seconds: the totals by status read every row, so not at every idle look


def jitter_for(interval: float) -> float:
    return min(30.0, interval * 0.1)


def refresh_seconds(settings: Settings) -> float:
    """How long one refresh may take: half the shorter of the sync and refresh intervals."""
    return REFRESH_SHARE * min(settings.interval, settings.refresh_interval)


class Daemon:
    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.metrics = Metrics() if settings.metrics_port else None
        self.last_status = "starting"
        # Artworks whose last re-check failed, and when: they wait their back-off.
        self.refresh_failures: dict[str, datetime] = {}
        self._scheduler_ref: BackgroundScheduler | None = None
        self._archiving = threading.Event()  # an archive run is under way
        self._syncing = threading.Event()  # a sync run (list or refresh) is under way
        self._archive_again = threading.Event()  # a sync stored something during it
        # Runs under way when the stop came that have ended since (added before
        # their flag above is cleared): the stop's log line names them too.
        self._met_by_stop: set[str] = set()
        self._archive_problem: str | None = None  # the last archive failure, logged once
        self._archive_totals: tuple[dict[str, int], int] | None = None  # by status, and bytes
        self._totals_due = 0.0

    # ------------------------------------------------------------ lifecycle

    def run(self) -> int:
        settings = self.settings
        settings.require_api()
        # A port that cannot be had is a configuration error: said before the
        # database is touched (or migrated).
        if self.metrics is not None and settings.metrics_port:
            app.serve_metrics(self.metrics, settings)
            log.info("metrics on :%d/metrics", settings.metrics_port)
        app.refuse_root_in_foreign_state(settings, archive=True)
        engine = db.create_db_engine(settings.database_url)
        try:
            db.check_connection(engine)
            self._prepare_schema(engine)
            scheduler = self._scheduler(engine)
            app.freeze_startup_objects()
            scheduler.start()
            log.info(
                "syncd daemon started: sync every %gs, full reconciliation every %gs, database %s",
                settings.interval,
                settings.full_sync_interval,
                db.safe_url(settings.database_url),
            )
            notify("READY=1\nSTATUS=started")
            self._supervise()
            notify("STOPPING=1\nSTATUS=stopping")
            running = [
                what
                for what, busy in (("sync", self._syncing), ("archive", self._archiving))
                if busy.is_set() or what in self._met_by_stop
            ]
            log.info(
                "stopping: %s",
                f"waiting for the {' and '.join(running)} run in flight to record where it is"
                if running
                else "no run in flight",
            )
            scheduler.shutdown(wait=True)
            log.info("stopped")
            return int(ExitCode.OK)
        finally:
            engine.dispose()

    def _prepare_schema(self, engine: Engine) -> None:
        try:
            with locks.sync_lock(engine):
                db.ensure_schema(engine, migrate=True)
        except LockHeldError:
            # Another syncd is active and keeps the schema; we must merely understand it.
            version = db.schema_version(engine)
            if not version.known:
                raise SchemaError(f"schema revision {version.current} is newer than this syncd") from None

    def _supervise(self) -> None:
        """The main thread: watchdog pings until a stop is requested."""
        ping = watchdog_interval()
        while not self.stop.wait(ping or 1.0):
            if ping:
                notify(f"WATCHDOG=1\nSTATUS={self.last_status}")

    def _scheduler(self, engine: Engine) -> BackgroundScheduler:
        settings = self.settings
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        now = datetime.now(UTC)
        scheduler.add_job(
            self._tick,
            IntervalTrigger(seconds=settings.interval, jitter=jitter_for(settings.interval), timezone=UTC),
            id="sync",
            name="incremental sync",
            next_run_time=now,
            args=[engine, "sync"],
        )
        scheduler.add_job(
            self._tick,
            IntervalTrigger(seconds=settings.refresh_interval, timezone=UTC),
            id="refresh",
            name="refresh unfinished artworks",
            next_run_time=now + timedelta(seconds=min(1.0, settings.refresh_interval)),
            args=[engine, "refresh"],
        )
        if settings.archive_on:
            # Its own thread: a backlog of downloads never delays a sync.
            scheduler.add_executor(ThreadPoolExecutor(max_workers=1), "archive")
            scheduler.add_job(
                self._archive_tick,
                IntervalTrigger(seconds=settings.archive_interval, timezone=UTC),
                id="archive",
                name="archive images",
                executor="archive",
                next_run_time=now + timedelta(seconds=min(2.0, settings.archive_interval)),
                args=[engine],
            )
        scheduler.add_job(
            self._tick,
            IntervalTrigger(
                seconds=settings.full_sync_interval,
                jitter=jitter_for(settings.full_sync_interval),
                timezone=UTC,
            ),
            id="full",
            name="full reconciliation",
            next_run_time=self._first_full_sync(engine, now),
            args=[engine, "full"],
        )
        self._scheduler_ref = scheduler
        return scheduler

    def _first_full_sync(self, engine: Engine, now: datetime) -> datetime:
        """A full sync is due one interval after the last complete scan (a backfill counts)."""
        with engine.connect() as conn:
            last = store.load_state(conn, STREAM).last_full_sync_at
        if last is None:
            return now + timedelta(seconds=self.settings.full_sync_interval)
        return max(now + timedelta(seconds=2), last + timedelta(seconds=self.settings.full_sync_interval))

    # ------------------------------------------------------------ one tick

    def _tick(self, engine: Engine, kind: str) -> None:
        try:
            self._run_tick(engine, kind)
        finally:
            if self.metrics is not None:
                self.metrics.run_ended()

    def _run_tick(self, engine: Engine, kind: str) -> None:
        if self.stop.is_set():
            return
        if kind == "refresh" and not self._refresh_due(engine):
            return  # the common case: nothing due, no run, no request, no log line
        started = time.time()
        if self.metrics is not None:
            self.metrics.run_started_now(started)
        self._syncing.set()
        try:
            with locks.sync_lock(engine):
                outcome = app.sync_with(
                    self.settings,
                    engine,
                    app.SyncOptions(
                        full=kind == "full",
                        list_run=kind != "refresh",
                        refresh=kind == "refresh",
                        stop=self.stop,
                        on_page=self._progress,
                    ),
                    on_rate_limited=self._rate_limited,
                    refresh_seconds=refresh_seconds(self.settings),
                    refresh_failures=self.refresh_failures,
                    observer=self.metrics,
                )
        except LockHeldError as exc:
            # Every refresh interval on a standby: not worth a line each time.
            log.log(logging.DEBUG if kind == "refresh" else logging.INFO, "%s tick skipped: %s", kind, exc)
            return
        except Interrupted:
            log.info("%s run interrupted by the stop request", kind)
            self._count_failure(kind, "interrupted")
            return
        except SyncdError as exc:
            # Includes a rejected key: logged each tick, retried only at the next one.
            log.error("%s run failed (%s): %s", kind, type(exc).__name__, exc)
            # One line: sd_notify reads a newline as the start of another assignment.
            self.last_status = one_line(f"last {kind} failed at {_clock()}: {exc}")[:200]
            self._count_failure(kind, "failed")
            return
        except Exception:
            log.exception("%s run crashed; the scheduler goes on", kind)
            self._count_failure(kind, "crashed")
            return
        finally:
            if self.stop.is_set():
                self._met_by_stop.add("sync")
            self._syncing.clear()
        self.last_status = f"last {kind} ok at {_clock()}"
        notify(f"STATUS={self.last_status}")
        if self.metrics is not None:
            for summary in outcome.summaries:
                self.metrics.record_run(summary, started + summary.seconds)
        if any(s.counts.inserted or s.counts.updated for s in outcome.summaries):
            self._archive_soon()

    # ------------------------------------------------------------ the image archive

    def _archive_soon(self) -> None:
        """New or changed artworks: archive their images now, not at the next interval."""
        scheduler = self._scheduler_ref
        if scheduler is None or not self.settings.archive_on:
            return
        if self._archiving.is_set():
            self._archive_again.set()  # the run under way may end before it looks again
            return
        try:
            scheduler.modify_job("archive", next_run_time=datetime.now(UTC))
        except Exception:
            log.debug("archive job not rescheduled", exc_info=True)

    def _archive_tick(self, engine: Engine) -> None:
        if self.stop.is_set():
            return
        self._archiving.set()
        outcome = "success"
        worked = True
        try:
            options = app.ArchiveOptions(stop=self.stop, on_progress=self._archive_progress(engine))
            result = app.archive_with(self.settings, engine, options).result
            outcome = result.outcome
            worked = bool(result.counts.done or result.counts.walked)
            if self._archive_problem is not None:
                log.info("image archive working again")
            self._archive_problem = None
        except LockHeldError as exc:
            log.debug("archive tick skipped: %s", exc)
            outcome = "skipped"
        except ArchiveStorageError as exc:
            # Said once while it lasts (every tick would repeat it); the sync goes on.
            outcome = "storage"
            self._archive_trouble(f"image archive stopped: {exc}")
        except SyncdError as exc:
            outcome = "failed"
            self._archive_trouble(f"archive run failed ({type(exc).__name__}): {exc}")
        except Exception:
            outcome = "crashed"
            log.exception("archive run crashed; the scheduler goes on")
        finally:
            if self.stop.is_set():
                self._met_by_stop.add("archive")
            self._archiving.clear()
            self._archive_gauges(engine, outcome, worked)
            if self._archive_again.is_set() and not self.stop.is_set():
                self._archive_again.clear()
                self._archive_soon()

    def _archive_progress(self, engine: Engine) -> Callable[[object], None]:
        """During a long run, the gauges every ARCHIVE_GAUGES_EVERY seconds (not
        frozen at their value from before a backlog of hours)."""
        last = time.monotonic()

        def progress(_: object) -> None:
            nonlocal last
            if time.monotonic() - last >= ARCHIVE_GAUGES_EVERY:
                last = time.monotonic()
                self._archive_gauges(engine, None, worked=False)

        return progress

    def _archive_trouble(self, message: str) -> None:
        """Log ``message`` unless the same problem was logged last; "the same"
        ignores its numbers and sizes (the free space moves from tick to tick)."""
        problem = re.sub(r"\d[\d.,]*( ?(GiB|MiB|KiB|bytes))?", "#", message)
        if problem != self._archive_problem:
            log.error("%s", message)
        self._archive_problem = problem

    def _archive_gauges(self, engine: Engine, outcome: str | None, worked: bool = True) -> None:
        """The archive's gauges; ``outcome``: a run ended so (counted);
        ``worked``: it archived, marked gone or failed something."""
        if self.metrics is None:
            return
        from syncd.archive import rows
        from syncd.archive.plan import lag_seconds

        if outcome not in (None, "skipped"):
            self.metrics.archive_runs.labels(outcome).inc()
        try:
            now = datetime.now(UTC)
            with engine.connect() as conn:
                # The lag and the waiting images from the due index (a look with
                # nothing to do costs the same at any size); the totals, which
                # read every row, only when a run did something, or now and then.
                oldest = rows.oldest_waiting_expiry(conn)
                files = rows.waiting_counts(conn)
                if self._archive_totals is None or worked or time.monotonic() >= self._totals_due:
                    self._archive_totals = rows.totals(conn)
                    self._totals_due = time.monotonic() + ARCHIVE_TOTALS_EVERY
        except SQLAlchemyError as exc:
            log.error("archive gauges not updated: database error: %s", database_reason(exc))
            return
        counts, size = self._archive_totals
        self.metrics.record_archive({**counts, **files}, size, lag_seconds(oldest, now))

    def _refresh_due(self, engine: Engine) -> bool:
        """Whether any unfinished artwork is due a re-check (and the backlog gauges)."""
        try:
            backlog = refresh_backlog(
                engine,
                datetime.now(UTC),
                floor=self.settings.refresh_interval,
                failures=self.refresh_failures,
            )
        except SQLAlchemyError as exc:
            log.error("refresh tick failed: database error: %s", database_reason(exc))
            return False
        if self.metrics is not None:
            self.metrics.refresh_backlog.set(backlog.unfinished)
            self.metrics.refresh_due.set(len(backlog.due))
        return bool(backlog.due)

    def _progress(self, progress: Progress) -> None:
        if self.metrics is not None:
            self.metrics.record_pace(progress.request_rate, progress.in_flight, progress.limiter_wait)
            self.metrics.record_progress(progress.run_id, progress.mode, progress.counts)

    def _rate_limited(self, until: datetime) -> None:
        self.last_status = f"rate limited by the API until {until.isoformat(timespec='seconds')}"
        notify(f"STATUS={self.last_status}")
        if self.metrics is not None:
            self.metrics.rate_limited_until.set(until.timestamp())

    def _count_failure(self, kind: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.record_failure("full" if kind == "full" else kind, outcome)


def _clock() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
