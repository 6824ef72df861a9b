#!/usr/bin/env python3
"""Benchmark a syncd backfill against baselines measured in the same run.

    python bench/backfill.py --count 100000 --repeat 5 [--postgres-url URL] [--dlt-python PY] [--archive-on] [--json]
    python bench/backfill.py --wire --count 40000 --page-size 100 [--latency-ms 400] [--allowed-rate 10]

On the same data, from one fake API process (`syncd mock-api`), with syncd's
rate ceiling raised so that the API is not the bound (this measures syncd's
own cost, not what production waits for: see docs/performance.md):
  download   the pages fetched and JSON-parsed with one keep-alive httpx client
  insert     the same rows written with the driver's own executemany into the
             same (migrated) tables in one transaction, no validation (the floor)
  syncd      `syncd run-once` as a real process into a fresh database
  RSS        peak resident memory of that process, at N and at N/10
  no-op      an incremental run right after the backfill (its list requests)
  full       `syncd run-once --full` over the same, unchanged data
  dlt        with --dlt-python, a dlt rest_api pipeline (bench/dlt_pipeline.py,
             run by that interpreter) into SQLite, on the same data
Medians of --repeat runs; ratios are what matter (machines are noisy).

With --wire, production's shape instead: the fake answers after --latency-ms
and the API allows --allowed-rate requests/s; syncd's backfill (and its
refresh of --refresh-count unfinished artworks) against the floor that rate
allows, one request at a time, and a server-side limit 4 x below syncd's
ceiling (429s and requests sent before a Retry-After elapsed, counted by the
fake).
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

HERE = Path(__file__).resolve().parent
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def fake_api(count: int, seed: int = 1, extra: tuple[str, ...] = ()) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd", "mock-api", "--port", str(port), "--count", str(count), "--seed", str(seed),
         "--api-key", KEY, "--malformed-fraction", "0", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/_fake/stats", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait()


def stats(url: str) -> dict[str, Any]:
    return dict(httpx.get(url + "/_fake/stats").json())


def reset_stats(url: str) -> None:
    httpx.post(url + "/_fake/reset-stats")


def download(url: str, page_size: int) -> list[list[dict[str, Any]]]:
    pages = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        skip = 0
        while True:
            page = orjson.loads(client.get("/v1/artworks", params={"skip": skip, "limit": page_size}).content)
            pages.append(page)
            if len(page) < page_size:
                return pages
            skip += page_size


TXT2IMG = (
    "model",
    "promptMode",
    "prompt",
    "negativePrompt",
    "style",
    "creativity",
    "details",
    "aspectRatio",
    "width",
    "height",
    "nsfw",
)


def rows_of(
    page: list[dict[str, Any]],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Naive mapping, no validation: what a hand-written loader would do."""
    now = "2026-01-01T00:00:00.000000Z"
    artworks, txt, ups, results = [], [], [], []
    for r in page:
        artworks.append(
            (
                r["id"],
                r["artworkType"],
                r["status"],
                r.get("duration"),
                r["createdAt"],
                now,
                now,
                now,
                None,
                "",
                orjson.dumps(r).decode(),
            )
        )
        p = r["parameters"]
        if r["artworkType"] == "txt2img":
            txt.append((r["id"], *(p.get(k) for k in TXT2IMG)))
        elif r["artworkType"] == "upscaling":
            ups.append((r["id"], p.get("imageUrl"), p.get("scaleFactor")))
        results.extend((r["id"], i, u) for i, u in enumerate(r.get("results") or []))
    return artworks, txt, ups, results


INSERTS = (
    "INSERT INTO artworks (id, artwork_type, status, duration, created_at, first_seen_at, last_seen_at, updated_at, remote_deleted_at, content_hash, raw) VALUES ({})",
    "INSERT INTO txt2img_parameters (artwork_id, model, prompt_mode, prompt, negative_prompt, style, creativity, details, aspect_ratio, width, height, nsfw) VALUES ({})",
    "INSERT INTO upscaling_parameters (artwork_id, image_url, scale_factor) VALUES ({})",
    "INSERT INTO artwork_results (artwork_id, position, url) VALUES ({})",
)
COLUMNS = (11, 12, 3, 3)


def migrate(database_url: str) -> None:
    env = {**os.environ, "SYNCD_DATABASE_URL": database_url}
    subprocess.run([sys.executable, "-m", "syncd", "db", "upgrade"], env=env, check=True, capture_output=True)


def settle() -> None:
    """Flush the file system's dirty pages, so that the kernel's writeback of
    one phase's files does not land in the next phase's timing."""
    if hasattr(os, "sync"):
        os.sync()


def insert_sqlite(path: Path, prepared: list[Any]) -> float:
    migrate(f"sqlite:///{path}")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    settle()
    started = time.perf_counter()
    conn.execute("BEGIN")  # one transaction: the floor, stricter than syncd's per-second commits
    for tables in prepared:
        for sql, width, rows in zip(INSERTS, COLUMNS, tables, strict=True):
            if rows:
                conn.executemany(sql.format(", ".join("?" * width)), rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def insert_postgres(url: str, prepared: list[Any]) -> float:
    import psycopg

    migrate(url)
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            for tables in prepared:
                for sql, width, rows in zip(INSERTS, COLUMNS, tables, strict=True):
                    if rows:
                        cur.executemany(sql.format(", ".join(["%s"] * width)), rows)
        return time.perf_counter() - started


# A small launcher measures syncd: forked from this (large) process, syncd's
# peak RSS would include pages shared with it before exec. It samples the RSS
# of the measured process tree from /proc and reports the peak of the sum
# (syncd is one process; the sum also covers tools that start helpers);
# elsewhere, the largest single process.
LAUNCHER = """
import os, resource, subprocess, sys, time

def tree_rss_kib(pid):
    total, stack = 0, [pid]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/status") as status:
                total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    stack.extend(int(child) for child in children.read().split())
        except (OSError, StopIteration, ValueError):
            pass
    return total

started = time.perf_counter()
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
peak = 0
while True:
    peak = max(peak, tree_rss_kib(process.pid))
    try:
        process.wait(timeout=0.02)
        break
    except subprocess.TimeoutExpired:
        pass
elapsed = time.perf_counter() - started
peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(elapsed, process.returncode, peak)
"""


def measure(command: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command (its process tree); it must succeed."""
    settle()
    out = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *command], env=env, capture_output=True, text=True, check=False
    )
    elapsed, code, rss = out.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"{' '.join(command)} failed ({code}): {out.stderr[-2000:]}")
    return float(elapsed), int(rss)


def run_syncd(args: list[str], env: dict[str, str]) -> tuple[float, int]:
    return measure([sys.executable, "-m", "syncd", *args], env)


def run_dlt(python: str, url: str, database: Path, page_size: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    seconds, _ = measure(
        [python, str(HERE / "dlt_pipeline.py"), url, KEY, f"sqlite:///{database}", str(page_size)], env
    )
    return seconds


# With --archive-on, syncd runs with SYNCD_ARCHIVE_DIR set: its pages record
# their images (archived_files rows) as the archive needs; none is fetched.
ARCHIVE_ENV: dict[str, str] = {}


def syncd_env(url: str, database_url: str, page_size: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(
        SYNCD_API_URL=url,
        SYNCD_API_KEY=KEY,
        SYNCD_DATABASE_URL=database_url,
        SYNCD_PAGE_SIZE=str(page_size),
        SYNCD_MAX_REQUESTS_PER_SECOND="10000",
        SYNCD_LOG_LEVEL="warning",
        **ARCHIVE_ENV,
    )
    return env


def fresh_postgres(admin_url: str) -> tuple[str, Callable[[], None]]:
    import psycopg

    name = f"syncd_bench_{uuid.uuid4().hex[:10]}"
    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = plain.rpartition("/")
    url = f"{base}/{name}"

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url, drop


def compile_syncd() -> None:
    """Byte-compile syncd's modules, as `pip install` does for an installed package.

    An editable install under PYTHONDONTWRITEBYTECODE (set on some CI and
    development machines) would otherwise compile every module from source at
    every start, and the startup times would measure the compiler.
    """
    spec = importlib.util.find_spec("syncd")
    for location in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(location, quiet=1)


def median(values: list[float]) -> float:
    return statistics.median(values)


def backdate_checks(database: Path) -> None:
    """As if a day had passed since the backfill: every unfinished artwork is
    due a re-check (its back-off by age is at most 6 hours)."""
    with sqlite3.connect(database) as conn:
        conn.execute(
            "UPDATE artworks SET last_seen_at = strftime('%Y-%m-%dT%H:%M:%fZ', last_seen_at, '-1 day')"
        )


def run_seconds(database: Path, after_id: int = 0) -> tuple[float, int]:
    """Seconds the runs after ``after_id`` took by their own clock (sync_runs,
    without the process's start-up), and the last run's id."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT id, started_at, finished_at FROM sync_runs WHERE id > ? ORDER BY id", (after_id,)
        ).fetchall()
    seconds = sum(
        (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
        for _, started, finished in rows
    )
    return seconds, max((row[0] for row in rows), default=after_id)


def left_unchecked(database: Path, after_id: int) -> int:
    """Artworks the runs after ``after_id`` neither listed nor re-checked: their
    ``last_seen_at`` is still from before the first of those runs. In the
    refresh case every artwork is unfinished, and this must be 0: an
    unfinished artwork never re-checked keeps stale data in the only copy."""
    with sqlite3.connect(database) as conn:
        (started,) = conn.execute(
            "SELECT MIN(started_at) FROM sync_runs WHERE id > ?", (after_id,)
        ).fetchone()
        (count,) = conn.execute("SELECT COUNT(*) FROM artworks WHERE last_seen_at < ?", (started,)).fetchone()
    return int(count)


def pages_to_read(count: int, page_size: int) -> int:
    """List requests a scan of ``count`` artworks takes: page k starts at
    k x (page_size - 1), overlapping the one before by an artwork, and the
    scan ends at the first page that is not full."""
    return max(0, -(-(count - page_size + 1) // (page_size - 1))) + 1


def wire(args: argparse.Namespace) -> None:
    """Backfill and refresh in production's shape: every answer takes
    --latency-ms, and the API allows --allowed-rate requests a second. The
    floor is what that rate allows (the requests the work needs / rate);
    syncd is compared with it and with itself one request at a time, all in
    this run."""
    compile_syncd()
    rate, latency = args.allowed_rate, args.latency_ms
    slow = ("--latency-ms", str(latency))
    limit = ("--rate-limit", str(rate))
    at_rate = {"SYNCD_MAX_REQUESTS_PER_SECOND": str(rate)}
    above = {"SYNCD_MAX_REQUESTS_PER_SECOND": str(4 * rate)}
    cases: list[tuple[str, str, tuple[str, ...], dict[str, str]]] = [
        ("ceiling = allowed rate, no server limit", "ceiling", slow, at_rate),
        ("sequential (SYNCD_MAX_IN_FLIGHT=1)", "sequential", slow, {**at_rate, "SYNCD_MAX_IN_FLIGHT": "1"}),
        ("server limit, ceiling 4 x above it", "limited", slow + limit, above),
        ("... and a penalty box after each 429", "blocks", (*slow, *limit, "--rate-limit-blocks"), above),
    ]
    results: dict[str, Any] = {
        "count": args.count,
        "page_size": args.page_size,
        "latency_ms": latency,
        "allowed_rate": rate,
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
        "cases": {},
    }
    rows: list[tuple[str, float, float, int, int, float, int, int]] = []
    unchecked: dict[str, int] = {}

    def record(
        label: str, key: str, wall: float, seconds: float, fake: dict[str, Any], needed: int, **extra: Any
    ) -> None:
        """``needed``: the requests the work takes (pages, or GETs), for the floor."""
        refused, early, sent = (
            int(fake["by_status"].get("429", 0)),
            int(fake["early_requests"]),
            fake["requests"],
        )
        floor = needed / rate
        results["cases"][key] = {
            "wall_seconds": wall,
            "run_seconds": seconds,
            "needed_requests": needed,
            "sent_requests": sent,
            "floor_seconds": floor,
            "x_floor": seconds / floor,
            "answered_429": refused,
            "early_requests": early,
            **extra,
        }
        rows.append((label, wall, seconds, needed, sent, seconds / floor, refused, early))
        print(f"{label}: done", file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        pages = pages_to_read(args.count, args.page_size)
        for label, key, extra, settings in cases:
            for rep in range(args.repeat):
                with fake_api(args.count, extra=extra) as url:
                    database = Path(tmp) / f"{key}{rep}.db"
                    env = {**syncd_env(url, f"sqlite:///{database}", args.page_size), **settings}
                    wall, _ = run_syncd(["run-once", "--no-refresh"], env)
                    seconds, _ = run_seconds(database)
                    record(label, f"{key}{rep}", wall, seconds, stats(url), pages)
        # The refresh: artworks all unfinished, the backfill first (untimed).
        for label, key, extra, settings in cases[:3] if args.refresh_count > 0 else []:
            with fake_api(args.refresh_count, extra=(*extra, "--pending-fraction", "1")) as url:
                database = Path(tmp) / f"refresh-{key}.db"
                env = {**syncd_env(url, f"sqlite:///{database}", args.page_size), **settings}
                run_syncd(["run-once", "--no-refresh"], env)
                backdate_checks(database)
                _, last = run_seconds(database)
                reset_stats(url)
                # A run refreshes at most 1,000: as many runs as that takes.
                runs = -(-args.refresh_count // 1000)
                wall = sum(run_syncd(["run-once"], env)[0] for _ in range(runs))
                seconds, _ = run_seconds(database, last)
                fake = stats(url)
                # Each run's list request (an incremental run over an unchanged
                # list reads one page), and one GET per unfinished artwork no
                # list page of these runs carried: a list page is a check
                # (syncd/sync/refresh.py), and the artworks it carried are not
                # due. The 1,000 a run may re-check never bind with this many runs.
                needed = runs + args.refresh_count - int(fake["artworks_listed"])
                missed = left_unchecked(database, last)
                if missed:
                    unchecked[label] = missed
                record(
                    f"refresh of {args.refresh_count:,}: {label}",
                    f"refresh-{key}",
                    wall,
                    seconds,
                    fake,
                    needed,
                    listed_artworks=int(fake["artworks_listed"]),
                    left_unchecked=missed,
                )

    print(
        f"\nsyncd over the wire: {args.count:,} artworks in pages of {args.page_size} ({pages} pages), "
        f"{latency:g} ms an answer, {rate:g} requests/s allowed; {results['machine']}\n"
    )
    header = ("case", "wall s", "run s", "needed", "sent", "x floor", "429s", "early")
    print(f"| {header[0]:<58} | " + " | ".join(f"{name:>7}" for name in header[1:]) + " |")
    print(f"|{'-' * 60}|" + "|".join("-" * 9 for _ in header[1:]) + "|")
    for label, wall, seconds, needed, sent, ratio, refused, early in rows:
        share = f"{100 * refused / sent:.1f}%" if sent else "-"
        cells = (f"{wall:.2f}", f"{seconds:.2f}", str(needed), str(sent), f"{ratio:.2f}", share, str(early))
        print(f"| {label:<58} | " + " | ".join(f"{cell:>7}" for cell in cells) + " |")
    print(
        "\nneeded: the requests the work takes (the pages of a scan; for a refresh, each run's list request"
        "\nand one GET per unfinished artwork no list page of those runs carried: a list page is a check,"
        "\nso those are not due); sent: what the fake API received; floor = needed / allowed rate;"
        "\nx floor = run s / floor, run s by syncd's own clock (sync_runs, without the process's start-up,"
        "\nwhich wall s has); 429s: the share of what was sent; early: sent before a Retry-After elapsed"
    )
    if args.json:
        print(json.dumps(results, indent=2))
    if unchecked:
        raise SystemExit(
            "the refresh left unfinished artworks neither listed nor re-checked: "
            + "; ".join(f"{label}: {count:,}" for label, count in unchecked.items())
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("SYNCD_BENCH_POSTGRES_URL") or os.environ.get("SYNCD_TEST_POSTGRES_URL"),
    )
    parser.add_argument(
        "--dlt-python", help="a Python with dlt and sqlalchemy installed (see bench/dlt_pipeline.py)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument(
        "--archive-on",
        action="store_true",
        help="syncd with SYNCD_ARCHIVE_DIR set: each page records its images for the archive",
    )
    wire_options = parser.add_argument_group("wire mode: the API's latency and rate limit are the bound")
    wire_options.add_argument("--wire", action="store_true", help="run the wire benchmark instead")
    wire_options.add_argument("--latency-ms", type=float, default=400.0)
    wire_options.add_argument("--allowed-rate", type=float, default=10.0, help="requests/s the API allows")
    wire_options.add_argument(
        "--refresh-count", type=int, default=2000, help="unfinished artworks to refresh"
    )
    args = parser.parse_args()
    if args.wire:
        wire(args)
        return
    compile_syncd()
    n, size = args.count, args.page_size
    results: dict[str, Any] = {
        "archive_on": args.archive_on,
        "count": n,
        "page_size": size,
        "repeat": args.repeat,
        "machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
    }
    timings: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        timings.setdefault(name, []).append(value)

    with (
        tempfile.TemporaryDirectory() as tmp,
        fake_api(n) as url,
        fake_api(max(1, n // 10), seed=2) as small_url,
    ):
        if args.archive_on:
            ARCHIVE_ENV["SYNCD_ARCHIVE_DIR"] = str(Path(tmp) / "images")
        pages = download(url, size)  # warm the fake's caches
        prepared = [rows_of(page) for page in pages]
        results["pages"] = len(pages)
        for rep in range(args.repeat):
            started = time.perf_counter()
            download(url, size)
            add("download", time.perf_counter() - started)
            add("insert_sqlite", insert_sqlite(Path(tmp) / f"baseline{rep}.db", prepared))
            for leftover in Path(tmp).glob(f"baseline{rep}.db*"):
                leftover.unlink()
            reset_stats(url)
            database = f"sqlite:///{tmp}/syncd{rep}.db"
            seconds, rss = run_syncd(["run-once"], syncd_env(url, database, size))
            add("syncd_sqlite", seconds)
            add("rss_n_kib", rss)
            add("backfill_requests", stats(url)["list_requests"])
            reset_stats(url)
            seconds, _ = run_syncd(["run-once"], syncd_env(url, database, size))
            add("noop_seconds", seconds)
            add("noop_requests", stats(url)["list_requests"])
            seconds, _ = run_syncd(["run-once", "--full"], syncd_env(url, database, size))
            add("full_unchanged_sqlite", seconds)
            _, rss_small = run_syncd(
                ["run-once"], syncd_env(small_url, f"sqlite:///{tmp}/small{rep}.db", size)
            )
            add("rss_small_kib", rss_small)
            for leftover in Path(tmp).glob("*.db*"):
                leftover.unlink()
            if args.dlt_python:
                add("dlt_sqlite", run_dlt(args.dlt_python, url, Path(tmp) / f"dlt{rep}.db", size))
            if args.postgres_url:
                pg_url, drop = fresh_postgres(args.postgres_url)
                try:
                    add("insert_postgres", insert_postgres(pg_url, prepared))
                finally:
                    drop()
                pg_url, drop = fresh_postgres(args.postgres_url)
                try:
                    seconds, _ = run_syncd(["run-once"], syncd_env(url, pg_url, size))
                    add("syncd_postgres", seconds)
                finally:
                    drop()
            print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)

    med = {name: median(values) for name, values in timings.items()}
    results["median"] = med
    ratios = {
        "syncd / (download + insert), SQLite": med["syncd_sqlite"] / (med["download"] + med["insert_sqlite"]),
        "RSS(N) / RSS(N/10)": med["rss_n_kib"] / med["rss_small_kib"],
    }
    if "syncd_postgres" in med:
        ratios["syncd / (download + insert), PostgreSQL"] = med["syncd_postgres"] / (
            med["download"] + med["insert_postgres"]
        )
    if "dlt_sqlite" in med:
        ratios["dlt rest_api / syncd, SQLite"] = med["dlt_sqlite"] / med["syncd_sqlite"]
    results["ratios"] = ratios
    # Each repetition's baselines and syncd ran minutes apart at most: their
    # ratio shows how much of a difference between runs is the machine's.
    per_run = [
        syncd / (download + insert)
        for syncd, download, insert in zip(
            timings["syncd_sqlite"], timings["download"], timings["insert_sqlite"], strict=True
        )
    ]
    results["per_repetition_ratio"] = per_run
    results["runs"] = timings

    print(
        f"\nsyncd backfill benchmark: {n:,} artworks, {results['pages']} pages of {size}, median of {args.repeat}; {results['machine']}\n"
    )
    print(f"| {'phase':<36} | {'seconds':>8} | {'artworks/s':>11} |")
    print(f"|{'-' * 38}|{'-' * 10}|{'-' * 13}|")
    for label, key in (
        ("download baseline (httpx + orjson)", "download"),
        ("insert baseline, SQLite executemany", "insert_sqlite"),
        ("syncd run-once, SQLite", "syncd_sqlite"),
        ("syncd --full, unchanged data, SQLite", "full_unchanged_sqlite"),
        ("dlt rest_api pipeline, SQLite", "dlt_sqlite"),
        ("insert baseline, PostgreSQL", "insert_postgres"),
        ("syncd run-once, PostgreSQL", "syncd_postgres"),
        ("no-op incremental run", "noop_seconds"),
    ):
        if key in med:
            rate = f"{n / med[key]:,.0f}" if key != "noop_seconds" else ""
            print(f"| {label:<36} | {med[key]:>8.2f} | {rate:>11} |")
    print(
        f"\npeak RSS of syncd: {med['rss_n_kib'] / 1024:.1f} MiB at {n:,}, {med['rss_small_kib'] / 1024:.1f} MiB at {max(1, n // 10):,}"
    )
    print(
        f"no-op incremental run: {med['noop_requests']:.0f} list request(s); backfill: {med['backfill_requests']:.0f} list requests\n"
    )
    print(f"| {'ratio':<42} | {'median':>7} |")
    print(f"|{'-' * 44}|{'-' * 9}|")
    for label, value in ratios.items():
        print(f"| {label:<42} | {value:>7.2f} |")
    print(
        "\nsyncd / (download + insert), each repetition: "
        + ", ".join(f"{ratio:.2f}" for ratio in per_run)
        + f" (median {median(per_run):.2f})"
    )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
