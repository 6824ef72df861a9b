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
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()
