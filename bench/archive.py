#!/usr/bin/env python3
"""Benchmark the image archive: the wire, memory, and a simulated week.

    python bench/archive.py                        # all three parts, full size
    python bench/archive.py --part wire --images 10000 --latency-ms 300 --rate 20
    python bench/archive.py --part memory --big-images 1000 --image-size 5242880
    python bench/archive.py --week --week-seconds 60 --retention 20 [--json]
    python bench/archive.py --store s3 --part wire     # into an S3 bucket (moto, loopback)

The fake API and its image origin run in a process of their own (this script,
``--serve-fake``), so that the fake's CPU does not share syncd's GIL; syncd is
a real process (``syncd run-once``, ``syncd archive``, ``syncd daemon``).

  wire    N images on a host that answers after --latency-ms, archive ceiling
          --rate requests/s: `syncd archive` against the floor that rate
          allows (N / rate). Its own run time (its log line, without start-up)
          and its wall time are both reported; the image host counts 429s and
          the most requests it answered at once.
  memory  --big-images images of --image-size bytes each (no latency, ceiling
          raised): peak RSS of `syncd archive`, and the same at a tenth of the
          images (flatness). The files are written to a temporary folder,
          deleted afterwards.
  week    the fake deletes each artwork and its images --retention seconds
          after its creation (standing for the API's 8 days), new artworks
          arrive all the time, the image host answers after --latency-ms and
          some 5xx; `syncd daemon` runs for --week-seconds. Then every image of
          every artwork the API ever listed must be archived, its file's bytes
          hashing to what the fake served: none gone, none missing.

--store s3 archives wire and memory into a bucket instead of a folder: an S3
protocol server (moto in server mode, from the dev extra) is started on a
free loopback port, its objects spilled to the temporary folder; syncd
reaches it as any S3 store (AWS_ENDPOINT_URL, SYNCD_ARCHIVE_URL). The week
stays on a folder (its check reads the files).

Numbers come from one run on a noisy machine: read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchkit  # noqa: E402
from backfill import LAUNCHER, settle  # noqa: E402

KEY = "bench-key"
SEED = 7
MIB = 1 << 20


# ------------------------------------------------------------------ the fake, in its own process


def referenced_images(value: Any) -> list[str]:
    """The image URLs one artwork names: what syncd archives (results, upscaling input)."""
    if not isinstance(value, dict):
        return []
    urls = [url for url in value.get("results") or [] if isinstance(url, str)]
    parameters = value.get("parameters")
    if value.get("artworkType") == "upscaling" and isinstance(parameters, dict):
        if isinstance(parameters.get("imageUrl"), str):
            urls.append(parameters["imageUrl"])
    return urls


def serve_fake(config: dict[str, Any]) -> None:
    """The fake API and its images; one JSON line on stdout with where, then
    commands on stdin: ``report`` (a JSON line: what the API ever listed),
    ``stop-arrivals``, ``quit`` (or end of input)."""
    from datetime import UTC, datetime, timedelta

    from syncd.fakeapi.data import Dataset
    from syncd.fakeapi.images import ImageFaults, ImageServer
    from syncd.fakeapi.server import FakeApi, FakeServer, Faults

    images = ImageServer(
        faults=ImageFaults(
            latency=config["latency_ms"] / 1000,
            size=config["image_size"],
            error_5xx=config["image_error_rate"],
        ),
        seed=SEED,
    )
    now = datetime.now(UTC)

    def dataset(count: int) -> Dataset:
        options: dict[str, Any] = {"unknown_fraction": 0.0, "malformed_fraction": 0.0}
        if count:  # by default recent: none is near the archive's 8-day deadline
            days = float(config.get("days", 7.0))
            options.update(start=now - timedelta(days=days), end=now - timedelta(minutes=1))
        return Dataset(count, SEED, image_origin=images.url, **options)

    def images_of(data: Dataset) -> int:
        return sum(len(referenced_images(a.value)) for a in data.items)

    wanted = int(config["images"])
    count = int(config.get("artworks", 0))
    if wanted and not count:  # artworks for about ``wanted`` images: ~2.2 each, counted, then adjusted once
        count = max(1, round(wanted / 2.2))
        count = max(1, round(count * wanted / max(1, images_of(dataset(count)))))
    data = dataset(count)
    api = FakeApi(data, api_key=KEY, faults=Faults(retention=config["retention"]), seed=SEED)
    server = FakeServer(api)
    images.attach(api).start()
    server.start()
    arriving = threading.Event()
    rate = float(config["arrivals_per_second"])
    if rate > 0:
        with api.lock:
            data.add(int(config["initial_live"]), live=True)
        arriving.set()

        def arrive() -> None:
            started, made = time.monotonic(), 0
            while arriving.is_set():
                due = int((time.monotonic() - started) * rate) - made
                if due > 0:
                    with api.lock:
                        data.add(due, live=True)
                    made += due
                time.sleep(0.05)

        threading.Thread(target=arrive, name="arrivals", daemon=True).start()
    print(
        json.dumps(
            {"api": server.url, "images": images.url, "artworks": count, "referenced": images_of(data)}
        ),
        flush=True,
    )
    for line in sys.stdin:
        command = line.strip()
        if command == "stop-arrivals":
            arriving.clear()
            print("{}", flush=True)
        elif command == "report":
            with api.lock:
                listed = [data.ever[i].value for i in api.served if i in data.ever]
                created = data.created
            urls = sorted({url for value in listed for url in referenced_images(value)})
            print(
                json.dumps(
                    {
                        "created": created,
                        "listed": len(listed),
                        "listed_with_results": sum(1 for v in listed if v.get("results")),
                        "images": urls,
                    }
                ),
                flush=True,
            )
        elif command == "quit":
            break
    arriving.clear()
    server.stop()
    images.stop()


@dataclass
class Fake:
    process: subprocess.Popen[str]
    api: str
    images: str
    artworks: int
    referenced: int

    def ask(self, command: str) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(command + "\n")
        stdin.flush()
        return dict(json.loads(stdout.readline()))

    def image_stats(self) -> dict[str, Any]:
        stats = dict(httpx.get(self.images + "/_fake/stats", timeout=30).json())
        stats.pop("served", None)
        return stats

    def reset_image_stats(self) -> None:
        httpx.post(self.images + "/_fake/reset-stats", timeout=30)


@contextlib.contextmanager
def fake(
    *,
    images: int = 0,
    latency_ms: float = 0.0,
    image_size: int = 0,
    image_error_rate: float = 0.0,
    retention: float = 0.0,
    arrivals_per_second: float = 0.0,
    initial_live: int = 0,
    days: float = 7.0,
    artworks: int = 0,
) -> Iterator[Fake]:
    config = {
        "days": days,
        "artworks": artworks,
        "images": images,
        "latency_ms": latency_ms,
        "image_size": image_size,
        "image_error_rate": image_error_rate,
        "retention": retention,
        "arrivals_per_second": arrivals_per_second,
        "initial_live": initial_live,
    }
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve-fake", json.dumps(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        hello = json.loads(process.stdout.readline())
        yield Fake(process, hello["api"], hello["images"], hello["artworks"], hello["referenced"])
    finally:
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.write("quit\n")
                process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ syncd


# The bucket of --store s3 (its variables), while one is up; None: a folder.
BUCKET: dict[str, str] | None = None


def syncd_env(fake: Fake, workdir: Path, *, folder: bool = False, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(
        SYNCD_API_URL=fake.api,
        SYNCD_API_KEY=KEY,
        SYNCD_DATABASE_URL=f"sqlite:///{workdir / 'syncd.db'}",
        SYNCD_ARCHIVE_DIR=str(workdir / "images"),
        SYNCD_MAX_REQUESTS_PER_SECOND="10000",
        SYNCD_LOG_LEVEL="info",
    )
    if BUCKET is not None and not folder:
        del env["SYNCD_ARCHIVE_DIR"]
        env.update(BUCKET, SYNCD_ARCHIVE_URL=f"s3://{BUCKET['bucket']}/{workdir.name}", TMPDIR=str(workdir))
        del env["bucket"]
    env.update({f"SYNCD_{name.upper()}": value for name, value in settings.items()})
    return env


@contextlib.contextmanager
def s3_bucket(tmp: Path) -> Iterator[dict[str, str]]:
    """An S3 protocol server (moto) on a free loopback port, and a bucket on it."""
    import socket

    import boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spill = tmp / "moto"
    spill.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Objects past 1 MiB go to files (in spill/), not the server's memory.
        env={**os.environ, "TMPDIR": str(spill), "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(MIB)},
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_EC2_METADATA_DISABLED": "true",
        "bucket": "syncd-bench",
    }
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(
                        "--store s3: the moto S3 server did not start (pip install -e '.[dev]')"
                    ) from None
                time.sleep(0.1)
        client = boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench-secret",
        )
        client.create_bucket(Bucket=env["bucket"])
        yield env
    finally:
        server.terminate()
        server.wait(timeout=15)


def run_once(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "run-once"], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"syncd run-once failed ({done.returncode}): {done.stderr[-2000:]}")


@dataclass
class Measured:
    wall: float  # seconds of the process, start-up included
    run: float  # the archive run's own seconds (its log line)
    rss_kib: int  # peak resident memory of the process


RUN_LINE = re.compile(r"archive run: success in ([0-9.]+)s")


def archive(env: dict[str, str]) -> Measured:
    """`syncd archive` as a real process, started by backfill's launcher (which
    samples its peak RSS); it must succeed."""
    settle()
    out = subprocess.run(
        [sys.executable, "-c", LAUNCHER, sys.executable, "-m", "syncd", "archive", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed, code, rss = out.stdout.split()
    found = RUN_LINE.search(out.stderr)
    if int(code) != 0 or found is None:
        raise SystemExit(f"syncd archive failed ({code}): {out.stderr[-2000:]}")
    return Measured(float(elapsed), float(found[1]), int(rss))


def statuses(workdir: Path) -> dict[str, int]:
    with sqlite3.connect(workdir / "syncd.db") as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM archived_files GROUP BY status").fetchall())


def archived_bytes(workdir: Path) -> int:
    """The bytes of the distinct files archived (folder or bucket alike)."""
    with sqlite3.connect(workdir / "syncd.db") as conn:
        query = "SELECT COALESCE(SUM(size_bytes), 0) FROM (SELECT DISTINCT path, size_bytes FROM archived_files WHERE status = 'archived')"
        return int(conn.execute(query).fetchone()[0])


def folder_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


# ------------------------------------------------------------------ parts


def wire(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rate = args.rate
    in_flight = args.in_flight or max(32, math.ceil(rate * args.latency_ms / 1000) + 8)
    with fake(images=args.images, latency_ms=args.latency_ms) as world:
        workdir = Path(tempfile.mkdtemp(dir=tmp))
        env = syncd_env(
            world,
            workdir,
            archive_max_requests_per_second=str(rate),
            archive_max_in_flight=str(in_flight),
        )
        run_once(env)
        world.reset_image_stats()
        measured = archive(env)
        host = world.image_stats()
        done = statuses(workdir)
        shutil.rmtree(workdir)
    images = world.referenced
    floor = images / rate
    report = {
        "images": images,
        "artworks": world.artworks,
        "latency_ms": args.latency_ms,
        "rate": rate,
        "max_in_flight": in_flight,
        "floor_seconds": floor,
        "run_seconds": measured.run,
        "wall_seconds": measured.wall,
        "x_floor": measured.run / floor,
        "wall_x_floor": measured.wall / floor,
        "archived": done.get("archived", 0),
        "by_status": done,
        "host_requests": host["requests"],
        "host_429": int(host["by_status"].get("429", 0)),
        "host_peak_in_flight": host["peak_in_flight"],
        "rss_mib": measured.rss_kib / 1024,
    }
    print(
        f"wire: {images:,} images at {args.latency_ms:g} ms, ceiling {rate:g}/s, {in_flight} in flight: "
        f"run {measured.run:.1f}s (wall {measured.wall:.1f}s), floor {floor:.1f}s -> "
        f"{report['x_floor']:.3f} x floor (wall {report['wall_x_floor']:.3f}); "
        f"{report['archived']:,} archived; host: {report['host_requests']:,} requests, "
        f"{report['host_429']} answered 429, peak {report['host_peak_in_flight']} in flight",
        file=sys.stderr,
    )
    return report


def memory_once(count: int, size: int, in_flight: int, tmp: Path) -> dict[str, Any]:
    needed = count * size * 1.1 + (2 << 30)
    free = shutil.disk_usage(tmp).free
    if free < needed:
        raise SystemExit(
            f"memory: {count} images of {size:,} bytes need {needed / 2**30:.1f} GiB free; {tmp} has {free / 2**30:.1f}"
        )
    with fake(images=count, image_size=size) as world:
        workdir = Path(tempfile.mkdtemp(dir=tmp))
        try:
            env = syncd_env(
                world,
                workdir,
                archive_max_requests_per_second="100000",
                archive_max_in_flight=str(in_flight),
                archive_max_file_bytes=str(max(64 << 20, 2 * size)),
            )
            run_once(env)
            measured = archive(env)
            done = statuses(workdir)
            written = archived_bytes(workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"memory: {world.referenced:,} images of {size:,} bytes: peak RSS {measured.rss_kib / 1024:.1f} MiB, "
        f"{written / 1e9:.2f} GB written in {measured.wall:.1f}s",
        file=sys.stderr,
    )
    return {
        "images": world.referenced,
        "archived": done.get("archived", 0),
        "bytes_written": written,
        "wall_seconds": measured.wall,
        "run_seconds": measured.run,
        "rss_mib": measured.rss_kib / 1024,
    }


def memory(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    small = memory_once(max(1, args.big_images // 10), args.image_size, args.in_flight or 8, tmp)
    big = memory_once(args.big_images, args.image_size, args.in_flight or 8, tmp)
    return {
        "image_size": args.image_size,
        "max_in_flight": args.in_flight or 8,
        "small": small,
        "big": big,
        "rss_mib": big["rss_mib"],
        "rss_ratio": big["rss_mib"] / small["rss_mib"],
    }


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def week(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Run the daemon through accelerated retention; then check every listed image."""
    from syncd.fakeapi.images import expected_sha256

    retention = args.retention
    days = args.week_seconds / retention * 8
    with fake(
        latency_ms=args.latency_ms,
        image_error_rate=args.image_error_rate,
        retention=retention,
        arrivals_per_second=args.arrivals,
        initial_live=args.initial,
    ) as world:
        workdir = Path(tempfile.mkdtemp(dir=tmp))
        env = syncd_env(
            world,
            workdir,
            folder=True,
            interval="1",
            archive_interval="1",
            archive_max_requests_per_second=str(args.rate),
            archive_max_in_flight=str(args.in_flight or 16),
            archive_min_free_bytes="0",
        )
        log_path = workdir / "daemon.log"
        with log_path.open("w") as log:
            daemon = subprocess.Popen([sys.executable, "-m", "syncd", "daemon"], env=env, stderr=log)
            started = time.monotonic()
            try:
                # The scenario's length, not a wait for an event: the daemon
                # works on its own schedule meanwhile.
                time.sleep(args.week_seconds)
                world.ask("stop-arrivals")
                # Give the last artworks listed their chance: their images are
                # deleted ``retention`` seconds after creation at the latest.
                deadline = time.monotonic() + retention + 2
                while time.monotonic() < deadline and daemon.poll() is None:
                    listed = set(world.ask("report")["images"])
                    if listed <= archived_urls(workdir):
                        break
                    time.sleep(0.5)
            finally:
                stop_daemon(daemon)
        elapsed = time.monotonic() - started
        report = world.ask("report")
        host = world.image_stats()
    checked = check_archive(workdir, report["images"], expected_sha256)
    with sqlite3.connect(workdir / "syncd.db") as conn:
        runs = conn.execute("SELECT COUNT(*) FROM sync_runs").fetchone()[0]
        ages = [
            (datetime.fromisoformat(fetched) - datetime.fromisoformat(created)).total_seconds()
            for fetched, created in conn.execute(
                "SELECT f.fetched_at, a.created_at FROM archived_files f JOIN artworks a ON a.id = f.artwork_id"
                " WHERE f.status = 'archived'"
            )
        ]
    log_text = log_path.read_text(errors="replace")
    errors = sum(1 for line in log_text.splitlines() if " ERROR " in line or "Traceback" in line)
    shutil.rmtree(workdir)
    result = {
        "seconds": elapsed,
        "week_seconds": args.week_seconds,
        "retention_seconds": retention,
        "simulated_days": days,
        "latency_ms": args.latency_ms,
        "image_error_rate": args.image_error_rate,
        "rate": args.rate,
        "artworks_created": report["created"],
        "artworks_listed": report["listed"],
        "artworks_never_listed": report["created"]
        - report["listed"],  # deleted or made before a sync saw them
        "artworks_listed_with_results": report["listed_with_results"],
        "images_listed": len(report["images"]),
        **checked,
        # How long after its artwork's creation an image was archived (createdAt
        # has whole seconds): the margin left before the fake deleted it.
        "archived_after_seconds_median": statistics.median(ages) if ages else None,
        "archived_after_seconds_max": max(ages, default=None),
        "sync_runs": runs,
        "daemon_exit": daemon.returncode,
        "daemon_error_lines": errors,
        "host_requests": host["requests"],
        "host_by_status": host["by_status"],
        "host_peak_in_flight": host["peak_in_flight"],
    }
    print(
        f"week: {args.week_seconds:g}s at {retention:g}s retention (~{days:.0f} days): "
        f"{report['created']:,} artworks created, {report['listed']:,} listed, {len(report['images']):,} images: "
        f"{checked['archived_ok']:,} archived with the right sha256, {checked['lost']} lost "
        f"({checked['gone']} gone, {checked['failed']} failed, {checked['pending']} pending, "
        f"{checked['missing']} never seen, {checked['bad_hash']} wrong hash, {checked['no_file']} no file); "
        f"archived {result['archived_after_seconds_max'] or 0:.1f}s after creation at the latest; "
        f"{runs} syncs; host {host['requests']:,} requests {host['by_status']}",
        file=sys.stderr,
    )
    return result


def archived_urls(workdir: Path) -> set[str]:
    try:
        with sqlite3.connect(workdir / "syncd.db") as conn:
            return {r[0] for r in conn.execute("SELECT url FROM archived_files WHERE status = 'archived'")}
    except sqlite3.Error:  # not yet created, or busy
        return set()


def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()


def check_archive(workdir: Path, urls: list[str], expected: Any) -> dict[str, int]:
    """Every listed image: archived, its row's sha256 what the fake served, its file hashing to it."""
    with sqlite3.connect(workdir / "syncd.db") as conn:
        rows = {
            url: (status, sha256, path)
            for url, status, sha256, path in conn.execute(
                "SELECT url, status, sha256, path FROM archived_files"
            )
        }
    counts = dict.fromkeys(("archived_ok", "gone", "failed", "pending", "missing", "bad_hash", "no_file"), 0)
    for url in urls:
        row = rows.get(url)
        if row is None:
            counts["missing"] += 1
            continue
        status, sha256, path = row
        if status != "archived":
            counts[status if status in counts else "failed"] += 1
        elif sha256 != expected(url):
            counts["bad_hash"] += 1
        elif not (workdir / "images" / path).is_file():
            counts["no_file"] += 1
        elif sha256_of(workdir / "images" / path) != sha256:
            counts["bad_hash"] += 1
        else:
            counts["archived_ok"] += 1
    counts["lost"] = len(urls) - counts["archived_ok"]
    return counts


# ------------------------------------------------------------------ main


def main() -> None:
    parser = benchkit.parser(__doc__, ("wire", "memory", "week"))
    parser.add_argument("--week", action="store_true", help="Only the simulated week (--part week).")
    parser.add_argument("--images", type=int, default=10_000, help="wire: images to archive")
    parser.add_argument("--latency-ms", type=float, default=300.0, help="wire, week: image host latency")
    parser.add_argument("--rate", type=float, default=20.0, help="wire, week: archive requests/s ceiling")
    parser.add_argument("--in-flight", type=int, default=0, help="SYNCD_ARCHIVE_MAX_IN_FLIGHT (0: per part)")
    parser.add_argument("--big-images", type=int, default=1000, help="memory: images (and a tenth)")
    parser.add_argument("--image-size", type=int, default=5 * 1024 * 1024, help="memory: bytes an image")
    parser.add_argument("--week-seconds", type=float, default=60.0, help="week: how long the daemon runs")
    parser.add_argument("--retention", type=float, default=20.0, help="week: seconds standing for 8 days")
    parser.add_argument("--arrivals", type=float, default=5.0, help="week: new artworks a second")
    parser.add_argument("--initial", type=int, default=100, help="week: artworks there at the start")
    parser.add_argument("--image-error-rate", type=float, default=0.02, help="week: share of image 5xx")
    parser.add_argument(
        "--store", choices=("folder", "s3"), default="folder", help="wire, memory: where to archive"
    )
    parser.add_argument("--serve-fake", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake is not None:
        serve_fake(json.loads(args.serve_fake))
        return
    parts = ("week",) if args.week else ("wire", "memory", "week") if args.part == "all" else (args.part,)
    results = benchkit.start()
    results["store"] = args.store
    global BUCKET
    with tempfile.TemporaryDirectory(prefix="syncd-bench-archive-", dir=args.tmp) as tmp:
        with contextlib.ExitStack() as stack:
            if args.store == "s3":
                BUCKET = stack.enter_context(s3_bucket(Path(tmp)))
            for part in parts:
                results[part] = {"wire": wire, "memory": memory, "week": week}[part](args, Path(tmp))
    print_table(results)
    if args.json:
        print(json.dumps(results, indent=2))


def print_table(results: dict[str, Any]) -> None:
    print(f"\nsyncd image archive benchmark ({results['store']}), {results['date']}; {results['machine']}\n")
    print(f"| {'measure':<58} | {'value':>10} | {'target':>8} |")
    print(f"|{'-' * 60}|{'-' * 12}|{'-' * 10}|")
    rows: list[tuple[str, str, str]] = []
    if "wire" in results:
        w = results["wire"]
        rows += [
            (f"wire: {w['images']:,} images, {w['latency_ms']:g} ms, {w['rate']:g}/s: run seconds", f"{w['run_seconds']:.1f}", ""),
            ("wire: floor (images / rate), seconds", f"{w['floor_seconds']:.1f}", ""),
            ("wire: run / floor", f"{w['x_floor']:.3f}", "<= 1.2"),
            ("wire: wall (with start-up) / floor", f"{w['wall_x_floor']:.3f}", ""),
            ("wire: image host 429s / peak in flight", f"{w['host_429']} / {w['host_peak_in_flight']}", ""),
        ]  # fmt: skip
    if "memory" in results:
        m = results["memory"]
        rows += [
            (f"memory: peak RSS, {m['big']['images']:,} images of {m['image_size']:,} B (MiB)", f"{m['rss_mib']:.1f}", "< 150"),
            (f"memory: peak RSS, {m['small']['images']:,} images (MiB)", f"{m['small']['rss_mib']:.1f}", ""),
            ("memory: RSS(N) / RSS(N/10)", f"{m['rss_ratio']:.2f}", ""),
        ]  # fmt: skip
    if "week" in results:
        k = results["week"]
        rows += [
            (f"week: {k['simulated_days']:.0f} days in {k['week_seconds']:g}s: images listed", f"{k['images_listed']:,}", ""),
            ("week: archived with the right sha256", f"{k['archived_ok']:,}", ""),
            ("week: lost (gone, failed, missing, wrong)", f"{k['lost']}", "0"),
            (f"week: latest archived, s after creation (of {k['retention_seconds']:g})", f"{k['archived_after_seconds_max'] or 0:.1f}", ""),
        ]  # fmt: skip
    for label, value, target in rows:
        print(f"| {label:<58} | {value:>10} | {target:>8} |")


if __name__ == "__main__":
    main()
