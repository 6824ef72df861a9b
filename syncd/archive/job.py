"""One archive run: discover the images, fetch them in deadline order, record each.

The loop's thread owns the database; downloads run on InFlight threads (at
most SYNCD_ARCHIVE_MAX_IN_FLIGHT), paced by the fetcher's own limiters. Each
finished download is recorded in a short transaction with the others that
finished meanwhile. A run tries each image once (its 3 requests): one that
fails waits for a later run, whatever its back-off says meanwhile. A stop
request ends the run within a second or so: downloads in flight are
abandoned (each removes its partial file at its next chunk; one stuck in a
read leaves it for the next run to clear) and their images stay due. An
error nobody foresaw while fetching one image fails that image, never the
run. No room on the disk (ArchiveStorageError) stops the run the
same way, then raises: nothing was marked for it, so the images are fetched
once there is room.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine

from syncd import db
from syncd.api.pace import Unwanted
from syncd.archive import rows
from syncd.archive.fetch import Fetched, FetchFailure, ImageFetcher
from syncd.archive.files import ContentStore
from syncd.archive.plan import Due, FileStatus, Verdict, retry_at
from syncd.errors import ArchiveStorageError, Interrupted, one_line, redact
from syncd.sync.inflight import InFlight

log = logging.getLogger("syncd.archive")

WAIT_STEP = 0.2  # seconds between looks at the stop request while downloads run
REDISCOVER_EVERY = 30.0  # seconds: a long run picks up artworks synced meanwhile
BATCH = 256  # due images read per query


@dataclass
class ArchiveCounts:
    archived: int = 0  # images now in the archive (new files and known bytes)
    new_files: int = 0  # of those, files written (the rest had identical bytes archived)
    bytes_written: int = 0
    gone: int = 0
    failed: int = 0
    discovered: int = 0


@dataclass
class ArchiveProgress:
    counts: ArchiveCounts
    in_flight: int
    seconds: float
    request_rate: float


@dataclass
class ArchiveResult:
    counts: ArchiveCounts = field(default_factory=ArchiveCounts)
    seconds: float = 0.0
    outcome: str = "success"  # success | interrupted

    def line(self) -> str:
        c = self.counts
        return (
            f"archive run: {self.outcome} in {self.seconds:.1f}s: {c.archived} archived "
            f"({c.new_files} new files, {c.bytes_written:,} bytes), {c.gone} gone, {c.failed} failed"
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
        self.store: ContentStore = fetcher.store
        self.max_in_flight = max_in_flight
        self.stop = stop or threading.Event()
        self.secrets = secrets
        self.on_progress = on_progress
        self.clock = clock
        self._halt = threading.Event()  # this run stops its downloads (set when it ends)

    def run(self) -> ArchiveResult:
        """Archive every due image (the caller holds the archive lock)."""
        result = ArchiveResult()
        started = time.monotonic()
        counts = result.counts
        self._halt = threading.Event()
        pool = InFlight(self.max_in_flight, name="syncd-archive")
        in_flight: dict[Future[Fetched], Due] = {}
        tried: set[tuple[str, str, int]] = set()  # this run's images: each once
        queue: list[Due] = []
        discovered_at = float("-inf")
        exhausted = False  # nothing due but what is in flight: look again when one ends
        storage_error: ArchiveStorageError | None = None
        try:
            while not self.stop.is_set() and storage_error is None:
                if time.monotonic() - discovered_at >= REDISCOVER_EVERY:
                    counts.discovered += self._discover()
                    discovered_at = time.monotonic()
                    exhausted = False
                if not queue and not exhausted and len(in_flight) < self.max_in_flight:
                    # Tried ones still due: those in flight, and failures whose
                    # back-off passed during this run (they wait for the next).
                    queue = self._due(tried, BATCH + len(in_flight) + counts.failed, in_flight)
                    if not queue and not in_flight:
                        break
                    exhausted = not queue
                if queue and len(in_flight) < self.max_in_flight:
                    self.store.check_room()  # no request for a file there is no room for
                while queue and len(in_flight) < self.max_in_flight:
                    item = queue.pop(0)
                    tried.add(_key(item))
                    in_flight[pool.submit(self.fetcher.fetch, item.url, self._wanted)] = item
                done, _ = wait(list(in_flight), timeout=WAIT_STEP, return_when=FIRST_COMPLETED)
                if done:
                    exhausted = False
                outcomes: list[rows.Outcome] = []
                for future in done:
                    item = in_flight.pop(future)
                    try:
                        outcome = self._outcome(item, future)
                    except ArchiveStorageError as exc:
                        storage_error = storage_error or exc
                        continue
                    if outcome is not None:
                        outcomes.append(outcome)
                        self._count(counts, outcome, future)
                if outcomes:
                    with db.writer(self.engine).begin() as conn:
                        rows.record(conn, outcomes, self.clock())
                if self.on_progress is not None and done:
                    self.on_progress(
                        ArchiveProgress(
                            counts,
                            len(in_flight),
                            time.monotonic() - started,
                            self.fetcher.pacer.limiter.rate,
                        )
                    )
        finally:
            self.stop_downloads(pool, in_flight)
        result.seconds = time.monotonic() - started
        if storage_error is not None:
            raise storage_error
        if self.stop.is_set():
            result.outcome = "interrupted"
        return result

    def _wanted(self) -> bool:
        return not self.stop.is_set() and not self._halt.is_set()

    def stop_downloads(self, pool: InFlight, in_flight: dict[Future[Fetched], Due]) -> None:
        """Abandon what is queued or under way; their images stay due. A download
        stops at its next chunk (or its deadline) and removes its partial file."""
        self._halt.set()
        pool.close()
        wait(list(in_flight), timeout=WAIT_STEP * 5)

    def _discover(self) -> int:
        now = self.clock()
        with self.engine.connect() as conn:  # read first: the write lock only when there is news
            news = rows.unrecorded(conn, now)
        if not news:
            return 0
        with db.writer(self.engine).begin() as conn:
            found = rows.discover(conn, now, news)
        if found.changed:
            log.info("%d images not yet archived have a new URL: it is the one fetched", found.changed)
        return found.new

    def _due(
        self, tried: set[tuple[str, str, int]], limit: int, in_flight: dict[Future[Fetched], Due]
    ) -> list[Due]:
        """Due images not yet tried in this run, none at a URL being fetched (or
        twice in the batch): once it is archived, its other rows are too."""
        with self.engine.connect() as conn:
            due = rows.due(conn, self.clock(), limit)
        busy = {d.url for d in in_flight.values()}
        batch: list[Due] = []
        for d in due:
            if _key(d) not in tried and d.url not in busy:
                busy.add(d.url)
                batch.append(d)
        return batch[:BATCH]

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
                return rows.Outcome(item, FileStatus.GONE, error=error)
            if exc.verdict is Verdict.REFUSED:  # never fetchable: given up at once
                return rows.Outcome(item, FileStatus.FAILED, error=error)
            log.debug("image %s of %s failed: %s", item.role, item.artwork_id, error)
            return rows.Outcome(
                item, FileStatus.FAILED, error=error, next_attempt_at=retry_at(item.attempts + 1, now)
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
                item, FileStatus.FAILED, error=error, next_attempt_at=retry_at(item.attempts + 1, now)
            )
        stored = fetched.stored
        return rows.Outcome(
            item,
            FileStatus.ARCHIVED,
            sha256=stored.sha256,
            size_bytes=stored.size,
            content_type=fetched.content_type,
            path=stored.path,
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


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    missing: list[str] = field(default_factory=list)  # paths
    corrupt: list[str] = field(default_factory=list)
    reopened: int = 0  # images made pending again (fetched again if still available)

    def line(self) -> str:
        return (
            f"verified {self.checked} files: {self.ok} ok, {len(self.missing)} missing, "
            f"{len(self.corrupt)} corrupt; {self.reopened} images to fetch again"
        )


# More than this share of the archived files missing (of at least a few) is
# a folder not mounted, or another server's, not a loss: verify changes nothing.
MOSTLY_MISSING = 0.5


def verify_archive(
    engine: Engine,
    store: ContentStore,
    stop: threading.Event,
    clock: Callable[[], datetime],
    *,
    accept_missing: bool = False,
) -> VerifyReport:
    """Re-hash every archived file; a missing or corrupt one (set aside in
    corrupt/) makes its images pending again, for the run that follows.

    When most files are missing, nothing is changed (ArchiveStorageError)
    unless ``accept_missing``: their rows would lose where their files are.
    """
    report = VerifyReport()
    with engine.connect() as conn:
        archived = rows.archived_paths(conn)
    for path, sha256, size in archived:
        if stop.is_set():
            raise Interrupted("stopped by a signal while verifying; nothing was changed")
        report.checked += 1
        verdict = store.verify(path, sha256, size, stop)
        if verdict == "ok":
            report.ok += 1
        else:
            (report.corrupt if verdict == "corrupt" else report.missing).append(path)
    if (
        not accept_missing
        and len(report.missing) >= 10
        and len(report.missing) > MOSTLY_MISSING * report.checked
    ):
        raise ArchiveStorageError(
            f"{len(report.missing):,} of the {report.checked:,} archived files are missing from "
            f"{store.root}: is it the right folder, on its disk (mounted)? Nothing was changed. "
            "If they are lost, `syncd archive --verify --accept-missing` fetches again what the "
            "API still has"
        )
    for path in report.corrupt:
        if not store.set_aside(path):
            log.warning(
                "archive file %s: not set aside (a planted name on its way); replaced when fetched", path
            )
    for path, why in [
        *((p, "corrupt in the archive folder (found by verify): fetched again") for p in report.corrupt),
        *((p, "missing from the archive folder (found by verify): fetched again") for p in report.missing),
    ]:
        log.warning("archive file %s: %s", path, why.split(" (")[0])
        with db.writer(engine).begin() as conn:
            report.reopened += rows.reopen(conn, [path], clock(), why)
    return report
