"""When a complete scan may mark what it missed as deleted, and never a listed artwork.

syncd is the only long-term copy: a false remote_deleted_at tells an analyst
an artwork is gone while the API still has it. The rules live in
syncd/sync/deletions.py (pure, tested first here); the rest runs the real
engine on both databases: against the fake API over a socket, and, for the
property test, against a list that churns between requests with the pages'
requests run in a shuffled order (syncd.net.inflight replaced by an
executor that runs them in the test's thread, deterministically).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text

from syncd import db, store
from syncd.api.client import ApiClient, ClientOptions
from syncd.app import make_client
from syncd.config import Secret, Settings
from syncd.fakeapi.data import Dataset
from syncd.fakeapi.server import FakeServer
from syncd.records import classify_page
from syncd.state import Misses, Mode, StreamState
from syncd.sync import context as sync_context
from syncd.sync.deletions import Checks, Withheld, believed_share, judge
from syncd.sync.engine import Syncer
from syncd.sync.pages import ListedPage, PageWriter
from syncd.sync.runs import RunRecord
from tests.conftest import make_settings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


# ------------------------------------------------------------------ the rules


def test_a_scan_whose_checks_find_a_missed_artwork_alive_is_not_believed() -> None:
    verdict = judge(Misses(live=1000, missed=3, last_seen=NOW), Checks(asked=3, alive=1, gone=2), NOW)
    assert verdict.withheld == Withheld.INCOMPLETE
    assert "1 of the 3 artworks it missed" in verdict.reason


@pytest.mark.parametrize(
    ("missed", "days", "believed"),
    [
        (250, 0, True),  # a quarter: believed at once
        (251, 0, False),
        (370, 1, True),  # a quarter and an eighth, a day after they were last seen
        (400, 1, False),
        (990, 6, True),  # six days: any shrink (the API deletes after eight)
    ],
)
def test_a_shrink_is_believed_up_to_a_quarter_and_an_eighth_a_day(
    missed: int, days: int, believed: bool
) -> None:
    misses = Misses(live=1000, missed=missed, last_seen=NOW - timedelta(days=days))
    verdict = judge(misses, Checks(asked=200, alive=0, gone=200), NOW)
    assert verdict.believed is believed
    if not believed:
        assert verdict.withheld == Withheld.SHRANK and f"{missed:,} of the 1,000" in verdict.reason


def test_nothing_missed_is_nothing_to_withhold() -> None:
    assert judge(Misses(live=0, missed=0, last_seen=None), Checks(0, 0, 0), NOW).believed
    assert judge(Misses(live=10, missed=0, last_seen=None), Checks(0, 0, 0), NOW).believed
    assert believed_share(0) == 0.25 and believed_share(8) == 1.0


# ------------------------------------------------------------------ against the fake API


def marked(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        query = select(store.artworks.c.id).where(store.artworks.c.remote_deleted_at.is_not(None))
        return set(conn.execute(query).scalars())


def test_a_scan_that_misses_listed_artworks_marks_none_of_them(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], caplog: pytest.LogCaptureFixture
) -> None:
    """The list leaves out 300 of 600 artworks that GET by id still serves (a
    replica behind, items filtered after paging). Two full scans used to mark
    the 100 that the first scan's 200 checks did not reach deleted (missed by
    both), although every check had found an artwork alive."""
    server = fake_api(600, malformed_fraction=0, unknown_fraction=0)
    settings_ = make_settings(server.url, db_url, page_size="50")
    with sync_engine_for(settings_, engine) as syncer:
        syncer.sync()
        server.api.faults.hidden = 300
        caplog.set_level(logging.WARNING, logger="syncd.sync.engine")
        for _ in range(2):
            summary = syncer.sync(full=True)
            assert summary.deletions_withheld == Withheld.INCOMPLETE
            assert summary.counts.marked_deleted == 0
    assert marked(engine) == set()
    warnings = [r.getMessage() for r in caplog.records if "nothing is marked deleted" in r.getMessage()]
    assert len(warnings) == 2 and "exist: the scan did not see the whole list" in warnings[0]


def test_the_missed_are_checked_by_id_as_the_api_spelled_them(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    """An API that lists ids in upper case and answers GET only for that
    spelling: the artworks a full scan missed are asked for in upper case,
    found alive, and nothing is marked (a lower-case GET's 404 marked them)."""
    server = fake_api(600, malformed_fraction=0, unknown_fraction=0)
    server.api.faults.exact_id_case = True
    for artwork in server.api.dataset.items:
        artwork.value = dict(artwork.value, id=artwork.value["id"].upper())
        artwork._json = None
    settings_ = make_settings(server.url, db_url, page_size="50")
    with sync_engine_for(settings_, engine) as syncer:
        syncer.sync()
        server.api.faults.hidden = 10  # a few the list leaves out: a sane shrink, were they gone
        server.api.get_log.clear()
        summary = syncer.sync(full=True)
    assert summary.deletions_withheld == Withheld.INCOMPLETE
    assert marked(engine) == set() and summary.counts.marked_deleted == 0
    asked = {artwork_id for _, artwork_id in server.api.get_log}
    assert asked == {a.value["id"] for a in server.api.dataset.items[:10]}


def test_a_list_that_shrank_too_fast_is_believed_only_when_the_days_explain_it(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    """Half the artworks gone within an hour (another account's key, a broken
    list): withheld. Three days on, retention can explain it: marked."""
    server = fake_api(400, malformed_fraction=0, unknown_fraction=0)
    clock = [NOW]
    settings_ = make_settings(server.url, db_url, page_size="50")
    with sync_engine_for(settings_, engine, now=lambda: clock[0]) as syncer:
        syncer.sync()
        removed = {a.id for a in server.api.dataset.delete_oldest(200)}  # 404 by id too
        clock[0] += timedelta(hours=1)
        summary = syncer.sync(full=True)
        assert summary.deletions_withheld == Withheld.SHRANK and marked(engine) == set()
        clock[0] += timedelta(days=3)
        summary = syncer.sync(full=True)
    assert summary.deletions_withheld is None
    assert marked(engine) == removed and summary.counts.marked_deleted == 200


@pytest.fixture
def scrambled(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], list[int]]:
    """Requests run in the engine's thread, in a shuffled order (seeded), when
    the engine waits for one of them: deterministic pages answered out of
    order. Returns a setter for the seed; the list it returns counts, per
    run order, how many requests ran before one sent earlier (out of order)."""
    state: dict[str, Any] = {"rng": random.Random(0), "out_of_order": [0]}

    class Lazy(Future[Any]):
        def __init__(self, executor: Scrambled) -> None:
            super().__init__()
            self.executor = executor

        def result(self, timeout: float | None = None) -> Any:
            if not self.done():
                self.executor.run_until(self)
            return super().result(timeout)

    class Scrambled:
        def __init__(self, workers: int = 1, *, name: str = "") -> None:
            self.pending: list[tuple[int, Lazy, Callable[..., Any], tuple[Any, ...]]] = []
            self.sent = 0

        def submit(self, call: Callable[..., Any], *args: Any) -> Future[Any]:
            future = Lazy(self)
            self.pending.append((self.sent, future, call, args))
            self.sent += 1
            return future

        def run_until(self, needed: Lazy) -> None:
            while not needed.done() and self.pending:
                # The first time several wait, the one sent last runs first: each
                # example has pages answered out of order; then any order.
                if len(self.pending) > 1 and not state["out_of_order"][0]:
                    index = len(self.pending) - 1
                else:
                    index = state["rng"].randrange(len(self.pending))
                number, future, call, args = self.pending.pop(index)
                if any(other < number for other, *_ in self.pending):
                    state["out_of_order"][0] += 1
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(call(*args))
                except BaseException as exc:  # handed to whoever awaits it, as InFlight does
                    future.set_exception(exc)

        def close(self) -> None:
            for _, future, _, _ in self.pending:
                future.cancel()
            self.pending.clear()

    monkeypatch.setattr(sync_context, "InFlight", Scrambled)

    def seed(value: int) -> list[int]:
        state["rng"] = random.Random(value)
        state["out_of_order"] = [0]
        return state["out_of_order"]

    return seed


class ChurningList:
    """The fake's dataset behind an httpx MockTransport: before each list
    request, artworks are created (now) and deleted (anywhere in the list)."""

    def __init__(self, dataset: Dataset, rng: random.Random, adds: int, deletes: int) -> None:
        self.dataset, self.rng, self.adds, self.deletes = dataset, rng, adds, deletes
        self.churning = False
        self.deleted: set[str] = set()

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/artworks":
            if self.churning:
                self.dataset.add(self.rng.randint(0, self.adds), live=True)
                for _ in range(self.rng.randint(0, self.deletes)):
                    if self.dataset.items:
                        gone = self.dataset.items.pop(self.rng.randrange(len(self.dataset.items)))
                        self.deleted.add(str(gone.id))
            skip, limit = int(request.url.params["skip"]), int(request.url.params["limit"])
            page = self.dataset.page("newest_first", skip, limit)
            return httpx.Response(200, content=b"[" + b",".join(a.json() for a in page) + b"]")
        artwork = self.dataset.find(path.rsplit("/", 1)[-1])
        if artwork is None:
            return httpx.Response(404, content=orjson.dumps({"message": "Artwork not found"}))
        return httpx.Response(200, content=artwork.json())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    total=st.integers(150, 400),
    page_size=st.integers(10, 40),  # pages enough for several in flight
    adds=st.integers(0, 3),
    deletes=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_property_churn_and_pages_answered_out_of_order_mark_no_listed_artwork_deleted(
    engine: Engine,
    scrambled: Callable[[int], list[int]],
    total: int,
    page_size: int,
    adds: int,
    deletes: int,
    seed: int,
) -> None:
    """One listed artwork was once marked deleted after two --full scans on a
    list with random inserts and deletes and 8 pages in flight. Here: a
    backfill, then two full scans while the list churns, every request run in
    a shuffled order; no artwork that was never deleted may be marked, and
    every one of them is stored."""
    clear(engine)
    out_of_order = scrambled(seed)
    rng = random.Random(seed)
    dataset = Dataset(total, seed, malformed_fraction=0, unknown_fraction=0)
    api = ChurningList(dataset, rng, adds, deletes)
    client = ApiClient(
        "https://api.example",
        Secret("test-key"),
        options=ClientOptions(max_requests_per_second=1e6, max_in_flight=8),
        transport=httpx.MockTransport(api.handle),
    )
    with client:
        syncer = Syncer(engine, client, page_size)
        syncer.sync()
        before = {a.id for a in dataset.items if a.id}
        api.churning = True
        for _ in range(2):
            syncer.sync(full=True)
    never_deleted = set(dataset.ever) - api.deleted
    with engine.connect() as conn:
        stored = set(conn.execute(select(store.artworks.c.id)).scalars())
    assert before - api.deleted <= stored  # (those created during a scan: by it, or the next)
    assert marked(engine) & never_deleted == set()
    assert out_of_order[0] > 0  # the case this is about happened


def test_a_page_fetched_ahead_does_not_hide_an_artwork_from_the_page_before_it(engine: Engine) -> None:
    """A stray (a page fetched ahead, then not wanted) only adds artworks not
    stored yet; it once also counted the stored ones it left alone as read at
    its time, so the page before it (read earlier, written later) skipped them
    as superseded, and they went unseen by the scan: marked deleted after two."""
    seen_before = NOW - timedelta(days=1)
    stored_one = artwork("00000000-0000-4000-8000-000000000001", NOW - timedelta(days=30))
    with db.writer(engine).begin() as conn:
        store.write_page(conn, classify_page([stored_one], seen_before), {}, now=seen_before, run_id=0)
    run = RunRecord(store_run(engine), Mode.FULL, 0)
    pages = PageWriter(db.writer(engine), run, lambda: 0, ())
    try:
        read_first, read_later = NOW, NOW + timedelta(seconds=1)
        newcomer = artwork("00000000-0000-4000-8000-000000000002", NOW - timedelta(days=1))
        pages.write(ListedPage.read([newcomer, stored_one], read_later), None)  # the stray, written first
        pages.write(ListedPage.read([stored_one], read_first), StreamState("artworks"))  # its turn now
        pages.commit()
    finally:
        pages.close()
    with engine.connect() as conn:
        last_seen = conn.execute(
            select(store.artworks.c.last_seen_at).where(store.artworks.c.id == stored_one["id"])
        ).scalar_one()
    assert last_seen >= read_first  # seen by this scan


# ------------------------------------------------------------------ helpers


def artwork(artwork_id: str, created_at: datetime) -> dict[str, Any]:
    return {
        "id": artwork_id,
        "artworkType": "txt2img",
        "parameters": {"prompt": "cat"},
        "status": "done",
        "results": [],
        "createdAt": created_at.isoformat().replace("+00:00", "Z"),
    }


def store_run(engine: Engine) -> int:
    with db.writer(engine).begin() as conn:
        return store.start_run(conn, stream="artworks", mode="full", now=NOW)


def clear(engine: Engine) -> None:
    with db.writer(engine).begin() as conn:
        for table in ("artwork_results", "txt2img_parameters", "upscaling_parameters", "rejected_records"):
            conn.execute(text(f"DELETE FROM {table}"))
        for table in ("artworks", "sync_runs", "sync_state"):
            conn.execute(text(f"DELETE FROM {table}"))


@contextmanager
def sync_engine_for(
    settings_: Settings, engine: Engine, now: Callable[[], datetime] | None = None
) -> Iterator[Syncer]:
    """A Syncer on the settings' API and ``engine``, with an optional clock."""
    with make_client(settings_) as client:
        if now is None:
            yield Syncer(engine, client, settings_.page_size)
        else:
            yield Syncer(engine, client, settings_.page_size, now=now)
