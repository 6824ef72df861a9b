"""The archive's rows: recorded as artworks are written, read by the due index.

Every image of every stored artwork gets a row (with the archive on: written
in the page's transaction, one statement a page; stored before: walked once,
newest first, resumable); a look reads what is due in deadline order (live
deadlines first, then history newest first) from index probes whose number
does not grow with the account.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event, select, text, update

from syncd import db, store
from syncd.archive import discover, rows
from syncd.archive.plan import RETENTION, FileStatus
from syncd.fakeapi.data import Dataset
from syncd.records import ArtworkRows, classify_page

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
files = rows.files


def artworks(count: int, *, days: float, seed: int = 3, end: datetime = NOW) -> list[ArtworkRows]:
    """``count`` valid artworks with images, created over the ``days`` before ``end``."""
    data = Dataset(
        count,
        seed,
        start=end - timedelta(days=days),
        end=end - timedelta(minutes=1),
        malformed_fraction=0,
        unknown_fraction=0,
        image_origin="https://img.example",
    )
    return classify_page([a.value for a in data.items], NOW).rows


def write(engine: Engine, batch: list[ArtworkRows], now: datetime = NOW) -> None:
    with db.writer(engine).begin() as conn:
        store.write_artworks(conn, batch, now)


def turn_on(engine: Engine, now: datetime = NOW) -> None:
    with db.writer(engine).begin() as conn:
        discover.turn_on(conn, now)


def table(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(files).order_by(files.c.artwork_id, files.c.role, files.c.position)))


@contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements sent meanwhile, with their parameters (None: an executemany)."""
    sent: list[tuple[str, Any]] = []

    def seen(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        sent.append((statement, parameters if not executemany else None))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", seen)


def key(row: Any) -> tuple[str, str, int]:
    return (row.artwork_id, row.role, row.position)


# ------------------------------------------------------------------ written with the artworks


def test_a_page_records_its_images_pending_in_one_statement(engine: Engine) -> None:
    batch = artworks(40, days=30)
    turn_on(engine)
    with statements(engine) as sent:
        write(engine, batch)
    writes = [s for s, p in sent if s.startswith("INSERT INTO archived_files")]
    assert len(writes) == 1 and len([s for s, _ in sent if "archived_files" in s]) == 1  # one a page
    stored = table(engine)
    expected = sorted(discover.image_rows(batch, NOW))
    assert sorted((r.artwork_id, r.role, r.position) for r in stored) == [e[:3] for e in expected]
    assert {r.status for r in stored} == {"pending"} and all(r.attempts == 0 for r in stored)
    by_id = {a.id: a for a in batch}
    for row in stored:
        created = datetime.fromisoformat(by_id[row.artwork_id].created_at)
        assert row.expires_at == created + RETENTION
        assert row.next_attempt_at == created  # due from its creation: the index's deadline order
        assert row.discovered_at == NOW
    inputs = {r.artwork_id for r in stored if r.role == "input"}
    assert inputs == {a.id for a in batch if a.parameters_table == "upscaling_parameters"}


def test_without_the_archive_a_sync_writes_no_image_row(engine: Engine) -> None:
    write(engine, artworks(30, days=3))
    assert table(engine) == []


def test_a_changed_artwork_gives_only_a_waiting_image_its_new_url(engine: Engine) -> None:
    batch = [a for a in artworks(30, days=3) if len(a.results) >= 3][:1]
    assert batch
    turn_on(engine)
    write(engine, batch)
    first, second, third = [r for r in table(engine) if r.role == "result"][:3]
    with db.writer(engine).begin() as conn:
        conn.execute(
            update(files)
            .where(files.c.position == second.position)
            .values(status="archived", next_attempt_at=None)
        )
        conn.execute(
            update(files)
            .where(files.c.position == third.position)
            .values(status="gone", next_attempt_at=None)
        )
    signed = batch[0]._replace(
        content_hash="changed",
        results=tuple((artwork_id, n, url + "?sig=2") for artwork_id, n, url in batch[0].results),
    )
    write(engine, [signed], NOW + timedelta(minutes=5))
    after = {r.position: r for r in table(engine) if r.role == "result"}
    assert after[first.position].url == first.url + "?sig=2"  # waiting: the new URL is the one fetched
    assert after[first.position].discovered_at == NOW  # the same row, not a new one
    assert after[second.position].url == second.url and after[second.position].status == "archived"
    assert after[third.position].url == third.url and after[third.position].status == "gone"


# ------------------------------------------------------------------ the walk


def test_an_archive_turned_on_late_walks_every_stored_artwork_newest_first_resumably(engine: Engine) -> None:
    stored = artworks(120, days=400)
    write(engine, stored)  # a year of history, synced without the archive
    turn_on(engine, NOW + timedelta(hours=1))
    later = artworks(10, days=1, seed=9, end=NOW + timedelta(hours=2))
    write(engine, later, NOW + timedelta(hours=2))  # written since: recorded by the write path
    with db.writer(engine).begin() as conn:
        assert discover.walk_step(conn, NOW + timedelta(hours=3), size=50) == 50
    with engine.connect() as conn:
        place = discover.load(conn)
    # Newest first, every stored artwork (those written since too: their rows stand).
    newest = sorted([*stored, *later], key=lambda a: (a.created_at, a.id), reverse=True)
    assert (place.walk_id, place.walked_at) == (newest[49].id, None)
    recorded = {r.artwork_id for r in table(engine)}
    assert recorded == {a.id for a in [*newest[:50], *later] if discover.image_rows([a], NOW)}

    stop = threading.Event()
    stop.set()  # a stop between steps: what was walked is kept, the walk resumes there
    assert discover.walk(engine, lambda: NOW + timedelta(hours=3), stop, size=50) == 0
    with engine.connect() as conn:
        assert discover.load(conn) == place
    assert discover.walk(engine, lambda: NOW + timedelta(hours=3), threading.Event(), size=50) == 80
    with engine.connect() as conn:
        assert discover.load(conn).complete
    expected = sorted(r[:4] for r in discover.image_rows([*stored, *later], NOW))
    assert sorted((r.artwork_id, r.role, r.position, r.url) for r in table(engine)) == expected
    assert discover.walk(engine, lambda: NOW, threading.Event()) == 0  # once


# ------------------------------------------------------------------ what is due, and in which order


def test_live_deadlines_go_first_then_history_newest_first(engine: Engine) -> None:
    batch = artworks(60, days=60)
    turn_on(engine)
    write(engine, batch)
    with db.writer(engine).begin() as conn:  # a few failed ones, due again, live and past
        failed = conn.execute(select(files.c.artwork_id).distinct().limit(6)).scalars().all()
        conn.execute(
            update(files)
            .where(files.c.artwork_id.in_(failed))
            .values(status="failed", attempts=1, next_attempt_at=NOW - timedelta(minutes=1))
        )
    with engine.connect() as conn:
        order = rows.due(conn, NOW, 10_000)
    assert len(order) == len(table(engine))
    live = [d.expires_at for d in order if d.expires_at > NOW]
    history = [d.expires_at for d in order if d.expires_at <= NOW]
    assert live and history and order[: len(live)] == [d for d in order if d.expires_at > NOW]
    assert live == sorted(live) and history == sorted(history, reverse=True)
    with engine.connect() as conn:  # in batches, the same order
        assert rows.due(conn, NOW, 7) == order[:7]


def test_what_failed_during_a_run_waits_for_the_next_one(engine: Engine) -> None:
    turn_on(engine)
    write(engine, artworks(5, days=2))
    with db.writer(engine).begin() as conn:
        conn.execute(update(files).values(status="failed", next_attempt_at=NOW + timedelta(seconds=30)))
    with engine.connect() as conn:
        assert rows.due(conn, NOW + timedelta(minutes=1), 100, failed_before=NOW) == []
        assert rows.due_count(conn, NOW + timedelta(minutes=1), failed_before=NOW) == 0
        assert len(rows.due(conn, NOW + timedelta(minutes=1), 100)) == len(table(engine))


def test_the_lag_is_the_oldest_image_not_archived_or_the_oldest_artwork_not_walked(engine: Engine) -> None:
    batch = artworks(30, days=20)
    write(engine, batch)
    oldest = min(datetime.fromisoformat(a.created_at) for a in batch)
    with engine.connect() as conn:  # never on: every stored artwork waits
        assert rows.oldest_waiting_expiry(conn) == oldest + RETENTION
    turn_on(engine)
    discover.walk(engine, lambda: NOW, threading.Event())
    with db.writer(engine).begin() as conn:  # everything older than 5 days archived
        conn.execute(
            update(files)
            .where(files.c.expires_at < NOW + RETENTION - timedelta(days=5))
            .values(status="archived", next_attempt_at=None)
        )
    pending = [r.expires_at for r in table(engine) if r.status == "pending"]
    with engine.connect() as conn:
        assert rows.oldest_waiting_expiry(conn) == min(pending)


def test_a_look_with_nothing_to_do_is_the_same_few_index_probes_at_any_size(engine: Engine) -> None:
    def look() -> list[tuple[str, Any]]:
        with statements(engine) as sent, engine.connect() as conn:
            assert rows.due(conn, NOW, 256, failed_before=NOW) == []
            rows.oldest_waiting_expiry(conn)
            rows.waiting_counts(conn)
        return sent

    turn_on(engine)
    looks = []
    for count, seed in ((20, 1), (400, 2)):
        write(engine, artworks(count, days=30, seed=seed))
        discover.walk(engine, lambda: NOW, threading.Event())
        with db.writer(engine).begin() as conn:
            conn.execute(update(files).values(status="archived", next_attempt_at=None))
        looks.append(look())
    assert [s for s, _ in looks[0]] == [s for s, _ in looks[1]] and len(looks[0]) <= 10  # O(1) queries
    with engine.connect() as conn:
        for sql, params in looks[1]:
            if "archived_files" in sql:
                plan = explain(conn, sql, params)
                assert "archived_files" in plan and "index" in plan.lower(), (sql, plan)
                assert "SCAN archived_files" not in plan and "Seq Scan" not in plan, (sql, plan)


def explain(conn: Any, sql: str, params: Any) -> str:
    """The plan of a statement sent, with its own parameters; on PostgreSQL
    with sequential scans off (its tables are tiny here): can it use an index?"""
    if conn.dialect.name == "sqlite":
        return " ".join(str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
    conn.exec_driver_sql("SET enable_seqscan = off")
    try:
        return " ".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + sql, params))
    finally:
        conn.exec_driver_sql("SET enable_seqscan = on")


def test_the_walk_s_rows_are_the_write_path_s(engine: Engine) -> None:
    batch = artworks(50, days=90)
    write(engine, batch)
    turn_on(engine)
    discover.walk(engine, lambda: NOW, threading.Event())

    def recorded() -> list[tuple[Any, ...]]:
        return sorted(tuple(getattr(r, c) for c in discover.IMAGE_COLUMNS) for r in table(engine))

    walked = recorded()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM archived_files"))
    write(engine, [a._replace(content_hash="again") for a in batch])  # rewritten: the write path's rows
    assert walked == recorded() and walked
    assert {FileStatus.PENDING.value} == {r[4] for r in walked}
