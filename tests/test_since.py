"""`syncd run-once --since DATE`: a backfill of the artworks created since a
moment, through the real command line on both databases."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner, Result
from sqlalchemy import Engine, select

from syncd import store
from syncd.cli import cli
from syncd.fakeapi.server import FakeServer, Faults


def invoke(*args: str, env: dict[str, str]) -> Result:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    clean = {name: None for name in os.environ if name.startswith("SYNCD_")}
    try:
        return CliRunner().invoke(cli, list(args), env={**clean, **env})
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def env_for(server: FakeServer, db_url: str) -> dict[str, str]:
    return {
        "SYNCD_API_URL": server.url,
        "SYNCD_API_KEY": "test-key",
        "SYNCD_DATABASE_URL": db_url,
        "SYNCD_MAX_REQUESTS_PER_SECOND": "1000",
        "SYNCD_PAGE_SIZE": "100",
    }


def stored(engine: Engine) -> dict[str, datetime | None]:
    """Stored artworks: id -> remote_deleted_at."""
    with engine.connect() as conn:
        rows = conn.execute(select(store.artworks.c.id, store.artworks.c.remote_deleted_at))
        return {row.id: row.remote_deleted_at for row in rows}


def created(server: FakeServer, since: datetime) -> set[str]:
    return {
        a.id
        for a in server.api.dataset.items
        if a.id is not None and datetime.fromisoformat(a.value["createdAt"]) >= since
    }


def test_since_backfills_only_what_is_newer_and_later_runs_go_on_from_there(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    server = fake_api(2000, malformed_fraction=0, unknown_fraction=0)
    since = datetime.fromisoformat(server.api.dataset.items[-450].value["createdAt"])
    env = env_for(server, db_url)
    result = invoke("run-once", "--since", since.isoformat(), "--progress", env=env)
    assert result.exit_code == 0, result.output
    # The order is known from the first page, and so is where the scan should end.
    last = result.stderr.rsplit("backfill: ", 1)[-1]
    assert f"of {since:%Y-%m-%d %H:%M} expected (100%, ETA 0s)" in last, last
    assert set(stored(engine)) == created(server, since)
    assert len(created(server, since)) == 450
    assert len(server.api.list_log) <= 450 // 99 + 2  # it stopped at the floor: not 21 pages
    # The next run, without a floor, reads only what is new.
    server.api.list_log.clear()
    added = server.api.dataset.add(40, live=True)
    result = invoke("run-once", env=env)
    assert result.exit_code == 0, result.output
    assert {a.id for a in added} <= set(stored(engine))
    assert len(server.api.list_log) == 1


def test_a_bounded_scan_after_a_full_backfill_marks_nothing_deleted(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    server = fake_api(600, malformed_fraction=0, unknown_fraction=0)
    env = env_for(server, db_url)
    assert invoke("run-once", env=env).exit_code == 0
    assert len(stored(engine)) == 600
    since = datetime.fromisoformat(server.api.dataset.items[-580].value["createdAt"])
    with engine.connect() as conn:
        complete = store.load_state(conn, "artworks")
    server.api.get_log.clear()
    for _ in range(2):  # two bounded scans in a row: neither saw the older 20
        result = invoke("run-once", "--since", since.isoformat(), env=env)
        assert result.exit_code == 0, result.output
        assert "withheld" not in result.output
    assert all(deleted is None for deleted in stored(engine).values())
    assert server.api.get_log == []  # what it did not look at is not asked after either
    with engine.connect() as conn:
        after = store.load_state(conn, "artworks")
    # Neither became the scan the next complete one compares with, nor a full sync.
    assert after.scan_started_at == complete.scan_started_at
    assert after.last_full_sync_at == complete.last_full_sync_at
    # And the next complete scan compares with the last complete one, not with a bounded one.
    result = invoke("run-once", "--full", env=env)
    assert result.exit_code == 0, result.output
    assert all(deleted is None for deleted in stored(engine).values())


def test_since_is_checked_before_anything_runs(db_url: str, fake_api: Callable[..., FakeServer]) -> None:
    server = fake_api(10)
    env = env_for(server, db_url)
    both = invoke("run-once", "--full", "--since", "2026-01-01", env=env)
    assert both.exit_code == 2 and "--full" in both.output and "--since" in both.output
    future = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    later = invoke("run-once", "--since", future, env=env)
    assert later.exit_code == 2 and "future" in later.output
    garbled = invoke("run-once", "--since", "last tuesday", env=env)
    assert garbled.exit_code == 2 and "--since" in garbled.output
    assert server.api.list_log == []  # nothing was asked of the API


def test_a_scan_with_a_floor_stopped_half_way_resumes_with_its_floor(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    """In an oldest-first list a floor reads it all; a failure half-way, and
    the next run without --since goes on as the scan it resumes: older
    artworks skipped, and no deletions judged from what it skipped."""
    server = fake_api(3000, malformed_fraction=0, unknown_fraction=0, faults=Faults(order="oldest_first"))
    since = datetime.fromisoformat(server.api.dataset.items[2400].value["createdAt"])
    env = {**env_for(server, db_url), "SYNCD_MAX_ATTEMPTS": "1"}
    server.api.faults.fail_from_request = 12  # the API fails from the 12th page on
    failed = invoke("run-once", "--since", since.isoformat(), env=env)
    assert failed.exit_code == 5, failed.output
    with engine.connect() as conn:
        half = store.load_state(conn, "artworks")
    assert half.phase == "backfill" and half.cursor_skip > 0 and half.scan_since == since
    server.api.faults.fail_from_request = 0
    resumed = invoke("run-once", env=env)
    assert resumed.exit_code == 0, resumed.output
    assert set(stored(engine)) == created(server, since)
    assert server.api.get_log == [] and "withheld" not in resumed.output
    with engine.connect() as conn:
        done = store.load_state(conn, "artworks")
    assert done.phase == "idle" and done.scan_since is None and done.last_full_sync_at is None
