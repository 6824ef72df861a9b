"""The planner against a simulated list: budgets, shifting lists, crash resume."""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.state import ListOrder, Mode, Phase, StreamState
from syncd.sync.planner import Item, Planner, Request, observed_order

NOW = datetime(2026, 11, 30, tzinfo=UTC)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class SimList:
    """A list of artworks shown in an order, which can change between requests."""

    order: str
    items: list[Item] = field(default_factory=list)  # oldest first
    created: int = 0
    requests: list[Request] = field(default_factory=list)
    before_request: Callable[[SimList], None] | None = None
    # How many items a request's answer leaves out at its end (a server that
    # filters after paging, or a replica behind): a short page mid-list.
    shorten: Callable[[Request], int] | None = None

    def add(self, count: int, *, live: bool = False) -> list[Item]:
        """``live``: created now (while a run reads the list), not in the past."""
        new = []
        for _ in range(count):
            self.created += 1
            base = NOW if live else T0
            new.append(Item(f"a{self.created:06d}", base + timedelta(seconds=self.created)))
        self.items.extend(new)
        return new

    def delete_oldest(self, count: int) -> None:
        del self.items[:count]

    def view(self) -> list[Item]:
        if self.order == "oldest_first":
            return list(self.items)
        if self.order == "newest_first":
            return self.items[::-1]
        if self.order == "random":  # unordered but stable: new items land anywhere
            return sorted(self.items, key=lambda i: zlib.crc32(f"7{i.id}".encode()))  # same in every process
        shuffled = list(self.items)  # "chaos": a new permutation on every request
        random.Random(len(self.requests)).shuffle(shuffled)
        return shuffled

    def page(self, request: Request) -> list[Item]:
        if self.before_request is not None:
            self.before_request(self)
        self.requests.append(request)
        page = self.view()[request.skip : request.skip + request.limit]
        dropped = self.shorten(request) if self.shorten is not None else 0
        return page[: request.limit - dropped]


def short_for_skips(low: int, high: int, dropped: int) -> Callable[[Request], int]:
    """At most ``limit - dropped`` items for any skip in low..high (a server seen doing so)."""
    return lambda request: dropped if low <= request.skip <= high else 0


def run(
    sim: SimList,
    state: StreamState,
    page_size: int,
    *,
    full: bool = False,
    stop_after: int | None = None,
    now: datetime = NOW,
    since: datetime | None = None,
) -> tuple[StreamState, set[str], Planner]:
    """Drive one run; returns the committed state and the ids stored (with
    ``since``, as the writer does: only those created at or after it)."""
    planner = Planner(state, page_size, full=full, now=now, since=since)
    stored: set[str] = set()
    committed = replace(state)
    pages = 0
    while (request := planner.next_request()) is not None:
        if stop_after is not None and pages >= stop_after:
            break  # a crash: nothing after the last commit survives
        items = sim.page(request)
        planner.observe(request, items)
        stored.update(i.id for i in items if i.id and wanted(i, planner.since))  # as the writer
        committed = replace(planner.state)
        pages += 1
        assert pages < 10_000, "runaway planner"
    return committed, stored, planner


def wanted(item: Item, since: datetime | None) -> bool:
    return since is None or item.created_at is None or item.created_at >= since


def backfilled(order: str, total: int, page_size: int) -> tuple[SimList, StreamState, set[str]]:
    sim = SimList(order)
    sim.add(total)
    state, stored, planner = run(sim, StreamState("artworks"), page_size)
    assert planner.mode == Mode.BACKFILL and planner.scan_complete
    assert stored == {i.id for i in sim.items}
    sim.requests.clear()
    return sim, state, stored


@pytest.mark.parametrize("order", ["newest_first", "oldest_first"])
def test_backfill_detects_the_order_and_reads_everything(order: str) -> None:
    _sim, state, _ = backfilled(order, 1234, 100)
    assert state.list_order == ListOrder(order) and state.phase == Phase.IDLE
    assert state.listed_total == 1234 and state.backfill_completed_at == NOW


def test_unordered_list_falls_back_to_full_scans() -> None:
    sim, state, _ = backfilled("random", 500, 50)
    assert state.list_order == ListOrder.UNORDERED
    _, _, planner = run(sim, state, 50)
    assert planner.mode == Mode.FULL and planner.scan_complete


def test_newest_first_nothing_new_costs_one_request() -> None:
    sim, state, _ = backfilled("newest_first", 2000, 100)
    _, _, planner = run(sim, state, 100)
    assert planner.mode == Mode.INCREMENTAL and len(sim.requests) == 1


@pytest.mark.parametrize("new", [1, 99, 100, 101, 250, 1000])
def test_newest_first_n_new_within_budget(new: int) -> None:
    page_size = 100
    sim, state, _ = backfilled("newest_first", 2000, page_size)
    added = sim.add(new)
    state, got, _ = run(sim, state, page_size)
    assert {i.id for i in added} <= got
    assert len(sim.requests) <= math.ceil(new / page_size) + 1
    sim.requests.clear()
    run(sim, state, page_size)
    assert len(sim.requests) == 1  # the head moved with the run


@pytest.mark.parametrize("new", [0, 1, 99, 100, 101, 450])
def test_oldest_first_n_new_within_budget(new: int) -> None:
    page_size = 100
    sim, state, _ = backfilled("oldest_first", 2000, page_size)
    added = sim.add(new)
    state, got, _ = run(sim, state, page_size)
    assert {i.id for i in added} <= got
    assert len(sim.requests) <= math.ceil(new / page_size) + 2
    assert state.listed_total == 2000 + new


@pytest.mark.parametrize(("deleted", "new"), [(1, 0), (10, 5), (700, 50), (1999, 0), (1500, 300), (2000, 10)])
def test_oldest_first_oldest_deleted_bisects_within_budget(deleted: int, new: int) -> None:
    page_size, total = 100, 2000
    sim, state, _ = backfilled("oldest_first", total, page_size)
    sim.delete_oldest(deleted)
    added = sim.add(new)
    state, got, _ = run(sim, state, page_size)
    assert {i.id for i in added} <= got
    # + 1 to confirm the end found by bisection (a short page only claims it).
    budget = math.ceil(new / page_size) + math.ceil(math.log2(total / page_size)) + 4
    assert len(sim.requests) <= budget, sim.requests
    assert state.listed_total == total - deleted + new


@pytest.mark.parametrize(
    ("order", "added_per_request"),
    [
        ("newest_first", 1),
        ("newest_first", 3),
        ("newest_first", 60),
        ("oldest_first", 1),
        ("oldest_first", 40),
        ("random", 1),
        ("random", 3),
        ("random", 40),
    ],
)
def test_artworks_created_while_paging_are_stored_by_this_run_or_the_next(
    order: str, added_per_request: int
) -> None:
    sim = SimList(order)
    sim.add(1000)
    state = StreamState("artworks")
    sim.before_request = lambda s: s.add(added_per_request, live=True) and None
    state, stored, _ = run(sim, state, 100)
    sim.before_request = None
    state, more, _ = run(sim, state, 100)
    assert {i.id for i in sim.items} <= stored | more


@pytest.mark.parametrize("order", ["newest_first", "oldest_first", "random"])
@pytest.mark.parametrize("deleted_per_request", [1, 7, 120])
def test_deletions_while_paging_never_skip_a_surviving_artwork(order: str, deleted_per_request: int) -> None:
    sim = SimList(order)
    sim.add(1500)
    original = {i.id for i in sim.items}

    def delete(s: SimList) -> None:
        if len(s.requests) % 2 == 1:  # every other request, delete from the oldest end
            s.delete_oldest(deleted_per_request)

    sim.before_request = delete
    _, stored, planner = run(sim, StreamState("artworks"), 100)
    survivors = {i.id for i in sim.items} & original
    assert survivors <= stored
    assert planner.scan_complete


def test_deletions_in_the_middle_while_paging_newest_first() -> None:
    sim = SimList("newest_first")
    sim.add(1000)

    def delete_near_cursor(s: SimList) -> None:
        if s.requests and len(s.items) > 300:
            del s.items[len(s.items) - s.requests[-1].skip - 5]  # just behind the cursor

    sim.before_request = delete_near_cursor
    _, stored, _ = run(sim, StreamState("artworks"), 50)
    assert {i.id for i in sim.items} <= stored


@pytest.mark.parametrize("order", ["newest_first", "oldest_first", "random"])
@pytest.mark.parametrize("crash_after", [1, 5, 11])
def test_crash_resume_costs_at_most_remaining_pages_plus_two(order: str, crash_after: int) -> None:
    page_size = 100
    sim = SimList(order)
    sim.add(1234)
    state, stored, _ = run(sim, StreamState("artworks"), page_size, stop_after=crash_after)
    committed_pages = crash_after
    total_pages = math.ceil(1234 / page_size)
    sim.requests.clear()
    state, more, planner = run(sim, state, page_size)
    assert planner.mode == Mode.BACKFILL and planner.scan_complete
    assert len(sim.requests) <= (total_pages - committed_pages) + 2
    assert {i.id for i in sim.items} <= stored | more


@pytest.mark.parametrize("order", ["newest_first", "oldest_first", "random"])
def test_a_short_page_mid_list_does_not_end_the_scan(order: str) -> None:
    """A server answered limit - 7 items for any skip in 300-349 (page size 50,
    1,000 artworks): the backfill stopped at 485 and later runs never read on."""
    sim = SimList(order)
    sim.add(1000)
    sim.shorten = short_for_skips(300, 349, 7)
    state, stored, planner = run(sim, StreamState("artworks"), 50)
    assert planner.scan_complete and planner.provably_complete
    assert stored == {i.id for i in sim.items}
    assert state.listed_total == 1000 and state.phase == Phase.IDLE
    sim.requests.clear()
    state, stored, planner = run(sim, state, 50, full=True)  # and every full scan after it
    assert stored == {i.id for i in sim.items} and state.listed_total == 1000


def test_a_short_page_mid_list_does_not_end_an_incremental_run() -> None:
    sim, state, _ = backfilled("newest_first", 1000, 50)
    added = sim.add(300)
    sim.shorten = short_for_skips(100, 149, 7)
    _, got, planner = run(sim, state, 50)
    assert planner.mode == Mode.INCREMENTAL
    assert {i.id for i in added} <= got


@pytest.mark.parametrize(
    ("order", "total"), [("newest_first", 1234), ("oldest_first", 1234), ("newest_first", 30)]
)
def test_the_end_of_the_list_costs_one_request_to_confirm(order: str, total: int) -> None:
    sim = SimList(order)
    sim.add(total)
    run(sim, StreamState("artworks"), 100)
    pages = math.ceil((total - 1) / 99)  # each page after the first overlaps the one before by one
    assert len(sim.requests) == pages + 1
    assert sim.requests[-1] == Request(total - 1 - 25, 100)  # from a quarter page before the last item


def test_an_empty_list_is_one_request() -> None:
    sim = SimList("newest_first")
    state, stored, planner = run(sim, StreamState("artworks"), 100)
    assert planner.scan_complete and stored == set() and len(sim.requests) == 1
    assert state.listed_total == 0
    sim.requests.clear()
    run(sim, state, 100)
    assert len(sim.requests) == 1


@settings(max_examples=80, deadline=None)
@given(
    order=st.sampled_from(["newest_first", "oldest_first", "random"]),
    total=st.integers(0, 700),
    page_size=st.integers(10, 60),
    short=st.lists(st.tuples(st.integers(0, 700), st.integers(0, 120), st.integers(1, 59)), max_size=4),
    churn=st.tuples(st.integers(0, 3), st.integers(0, 2)),
)
def test_property_short_pages_anywhere_never_end_a_scan_early(
    order: str, total: int, page_size: int, short: list[tuple[int, int, int]], churn: tuple[int, int]
) -> None:
    """Short pages at any offsets, by any amount, with artworks created and
    deleted between requests: every artwork present throughout is stored,
    and a scan ends (no request loops)."""
    sim = SimList(order)
    sim.add(total)
    present = {i.id for i in sim.items}
    # At most a quarter of a page left out (the server answered 43 of
    # 50): a server that answers only the first item or two of every page it
    # is asked would be one with no end that two requests could tell apart.
    sim.shorten = lambda request: max(
        (min(dropped, page_size // 4) for low, width, dropped in short if low <= request.skip <= low + width),
        default=0,
    )
    added, deleted = churn
    sim.before_request = lambda s: (s.add(added, live=True), s.delete_oldest(deleted)) and None
    state, stored, planner = run(sim, StreamState("artworks"), page_size)
    assert planner.done
    if planner.provably_complete:
        assert present & {i.id for i in sim.items} <= stored
    sim.before_request = None  # the list rests: the runs after it read what it held
    for day in (1, 2):  # a scan left unproven resumes, then the head is read again
        state, more, _ = run(sim, state, page_size, now=NOW + timedelta(days=day))
        stored |= more
    assert {i.id for i in sim.items} <= stored


def test_a_list_that_reshuffles_on_every_request_is_read_on_by_offsets() -> None:
    sim = SimList("chaos")
    sim.add(800)
    state, stored, planner = run(sim, StreamState("artworks"), 50)
    assert planner.done and planner.scan_complete and not planner.provably_complete
    assert len(stored) > 400  # it read on instead of stalling at its cursor
    for _ in range(4):  # later full scans fill the gaps
        state, more, _ = run(sim, state, 50)
        stored |= more
    assert len(stored) > 780


def test_a_list_growing_faster_than_it_can_be_read_ends_the_run_unproven() -> None:
    sim = SimList("newest_first")
    sim.add(1000)
    sim.before_request = lambda s: s.add(150) and None  # 1.5 pages per request
    state, _, planner = run(sim, StreamState("artworks"), 100)
    assert planner.done and not planner.provably_complete
    assert state.phase == Phase.BACKFILL  # the cursor waits at the last proven place
    sim.before_request = None
    state, _, planner = run(sim, state, 100)
    assert planner.scan_complete and state.phase == Phase.IDLE


def test_full_flag_rescans_and_marks_completion() -> None:
    sim, state, _ = backfilled("newest_first", 300, 100)
    state, stored, planner = run(sim, state, 100, full=True)
    assert planner.mode == Mode.FULL and planner.scan_complete and stored == {i.id for i in sim.items}
    assert state.last_full_sync_at == NOW and state.phase == Phase.IDLE


def test_order_violation_during_incremental_turns_into_full_scan() -> None:
    sim, state, _ = backfilled("newest_first", 500, 100)
    sim.order = "oldest_first"  # the service changed its mind
    state, stored, planner = run(sim, state, 100)
    assert planner.mode == Mode.FULL and stored == {i.id for i in sim.items}
    assert state.list_order == ListOrder.OLDEST_FIRST


def test_observed_order() -> None:
    a, b, c = (Item(str(n), T0 + timedelta(seconds=n)) for n in range(3))
    assert observed_order([a, b, c]) == ListOrder.OLDEST_FIRST
    assert observed_order([c, b, a]) == ListOrder.NEWEST_FIRST
    assert observed_order([a, c, b]) == ListOrder.UNORDERED
    assert observed_order([a, Item("x", None), a]) == ListOrder.UNKNOWN


@settings(max_examples=60, deadline=None)
@given(
    order=st.sampled_from(["newest_first", "oldest_first"]),
    total=st.integers(0, 600),
    page_size=st.integers(1, 60),
    events=st.lists(st.tuples(st.sampled_from(["add", "delete"]), st.integers(0, 40)), max_size=6),
)
def test_property_every_surviving_artwork_is_stored(
    order: str, total: int, page_size: int, events: list[tuple[str, int]]
) -> None:
    """Whatever happens between runs, artworks listed at a run's start and end are stored."""
    sim = SimList(order)
    sim.add(total)
    state, stored, _ = run(sim, StreamState("artworks"), page_size)
    for kind, count in events:
        if kind == "add":
            sim.add(count)
        else:
            sim.delete_oldest(count)
        state, more, _ = run(sim, state, page_size)
        stored |= more
        assert {i.id for i in sim.items} <= stored


def run_ahead(
    sim: SimList, state: StreamState, page_size: int, ahead: int, since: datetime | None = None
) -> tuple[StreamState, set[str], int]:
    """Drive one run as the engine does with pages in flight: the pages the
    planner expects next are fetched early (their content is the list as it
    was then) and judged only when their turn comes; a page fetched ahead and
    then not asked for is stored anyway. Returns the state, the ids stored
    and how many pages judged were stale (the list had moved since)."""
    planner = Planner(state, page_size, full=False, now=NOW, since=since)
    early: dict[Request, list[Item]] = {}
    stored: set[str] = set()
    stale_pages = 0
    while (request := planner.next_request()) is not None:
        items = early.pop(request, None)
        if items is None:
            items = sim.page(request)
        elif items != sim.view()[request.skip : request.skip + request.limit]:
            stale_pages += 1
        for expected in planner.lookahead(ahead):
            if expected not in early:
                early[expected] = sim.page(expected)  # fetched now, judged later
        planner.observe(request, items)
        stored.update(i.id for i in items if i.id and wanted(i, since))
        expected_next = set(planner.lookahead(ahead))
        for stray in [r for r in early if r not in expected_next and r != planner.next_request()]:
            stored.update(i.id for i in early.pop(stray) if i.id and wanted(i, since))  # it moves nothing
        assert len(sim.requests) < 10_000, "runaway planner"
    return replace(planner.state), stored, stale_pages


@pytest.mark.parametrize("order", ["newest_first", "oldest_first"])
@pytest.mark.parametrize("ahead", [2, 4, 7])
def test_pages_fetched_ahead_of_a_shifting_list_lose_nothing(order: str, ahead: int) -> None:
    """Inserts and deletions between requests: pages fetched early hold a list
    that has since moved. They are judged against the page before them when
    their turn comes; what does not connect is asked for again."""
    sim = SimList(order)
    sim.add(3000)
    present_at_start = {i.id for i in sim.items}
    requests_made = 0

    def churn(s: SimList) -> None:
        nonlocal requests_made
        requests_made += 1
        s.add(4, live=True)
        s.delete_oldest(1)

    sim.before_request = churn
    state, stored, stale_pages = run_ahead(sim, StreamState("artworks"), 100, ahead)
    assert stale_pages > 0  # the case this is about happened
    survivors = present_at_start & {i.id for i in sim.items}
    assert survivors <= stored  # every artwork present throughout was stored
    sim.before_request = None
    sim.requests.clear()
    _, more, _ = run(sim, state, 100)  # the next run picks up what was added meanwhile
    assert {i.id for i in sim.items} <= stored | more


def test_lookahead_only_in_a_scan_and_only_on_the_planned_path() -> None:
    sim, state, _ = backfilled("newest_first", 2000, 100)
    incremental = Planner(state, 100, full=False, now=NOW)
    assert incremental.next_request() == Request(0, 100)
    assert incremental.lookahead(5) == []  # an incremental run's budget is exact: no speculation
    scan = Planner(StreamState("artworks"), 100, full=False, now=NOW)
    assert scan.next_request() == Request(0, 100)
    scan.observe(Request(0, 100), sim.page(Request(0, 100)))
    following = scan.next_request()
    assert following is not None
    assert scan.lookahead(3) == [Request(following.skip + 99 * n, 100) for n in (1, 2, 3)]


# --- A floor: run-once --since ---------------------------------------------


def created_since(sim: SimList, since: datetime) -> set[str]:
    return {i.id for i in sim.items if wanted(i, since)}


@pytest.mark.parametrize("newer", [1, 98, 99, 500, 1999])
def test_a_floor_in_a_newest_first_list_ends_the_backfill_past_it(newer: int) -> None:
    sim = SimList("newest_first")
    sim.add(2000)
    since = sim.items[-newer].created_at  # the oldest artwork wanted
    assert since is not None
    state, stored, planner = run(sim, StreamState("artworks"), 100, since=since)
    assert stored == created_since(sim, since) and len(stored) == newer
    assert planner.reached_since and planner.mode == Mode.BACKFILL and planner.scan_complete
    # A page holds 99 items past the one it shares with the page before.
    assert len(sim.requests) <= math.ceil(newer / 99) + 1, sim.requests
    assert state.phase == Phase.IDLE and state.list_order == ListOrder.NEWEST_FIRST
    # The cursor is exact: the next run, without a floor, reads only what is new.
    sim.requests.clear()
    added = sim.add(30, live=True)
    state, more, planner = run(sim, state, 100)
    assert planner.mode == Mode.INCREMENTAL and len(sim.requests) == 1
    assert {i.id for i in added} <= more


def test_a_floor_newer_than_every_artwork_costs_one_request() -> None:
    sim = SimList("newest_first")
    sim.add(500)
    _, stored, planner = run(sim, StreamState("artworks"), 100, since=NOW)
    assert stored == set() and planner.reached_since and len(sim.requests) == 1


def test_a_floor_in_a_list_of_any_other_order_reads_it_all_and_keeps_what_is_newer() -> None:
    for order in ("oldest_first", "random"):
        sim = SimList(order)
        sim.add(1000)
        since = T0 + timedelta(seconds=700)
        _, stored, planner = run(sim, StreamState("artworks"), 100, since=since)
        assert stored == created_since(sim, since)
        assert not planner.reached_since and planner.scan_complete
        assert len(sim.requests) >= math.ceil(1000 / 99), order  # the whole list


def test_a_floor_on_a_synced_database_scans_from_the_top_and_keeps_the_totals() -> None:
    sim, state, _ = backfilled("newest_first", 2000, 100)
    added = sim.add(150, live=True)  # missed while syncd was down, say
    since = added[0].created_at
    assert since is not None
    after, stored, planner = run(sim, state, 100, since=since)
    assert planner.mode == Mode.FULL and sim.requests[0].skip == 0
    assert stored == {i.id for i in added} and planner.reached_since
    assert len(sim.requests) <= math.ceil(150 / 99) + 1
    assert after.listed_total == 2000  # a floor is not the end of the list
    sim.requests.clear()
    _, _, planner = run(sim, after, 100)
    assert planner.mode == Mode.INCREMENTAL and len(sim.requests) == 1


def test_a_resumed_backfill_already_past_the_floor_ends_at_once() -> None:
    sim = SimList("newest_first")
    sim.add(2000)
    state, _, _ = run(sim, StreamState("artworks"), 100, stop_after=12)  # a crash past 1,000
    since = sim.items[-500].created_at
    sim.requests.clear()
    after, stored, planner = run(sim, state, 100, since=since)
    assert len(sim.requests) == 1 and planner.reached_since and stored == set()
    assert after.phase == Phase.IDLE


@pytest.mark.parametrize("ahead", [2, 7])
def test_pages_fetched_ahead_stop_near_the_floor(ahead: int) -> None:
    sim = SimList("newest_first")
    sim.add(5000)
    since = sim.items[-700].created_at
    assert since is not None
    _, stored, _ = run_ahead(sim, StreamState("artworks"), 100, ahead, since=since)
    assert stored == created_since(sim, since)
    # Pages ahead are asked for by the createdAt a page spans: at most one
    # page past the floor, not ``ahead`` of them.
    assert len(sim.requests) <= math.ceil(700 / 99) + 2, len(sim.requests)


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(0, 800),
    page_size=st.integers(10, 60),  # the list grows slower than it is read
    floor_at=st.integers(0, 800),
    added_per_request=st.integers(0, 3),
    deleted_per_request=st.integers(0, 5),
    ahead=st.sampled_from([0, 3]),
)
def test_property_a_floor_loses_nothing_created_after_it_whatever_the_list_does(
    total: int, page_size: int, floor_at: int, added_per_request: int, deleted_per_request: int, ahead: int
) -> None:
    """Inserts at the head and deletions at the tail while paging: every
    artwork created at or after the floor and listed throughout is stored,
    and the next run (no floor) stores what came meanwhile."""
    sim = SimList("newest_first")
    sim.add(total)
    since = T0 + timedelta(seconds=floor_at)
    present_at_start = created_since(sim, since)

    def churn(s: SimList) -> None:
        s.add(added_per_request, live=True)
        s.delete_oldest(deleted_per_request)

    sim.before_request = churn
    if ahead:
        state, stored, _ = run_ahead(sim, StreamState("artworks"), page_size, ahead, since=since)
    else:
        state, stored, _ = run(sim, StreamState("artworks"), page_size, since=since)
    sim.before_request = None
    survivors = present_at_start & {i.id for i in sim.items}
    assert survivors <= stored
    for _ in range(3):  # a run the churn kept from finishing resumes, then the new ones are read
        state, more, _ = run(sim, state, page_size)
        stored |= more
    assert created_since(sim, since) <= stored


def test_reach_tells_how_far_a_scan_has_read_when_the_order_says_where_it_ends() -> None:
    sim = SimList("newest_first")
    sim.add(1000)
    since = sim.items[-500].created_at
    planner = Planner(StreamState("artworks"), 100, full=False, now=NOW, since=since)
    assert planner.reach().share() is None  # nothing read yet
    for _ in range(3):
        request = planner.next_request()
        assert request is not None
        planner.observe(request, sim.page(request))
    reach = planner.reach()
    assert reach.start == sim.items[-1].created_at and reach.end == since
    assert reach.share() == pytest.approx(297 / 499, abs=0.01)  # 3 pages of 99 new, of 500
    # A first backfill without a floor cannot know where a newest-first list ends.
    plain = Planner(StreamState("artworks"), 100, full=False, now=NOW)
    request = plain.next_request()
    assert request is not None
    plain.observe(request, sim.page(request))
    assert plain.reach().reached is not None and plain.reach().share() is None


def test_a_floor_never_ends_a_scan_of_a_list_a_complete_scan_found_unordered() -> None:
    """Its first pages may look newest-first now; past them anything may come."""
    sim, state, _ = backfilled("random", 1000, 100)
    assert state.list_order == ListOrder.UNORDERED
    sim.order = "newest_first"  # the head looks ordered today
    since = sim.items[-300].created_at
    assert since is not None
    _, stored, planner = run(sim, state, 100, since=since)
    assert not planner.reached_since and len(sim.requests) >= math.ceil(1000 / 99)
    assert stored == created_since(sim, since)


def test_a_scan_with_a_floor_resumes_with_it_and_is_no_full_sync() -> None:
    sim = SimList("oldest_first")
    sim.add(2000)
    since = sim.items[700].created_at
    assert since is not None
    state, stored, _ = run(sim, StreamState("artworks"), 100, since=since, stop_after=5)  # a crash
    assert state.scan_since == since and state.phase == Phase.BACKFILL
    after, more, planner = run(sim, state, 100)  # resumed without --since: the floor is the scan's
    assert planner.since == since and planner.scan_complete
    assert stored | more == created_since(sim, since)
    assert after.scan_since is None and after.phase == Phase.IDLE
    assert after.last_full_sync_at is None and after.backfill_completed_at is None
    # Another floor than the one a scan was started with starts it over.
    state, _, _ = run(sim, StreamState("artworks"), 100, since=since, stop_after=5)
    later = sim.items[1500].created_at
    sim.requests.clear()
    _, _, planner = run(sim, state, 100, since=later)
    assert sim.requests[0].skip == 0 and planner.since == later


def future_headed(page_size: int) -> tuple[SimList, StreamState, Item]:
    """A newest-first list of 300 whose newest (position 0) is dated 5 h ahead
    of syncd's clock (inside the day syncd accepts), backfilled."""
    sim = SimList("newest_first")
    sim.add(299)
    ahead = Item("future", NOW + timedelta(hours=5))
    sim.items.append(ahead)
    state, stored, planner = run(sim, StreamState("artworks"), page_size)
    assert planner.scan_complete and stored == {i.id for i in sim.items}
    sim.requests.clear()
    return sim, state, ahead


def test_a_head_dated_in_the_future_does_not_end_the_incremental_run_early() -> None:
    """60 artworks created now land above a head dated 5 h ahead: every one
    of them is older than it. The run reads down to the head by its id (it
    was stopping at the first page, short of positions 50-59)."""
    sim, state, ahead = future_headed(50)
    added = sim.add(60, live=True)
    after, got, planner = run(sim, state, 50, now=NOW + timedelta(minutes=10))
    assert {i.id for i in added} <= got
    # Past the new artworks the list shows one dated after them: not sorted
    # by createdAt after all, and the run reads it all, as for any such list.
    assert planner.mode == Mode.FULL and after.list_order == ListOrder.UNORDERED
    assert state.head_id == ahead.id and state.head_created_at == NOW  # kept as read, not as dated


@pytest.mark.parametrize("stored_ahead", [timedelta(hours=5), timedelta(days=3650)])
def test_a_future_head_deleted_by_the_api_still_misses_nothing_and_reads_no_further_than_a_day(
    stored_ahead: timedelta,
) -> None:
    """The head dated ahead is gone (deleted) when the new artworks come: the
    run stops at the first artwork created more than a day before the head
    (or before its own start, if the head was stored dated further ahead, as
    syncd did before it kept heads as read)."""
    sim, state, ahead = future_headed(50)
    state = replace(state, head_created_at=NOW + stored_ahead)
    sim.items.remove(ahead)
    added = sim.add(60, live=True)
    _, got, planner = run(sim, state, 50, now=NOW + timedelta(minutes=10))
    assert {i.id for i in added} <= got
    assert planner.mode == Mode.INCREMENTAL and len(sim.requests) <= math.ceil(60 / 50) + 1


def test_a_head_met_by_its_id_costs_what_it_did() -> None:
    """Artworks created within a day before the head, listed below it: the
    head's id ends the run, on the page that holds it."""
    sim = SimList("newest_first")
    sim.add(500, live=True)
    state, _, _ = run(sim, StreamState("artworks"), 100, now=NOW + timedelta(hours=1))
    sim.requests.clear()
    added = sim.add(150, live=True)
    _, got, planner = run(sim, state, 100, now=NOW + timedelta(hours=2))
    assert {i.id for i in added} <= got
    assert planner.mode == Mode.INCREMENTAL and len(sim.requests) == 2
