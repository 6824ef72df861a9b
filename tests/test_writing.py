"""The writer process: the same tables as writing here, and never a half-written page."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from syncd import db, store
from syncd.errors import DatabaseError
from syncd.fakeapi.data import Dataset
from syncd.records import classify_page
from syncd.rows import PageResult
from syncd.summary import STREAM, Counts
from syncd.sync.planner import StreamState
from syncd.sync.validation import HelperMode
from syncd.sync.writing import PageWriter
from tests.conftest import wait_for
from tests.test_validation import alive

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def page_values() -> list[list[Any]]:
    """Three pages: valid, malformed and unknown-type records; the third repeats
    one record of the first unchanged and one changed."""
    dataset = Dataset(60, seed=11, malformed_fraction=0.1, unknown_fraction=0.1)
    values = [artwork.value for artwork in dataset.items]
    changed = copy.deepcopy(next(v for v in values[:20] if isinstance(v.get("id"), str) and "status" in v))
    changed["status"] = "canceled" if changed["status"] != "canceled" else "done"
    return [values[:20], values[20:40], [*values[40:], values[25], changed]]


def classified(pages: list[list[Any]], stored: dict[str, str] | None = None) -> list[PageResult]:
    return [classify_page(page, NOW + timedelta(seconds=n), stored or {}) for n, page in enumerate(pages)]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Engine]:
    engine = db.create_db_engine(f"sqlite:///{tmp_path / 'writer.db'}")
    db.upgrade(engine)
    yield engine
    engine.dispose()


def start_run(engine: Engine) -> int:
    with db.writer(engine).begin() as conn:
        return store.start_run(conn, stream=STREAM, mode="backfill", now=NOW)


def state_after(page: int) -> StreamState:
    return StreamState(STREAM, cursor_skip=20 * (page + 1))


def write_all(engine: Engine, mode: HelperMode, pages: list[PageResult], *, wire: bool) -> Counts:
    counts = Counts()
    writer = PageWriter(engine, start_run(engine), counts, mode)
    try:
        for number, page in enumerate(pages):
            counts.requests = number + 1
            writer.write(page.to_wire() if wire else page, state_after(number), NOW, run_mode="backfill")
            if number == 1:
                writer.commit()
        writer.commit()
        writer.finish()
    finally:
        writer.close()
    if mode is HelperMode.ON:
        assert writer.pages_in_writer == len(pages)
    return counts


def tables(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    names = (
        "artworks",
        "txt2img_parameters",
        "upscaling_parameters",
        "artwork_results",
        "rejected_records",
        "sync_state",
        "sync_runs",
    )
    with engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(text(f"SELECT * FROM {name}")).all())) for name in names}


def test_the_writer_process_stores_exactly_what_writing_here_stores(tmp_path: Path) -> None:
    pages = classified(page_values())
    assert any(page.rejected for page in pages) and any(page.unknown_types for page in pages)
    results = []
    for mode, wire in ((HelperMode.ON, True), (HelperMode.ON, False), (HelperMode.OFF, False)):
        engine = db.create_db_engine(f"sqlite:///{tmp_path / f'{mode}-{wire}.db'}")
        try:
            db.upgrade(engine)
            counts = write_all(engine, mode, pages, wire=wire)
            results.append((counts, tables(engine)))
        finally:
            engine.dispose()
    assert results[0] == results[1] == results[2]
    counts, stored = results[0]
    assert counts.pages == 3 and counts.updated == 1 and counts.unchanged == 1 and counts.rejected > 0
    assert stored["sync_state"][0][list(StreamState.__dataclass_fields__).index("cursor_skip")] == 60


def count_artworks(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(store.artworks)).scalar_one())


@contextmanager
def first_page_committed(database: Engine) -> Iterator[tuple[PageWriter, list[PageResult], int]]:
    """A writer process that has committed the first of three pages: the writer,
    the pages and the artworks stored. Closed afterwards."""
    pages = classified(page_values())
    writer = PageWriter(database, start_run(database), Counts(), HelperMode.ON)
    try:
        writer.write(pages[0], state_after(0), NOW, run_mode="backfill")
        writer.commit(wait=True)
        yield writer, pages, count_artworks(database)
    finally:
        writer.close()


def test_a_write_that_fails_in_the_writer_fails_the_run_and_keeps_what_was_committed(
    database: Engine,
) -> None:
    with first_page_committed(database) as (writer, pages, committed):
        assert writer.pages_in_writer == 1 and committed > 0
        with database.begin() as conn:  # an operator's mistake, mid-run
            conn.execute(text("DROP TABLE artwork_results"))
        writer.write(pages[1], state_after(1), NOW, run_mode="backfill")  # its answer: read later
        with pytest.raises(DatabaseError, match="database error during the sync: no such table"):
            writer.commit(wait=True)
        writer.abort()
    assert count_artworks(database) == committed


def test_a_writer_killed_mid_run_fails_the_run_and_keeps_what_was_committed(database: Engine) -> None:
    with first_page_committed(database) as (writer, pages, committed):
        writer.write(pages[1], state_after(1), NOW, run_mode="backfill")
        process = writer._process
        assert process is not None
        process.process.kill()
        process.process.wait()
        with pytest.raises(DatabaseError, match="writer process ended unexpectedly"):
            writer.write(pages[2], state_after(2), NOW, run_mode="backfill")
    assert count_artworks(database) == committed  # the second page was never committed


def test_abort_rolls_back_what_the_writer_has_not_committed(database: Engine) -> None:
    with first_page_committed(database) as (writer, pages, committed):
        writer.write(pages[1], state_after(1), NOW, run_mode="backfill")
        writer.abort()
    assert count_artworks(database) == committed
    with database.connect() as conn:
        assert conn.execute(select(store.state_table.c.cursor_skip)).scalar_one() == 20


def test_the_writer_ends_and_rolls_back_when_syncd_is_killed(database: Engine) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal
        from datetime import UTC, datetime
        from syncd import db, store
        from syncd.records import classify_page
        from syncd.summary import STREAM, Counts
        from syncd.sync.planner import StreamState
        from syncd.sync.writing import PageWriter
        from tests.test_writing import page_values
        engine = db.create_db_engine({str(database.url)!r})
        now = datetime.now(UTC)
        with db.writer(engine).begin() as conn:
            run_id = store.start_run(conn, stream=STREAM, mode="backfill", now=now)
        writer = PageWriter(engine, run_id, Counts(), "on")
        writer.write(classify_page(page_values()[0], now), StreamState(STREAM), now, run_mode="backfill")
        writer.write(classify_page(page_values()[1], now), StreamState(STREAM), now, run_mode="backfill")
        print(writer._process.process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    parent = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    writer_pid = int(parent.stdout.split()[0])
    wait_for(lambda: not alive(writer_pid), 10, "the orphaned writer to exit")
    assert count_artworks(database) == 0


def test_auto_writes_here_for_short_runs_single_cpus_and_memory_databases(
    database: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd.sync import writing

    short = PageWriter(database, start_run(database), Counts(), HelperMode.AUTO)
    assert not short.process_started  # until the run proves long
    monkeypatch.setattr(writing, "available_cpus", lambda: 1)
    short.expect_long_run()
    assert not short.process_started
    short.close()

    memory = db.create_db_engine("sqlite://")
    try:
        db.upgrade(memory)
        in_memory = PageWriter(memory, start_run(memory), Counts(), HelperMode.ON)
        assert not in_memory.process_started  # another process cannot see it
        in_memory.close()
    finally:
        memory.dispose()

    monkeypatch.setattr(writing, "available_cpus", lambda: 2)
    long = PageWriter(database, start_run(database), Counts(), HelperMode.AUTO)
    long.expect_long_run()
    try:
        assert long.process_started
    finally:
        long.close()
