"""Wiring: settings -> engine, lock, schema, client, syncer. Used by the CLI and the daemon."""

from __future__ import annotations

import functools
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from syncd import db, locks, owners
from syncd.api.client import ApiClient, ClientOptions, RequestObserver
from syncd.config import Settings
from syncd.errors import (
    ConfigError,
    DatabaseError,
    DatabaseUnreachable,
    Interrupted,
    database_reason,
    listen_reason,
)
from syncd.state import RunSummary
from syncd.sync.engine import Syncer
from syncd.sync.runs import Progress

if TYPE_CHECKING:  # run-once need not import prometheus_client (nor the archive)
    from syncd.archive.job import ArchiveProgress, ArchiveResult
    from syncd.archive.store import ArchiveStore
    from syncd.archive.verify import VerifyReport
    from syncd.metrics import Metrics

log = logging.getLogger("syncd")


_startup_frozen = False


def freeze_startup_objects() -> None:
    """Once per process: move what the imports made (modules, classes, the
    schema) out of the garbage collector's sight. They live as long as the
    process; scanning them again at every full collection cost ~5% of a
    backfill's CPU. Once only: freezing again would pin a run's garbage for
    good (the daemon's memory grew with every run when each run froze)."""
    global _startup_frozen
    if not _startup_frozen:
        _startup_frozen = True
        gc.collect()
        gc.freeze()


@functools.cache
def _warn_once(message: str) -> None:
    # The daemon makes a client every tick; one warning per process is enough.
    log.warning("%s", message)


def serve_metrics(metrics: Metrics, settings: Settings) -> None:
    """Serve the daemon's /metrics; a port that cannot be had is the operator's to fix."""
    port = settings.metrics_port
    assert port is not None
    try:
        metrics.serve(port)
    except OSError as exc:
        reason = listen_reason(exc, "0.0.0.0", port)  # noqa: S104 (where Metrics.serve listens)
        raise ConfigError(
            f"SYNCD_METRICS_PORT: {reason} ({settings.told_by('metrics_port')}); choose another port"
        ) from None


@contextmanager
def open_engine(settings: Settings, *, write: bool = True, create: bool = True) -> Iterator[Engine]:
    """An engine that has been connected once (one clear error when it cannot).

    ``write=False`` is for commands that only read (``status``, ``db current``):
    an SQLite file is opened read-only and nothing is created beside it (see
    ``db.reading``); one that does not exist is then an error, where
    connecting would create an empty database (and its -wal, -shm) under a
    mistyped name. ``create=False``: a writer that needs the database to
    exist already (``archive``, ``db reset-state``) refuses it the same way.
    A writer is refused first as root in another user's state (syncd.owners).
    """
    if not write or not create:
        _require_sqlite_file(settings)
    if not write:
        with db.reading(settings.database_url) as engine:
            db.check_connection(engine, write=False)
            yield engine
        return
    refuse_root_in_foreign_state(settings)
    engine = db.create_db_engine(settings.database_url)
    try:
        db.check_connection(engine)
        yield engine
    finally:
        engine.dispose()


def refuse_root_in_foreign_state(settings: Settings, *, archive: bool = False) -> None:
    """Before a command creates or writes anything: not as root in another
    user's SQLite database, nor (``archive``) in its archive folder (syncd.owners)."""
    paths: list[Path] = []
    database = db.sqlite_path(settings.database_url)
    if database is not None:
        paths += owners.sqlite_state(database)
    if archive and settings.archive_dir is not None:
        paths.append(settings.archive_dir)
    owners.refuse_foreign_state(paths, allowed=settings.allow_root)


def _require_sqlite_file(settings: Settings) -> None:
    path = db.sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        told_by = settings.told_by("database_url")
        raise DatabaseUnreachable(
            f"the database file {path.absolute()} does not exist (SYNCD_DATABASE_URL, {told_by}: "
            f"{db.safe_url(settings.database_url)}); run `syncd run-once` or `syncd db upgrade` to create it"
        )


@dataclass(frozen=True)
class SyncOptions:
    """What one sync does, as ``run_once`` and ``sync_with`` take it.

    ``list_run`` reads the list (backfill, incremental or ``full``); ``refresh``
    then re-checks the stored artworks whose status is not terminal and whose
    back-off has passed. ``since``: a scan of only the artworks created at or
    after it (see ``Syncer.since``), instead of what the state calls for.
    ``stop`` ends the run early; ``on_page`` hears of every page.
    """

    full: bool = False
    list_run: bool = True
    refresh: bool = True
    since: datetime | None = None
    stop: threading.Event | None = None
    on_page: Callable[[Progress], None] | None = None


@dataclass
class SyncOutcome:
    """What one sync did: its runs (list run, then refresh)."""

    summaries: list[RunSummary] = field(default_factory=list)


def interruptible_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A sleep that ends early, raising Interrupted, when ``stop`` is set."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Interrupted("stopped by a signal while waiting to retry; committed pages are kept")

    return sleep


def make_client(
    settings: Settings,
    stop: threading.Event | None = None,
    observer: RequestObserver | None = None,
    *,
    retry_unreachable: bool = True,
) -> ApiClient:
    """The API client of ``settings``. ``retry_unreachable``: False for a
    one-off command (a host that does not resolve, a refused port: said at
    once); the daemon keeps trying until the server is back."""
    url, key = settings.require_api()
    stop = stop or threading.Event()
    if warning := settings.cleartext_warning():
        _warn_once(warning)
    return ApiClient(
        url,
        key,
        key_source=settings.describe_key_source(),
        options=ClientOptions(
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_attempts=settings.max_attempts,
            max_retry_wait=settings.max_retry_wait,
            max_requests_per_second=settings.max_requests_per_second,
            max_in_flight=settings.max_in_flight,
            retry_unreachable=retry_unreachable,
        ),
        sleep=interruptible_sleep(stop),
        observer=observer,
        stopping=stop.is_set,
    )


def run_once(settings: Settings, options: SyncOptions | None = None, *, migrate: bool = True) -> SyncOutcome:
    """One sync (and refresh of unfinished artworks) under the one-syncer lock."""
    settings.require_api()  # a config error before any connection or request
    freeze_startup_objects()
    with open_engine(settings) as engine, locks.sync_lock(engine):
        db.ensure_schema(engine, migrate=migrate)
        return sync_with(settings, engine, options, retry_unreachable=False)


def sync_with(
    settings: Settings,
    engine: Engine,
    options: SyncOptions | None = None,
    *,
    on_rate_limited: Callable[[datetime], None] | None = None,
    refresh_seconds: float | None = None,
    refresh_failures: dict[str, datetime] | None = None,
    observer: RequestObserver | None = None,
    retry_unreachable: bool = True,
) -> SyncOutcome:
    """The sync itself, for a caller that already holds the lock.

    The refresh goes on for at most ``refresh_seconds``, when given.
    ``refresh_failures``: re-checks that failed, kept by a caller that runs
    again (the daemon), so that those artworks wait their back-off.
    """
    options = options or SyncOptions()
    outcome = SyncOutcome()
    summaries = outcome.summaries
    stop = options.stop or threading.Event()
    if settings.archive_on:
        _archive_on(engine)
    with make_client(settings, stop, observer, retry_unreachable=retry_unreachable) as client:
        syncer = Syncer(
            engine,
            client,
            settings.page_size,
            stop=stop,
            on_page=options.on_page,
            on_rate_limited=on_rate_limited,
            refresh_floor=settings.refresh_interval,
            refresh_failures={} if refresh_failures is None else refresh_failures,
            since=options.since,
        )
        try:
            if options.list_run:
                summaries.append(syncer.sync(full=options.full))
            if options.refresh:
                refreshed = syncer.refresh(seconds=refresh_seconds)
                if refreshed is not None:
                    summaries.append(refreshed)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"database error during the sync: {database_reason(exc)}") from None
    for summary in summaries:
        log.info("%s", summary.line())
    return outcome


# ------------------------------------------------------------------ the image archive


def _archive_on(engine: Engine) -> None:
    """With SYNCD_ARCHIVE_DIR set, the pages this sync writes record their
    images (the caller holds the one-syncer lock, which turning it on needs)."""
    from syncd.archive import discover

    try:
        with engine.connect() as conn:
            if discover.is_on(conn):
                return
        with db.writer(engine).begin() as conn:
            if discover.turn_on(conn, datetime.now(UTC)):
                log.info(
                    "the image archive is on for this database: artworks written from now on record their images"
                )
    except SQLAlchemyError as exc:
        raise DatabaseError(f"database error turning the image archive on: {database_reason(exc)}") from None


@dataclass(frozen=True)
class ArchiveOptions:
    """What one archive run does, as ``archive`` and ``archive_with`` take it.

    ``verify`` first checks every archived file (``deep``: a bucket's objects
    are read and hashed again; ``accept_missing``: go on when most are
    missing); ``retry_failed`` makes the failed images due again now. ``stop``
    ends the run early; ``on_progress`` hears how it goes.
    """

    verify: bool = False
    deep: bool = False
    accept_missing: bool = False
    retry_failed: bool = False
    stop: threading.Event | None = None
    on_progress: Callable[[ArchiveProgress], None] | None = None


@dataclass
class ArchiveOutcome:
    result: ArchiveResult
    verified: VerifyReport | None = None


def archive(
    settings: Settings, options: ArchiveOptions | None = None, *, migrate: bool = True
) -> ArchiveOutcome:
    """``syncd archive``: archive what is due (after verifying, when asked).

    A database that does not exist is refused (exit 6, as ``status`` does):
    nothing is created, neither the database, nor its lock files, nor the
    folder; there is nothing to archive before a sync."""
    settings.require_archive()  # a config error before the database is touched
    refuse_root_in_foreign_state(settings, archive=True)
    freeze_startup_objects()
    with open_engine(settings, create=False) as engine:
        if not db.schema_version(engine).up_to_date:
            with locks.sync_lock(engine):
                db.ensure_schema(engine, migrate=migrate)
        return archive_with(settings, engine, options)


def archive_with(settings: Settings, engine: Engine, options: ArchiveOptions | None = None) -> ArchiveOutcome:
    """One archive run under the one-archiver lock (the daemon's job, and the CLI's)."""
    from syncd.archive import rows
    from syncd.archive.fetch import FetchOptions, ImageFetcher
    from syncd.archive.job import Archiver
    from syncd.archive.judge import judge
    from syncd.archive.verify import verify_archive

    where = settings.require_archive()
    if isinstance(where, Path):  # a folder of this server: root is refused in one another user owns
        owners.refuse_foreign_state([where], allowed=settings.allow_root)
    store = archive_store(settings)
    options = options or ArchiveOptions()
    stop = options.stop or threading.Event()
    secrets = (settings.api_key.reveal(),) if settings.api_key else ()
    fetcher = ImageFetcher(
        store,
        FetchOptions(
            max_requests_per_second=settings.archive_max_requests_per_second,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            allow_private=settings.archive_allow_private,
        ),
        secrets=secrets,
        sleep=interruptible_sleep(stop),
    )
    try:
        with locks.sync_lock(engine, job=locks.ARCHIVE_LOCK), ExitStack() as stack:
            # Judged before anything is created there (the folder, incoming/,
            # its lock file): a refused folder is left as it was found.
            marked = judge(store, engine)
            store.prepare()
            stack.enter_context(store.lock())
            if not marked and not judge(store, engine):  # still new, now that this job holds it
                store.mark()
            verified = None
            if options.verify:
                verified = verify_archive(
                    engine,
                    store,
                    stop,
                    lambda: datetime.now(UTC),
                    accept_missing=options.accept_missing,
                    deep=options.deep,
                )
                log.info("%s", verified.line())
            if options.retry_failed:
                with db.writer(engine).begin() as conn:
                    log.info("%d failed images are due again", rows.retry_failed(conn, datetime.now(UTC)))
            archiver = Archiver(
                engine,
                fetcher,
                max_in_flight=settings.archive_max_in_flight,
                stop=stop,
                secrets=secrets,
                on_progress=options.on_progress,
            )
            result = archiver.run()
    except SQLAlchemyError as exc:
        raise DatabaseError(f"database error during the archive run: {database_reason(exc)}") from None
    finally:
        fetcher.close()
        store.close()
    log.info("%s", result.line())
    return ArchiveOutcome(result, verified)


def archive_store(settings: Settings) -> ArchiveStore:
    """The archive's store: its folder (SYNCD_ARCHIVE_DIR) or its bucket (SYNCD_ARCHIVE_URL)."""
    where = settings.require_archive()
    if isinstance(where, Path):
        from syncd.archive.files import ContentStore

        return ContentStore(
            where,
            min_free_bytes=settings.archive_min_free_bytes,
            max_file_bytes=settings.archive_max_file_bytes,
        )
    from syncd.archive.s3 import ObjectStore

    return ObjectStore(
        where,
        max_file_bytes=settings.archive_max_file_bytes,
        max_connections=settings.archive_max_in_flight + 4,
    )
