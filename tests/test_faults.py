"""Resilience: rate limits, faults, hostile data, database trouble, and secrets."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import ProgrammingError

from syncd import db, store
from syncd.fakeapi.server import FakeServer, Faults
from syncd.records import classify_page
from tests.conftest import (
    NOW,
    Wire,
    end_other_connections,
    run_cli,
    start_syncd,
    syncd_env,
    txt2img,
    upscaling,
    wait_for,
)


def ids_in(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(store.artworks.c.id)).scalars())


def test_backfill_through_a_storm_of_faults(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path, wire: Wire
) -> None:
    # The storm is certain, however fast or slow this machine: the first answers
    # are a 429 and a 5xx (scripted); then 8 requests/s with a burst of 8 (~25
    # requests) and a 5xx for one answer in five bring more of both.
    faults = Faults(
        first_answers="429,503",
        rate_limit=8,
        error_5xx=0.20,
        truncated=0.02,
        non_json=0.02,
        reset=0.01,
        not_a_list=0.01,
    )
    server = fake_api(1500, faults=faults, malformed_fraction=0.005)
    env = syncd_env(server.url, db_url, page_size="100", max_attempts="20")
    result = run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = server.api.stats
    assert stats.by_status and stats.by_status.get(429, 0) > 0
    assert sum(stats.by_status.get(status, 0) for status in (500, 502, 503, 504)) > 0
    assert wire.statuses()[:2] == [429, 503]
    assert wire.early() == [], "a request was sent before a Retry-After the client had read was over"
    stored = ids_in(engine)
    assert len(stored) == len(set(stored))
    assert set(stored) == {a.id for a in server.api.dataset.valid()}


def test_retry_after_as_http_date_is_honoured(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path, wire: Wire
) -> None:
    server = fake_api(300, faults=Faults(first_answers="429", rate_limit=4, retry_after_http_date=True))
    result = run_cli(["run-once"], syncd_env(server.url, sqlite_url, page_size="50"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert server.api.stats.by_status and server.api.stats.by_status[429] > 0
    answer = wire.api()[0]
    assert answer.status == 429 and answer.retry_after and answer.retry_after.endswith(" GMT")
    assert wire.early() == []


def test_retries_exhausted_fail_cleanly_then_the_next_run_completes(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(1000, faults=Faults(fail_from_request=4), malformed_fraction=0)
    env = syncd_env(server.url, db_url, page_size="100", max_attempts="3", max_in_flight="4")
    first = run_cli(["run-once"], env, cwd=tmp_path)
    assert first.returncode == 5, first.stderr
    assert "kept failing; gave up after 3 attempts: 503" in first.stderr
    committed = len(ids_in(engine))
    assert 0 < committed < 1000
    with engine.connect() as conn:
        run = conn.execute(select(store.runs_table)).one()
    assert run.outcome == "failed" and "503" in run.error

    server.api.faults.fail_from_request = 0
    server.api.reset_stats()
    second = run_cli(["run-once"], env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    # Resume budget: the pages not committed, 2 to find the cursor, and the
    # pages asked ahead past the end of the list (at most in flight - 1).
    assert server.api.stats.list_requests <= -(-(1000 - committed) // 100) + 2 + 3, server.api.list_log
    assert set(ids_in(engine)) == {a.id for a in server.api.dataset.valid()}


def test_a_page_that_fails_at_once_keeps_the_pages_written_before_it(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """No retry, no wait: the failure reaches the loop before its next commit."""
    # The third page on fail (by offset: pages 1 and 2 are skip 0 and 99), in
    # whatever order the requests in flight reach the API. (By request number,
    # the fourth request could be page 2's on a busy machine.)
    server = fake_api(1000, faults=Faults(fail_from_skip=2 * 99), malformed_fraction=0)
    env = syncd_env(server.url, db_url, page_size="100", max_attempts="1")
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 5, result.stderr
    # Pages 1 and 2 were written whole (page 3 is the first that failed); they stay.
    assert len(ids_in(engine)) >= 199


def test_sqlite_reader_holding_a_transaction_does_not_block_the_sync(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(2000)
    env = syncd_env(server.url, sqlite_url, page_size="100")
    assert run_cli(["db", "upgrade"], env, cwd=tmp_path).returncode == 0
    path = sqlite_url.removeprefix("sqlite:///")
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        before = reader.execute("SELECT COUNT(*) FROM artworks").fetchone()[0]
        result = run_cli(["run-once"], env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        # The analyst's snapshot is stable while the transaction lasts...
        assert reader.execute("SELECT COUNT(*) FROM artworks").fetchone()[0] == before == 0
        reader.execute("COMMIT")
        # ...and sees everything afterwards.
        assert reader.execute("SELECT COUNT(*) FROM artworks").fetchone()[0] == len(
            server.api.dataset.valid()
        )
    finally:
        reader.close()


def test_sqlite_writer_lock_held_by_someone_else_is_waited_for(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(300)
    env = syncd_env(server.url, sqlite_url, page_size="100")
    assert run_cli(["db", "upgrade"], env, cwd=tmp_path).returncode == 0
    blocker = sqlite3.connect(
        sqlite_url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
    )
    blocker.execute("BEGIN IMMEDIATE")  # another writer (a maintenance job, say)
    release = threading.Timer(1.5, lambda: blocker.execute("COMMIT"))
    release.start()
    try:
        result = run_cli(["run-once"], env, cwd=tmp_path)
    finally:
        release.join()
        blocker.close()
    assert result.returncode == 0, result.stderr


def _cut_connections(database_url: str) -> None:
    """What a server restart or a failover does to syncd: every connection to its
    database is terminated mid-statement (other tests' databases are left alone)."""
    engine = db.create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            end_other_connections(conn)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_connections_cut_mid_run_fail_cleanly_and_the_next_run_completes(
    postgres_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(4000, faults=Faults(slow=1.0, delay=0.05), malformed_fraction=0)
    # A paced backfill (~4 s at 10 requests/s) that the cut finds half done.
    env = syncd_env(server.url, postgres_url, page_size="100", max_requests_per_second="10")
    process = start_syncd(["run-once"], env, tmp_path)
    watcher = db.create_db_engine(postgres_url)
    try:

        def committed_a_page() -> bool:
            with watcher.connect() as conn:
                query = "SELECT to_regclass('artworks') IS NOT NULL AND EXISTS (SELECT FROM sync_state)"
                try:
                    return bool(conn.execute(text(query)).scalar_one())
                except ProgrammingError:  # the schema is being created
                    return False

        wait_for(committed_a_page, 60, "the first commit")  # then cut mid-run
    finally:
        watcher.dispose()
    _cut_connections(postgres_url)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 6, stderr
    assert "database error during the sync" in stderr
    assert "Traceback" not in stderr
    engine = db.create_db_engine(postgres_url)
    try:
        with engine.connect() as conn:
            state = conn.execute(select(store.state_table)).one()
            count = conn.execute(text("SELECT COUNT(*) FROM artworks")).scalar_one()
            run = conn.execute(select(store.runs_table)).one()
        # No half-written page: every committed cursor position is covered by rows.
        assert count >= state.cursor_skip - 1
        # Recorded on a new connection, with what was committed (not what was rolled back).
        assert run.outcome == "failed" and run.inserted == count > 0
        server.api.faults.slow = 0
        result = run_cli(["run-once"], env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert set(ids_in(engine)) == {a.id for a in server.api.dataset.valid()}
    finally:
        engine.dispose()


# ------------------------------------------------------------------ property


# What a JSON parser can hand us: no NaN, no lone surrogates.
json_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    json_text,
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(json_text, inner, max_size=4)),
    max_leaves=12,
)
FIELDS = ("id", "artworkType", "parameters", "duration", "results", "status", "createdAt")
PARAMS = (
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
    "imageUrl",
    "scaleFactor",
)


@st.composite
def mutated_record(draw: st.DrawFn) -> Any:
    base = draw(st.sampled_from([txt2img, upscaling]))(
        id=str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1))))
    )
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "replace", "param", "whole"]))
        if action == "drop":
            base.pop(draw(st.sampled_from(FIELDS)), None)
        elif action == "replace":
            base[draw(st.sampled_from(FIELDS))] = draw(json_value)
        elif action == "param" and isinstance(base.get("parameters"), dict):
            base["parameters"][draw(st.sampled_from(PARAMS))] = draw(json_value)
        elif action == "whole":
            return draw(json_value)
    return base


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(page=st.lists(mutated_record(), max_size=12))
def test_property_every_record_is_stored_or_rejected_never_both(
    page: list[Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    engine = db.create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('prop') / 'p.db'}")
    try:
        db.upgrade(engine)
        result = classify_page(page, NOW)
        with db.writer(engine).begin() as conn:
            store.write_artworks(conn, result.rows, NOW)
            store.quarantine(conn, result.rejected, stream="artworks", run_id=1, now=NOW)
        with engine.connect() as conn:
            raws = {r.id: r.raw for r in conn.execute(select(store.artworks.c.id, store.artworks.c.raw))}
            quarantined = [r.raw for r in conn.execute(select(store.rejected_table.c.raw))]
        last_by_id = {rows.id: rows for rows in result.rows}
        rejected_payloads = {orjson.dumps(orjson.loads(raw)) for raw in quarantined}
        for value in page:
            outcome = classify_page([value], NOW)
            is_rejected = bool(outcome.rejected)
            payload = orjson.dumps(value)
            if is_rejected:
                assert payload in rejected_payloads  # quarantined ...
                assert not any(raw == value for raw in raws.values())  # ... and not stored
            else:
                rows = outcome.rows[0]
                assert rows.id in raws  # stored (the page's last version of that id)
                assert raws[rows.id] == orjson.loads(last_by_id[rows.id].raw_json)
                assert payload not in rejected_payloads  # ... and not quarantined
        assert len(raws) == len(last_by_id)
    finally:
        engine.dispose()


def test_a_persisted_retry_after_deadline_is_waited_out_by_the_next_process(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    server = fake_api(50)
    env = syncd_env(server.url, sqlite_url)
    assert run_cli(["db", "upgrade"], env, cwd=tmp_path).returncode == 0
    engine = db.create_db_engine(sqlite_url)
    try:
        until = datetime.now(UTC) + timedelta(seconds=3)
        with db.writer(engine).begin() as conn:
            store.save_rate_limit(conn, "artworks", until, datetime.now(UTC))
    finally:
        engine.dispose()
    status = run_cli(["status"], env, cwd=tmp_path)
    assert "rate limited until" in status.stdout
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first = server.api.first_request_at
    assert first is not None
    assert first >= until.timestamp()  # nothing was sent before the deadline


def test_hostile_records_are_handled_by_their_documented_rules(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(1500, hostile_fraction=0.03, malformed_fraction=0.005)
    dataset = server.api.dataset
    kinds = {a.malformed for a in dataset.items if a.malformed}
    assert {"huge_prompt", "deep_nesting", "future_date", "ancient_date"} <= kinds
    result = run_cli(["run-once"], syncd_env(server.url, db_url, page_size="100"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    with engine.connect() as conn:
        stored = list(conn.execute(select(store.artworks.c.id)).scalars())
        rejected = conn.execute(select(store.rejected_table.c.reason, store.rejected_table.c.raw)).all()
    valid = {a.id for a in dataset.valid()}  # reused ids collapse into one row each
    assert sorted(stored) == sorted(valid)
    assert len(rejected) == sum(1 for a in dataset.items if a.malformed)
    reasons = " | ".join(r.reason for r in rejected)
    assert "over the 1,000,000-byte limit" in reasons
    assert "not parseable JSON" in reasons
    assert "more than a day in the future" in reasons and "before 2020-01-01" in reasons
    assert max(len(r.raw) for r in rejected) < 70_000  # absurd payloads are cut, not stored whole
