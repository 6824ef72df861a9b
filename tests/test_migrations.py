"""Migrations: from empty on both dialects, agreement with the models, refusals."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from syncd import db
from syncd.errors import SchemaError
from syncd.models import Base

TABLES = {
    "artworks",
    "txt2img_parameters",
    "upscaling_parameters",
    "artwork_results",
    "rejected_records",
    "sync_runs",
    "sync_state",
    "archived_files",
}


def test_upgrade_from_empty_creates_the_schema_and_models_agree(db_url: str) -> None:
    engine = db.create_db_engine(db_url)
    try:
        assert db.schema_version(engine).current is None
        db.upgrade(engine)
        version = db.schema_version(engine)
        assert version.up_to_date and version.known
        assert TABLES <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    engine = db.create_db_engine(db_url)
    try:
        db.upgrade(engine)
        from alembic import command

        with engine.begin() as conn:
            command.downgrade(db.alembic_config(conn), "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        db.upgrade(engine)
        assert db.schema_version(engine).up_to_date
    finally:
        engine.dispose()


def test_ensure_schema_refuses_when_told_not_to_migrate(sqlite_url: str) -> None:
    engine = db.create_db_engine(sqlite_url)
    try:
        with pytest.raises(SchemaError, match="syncd db upgrade"):
            db.ensure_schema(engine, migrate=False)
        assert db.ensure_schema(engine, migrate=True).up_to_date
    finally:
        engine.dispose()


def test_ensure_schema_refuses_a_revision_from_a_newer_syncd(sqlite_url: str) -> None:
    engine = db.create_db_engine(sqlite_url)
    try:
        db.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
        with pytest.raises(SchemaError, match="newer syncd"):
            db.ensure_schema(engine, migrate=True)
    finally:
        engine.dispose()


def test_head_revision_constant_matches_the_migrations() -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory.from_config(db.alembic_config()).get_current_head() == db.HEAD_REVISION


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(sqlite_url: str) -> None:
    engine = db.create_db_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.SQLITE_BUSY_TIMEOUT_MS
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0  # see db._sqlite_pragmas
    finally:
        engine.dispose()


def test_0002_indexes_the_artworks_to_refresh_and_the_queries_use_it(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 0001 database with data, upgraded: unfinished() answers the same,
    from the partial index (SQLite's plan names it) instead of a table scan."""
    from datetime import UTC, datetime

    from alembic import command

    from syncd import store
    from syncd.archive import discover
    from syncd.fakeapi.data import Dataset
    from syncd.records import classify_page

    # Today's write path at 0001: without the archive's tables (0004, 0005), as then.
    monkeypatch.setattr(discover, "write_images", lambda *args: None)

    engine = db.create_db_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(db.alembic_config(conn), "0001")
        values = [a.value for a in Dataset(40, seed=4, malformed_fraction=0, pending_fraction=0.3).items]
        rows = classify_page(values, datetime(2026, 11, 30, tzinfo=UTC)).rows
        pending = sorted((r.created_at, r.id) for r in rows if not r.is_terminal)
        assert 0 < len(pending) < len(rows)
        with db.writer(engine).begin() as conn:
            store.write_artworks(conn, rows, datetime(2026, 11, 30, tzinfo=UTC))
        db.upgrade(engine)
        assert db.schema_version(engine).up_to_date
        with engine.connect() as conn:
            assert [a.id for a in store.unfinished(conn)] == [artwork_id for _, artwork_id in pending]
            if engine.dialect.name == "sqlite":
                plan = " ".join(
                    str(row[-1])
                    for row in conn.exec_driver_sql(
                        "EXPLAIN QUERY PLAN SELECT id FROM artworks WHERE "
                        f"{store.PENDING_REFRESH} ORDER BY created_at, id"
                    )
                )
                assert "ix_artworks_pending_refresh" in plan, plan
        with engine.begin() as conn:
            command.downgrade(db.alembic_config(conn), "0001")
        assert "ix_artworks_pending_refresh" not in {
            i["name"] for i in inspect(engine).get_indexes("artworks")
        }
    finally:
        engine.dispose()


def test_0003_adds_the_previous_scan_start_keeping_the_state(db_url: str) -> None:
    from datetime import UTC, datetime

    from alembic import command

    from syncd import store
    from syncd.state import Phase

    engine = db.create_db_engine(db_url)
    try:
        with engine.begin() as conn:
            command.upgrade(db.alembic_config(conn), "0002")
            started = (
                "2026-11-30T12:00:00.000000Z" if engine.dialect.name == "sqlite" else "2026-11-30 12:00Z"
            )
            conn.execute(
                text(
                    "INSERT INTO sync_state (stream, list_order, scan_order, phase, cursor_skip, "
                    "scan_started_at, updated_at) VALUES ('artworks', 'newest_first', 'newest_first', "
                    f"'idle', 0, '{started}', '{started}')"
                )
            )
        db.upgrade(engine)
        with engine.begin() as conn:
            state = store.load_state(conn, "artworks")
            assert state.phase == Phase.IDLE and state.previous_scan_started_at is None
            assert state.scan_started_at == datetime(2026, 11, 30, 12, tzinfo=UTC)
            state.previous_scan_started_at = datetime(2026, 11, 29, tzinfo=UTC)
            store.save_state(conn, state, datetime(2026, 12, 1, tzinfo=UTC))
        with engine.connect() as conn:
            assert store.load_state(conn, "artworks").previous_scan_started_at == datetime(
                2026, 11, 29, tzinfo=UTC
            )
        with engine.begin() as conn:
            command.downgrade(db.alembic_config(conn), "0002")
        assert "previous_scan_started_at" not in {
            c["name"] for c in inspect(engine).get_columns("sync_state")
        }
    finally:
        engine.dispose()


def test_0005_switches_on_an_archive_in_use_and_puts_its_pending_images_in_deadline_order(
    db_url: str,
) -> None:
    """A 0004 database whose archive was in use: on for the database (the walk
    records the rest at the next run); its pending images due from their
    artwork's creation, as the due index orders them. One never archived: off."""
    from datetime import UTC, datetime, timedelta

    from alembic import command
    from sqlalchemy import insert, select

    from syncd.archive import discover
    from syncd.models import ArchivedFile

    files = ArchivedFile.__table__
    engine = db.create_db_engine(db_url)
    found = datetime(2026, 12, 1, 12, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            command.upgrade(db.alembic_config(conn), "0004")
        db.upgrade(engine)
        with engine.connect() as conn:
            assert discover.load(conn).images_since is None  # never used: still off
        with engine.begin() as conn:
            command.downgrade(db.alembic_config(conn), "0004")
            conn.execute(text("INSERT INTO artworks (id, artwork_type, status, created_at, first_seen_at, "
                              "last_seen_at, updated_at, content_hash, raw) VALUES ('a', 'txt2img', 'done', "
                              ":t, :t, :t, :t, 'h', '{}')"), {"t": found - timedelta(days=2)})  # fmt: skip
            for position, status in enumerate(("pending", "archived")):
                conn.execute(
                    insert(files).values(
                        artwork_id="a",
                        role="result",
                        position=position,
                        url=f"https://img.example/{position}.png",
                        status=status,
                        expires_at=found + timedelta(days=6, microseconds=71),
                        discovered_at=found,
                        attempts=0,
                        next_attempt_at=found if status == "pending" else None,
                    )
                )
        db.upgrade(engine)
        with engine.connect() as conn:
            assert discover.load(conn).images_since is not None and not discover.load(conn).complete
            due = dict(conn.execute(select(files.c.status, files.c.next_attempt_at)).all())
        assert due == {"pending": found - timedelta(days=2) + timedelta(microseconds=71), "archived": None}
        with engine.begin() as conn:
            command.downgrade(db.alembic_config(conn), "0004")
        assert "archive_state" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_0007_says_which_archive_holds_a_file_and_keeps_the_rows_before_it(db_url: str) -> None:
    """Rows archived before 0007 keep an empty store (a folder's, as always);
    the column goes with a downgrade, the rows stay."""
    from datetime import UTC, datetime, timedelta

    from alembic import command

    engine = db.create_db_engine(db_url)
    found = datetime(2026, 12, 1, 12, tzinfo=UTC)
    try:
        with engine.begin() as conn:
            command.upgrade(db.alembic_config(conn), "0006")
            conn.execute(text("INSERT INTO artworks (id, artwork_type, status, created_at, first_seen_at, "
                              "last_seen_at, updated_at, content_hash, raw) VALUES ('a', 'txt2img', 'done', "
                              ":t, :t, :t, :t, 'h', '{}')"), {"t": found})  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO archived_files (artwork_id, role, position, url, status, expires_at, "
                    "discovered_at, attempts, path, sha256) VALUES ('a', 'result', 0, 'https://i/0.png', "
                    "'archived', :e, :t, 1, 'ab/cd/x.png', 'abcd')"
                ),
                {"t": found, "e": found + timedelta(days=8)},
            )
        db.upgrade(engine)
        assert "store" in {c["name"] for c in inspect(engine).get_columns("archived_files")}
        with engine.begin() as conn:
            assert conn.execute(text("SELECT store, path FROM archived_files")).one() == (None, "ab/cd/x.png")
            conn.execute(text("UPDATE archived_files SET store = 's3://bucket/p'"))
            command.downgrade(db.alembic_config(conn), "0006")
        assert "store" not in {c["name"] for c in inspect(engine).get_columns("archived_files")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT path FROM archived_files")).scalar_one() == "ab/cd/x.png"
    finally:
        engine.dispose()
