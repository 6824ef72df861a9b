"""`syncd status` as a person reads it: what happened last, in the right words."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, update

from syncd import db, status, store
from syncd.app import run_once
from syncd.errors import DatabaseError
from syncd.fakeapi.server import FakeServer
from tests.conftest import invoke_cli, make_settings


def test_an_interruption_is_said_as_one_not_as_the_last_failure(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    server = fake_api(120, malformed_fraction=0)
    settings = make_settings(server.url, db_url, page_size="50")
    run_once(settings)
    run_once(settings)
    with engine.begin() as conn:  # the second run was stopped by a SIGTERM, say
        conn.execute(update(store.runs_table).where(store.runs_table.c.id == 2).values(outcome="interrupted"))
    report = status.collect(engine)
    assert report["last_failure"] is None and report["last_interruption"]["id"] == 2
    text = status.render(report)
    assert "last failure" not in text
    assert "interrupted   " in text and "run 2 incremental: stopped on request" in text
    run_once(settings)  # a success since: the interruption is history, not news
    assert "interrupted   " not in status.render(status.collect(engine))


def test_max_archive_lag_without_an_archive_is_a_configuration_error(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    server = fake_api(30, malformed_fraction=0)
    run_once(make_settings(server.url, db_url))  # synced without the archive
    result = invoke_cli("status", "--max-archive-lag", "3600", env={"SYNCD_DATABASE_URL": db_url})
    assert result.returncode == 3, result.stderr
    assert "--max-archive-lag" in result.stderr and "SYNCD_ARCHIVE_DIR" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


# ---------------------------------------------------------------- a reader of SQLite (db.reading)


def _migrated(tmp_path: Path) -> Path:
    path = tmp_path / "syncd.db"
    assert invoke_cli("db", "upgrade", env={"SYNCD_DATABASE_URL": f"sqlite:///{path}"}).returncode == 0
    return path


def _runs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(store.runs_table)).scalar_one())


def _write_a_run(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO sync_runs (stream, mode, outcome, started_at, pages, requests, inserted, updated, "
        "unchanged, rejected, unknown_type, marked_deleted, syncd_version) VALUES ('artworks', 'backfill', "
        "'success', '2026-12-01 00:00:00.000000', 0, 0, 0, 0, 0, 0, 0, 0, '0')"
    )


def test_a_reader_keeps_a_writer_that_closes_from_checkpointing_into_the_file_it_reads(
    tmp_path: Path,
) -> None:
    # No -wal: the reader reads the file as it is (immutable), holding SQLite's
    # SHARED lock, so that the writer that opens, writes and closes meanwhile
    # leaves its write in its -wal instead of copying it into that file.
    path = _migrated(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with db.reading(f"sqlite:///{path}") as engine:
        assert _runs(engine) == 0
        writer = sqlite3.connect(path, isolation_level=None)
        _write_a_run(writer)
        writer.close()
        assert (tmp_path / "syncd.db-wal").exists()  # not checkpointed, not deleted
        assert _runs(engine) == 0  # the reader's file is what it was
    with db.reading(f"sqlite:///{path}") as engine:  # through the -wal now
        assert _runs(engine) == 1
    last = sqlite3.connect(path)
    assert last.execute("SELECT count(*) FROM sync_runs").fetchone() == (1,)
    last.close()  # the last connection to close checkpoints, and deletes the -wal and -shm
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_read_the_file_changed_under_is_refused(tmp_path: Path) -> None:
    path = _migrated(tmp_path)

    def read_while_a_writer_checkpoints() -> None:
        with db.reading(f"sqlite:///{path}") as engine:
            assert _runs(engine) == 0
            writer = sqlite3.connect(path, isolation_level=None)
            _write_a_run(writer)
            writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # a writer that stays open checkpoints
            writer.close()

    with pytest.raises(DatabaseError, match="changed while syncd read it"):
        read_while_a_writer_checkpoints()
    with db.reading(f"sqlite:///{path}") as engine:
        assert _runs(engine) == 1


def test_a_reader_creates_nothing_beside_a_database_it_may_write(tmp_path: Path) -> None:
    # Even where it could (its own folder): a read-only open of a WAL database
    # would leave a -wal and -shm it cannot delete.
    path = _migrated(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke_cli("status", env={"SYNCD_DATABASE_URL": f"sqlite:///{path}"})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_reader_of_a_file_that_is_not_there_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="does not exist"):
        with db.reading(f"sqlite:///{tmp_path / 'typo.db'}"):
            pass
    assert list(tmp_path.iterdir()) == []
