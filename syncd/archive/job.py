"""One archive run: every stored artwork's images recorded, then fetched in deadline order.

First the run makes sure every image has its row (syncd.archive.discover):
it turns the archive on for the database, when a sync does not hold it, and
walks the artworks stored before, newest first (once, resumable). Then it
fetches what is due: live deadlines first (earliest first), then the history
past them (newest first), in batches of BATCH read by the due index.

The loop's thread owns the database; downloads run on InFlight threads (at
most SYNCD_ARCHIVE_MAX_IN_FLIGHT, and at most half of those for one host, so
that a slow host only slows itself). Outcomes are recorded in batches (every
FLUSH_SECONDS or FLUSH_OUTCOMES, and at the end), two statements a batch:
the database is not the archive's bound. A run tries
each image once (its 3 requests): one that fails waits for a later run. A
stop request ends the run within a second or so: downloads in flight are
abandoned (each removes its partial file at its next chunk; one stuck in a
read leaves it for the next run to clear) and their images stay due; what
finished is recorded. An error nobody foresaw while fetching one image fails
that image, never the run. No room on the disk (ArchiveStorageError) stops
the run the same way, then raises: nothing was marked for it, so the images
are fetched once there is room.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine

from syncd import db, locks
from syncd.archive import discover, rows
from syncd.archive.fetch import Fetched, FetchFailure, ImageFetcher
from syncd.archive.plan import (
    Due,
    FileStatus,
    Verdict,
    eta_seconds,
    fetch_order,
    host_cap,
    origin,
    retry_at,
    startable,
)
from syncd.archive.store import ArchiveStore
from syncd.errors import ArchiveStorageError, Interrupted, LockHeldError, one_line
from syncd.net.inflight import InFlight
from syncd.net.pace import Unwanted
from syncd.redaction import redact
from syncd.wording import plural

log = logging.getLogger("syncd.archive")

WAIT_STEP = 0.2  # seconds between looks at the stop request while downloads run
RECOUNT_EVERY = 30.0  # seconds: the images still due are counted again (the ETA)
BATCH = 256  # due images read per query
MAX_QUEUE = 4 * BATCH  # due images held back at most (their host at its share)
FLUSH_SECONDS = 1.0
FLUSH_OUTCOMES = 256


@dataclass
class ArchiveCounts:
    archived: int = 0  # images now in the archive (new files and known bytes)
    new_files: int = 0  # of those, files written (the rest had identical bytes archived)
    bytes_written: int = 0
    gone: int = 0
    failed: int = 0
    walked: int = 0  # stored artworks whose images this run recorded (an archive turned on late)

    @property
    def done(self) -> int:
        return self.archived + self.gone + self.failed


@dataclass
class ArchiveProgress:
    counts: ArchiveCounts
    in_flight: int
    seconds: float
    request_rate: float
    remaining: int = 0  # images still due (counted every RECOUNT_EVERY, less those done since)
    eta: float | None = None  # seconds, at the pace this run holds

    @property
    def total(self) -> int:
        return self.counts.done + self.remaining


@dataclass
class ArchiveResult:
    counts: ArchiveCounts = field(default_factory=ArchiveCounts)
    seconds: float = 0.0
    outcome: str = "success"  # success | interrupted

    def line(self) -> str:
        c = self.counts
        walked = f"; recorded the images of {c.walked:,} stored artworks" if c.walked else ""
        return (
            f"archive run: {self.outcome} in {self.seconds:.1f}s: {c.archived} archived "
            f"({plural(c.new_files, 'new file')}, {plural(c.bytes_written, 'byte')}), {c.gone} gone, {c.failed} failed{walked}"
        )


class Archiver:
    def __init__(
        self,
        engine: Engine,
        fetcher: ImageFetcher,
        *,
        max_in_flight: int = 8,
        stop: threading.Event | None = None,
        secrets: tuple[str, ...] = (),
        on_progress: Callable[[ArchiveProgress], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.fetcher = fetcher
        self.store: ArchiveStore = fetcher.store
        self.max_in_flight = max_in_flight
        self.host_cap = host_cap(max_in_flight)
        self.stop = stop or threading.Event()
        self.secrets = secrets
        self.on_progress = on_progress
        self.clock = clock
        self._halt = threading.Event()  # this run stops its downloads (set when it ends)
        self._started_at = clock()
        self._unflushed: list[rows.Outcome] = []
        self._last_flush = 0.0
        self._remaining = 0
        self._counted_at_done = 0

    def run(self) -> ArchiveResult:
        """Archive every due image (the caller holds the archive lock)."""
        result = ArchiveResult()
        started = time.monotonic()
        counts = result.counts
        self._halt = threading.Event()
        self._started_at = self.clock()  # what fails during the run waits for the next one
        counts.walked = self.record_stored()
        pool = InFlight(self.max_in_flight, name="syncd-archive")
        in_flight: dict[Future[Fetched], Due] = {}
        queue: list[Due] = []
        exhausted = False  # nothing more was due but what is held
        counted_at = float("-inf")
        storage_error: ArchiveStorageError | None = None
        self._last_flush = time.monotonic()
        try:
            while not self.stop.is_set() and storage_error is None:
                if time.monotonic() - counted_at >= RECOUNT_EVERY:
                    self._count_due(counts)
                    counted_at = time.monotonic()
                    exhausted = False
                free = len(in_flight) < self.max_in_flight
                # Nothing more was due: look again when all is done (the run
                # ends if nothing came meanwhile), or at the next count.
                look = not exhausted or (not in_flight and not queue)
                if free and look and len(queue) < MAX_QUEUE and not self._can_start(queue, in_flight):
                    found = self._refill(queue, in_flight, counts)
                    exhausted = not found
                    if exhausted and not queue and not in_flight:
                        break
                started_some = self._start(queue, in_flight, pool) if free and queue else False
                if in_flight:
                    done, _ = wait(list(in_flight), timeout=WAIT_STEP, return_when=FIRST_COMPLETED)
                else:
                    done = set()
                    if not started_some:  # held back with nothing under way: cannot happen, never spin
                        self.stop.wait(WAIT_STEP)
                for future in done:
                    item = in_flight.pop(future)
                    try:
                        outcome = self._outcome(item, future)
                    except ArchiveStorageError as exc:
                        storage_error = storage_error or exc
                        continue
                    if outcome is not None:
                        self._unflushed.append(outcome)
                        self._count(counts, outcome, future)
                        if outcome.status is FileStatus.ARCHIVED:  # its other rows are archived with it
                            queue[:] = [d for d in queue if d.url != item.url]
                if self._unflushed and (
                    len(self._unflushed) >= FLUSH_OUTCOMES
                    or time.monotonic() - self._last_flush >= FLUSH_SECONDS
                ):
                    self._flush()
                if self.on_progress is not None and done:
                    self.on_progress(self._progress(counts, len(in_flight), time.monotonic() - started))
        except ArchiveStorageError as exc:  # the store refused a look or the room: what finished is kept
            storage_error = exc
        finally:
            self.stop_downloads(pool, in_flight)
        self._flush()  # what finished is kept, whatever ended the run
        result.seconds = time.monotonic() - started
        if storage_error is not None:
            raise storage_error
        if self.stop.is_set():
            result.outcome = "interrupted"
        return result

    # ------------------------------------------------------------ every image recorded

    def record_stored(self) -> int:
        """Turn the archive on for this database (under the one-syncer lock: no
        page is being written then) and walk the artworks stored before; how
        many it walked now."""
        with self.engine.connect() as conn:
            state = discover.load(conn)
        if state.images_since is None:
            try:
                with locks.sync_lock(self.engine), db.writer(self.engine).begin() as conn:
                    discover.turn_on(conn, self.clock())
            except LockHeldError:
                log.info(
                    "a sync holds the database: the archive is turned on at a later run "
                    "(the images recorded so far are archived now)"
                )
                return 0
            log.info(
                "the image archive is on for this database: every artwork written from now on records "
                "its images; the ones stored before are walked once, newest first"
            )
        elif state.complete:
            return 0
        walked = discover.walk(self.engine, self.clock, self.stop)
        if walked:
            log.info("recorded the images of %d stored artworks", walked)
        return walked

    # ------------------------------------------------------------ the queue

    def _startable(self, queue: list[Due], in_flight: dict[Future[Fetched], Due], limit: int) -> list[int]:
        hosts = Counter(origin(d.url) for d in in_flight.values())
        return startable(queue, hosts, {d.url for d in in_flight.values()}, self.host_cap, limit)

    def _can_start(self, queue: list[Due], in_flight: dict[Future[Fetched], Due]) -> bool:
        return bool(self._startable(queue, in_flight, 1))

    def _start(self, queue: list[Due], in_flight: dict[Future[Fetched], Due], pool: InFlight) -> bool:
        chosen = self._startable(queue, in_flight, self.max_in_flight - len(in_flight))
        if not chosen:
            return False
        self.store.check_room()  # no request for a file there is no room for
        for index in chosen:
            item = queue[index]
            claim = functools.partial(self._claim, item.url) if self.store.shared else None
            in_flight[pool.submit(self.fetcher.fetch, item.url, self._wanted, claim)] = item
        taken = set(chosen)
        queue[:] = [d for i, d in enumerate(queue) if i not in taken]
        return True

    def _refill(self, queue: list[Due], in_flight: dict[Future[Fetched], Due], counts: ArchiveCounts) -> bool:
        """More due images into the queue; one whose URL is archived already
        (by another row, or by a download whose outcome is not written yet) is
        recorded at once. False: nothing more is due."""
        held = {_key(d) for d in (*queue, *in_flight.values(), *(o.due for o in self._unflushed))}
        now = self.clock()
        store_id = self.store.id
        with self.engine.connect() as conn:
            due = rows.due(conn, now, BATCH + len(held), failed_before=self._started_at)
            fresh = [d for d in due if _key(d) not in held][:BATCH]
            known = rows.archived_by_url(conn, [d.url for d in fresh], store_id)
            if self.store.shared:
                known.update(self._found_claims(conn, [d.url for d in fresh if d.url not in known]))
        for o in self._unflushed:
            if o.status is FileStatus.ARCHIVED:
                known[o.due.url] = {
                    "sha256": o.sha256,
                    "size_bytes": o.size_bytes,
                    "content_type": o.content_type,
                    "path": o.path,
                }
        for d in fresh:
            if d.url in known:
                file = known[d.url]
                self._unflushed.append(
                    rows.Outcome(
                        d,
                        FileStatus.ARCHIVED,
                        at=now,
                        sha256=file["sha256"],
                        size_bytes=file["size_bytes"],
                        content_type=file["content_type"],
                        path=file["path"],
                        store=store_id,
                        tried=False,
                    )
                )
                counts.archived += 1
        queue[:] = fetch_order(queue + [d for d in fresh if d.url not in known], now)
        return bool(fresh)

    def _claim(self, url: str, path: str, sha256: str, size: int, content_type: str) -> None:
        """A download's bytes are hashed: say which object it is about to be
        before it is put (on the download's thread; a shared store only)."""
        with db.writer(self.engine).begin() as conn:
            rows.claim(conn, url, self.store.id, path, sha256, size, content_type)

    def _found_claims(self, conn: Connection, urls: list[str]) -> dict[str, dict[str, Any]]:
        """The claimed objects of ``urls`` that the store holds: a server that
        stopped after putting them, before recording them. Not fetched again."""
        found: dict[str, dict[str, Any]] = {}
        for url, file in rows.claimed(conn, urls, self.store.id).items():
            if self.store.holds(file["path"], file["sha256"], file["size_bytes"]):
                log.info(
                    "image at %s: found in the archive (put before a stop): not fetched again", file["path"]
                )
                found[url] = file
        return found

    def _flush(self) -> None:
        if self._unflushed:
            with db.writer(self.engine).begin() as conn:
                rows.record(conn, self._unflushed)
            self._unflushed = []
        self._last_flush = time.monotonic()

    def _count_due(self, counts: ArchiveCounts) -> None:
        with self.engine.connect() as conn:
            self._remaining = rows.due_count(conn, self.clock(), failed_before=self._started_at)
        self._counted_at_done = counts.done

    def _progress(self, counts: ArchiveCounts, in_flight: int, seconds: float) -> ArchiveProgress:
        remaining = max(0, self._remaining - (counts.done - self._counted_at_done))
        return ArchiveProgress(
            replace(counts),  # a snapshot: the run's counts move on
            in_flight,
            seconds,
            self.fetcher.pacer.limiter.rate,
            remaining,
            eta_seconds(remaining, counts.done, seconds),
        )

    # ------------------------------------------------------------ downloads

    def _wanted(self) -> bool:
        return not self.stop.is_set() and not self._halt.is_set()

    def stop_downloads(self, pool: InFlight, in_flight: dict[Future[Fetched], Due]) -> None:
        """Abandon what is queued or under way; their images stay due. A download
        stops at its next chunk (or its deadline) and removes its partial file."""
        self._halt.set()
        pool.close()
        wait(list(in_flight), timeout=WAIT_STEP * 5)

    def _outcome(self, item: Due, future: Future[Fetched]) -> rows.Outcome | None:
        """What to record for a finished download; None: nothing (abandoned)."""
        now = self.clock()
        try:
            fetched = future.result()
        except Unwanted:
            return None
        except ArchiveStorageError:
            raise
        except FetchFailure as exc:
            error = self._clean(exc.reason)
            if exc.verdict is Verdict.GONE:
                return rows.Outcome(item, FileStatus.GONE, now, error=error)
            if exc.verdict is Verdict.REFUSED:  # never fetchable: given up at once
                return rows.Outcome(item, FileStatus.FAILED, now, error=error)
            log.debug("image %s of %s failed: %s", item.role, item.artwork_id, error)
            return rows.Outcome(
                item, FileStatus.FAILED, now, error=error, next_attempt_at=retry_at(item.attempts + 1, now)
            )
        except Interrupted:
            return None
        except Exception as exc:  # a bug, or a library's surprise: this image fails, the run goes on
            log.warning(
                "image %s %d of artwork %s: unexpected %s",
                item.role,
                item.position,
                item.artwork_id,
                type(exc).__name__,
                exc_info=True,
            )
            error = self._clean(f"unexpected error while fetching ({type(exc).__name__})")
            return rows.Outcome(
                item, FileStatus.FAILED, now, error=error, next_attempt_at=retry_at(item.attempts + 1, now)
            )
        stored = fetched.stored
        return rows.Outcome(
            item,
            FileStatus.ARCHIVED,
            now,
            sha256=stored.sha256,
            size_bytes=stored.size,
            content_type=fetched.content_type,
            path=stored.path,
            store=self.store.id,
        )

    @staticmethod
    def _count(counts: ArchiveCounts, outcome: rows.Outcome, future: Future[Fetched]) -> None:
        if outcome.status is FileStatus.ARCHIVED:
            counts.archived += 1
            stored = future.result().stored
            if stored.new:
                counts.new_files += 1
                counts.bytes_written += stored.size
        elif outcome.status is FileStatus.GONE:
            counts.gone += 1
        else:
            counts.failed += 1

    def _clean(self, text: str) -> str:
        """An error safe to store and log: the key masked, one line, bounded."""
        return one_line(redact(text, self.secrets))[:500]


def _key(due: Due) -> tuple[str, str, int]:
    return (due.artwork_id, due.role, due.position)
