#!/usr/bin/env python3
"""Benchmark the image archive at scale: the cost of a look, and a late start.

    python bench/archive_scale.py --part look --sizes 100000,1000000 [--postgres-url URL]
    python bench/archive_scale.py --part walk --sizes 1000000 [--postgres-url URL]
    python bench/archive_scale.py --part late --artworks 100000 [--image-size 2048]

  look  a database of N artworks created within 8 days, every image archived
        (a few failed ones waiting their back-off): the daemon's archive tick
        when nothing is due, as it runs (app.archive_with: locks, folder,
        fetcher, the run's look for work; then the gauges' queries), and the
        database part alone (the queries of that tick), with the number of
        SQL statements each sends. Also ``syncd status`` (collect) for
        reference: it counts every table. SQLite, and PostgreSQL with
        --postgres-url. Medians of --repeat.
  walk  N artworks stored without the archive, then the archive turned on: the
        walk that records their images (batches of 1,000, newest first).
  late  N artworks synced by `syncd run-once` without the archive, a third of
        them older than a month, their images still served; then `syncd
        archive` as a new operator would turn it on: it must walk the stored
        artworks and keep every image (the fake's sha256 of each), live
        deadlines first; a second run must fetch nothing.

The rows of `look` are written straight into the tables (the look reads
them, it does not care how they came); `late` goes through the fake API and
syncd as real processes. The fake runs in a process of its own
(bench/archive.py's --serve-fake).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchkit  # noqa: E402
from archive import fake, run_once, syncd_env  # noqa: E402
from backfill import fresh_postgres  # noqa: E402

RETENTION = timedelta(days=8)
CHUNK = 20_000


# ------------------------------------------------------------------ the databases of look and walk


def targets(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """The databases to measure on: SQLite, and PostgreSQL with --postgres-url (its admin URL)."""
    return [("sqlite", None)] + ([("postgresql", args.postgres_url)] if args.postgres_url else [])


@contextlib.contextmanager
def database(tmp: Path, name: str, admin: str | None) -> Iterator[str]:
    """The URL of an empty database: an SQLite file ``name``.db in ``tmp`` when
    ``admin`` is None, else a fresh PostgreSQL database on ``admin``'s server.
    Deleted afterwards (the file and its -wal, -shm; the database dropped)."""
    drop: Callable[[], None] = lambda: None  # noqa: E731
    database_url = f"sqlite:///{tmp / f'{name}.db'}"
    if admin is not None:
        database_url, drop = fresh_postgres(admin)
    try:
        yield database_url
    finally:
        drop()
        for leftover in tmp.glob(f"{name}.db*"):
            leftover.unlink()


# ------------------------------------------------------------------ look


def utc_text(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


def fill(database_url: str, count: int, now: datetime, *, recorded: bool = True) -> dict[str, int]:
    """``count`` artworks created within 8 days, two results each, every image
    archived; 100 failed waiting their back-off, 20 given up. ``recorded=False``:
    the artworks only, as synced without the archive (nothing recorded)."""
    from syncd import db
    from syncd.archive import discover

    engine = db.create_db_engine(database_url)
    db.upgrade(engine)
    sqlite = engine.dialect.name == "sqlite"

    def when(moment: datetime) -> Any:
        return utc_text(moment) if sqlite else moment

    mark = "?" if sqlite else "%s"
    artworks_sql = (
        "INSERT INTO artworks (id, artwork_type, status, duration, created_at, first_seen_at, last_seen_at, "
        f"updated_at, remote_deleted_at, content_hash, raw) VALUES ({', '.join([mark] * 11)})"
    )
    results_sql = f"INSERT INTO artwork_results (artwork_id, position, url) VALUES ({mark}, {mark}, {mark})"
    files_sql = (
        "INSERT INTO archived_files (artwork_id, role, position, url, status, expires_at, discovered_at, "
        "sha256, size_bytes, content_type, path, fetched_at, attempts, last_error, next_attempt_at) "
        f"VALUES ({', '.join([mark] * 15)})"
    )
    span = RETENTION.total_seconds() - 3600
    images = 0
    for start in range(0, count, CHUNK):
        arts, results, archived = [], [], []
        for n in range(start, min(count, start + CHUNK)):
            artwork_id = str(uuid.UUID(int=n + 1))
            created = now - timedelta(seconds=span * (1 - n / count) + 60)
            arts.append(
                (
                    artwork_id,
                    "txt2img",
                    "done",
                    3.0,
                    when(created),
                    when(now),
                    when(now),
                    when(now),
                    None,
                    "h",
                    "{}",
                )
            )
            for position in range(2):
                url = f"https://img.example/artworks/{artwork_id}/{position}.webp"
                sha = hashlib.sha256(url.encode()).hexdigest()
                results.append((artwork_id, position, url))
                failed = n < 60 and position < 2  # 120 failed: 100 waiting, 20 given up
                archived.append(
                    (
                        artwork_id, "result", position, url,
                        "failed" if failed else "archived",
                        when(created + RETENTION), when(now),
                        None if failed else sha, None if failed else 100_000,
                        None if failed else "image/webp",
                        None if failed else f"{sha[:2]}/{sha[2:4]}/{sha}.webp",
                        None if failed else when(now),
                        3 if failed else 1,
                        "503 Service Unavailable (after 3 attempts)" if failed else None,
                        when(now + timedelta(hours=2)) if failed and n < 50 else None,
                    )
                )  # fmt: skip
        images += len(archived)
        with engine.begin() as conn:
            conn.exec_driver_sql(artworks_sql, arts)
            conn.exec_driver_sql(results_sql, results)
            if recorded:
                conn.exec_driver_sql(files_sql, archived)
    if recorded:
        with db.writer(engine).begin() as conn:
            discover.turn_on(conn, now)
        discover.walk(engine, lambda: now, threading.Event(), size=10_000)  # complete: every row is there
    if not sqlite:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")  # what autovacuum does in production
    engine.dispose()
    return {"artworks": count, "images": images}


def counted(engine: Any) -> tuple[list[str], Callable[[], None]]:
    from sqlalchemy import event

    sent: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    return sent, lambda: event.remove(engine, "before_cursor_execute", seen)


def look(database_url: str, folder: Path, repeat: int) -> dict[str, Any]:
    """The daemon's idle archive tick, its database part alone, and status."""
    from syncd import app, db, status
    from syncd.archive import rows
    from syncd.archive.job import Archiver
    from syncd.config import load_settings

    settings = load_settings(
        env={
            "SYNCD_DATABASE_URL": database_url,
            "SYNCD_ARCHIVE_DIR": str(folder),
            "SYNCD_ARCHIVE_MIN_FREE_BYTES": "0",
        },
        system_config_path=Path("/nonexistent"),
    )
    (folder).mkdir(exist_ok=True)
    (folder / ".syncd-archive").write_text("bench\n")
    engine = db.create_db_engine(database_url)

    def gauges() -> None:
        with engine.connect() as conn:
            rows.oldest_waiting_expiry(conn)
            rows.waiting_counts(conn)

    def tick() -> None:
        result = app.archive_with(settings, engine).result
        assert result.counts.done == 0, result.line()
        gauges()

    class NoFetch:
        """The run must not fetch: nothing is due."""

        def __init__(self) -> None:
            from syncd.archive.files import ContentStore

            self.store = ContentStore(folder)
            self.pacer = None

        def fetch(self, *args: Any) -> Any:
            raise AssertionError("a look with nothing to do fetched")

    def queries() -> None:
        archiver = Archiver(engine, NoFetch())  # type: ignore[arg-type]
        assert archiver.run().counts.done == 0
        gauges()

    out: dict[str, Any] = {}
    for name, work in (
        ("tick", tick),
        ("queries", queries),
        ("status", lambda: status.collect(engine, archive_on=True)),
    ):
        work()  # warm: the first connection, the page cache
        times = []
        sent, stop = counted(engine)
        for _ in range(repeat):
            started = time.perf_counter()
            work()
            times.append((time.perf_counter() - started) * 1000)
        stop()
        out[name] = {"ms": statistics.median(times), "ms_each": times, "statements": len(sent) // repeat}
    engine.dispose()
    return out


def look_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    now = datetime.now(UTC)
    results: dict[str, Any] = {}
    for size in args.sizes:
        for dialect, admin in targets(args):
            with database(tmp, f"look-{size}", admin) as database_url:
                started = time.perf_counter()
                filled = fill(database_url, size, now)
                built = time.perf_counter() - started
                measured = look(database_url, tmp / f"images-{dialect}-{size}", args.repeat)
            results[f"{dialect} {size}"] = {**filled, "build_seconds": built, **measured}
            print(
                f"look: {dialect}, {size:,} artworks ({filled['images']:,} images): idle tick "
                f"{measured['tick']['ms']:.1f} ms ({measured['tick']['statements']} statements), its queries "
                f"{measured['queries']['ms']:.1f} ms ({measured['queries']['statements']}); status "
                f"{measured['status']['ms']:.0f} ms",
                file=sys.stderr,
            )
    return results


# ------------------------------------------------------------------ walk


def walk_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The walk an archive turned on late makes through N stored artworks
    (its batches of 1,000, each a transaction), on each database."""
    from syncd import db
    from syncd.archive import discover

    now = datetime.now(UTC)
    results: dict[str, Any] = {}
    for size in args.sizes:
        for dialect, admin in targets(args):
            with database(tmp, f"walk-{size}", admin) as database_url:
                fill(database_url, size, now, recorded=False)
                engine = db.create_db_engine(database_url)
                with db.writer(engine).begin() as conn:
                    discover.turn_on(conn, now)
                started = time.perf_counter()
                walked = discover.walk(engine, lambda: now, threading.Event())
                seconds = time.perf_counter() - started
                with engine.connect() as conn:
                    recorded = conn.exec_driver_sql("SELECT COUNT(*) FROM archived_files").scalar()
                engine.dispose()
            results[f"{dialect} {size}"] = {"walked": walked, "images": recorded, "seconds": seconds}
            print(
                f"walk: {dialect}, {walked:,} stored artworks: {recorded:,} images recorded in {seconds:.1f}s",
                file=sys.stderr,
            )
    return results


# ------------------------------------------------------------------ late


def late_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from syncd.fakeapi.images import expected_sha256

    with fake(artworks=args.artworks, images=1, days=args.days, image_size=args.image_size) as world:
        workdir = Path(tempfile.mkdtemp(dir=tmp))
        try:
            env = syncd_env(world, workdir, archive_max_requests_per_second=str(args.rate),
                            archive_max_in_flight=str(args.in_flight), archive_min_free_bytes="0")  # fmt: skip
            without = {k: v for k, v in env.items() if k != "SYNCD_ARCHIVE_DIR"}
            started = time.perf_counter()
            run_once(without)
            synced = time.perf_counter() - started
            database = workdir / "syncd.db"
            with sqlite3.connect(database) as conn:
                month_ago = utc_text(datetime.now(UTC) - timedelta(days=30))
                total, old = conn.execute(
                    "SELECT COUNT(*), SUM(created_at < ?) FROM artworks", (month_ago,)
                ).fetchone()
                rows_before = conn.execute("SELECT COUNT(*) FROM archived_files").fetchone()[0]
            world.reset_image_stats()
            started = time.perf_counter()
            began = utc_text(datetime.now(UTC))  # live: an image whose deadline was ahead then
            first = subprocess.run([sys.executable, "-m", "syncd", "archive", "--no-progress"], env=env,
                                   capture_output=True, text=True, check=False)  # fmt: skip
            archived_in = time.perf_counter() - started
            if first.returncode != 0:
                raise SystemExit(f"archive failed ({first.returncode}): {first.stderr[-2000:]}")
            first_requests = world.image_stats()["requests"]
            world.reset_image_stats()
            second = subprocess.run([sys.executable, "-m", "syncd", "archive", "--no-progress"], env=env,
                                    capture_output=True, text=True, check=False)  # fmt: skip
            second_requests = world.image_stats()["requests"]
            listed = world.ask("report")["images"]
            with sqlite3.connect(database) as conn:
                stored = {
                    url: (status, sha256, path)
                    for url, status, sha256, path in conn.execute(
                        "SELECT url, status, sha256, path FROM archived_files"
                    )
                }
                fetched = conn.execute(
                    "SELECT expires_at FROM archived_files WHERE status = 'archived' AND attempts = 1 "
                    "ORDER BY fetched_at, expires_at"
                ).fetchall()
            kept = sum(
                1
                for url in listed
                if url in stored
                and stored[url][0] == "archived"
                and stored[url][1] == expected_sha256(url, args.image_size)
                and (workdir / "images" / stored[url][2]).is_file()
            )
            # Downloads run side by side and end in any order: a history image
            # may end before a live one that started earlier, never more of
            # them than there are slots.
            live = [e > began for (e,) in fetched]
            last_live = max((i for i, alive in enumerate(live) if alive), default=-1)
            history_before_live = sum(1 for alive in live[:last_live] if not alive)
            live_first = history_before_live < args.in_flight
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "artworks": total,
        "older_than_a_month": old,
        "images_listed": len(listed),
        "rows_before_archive": rows_before,
        "sync_seconds": synced,
        "archive_seconds": archived_in,
        "images_kept": kept,
        "lost": len(listed) - kept,
        "first_run_requests": first_requests,
        "second_run_requests": second_requests,
        "second_run_exit": second.returncode,
        "live_first_then_history": live_first,
        "live_images": sum(live),
        "history_ended_before_the_last_live": history_before_live,
    }
    print(
        f"late: {total:,} artworks ({old:,} older than a month), {len(listed):,} images: "
        f"{kept:,} kept with their sha256, {report['lost']} lost, in {archived_in:.0f}s "
        f"({first_requests:,} requests); live first: {live_first} ({history_before_live} history images ended "
        f"before the last of {sum(live):,} live ones, {args.in_flight} slots); second run: {second_requests} requests",
        file=sys.stderr,
    )
    return report


def main() -> None:
    parser = benchkit.parser(__doc__, ("look", "walk", "late"))
    parser.add_argument("--sizes", default="100000,1000000", help="look: artworks, comma-separated")
    parser.add_argument("--repeat", type=int, default=9, help="look: measurements (median)")
    parser.add_argument("--postgres-url", default=os.environ.get("SYNCD_TEST_POSTGRES_URL", ""))
    parser.add_argument("--artworks", type=int, default=100_000, help="late: stored artworks")
    parser.add_argument("--days", type=float, default=45.0, help="late: their span (45: a third > 30 days)")
    parser.add_argument("--image-size", type=int, default=2048, help="late: bytes an image")
    parser.add_argument("--rate", type=float, default=100_000.0, help="late: archive requests/s ceiling")
    parser.add_argument("--in-flight", type=int, default=16, help="late: SYNCD_ARCHIVE_MAX_IN_FLIGHT")
    args = parser.parse_args()
    args.sizes = [int(s) for s in str(args.sizes).split(",") if s]
    args.postgres_url = args.postgres_url or None
    results = benchkit.start()
    with tempfile.TemporaryDirectory(prefix="syncd-bench-scale-", dir=args.tmp) as tmp:
        if args.part in ("all", "look"):
            results["look"] = look_part(args, Path(tmp))
        if args.part in ("all", "walk"):
            results["walk"] = walk_part(args, Path(tmp))
        if args.part in ("all", "late"):
            results["late"] = late_part(args, Path(tmp))
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
