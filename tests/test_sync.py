"""Incremental sync against the fake API over a socket: budgets, shifts, refresh, reconciliation, crash."""

from __future__ import annotations

import math
import os
import re
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from syncd import db, store
from syncd.app import SyncOptions, make_client, run_once
from syncd.errors import DatabaseError, Interrupted
from syncd.fakeapi.data import Dataset
from syncd.fakeapi.server import FakeServer, Faults
from syncd.state import Counts, Mode, RunSummary
from syncd.sync.engine import Syncer
from syncd.sync.pages import ListedPage, PageWriter
from syncd.sync.runs import RunRecord
from tests.conftest import backdate_checks, make_settings, run_cli, start_syncd, syncd_env, wait_for

L = 100


def sync(
    server: FakeServer, db_url: str, *, full: bool = False, page_size: int = L
) -> tuple[RunSummary, int]:
    """One in-process run; returns its list-run summary and the list requests it made."""
    server.api.reset_stats()
    summaries = run_once(
        make_settings(server.url, db_url, page_size=str(page_size)), SyncOptions(full=full)
    ).summaries
    return summaries[0], server.api.stats.list_requests


def stored_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(store.artworks.c.id)).scalars())


def marked_deleted(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        query = select(store.artworks.c.id).where(store.artworks.c.remote_deleted_at.is_not(None))
        return set(conn.execute(query).scalars())


def valid_ids(server: FakeServer) -> set[str]:
    return {a.id for a in server.api.dataset.valid() if a.id}


@pytest.fixture
def clean(fake_api: Callable[..., FakeServer]) -> Callable[..., FakeServer]:
    """A fake with only well-formed records, so set comparisons are exact."""

    def start(count: int, order: str = "newest_first", **faults: object) -> FakeServer:
        return fake_api(
            count, faults=Faults(order=order, **faults), malformed_fraction=0, unknown_fraction=0.02
        )  # type: ignore[arg-type]

    return start


@pytest.mark.parametrize("order", ["newest_first", "oldest_first"])
def test_budget_table(order: str, db_url: str, engine: Engine, clean: Callable[..., FakeServer]) -> None:
    server = clean(1500, order)
    summary, _ = sync(server, db_url)
    assert summary.mode == "backfill" and summary.list_order == order
    total = 1500

    # nothing new
    summary, requests = sync(server, db_url)
    assert summary.mode == "incremental"
    assert requests <= (1 if order == "newest_first" else 2)

    # N new
    new = 250
    added = server.api.dataset.add(new)
    total += new
    _, requests = sync(server, db_url)
    budget = math.ceil(new / L) + (1 if order == "newest_first" else 2)
    assert requests <= budget
    assert {a.id for a in added} <= stored_ids(engine)

    if order == "oldest_first":
        # the oldest deleted since the last run, and N new
        server.api.dataset.delete_oldest(900)
        total -= 900
        added = server.api.dataset.add(130)
        total += 130
        _, requests = sync(server, db_url)
        budget = math.ceil(130 / L) + math.ceil(math.log2(total / L)) + 3
        assert requests <= budget, server.api.list_log
        assert {a.id for a in added} <= stored_ids(engine)
    assert valid_ids(server) <= stored_ids(engine)


@pytest.mark.parametrize("order", ["newest_first", "oldest_first", "random"])
def test_artworks_created_and_deleted_while_paging(
    order: str, db_url: str, engine: Engine, clean: Callable[..., FakeServer]
) -> None:
    server = clean(1200, order, add_per_request=3, delete_oldest_per_request=1)
    present_throughout = valid_ids(server)
    sync(server, db_url)
    present_throughout &= valid_ids(server)
    server.api.faults.add_per_request = 0
    server.api.faults.delete_oldest_per_request = 0
    sync(server, db_url)
    stored = stored_ids(engine)
    valid_now = valid_ids(server)
    served_valid = {
        i for i in server.api.served if i in valid_now or server.api.dataset.ever[i].malformed is None
    }
    # Exactly the artworks the API ever listed: nothing missing, nothing extra.
    assert stored == served_valid
    assert present_throughout <= stored and valid_now <= stored
    with engine.connect() as conn:
        rows = conn.execute(select(store.artworks.c.id)).all()
    assert len(rows) == len(stored)


def test_pending_artworks_are_refreshed_until_terminal(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    server = fake_api(300, pending_fraction=0.2, malformed_fraction=0, unknown_fraction=0)
    sync(server, db_url)
    pending = [a for a in server.api.dataset.items if a.pending]
    assert pending
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(store.artworks.c.id, store.artworks.c.status)).all())
    assert {statuses[a.id] for a in pending} == {"processing"}

    gone = pending[0]
    server.api.dataset.items.remove(gone)  # deleted before it finished
    server.api.dataset.finish_pending()
    backdate_checks(engine)  # a day later: every unfinished artwork is due a re-check
    summaries = run_once(make_settings(server.url, db_url, page_size=str(L))).summaries
    listed, refresh = summaries
    # Pending artworks on the first list page are updated by the list read,
    # the rest by the refresh that follows it.
    assert refresh.mode == "refresh"
    assert listed.counts.updated + refresh.counts.updated == len(pending) - 1
    assert refresh.counts.marked_deleted == 1
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(store.artworks))}
        results = conn.execute(select(store.results_table.c.artwork_id)).scalars().all()
    for artwork in pending[1:]:
        assert rows[artwork.id].status == "done"
        assert artwork.value["results"] == [] or artwork.id in results
    assert rows[gone.id].remote_deleted_at is not None
    # Nothing left to refresh: the next run makes no single-artwork request.
    backdate_checks(engine)
    server.api.reset_stats()
    run_once(make_settings(server.url, db_url, page_size=str(L)))
    assert server.api.stats.get_requests == 0


def test_full_reconciliation_marks_and_unmarks_deleted(
    db_url: str, engine: Engine, clean: Callable[..., FakeServer]
) -> None:
    server = clean(400)
    sync(server, db_url)
    removed = server.api.dataset.delete_oldest(25)
    summary, requests = sync(server, db_url, full=True)
    assert summary.mode == "full" and summary.counts.marked_deleted == 25
    assert requests >= math.ceil(375 / L)
    assert marked_deleted(engine) == {a.id for a in removed}
    assert len(stored_ids(engine)) == 400  # local rows are never deleted
    # One comes back: its mark is cleared by the next full sync.
    server.api.dataset.items.insert(0, removed[0])
    summary, _ = sync(server, db_url, full=True)
    with engine.connect() as conn:
        row = conn.execute(select(store.artworks).where(store.artworks.c.id == removed[0].id)).one()
    assert row.remote_deleted_at is None


def test_unordered_list_is_read_in_full_every_run(
    db_url: str, engine: Engine, clean: Callable[..., FakeServer]
) -> None:
    server = clean(350, "random")
    summary, _ = sync(server, db_url)
    assert summary.list_order == "unordered"
    summary, requests = sync(server, db_url)
    assert summary.mode == "full" and requests >= math.ceil(350 / L)


@pytest.mark.parametrize("order", ["newest_first", "oldest_first"])
def test_sigkill_mid_backfill_then_resume(
    order: str, db_url: str, engine: Engine, clean: Callable[..., FakeServer], tmp_path: Path
) -> None:
    total = 3000
    in_flight = 4
    server = clean(total, order)

    # From the tenth list request on, the API answers nothing: the kill finds
    # the backfill unfinished and requests in flight, however fast it goes.
    def hang_after(number: int) -> None:
        if number == 10:
            server.api.hold()

    server.api.before_list = hang_after
    env = syncd_env(server.url, db_url, page_size=str(L), max_in_flight=str(in_flight))
    process = start_syncd(["run-once"], env, tmp_path)

    def cursor() -> int:
        with engine.connect() as conn:
            value = conn.execute(select(store.state_table.c.cursor_skip)).scalar()
        return int(value or 0)

    try:
        wait_for(lambda: cursor() >= 8 * L and server.api.held > 0, 60, "eight committed pages, then a hang")
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate()
        server.api.before_list = None
        server.api.release()
    # The held requests answer the dead process; then the counts start again.
    wait_for(lambda: server.api.in_flight == 0, 30, "the held requests to be answered")
    committed_at = cursor()
    assert 0 < committed_at < total
    uncommitted_pages = math.ceil((total - committed_at) / L)

    server.api.reset_stats()
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # The documented budget: the pages not committed, 2 to find the cursor
    # again, and the pages asked ahead past the end of the list (answered empty).
    budget = uncommitted_pages + 2 + (in_flight - 1)
    assert server.api.stats.list_requests <= budget, server.api.list_log
    assert stored_ids(engine) == valid_ids(server)
    with engine.connect() as conn:
        outcomes = conn.execute(
            select(store.runs_table.c.mode, store.runs_table.c.outcome).order_by(store.runs_table.c.id)
        ).all()
    assert [tuple(o) for o in outcomes] == [("backfill", "crashed"), ("backfill", "success")]


def test_kill_during_a_page_write_leaves_no_half_page(
    db_url: str, engine: Engine, clean: Callable[..., FakeServer]
) -> None:
    """The cursor and the rows move together: every committed cursor covers stored rows."""
    server = clean(900)
    sync(server, db_url)
    with engine.connect() as conn:
        state = conn.execute(select(store.state_table)).one()
        count = len(conn.execute(select(store.artworks.c.id)).all())
    assert state.phase == "idle" and state.listed_total == 900 and count == len(valid_ids(server))
    assert db.schema_version(engine).up_to_date


def test_a_noop_run_is_one_list_request_with_bad_records_on_the_newest_page(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(1000, malformed_fraction=0.01, unknown_fraction=0.02)
    newest = server.api.dataset.items[-L:]
    for artwork, kind in zip(newest[-3:], ("bad_uuid", "bad_created_at", "not_an_object"), strict=True):
        Dataset._break(artwork, kind)
    newest[-4].value["artworkType"] = "selena"
    env = syncd_env(server.url, db_url, page_size=str(L))
    assert run_cli(["run-once"], env, cwd=tmp_path).returncode == 0
    server.api.reset_stats()
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert server.api.stats.list_requests == 1 and server.api.stats.requests == 1
    with engine.connect() as conn:
        last = conn.execute(select(store.runs_table).order_by(store.runs_table.c.id.desc())).first()
    assert last is not None
    assert (last.mode, last.outcome, last.requests, last.pages) == ("incremental", "success", 1, 1)
    assert last.rejected >= 3 and last.unknown_type >= 1


class FailingWrites:
    """store.write_page, failing at its ``fail_at``-th call."""

    def __init__(self, fail_at: int, error: BaseException) -> None:
        self.calls = 0
        self.fail_at = fail_at
        self.error = error
        self.write_page = store.write_page

    def __call__(self, *args: Any, **kwargs: Any) -> Counts:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        return self.write_page(*args, **kwargs)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [(RuntimeError("the disk caught fire"), "failed"), (Interrupted("stopped"), "interrupted")],
)
def test_the_runs_counts_are_what_was_committed(
    db_url: str,
    engine: Engine,
    clean: Callable[..., FakeServer],
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    outcome: str,
) -> None:
    server = clean(2000)
    monkeypatch.setattr(store, "write_page", FailingWrites(9, error))
    settings = make_settings(server.url, db_url, page_size=str(L))
    with make_client(settings) as client:
        # Commits every 4th page: the failure finds pages written and not committed.
        syncer = Syncer(engine, client, L, commit_seconds=3600)
        commits: list[int] = []
        original = PageWriter.write

        def write_and_commit_every_fourth(self: PageWriter, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            if self.run.counts.pages % 4 == 0:
                self.commit()
                commits.append(self.run.counts.pages)

        monkeypatch.setattr(PageWriter, "write", write_and_commit_every_fourth)
        with pytest.raises(type(error)):
            syncer.sync()
    assert commits == [4, 8]
    with engine.connect() as conn:
        run = conn.execute(select(store.runs_table)).one()
        stored = len(conn.execute(select(store.artworks.c.id)).all())
    assert run.outcome == outcome
    # An interruption keeps the pages written whole (8); a failure rolls back to the last commit (8 too).
    assert (run.pages, run.inserted) == (8, stored) and stored == 8 * L - 7
    assert run.requests >= 9


def test_an_artwork_that_moves_ahead_of_a_full_scan_is_not_marked_deleted(
    db_url: str, engine: Engine, clean: Callable[..., FakeServer]
) -> None:
    server = clean(300)
    sync(server, db_url)
    items = server.api.dataset.items
    moved = items[0]

    def move_the_oldest_to_the_front(request: int) -> None:
        if request == 2:  # after the first page was read: it jumps into what was read
            items.append(items.pop(0))

    def seen(artwork_id: str | None) -> Any:
        with engine.connect() as conn:
            return conn.execute(
                select(store.artworks.c.last_seen_at).where(store.artworks.c.id == artwork_id)
            ).scalar_one()

    before = seen(moved.id)
    server.api.before_list = move_the_oldest_to_the_front
    summary, _ = sync(server, db_url, full=True)
    assert seen(moved.id) > before  # seen again: by its GET
    assert summary.mode == "full" and summary.counts.marked_deleted == 0
    assert server.api.stats.get_requests == 1  # missed by the scan: asked for by id, found
    assert marked_deleted(engine) == set()


def test_deletions_beyond_the_checks_wait_for_a_second_scan(
    db_url: str, engine: Engine, clean: Callable[..., FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd.sync import engine as sync_engine

    monkeypatch.setattr(sync_engine, "DELETION_CHECKS", 5)
    server = clean(400)
    sync(server, db_url)
    removed = server.api.dataset.delete_oldest(20)
    first, _ = sync(server, db_url, full=True)
    assert first.counts.marked_deleted == 5 and server.api.stats.get_requests == 5  # each a 404
    second, _ = sync(server, db_url, full=True)
    # Missed by two complete scans: marked; five of them asked for by id first
    # (each scan checks what it missed: had one answered, nothing would be marked).
    assert second.counts.marked_deleted == 15 and server.api.stats.get_requests == 5
    assert marked_deleted(engine) == {a.id for a in removed}


def refuse_in_the_database(engine: Engine, artwork_id: str | None) -> None:
    """A trigger that makes the database refuse one artwork's row (every row when None)."""
    condition = "TRUE" if artwork_id is None else f"NEW.id = '{artwork_id}'"
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            condition = "1" if artwork_id is None else condition
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE INSERT ON artworks WHEN {condition} "
                "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                f"IF {condition} THEN RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = 'check_violation'; "
                "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON artworks FOR EACH ROW EXECUTE FUNCTION refuse()"
            )


def test_a_record_the_database_refuses_is_quarantined_and_the_rest_written(
    db_url: str, engine: Engine, clean: Callable[..., FakeServer]
) -> None:
    server = clean(450)
    victim = server.api.dataset.valid()[200]
    refuse_in_the_database(engine, victim.id)
    summary, _ = sync(server, db_url)
    assert summary.outcome == "success" and summary.counts.rejected == 1
    assert stored_ids(engine) == valid_ids(server) - {victim.id}
    with engine.connect() as conn:
        quarantined = conn.execute(select(store.rejected_table)).one()
        run = conn.execute(select(store.runs_table)).one()
    assert quarantined.artwork_id == victim.id
    assert (
        "the database refused it" in quarantined.reason and "refused by a test trigger" in quarantined.reason
    )
    assert run.inserted == len(valid_ids(server)) - 1


def test_a_database_that_refuses_every_record_fails_the_run_with_exit_6(
    db_url: str, engine: Engine, clean: Callable[..., FakeServer]
) -> None:
    server = clean(150)
    refuse_in_the_database(engine, None)
    with pytest.raises(DatabaseError, match="refused by a test trigger"):
        sync(server, db_url)
    with engine.connect() as conn:
        assert conn.execute(select(store.rejected_table)).all() == []
        assert conn.execute(select(store.runs_table.c.outcome)).scalar() == "failed"


def test_a_refused_record_rewinds_to_the_committed_cursor_and_loses_nothing(
    db_url: str, engine: Engine, clean: Callable[..., FakeServer]
) -> None:
    server = clean(1000)
    victim = server.api.dataset.items[-450]  # on the fifth page of the newest-first list
    refuse_in_the_database(engine, victim.id)
    # One request at a time: the count of requests below is exact.
    settings = make_settings(server.url, db_url, page_size=str(L), max_in_flight="1")
    with make_client(settings) as client:
        summary = Syncer(engine, client, L, commit_seconds=0).sync()  # a commit after every page
    assert summary.outcome == "success" and summary.counts.rejected == 1
    assert stored_ids(engine) == valid_ids(server) - {victim.id}
    # Read again from the last committed page: one page more than the list has,
    # at most two, and one to confirm the end.
    assert math.ceil(1000 / (L - 1)) < server.api.stats.list_requests <= math.ceil(1000 / (L - 1)) + 3
    with engine.connect() as conn:
        run = conn.execute(select(store.runs_table)).one()
        state = conn.execute(select(store.state_table)).one()
    assert run.inserted == len(valid_ids(server)) - 1 and run.rejected == 1
    assert state.phase == "idle" and state.listed_total == 1000


def test_a_page_fetched_ahead_and_not_used_adds_only_artworks_not_stored(engine: Engine) -> None:
    """A stray page (sent ahead, then not wanted) may be older than a page
    written since: it inserts the artworks it lists that are not stored yet,
    and overwrites nothing, and moves no cursor."""
    dataset = Dataset(3, seed=5, malformed_fraction=0, unknown_fraction=0, pending_fraction=0)
    known, updated_elsewhere, new = (a.value for a in dataset.items)
    assert isinstance(known, dict) and isinstance(new, dict)
    older = dict(known, status="processing")  # what the stray saw, before the list moved
    fresh_at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    with db.writer(engine).begin() as conn:
        run = RunRecord(
            store.start_run(conn, stream="artworks", mode="backfill", now=fresh_at), Mode.BACKFILL, 0
        )
    pages = PageWriter(db.writer(engine), run, lambda: 0, ())
    try:
        pages.write(
            ListedPage.read([known, updated_elsewhere], fresh_at), None
        )  # as if written by a wanted page
        pages.commit()
        pages.write(ListedPage.read([older, new], fresh_at - timedelta(seconds=1)), None)
        pages.commit()
    finally:
        pages.close()
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(store.artworks.c.id, store.artworks.c.status)).all())
        cursor = conn.execute(select(store.state_table.c.cursor_skip)).scalar()
    assert statuses[known["id"]] == known["status"] != "processing"
    assert new["id"] in statuses
    assert cursor is None  # no sync state was written: strays move nothing


def test_a_list_that_grows_faster_than_it_is_read_is_said_in_the_log(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """40 new artworks before every request for a page of 20: the scan cannot
    prove its place. The run says so (docs/sync-algorithm.md, "Limits")."""
    server = fake_api(1000, faults=Faults(add_per_request=40), malformed_fraction=0)
    env = syncd_env(server.url, sqlite_url, page_size="20")
    result = run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "the list shifted more than syncd can follow; nothing is marked deleted" in result.stderr
    assert re.search(r"marked deleted +0\n", result.stdout), result.stdout


def test_the_daemons_refresh_keeps_the_quiet_the_api_asked_for(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    """A Retry-After persisted by an earlier run: the daemon's next refresh (a new
    client each tick) sends nothing before it, and waits for its next tick."""
    from syncd.app import sync_with
    from syncd.state import STREAM

    server = fake_api(300, pending_fraction=0.5, malformed_fraction=0)
    settings = make_settings(server.url, db_url, page_size=str(L))
    run_once(settings, SyncOptions(refresh=False))
    backdate_checks(engine)
    now = datetime.now(UTC)
    with db.writer(engine).begin() as conn:
        store.save_rate_limit(conn, STREAM, now + timedelta(seconds=300), now)
    server.api.reset_stats()
    outcome = sync_with(settings, engine, SyncOptions(list_run=False, refresh=True), refresh_seconds=5.0)
    assert outcome.summaries == [] and server.api.stats.requests == 0
    with db.writer(engine).begin() as conn:
        store.save_rate_limit(conn, STREAM, None, now)
    outcome = sync_with(settings, engine, SyncOptions(list_run=False, refresh=True), refresh_seconds=5.0)
    assert [s.mode for s in outcome.summaries] == ["refresh"] and server.api.stats.get_requests > 0


def test_new_artworks_above_a_head_dated_in_the_future_are_all_stored(
    db_url: str, engine: Engine, clean: Callable[..., FakeServer]
) -> None:
    """The hostile-API trial: the newest of 300 is dated 5 h ahead (inside the
    day syncd accepts); 60 artworks created now land above it, every one of
    them older than it. The incremental run used to stop at its first page
    (inserted 50) and exit 0, and no later incremental run found positions
    50-59."""
    server = clean(300)
    dataset = server.api.dataset
    dataset.date_ahead(dataset.items[-1], timedelta(hours=5))  # list position 0
    summary, _ = sync(server, db_url, page_size=50)
    assert summary.mode == "backfill" and valid_ids(server) <= stored_ids(engine)
    added = dataset.add(60, live=True)
    summary, _ = sync(server, db_url, page_size=50)
    assert summary.outcome == "success"
    assert {a.id for a in added} <= stored_ids(engine)
    assert valid_ids(server) <= stored_ids(engine)


def upper_case_ids(server: FakeServer) -> None:
    """The API lists every id in upper case, and GET /v1/artworks/{id} answers
    only that spelling: the lower-case copy syncd stores is 404 there."""
    server.api.faults.exact_id_case = True
    for artwork in server.api.dataset.items:
        artwork.value = dict(artwork.value, id=artwork.value["id"].upper())
        artwork._json = None


def test_unfinished_artworks_are_asked_for_as_the_api_spelled_their_ids(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """Stored in lower case, asked for in upper case as listed: refreshed, not
    marked deleted for the 404 a lower-case GET would get. A real 404 still marks."""
    server = fake_api(300, pending_fraction=0.2, malformed_fraction=0, unknown_fraction=0)
    upper_case_ids(server)
    env = syncd_env(server.url, db_url, page_size=str(L))
    result = run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pending = [a for a in server.api.dataset.items if a.pending]
    assert len(pending) > 2
    assert stored_ids(engine) == {a.value["id"].lower() for a in server.api.dataset.items}

    gone = pending[0]
    server.api.dataset.items.remove(gone)  # deleted before it finished
    server.api.dataset.finish_pending()
    backdate_checks(engine)  # a day later: every unfinished artwork is due a re-check
    server.api.reset_stats()
    server.api.get_log.clear()
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert marked_deleted(engine) == {gone.value["id"].lower()}
    asked = [artwork_id for _, artwork_id in server.api.get_log]
    assert asked and all(artwork_id == artwork_id.upper() for artwork_id in asked), asked
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(store.artworks.c.id, store.artworks.c.status)).all())
    assert {statuses[a.value["id"].lower()] for a in pending[1:]} == {"done"}


def test_a_404_for_an_artwork_an_answer_carried_minutes_ago_is_believed_only_after_the_grace(
    db_url: str, engine: Engine, clean: Callable[..., FakeServer]
) -> None:
    """The list carried it 30 s ago, GET by id says 404: the API contradicts
    itself, nothing is marked. Once no answer has carried it for
    DELETION_GRACE, the 404 is believed (docs/sync-algorithm.md, "Deletion")."""
    server = clean(50)
    server.api.dataset.add(3, pending=True, live=True)  # young: re-checked every 10 s
    settings = make_settings(server.url, db_url, page_size=str(L))
    run_once(settings, SyncOptions(refresh=False))
    gone = next(a for a in server.api.dataset.items if a.pending)
    server.api.dataset.items.remove(gone)
    backdate_checks(engine, hours=30 / 3600)  # last listed 30 s ago: due, well within the grace
    server.api.reset_stats()
    (refresh,) = run_once(settings, SyncOptions(list_run=False)).summaries
    assert server.api.stats.get_requests == 3
    assert refresh.counts.marked_deleted == 0 and marked_deleted(engine) == set()
    backdate_checks(engine, hours=1)  # nothing has carried it for an hour
    (refresh,) = run_once(settings, SyncOptions(list_run=False)).summaries
    assert refresh.counts.marked_deleted == 1 and marked_deleted(engine) == {gone.id}


def test_an_artwork_whose_404_was_not_believed_is_asked_again_after_the_grace(
    db_url: str, engine: Engine, clean: Callable[..., FakeServer]
) -> None:
    """Not every 10 s meanwhile: once, just after the grace, when its 404 is believed."""
    from syncd.sync.byid import DELETION_GRACE

    server = clean(50)
    server.api.dataset.add(3, pending=True, live=True)  # young: re-checked every 10 s
    clock = [datetime.now(UTC)]
    settings = make_settings(server.url, db_url, page_size=str(L))
    with make_client(settings) as client:
        syncer = Syncer(engine, client, settings.page_size, now=lambda: clock[0])
        syncer.sync()
        gone = next(a for a in server.api.dataset.items if a.pending)
        server.api.dataset.items.remove(gone)
        asked: list[set[str]] = []
        marked: list[int] = []
        for step in (30, 30, 30, DELETION_GRACE.total_seconds()):
            clock[0] += timedelta(seconds=step)
            server.api.get_log.clear()
            summary = syncer.refresh()
            asked.append({artwork_id for _, artwork_id in server.api.get_log})
            marked.append(summary.counts.marked_deleted if summary else 0)
    assert [gone.id in ids for ids in asked] == [True, False, False, True]
    assert marked == [0, 0, 0, 1] and marked_deleted(engine) == {gone.id}
