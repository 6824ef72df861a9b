"""A page answered short in the middle of the list is not its end (against the fake API, both databases)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, select

from syncd import store
from syncd.app import SyncOptions, run_once
from syncd.fakeapi.server import FakeServer, Faults
from syncd.state import RunSummary
from tests.conftest import make_settings, run_cli, syncd_env


def stored_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(store.artworks.c.id)).scalars())


def state(engine: Engine) -> object:
    with engine.connect() as conn:
        return conn.execute(select(store.state_table)).one()


def sync(server: FakeServer, db_url: str, *, full: bool = False) -> RunSummary:
    return run_once(make_settings(server.url, db_url, page_size="50"), SyncOptions(full=full)).summaries[0]


def test_a_short_page_mid_list_ends_no_backfill_and_marks_nothing(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """The issue's server: limit - 7 items for any skip in 300-349, page size
    50, 1,000 artworks. A backfill stopped at 485; two full scans then marked
    414 live artworks deleted, and listed_total fell to 386 without a word."""
    faults = Faults(short_from=300, short_to=349, short_by=7)
    server = fake_api(1000, faults=faults, malformed_fraction=0, unknown_fraction=0)
    result = run_cli(["run-once"], syncd_env(server.url, db_url, page_size="50"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    every = {a.id for a in server.api.dataset.items}
    assert stored_ids(engine) == every
    assert state(engine).listed_total == 1000  # type: ignore[attr-defined]
    for _ in range(2):
        summary = sync(server, db_url, full=True)
        assert summary.counts.marked_deleted == 0 and summary.deletions_withheld is None
    with engine.connect() as conn:
        marked = conn.execute(
            select(store.artworks.c.id).where(store.artworks.c.remote_deleted_at.is_not(None))
        ).all()
    assert marked == []
    assert state(engine).listed_total == 1000  # type: ignore[attr-defined]


def test_a_short_page_among_new_artworks_ends_no_incremental_run(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    server = fake_api(500, malformed_fraction=0, unknown_fraction=0)
    sync(server, db_url)
    added = server.api.dataset.add(300)
    server.api.faults.update({"short_from": 100, "short_to": 149, "short_by": 7})
    summary = sync(server, db_url)
    assert summary.mode == "incremental"
    assert {a.id for a in added} <= stored_ids(engine)


def test_the_end_of_the_list_is_asked_twice_and_a_noop_run_once(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    """The end is proven by a second request (from a quarter page before the
    last artwork); a newest-first run with nothing new is still one request."""
    server = fake_api(1000, malformed_fraction=0, unknown_fraction=0)
    server.api.reset_stats()
    sync(server, db_url)
    pages = -(-(1000 - 1) // 49)  # each page after the first overlaps the one before by one
    assert server.api.stats.list_requests <= pages + 1 + 1  # + the proof, + one asked ahead at most
    assert (1000 - 1 - 50 // 4, 50) in server.api.list_log  # from a quarter page before the last
    server.api.reset_stats()
    summary = sync(server, db_url)
    assert summary.mode == "incremental" and server.api.stats.list_requests == 1
