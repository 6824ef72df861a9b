"""An active/standby pair sharing one archive: two `syncd daemon` processes on
one PostgreSQL and one bucket, the active one killed (SIGKILL) mid-archive.

The standby takes the archive lock at its next tick, archives the rest, and
no image is fetched again once its object exists: the store's request log
shows every object put once, and no put refused as already there (a second
download of bytes the bucket held) beyond images whose bytes another URL
had already brought.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from syncd import db
from syncd.archive import rows
from syncd.fakeapi.images import ImageFaults
from tests.conftest import World, daemon, referenced_urls, syncd_env, wait_for
from tests.s3server import S3

files = rows.files
INTERVAL = 2.0  # seconds between the archive's looks (SYNCD_ARCHIVE_INTERVAL)


# Two daemons, a SIGKILL and the standby's takeover: half a minute of waiting
# on ticks and slow image hosts, run with the soak tests (scripts/test.sh, CI).
@pytest.mark.slow
@pytest.mark.postgres
def test_the_standby_takes_over_the_archive_and_fetches_no_image_twice_once_stored(
    postgres_url: str, world: Callable[..., World], tmp_path: Path, s3: S3
) -> None:
    if s3.server.requests() is None:
        pytest.skip("needs the request log of the moto server (an external S3 server has none here)")
    # 300 ms per image: the archive takes long enough to be killed in the middle.
    w = world(60, image_faults=ImageFaults(latency=0.3))
    urls = referenced_urls(w)
    env = syncd_env(
        w.api.url,
        postgres_url,
        archive_url=s3.url,
        archive_max_requests_per_second="1000",
        archive_max_in_flight="4",
        archive_interval=str(INTERVAL),
        interval="1",
        log_level="debug",
    )
    env.update(s3.env())
    engine = db.create_db_engine(postgres_url)
    db.upgrade(engine)  # as a deployment does first: two daemons never race to create the schema
    image_keys = lambda: [k for k in s3.keys() if not k.endswith(".syncd-archive")]  # noqa: E731
    logs = (tmp_path / "a.log", tmp_path / "b.log")
    try:
        with daemon(env, tmp_path, logs[0]) as first, daemon(env, tmp_path, logs[1]) as second:
            # Both start together; one takes the archive lock for a long run, the
            # other's ticks skip meanwhile (before, short runs may trade the lock).
            wait_for(lambda: len(image_keys()) >= 10, 60, "a daemon to archive some images")
            seen = [log.stat().st_size for log in logs]

            def skipping() -> list[bool]:
                return [
                    "archive tick skipped" in log.read_text()[n:] for log, n in zip(logs, seen, strict=True)
                ]

            assert first.poll() is None and second.poll() is None, "a daemon exited"
            wait_for(lambda: any(skipping()), 30, "the other daemon's archive tick to find the lock held")
            standby_log = logs[0] if skipping()[0] else logs[1]
            active, standby = (second, first) if standby_log == logs[0] else (first, second)
            assert len(image_keys()) < len(urls), "the active daemon finished before it was killed"
            active.send_signal(signal.SIGKILL)
            active.wait(timeout=10)
            at_kill = len(image_keys())
            killed = time.monotonic()
            # Within one interval (and the time a few puts take) the standby archives on.
            wait_for(lambda: len(image_keys()) > at_kill, INTERVAL + 20, "the standby to take over")
            took = time.monotonic() - killed

            def all_archived() -> bool:
                with engine.connect() as conn:
                    statuses = Counter(conn.execute(select(files.c.status)).scalars())
                return statuses["archived"] == sum(statuses.values()) > 0

            wait_for(all_archived, 120, "the standby to archive the rest")
            standby.send_signal(signal.SIGTERM)
            assert standby.wait(timeout=30) == 0
        with engine.connect() as conn:
            archived = conn.execute(select(files.c.url, files.c.sha256, files.c.path, files.c.store)).all()
    finally:
        engine.dispose()

    assert {r.url for r in archived} == urls and {r.store for r in archived} == {s3.url}
    assert {f"archive/{r.path}" for r in archived} == set(image_keys())
    urls_of = Counter(sha for sha in {(r.url, r.sha256) for r in archived} for sha in [sha[1]])
    puts = s3.puts()
    for row in {(r.path, r.sha256) for r in archived}:
        key = f"archive/{row[0]}"
        assert puts[(key, 200)] == 1, f"{key} written {puts[(key, 200)]} times"
        # A put refused as already there is a download of bytes the bucket held:
        # only another URL with the same bytes may cause one.
        assert puts[(key, 412)] <= urls_of[row[1]] - 1, f"{key} fetched again after it was stored"
    # What was fetched twice was in flight when the active one died (4 at most).
    fetched = w.images._url_requests
    twice = [url for url, n in fetched.items() if n > 1]
    assert len(twice) <= 4, twice
    log = standby_log.read_text()
    assert "Traceback" not in log and s3.env()["AWS_SECRET_ACCESS_KEY"] not in log
    assert s3.env()["AWS_ACCESS_KEY_ID"] not in logs[0].read_text() + logs[1].read_text()  # debug level too
    found = log.count("found in the archive (put before a stop)")
    print(
        f"standby took over {took:.1f}s after the kill; {len(twice)} images fetched twice; {found} found put"
    )
