"""The refresh's plan, alone: back-off by age, most overdue first, everyone in turn."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from syncd.state import Unfinished
from syncd.sync.refresh import RECHECK_MAX, plan_refresh, recheck_after

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
FLOOR = timedelta(seconds=10)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


def test_young_artworks_are_rechecked_often_old_ones_rarely() -> None:
    assert recheck_after(timedelta(seconds=30), FLOOR) == FLOOR
    assert recheck_after(10 * MINUTE, FLOOR) == timedelta(seconds=30)
    assert recheck_after(HOUR, FLOOR) == 3 * MINUTE
    assert recheck_after(DAY, FLOOR) == 72 * MINUTE
    assert recheck_after(7 * DAY, FLOOR) == RECHECK_MAX == 6 * HOUR


@given(st.integers(0, 30 * 86400), st.integers(0, 30 * 86400))
def test_the_back_off_grows_with_age_within_its_bounds(a: int, b: int) -> None:
    younger, older = sorted((timedelta(seconds=a), timedelta(seconds=b)))
    assert FLOOR <= recheck_after(younger, FLOOR) <= recheck_after(older, FLOOR) <= RECHECK_MAX


def test_only_what_is_due_most_urgent_first_and_a_failure_waits_its_back_off() -> None:
    artworks = [
        Unfinished("young-checked-now", NOW - MINUTE, NOW),
        Unfinished("young-checked-20s-ago", NOW - MINUTE, NOW - timedelta(seconds=20)),
        Unfinished("old-checked-an-hour-ago", NOW - 30 * DAY, NOW - HOUR),  # 6 h back-off
        Unfinished("old-checked-a-day-ago", NOW - 30 * DAY, NOW - DAY),
        Unfinished("hour-old-checked-5min-ago", NOW - HOUR, NOW - 5 * MINUTE),  # due 2 min ago
    ]
    # Late by at least a back-off: young-checked-20s-ago (10 s late, 10 s back-off)
    # and old-checked-a-day-ago (18 h, 6 h), the young first; then by lateness
    # in back-offs: hour-old-checked-5min-ago (2 min late, 3 min back-off).
    assert plan_refresh(artworks, NOW, floor=FLOOR) == [
        "young-checked-20s-ago",
        "old-checked-a-day-ago",
        "hour-old-checked-5min-ago",
    ]
    failed = {"old-checked-a-day-ago": NOW - MINUTE}  # tried a minute ago, the API failed
    assert plan_refresh(artworks, NOW, floor=FLOOR, failed=failed) == [
        "young-checked-20s-ago",
        "hour-old-checked-5min-ago",
    ]


def test_a_backlog_larger_than_the_budget_is_visited_in_turn_and_young_ones_are_not_starved() -> None:
    """13 hours of refreshes every 10 s, 4 re-checks each: 300 artworks stuck in
    `error` for a week, all due at once, and a young artwork every minute that
    finishes 3 minutes old. Refresh always taking the oldest N would never
    reach the stuck ones past N, nor the young ones behind them."""
    budget, tick = 4, timedelta(seconds=10)
    start = NOW - 13 * HOUR
    stuck = {f"stuck-{n:04d}": Unfinished(f"stuck-{n:04d}", start - 7 * DAY, start - DAY) for n in range(300)}
    checks: dict[str, list[datetime]] = {artwork_id: [] for artwork_id in stuck}
    young: dict[str, Unfinished] = {}
    finishes: dict[str, datetime] = {}
    seen_finished: dict[str, datetime] = {}
    now = start
    while now < NOW:
        if now.second == 0:  # a new artwork every minute
            artwork_id = f"young-{now.isoformat()}"
            young[artwork_id] = Unfinished(artwork_id, now, now)
            finishes[artwork_id] = now + 3 * MINUTE
        for artwork_id in plan_refresh([*stuck.values(), *young.values()], now, floor=FLOOR)[:budget]:
            if artwork_id in stuck:
                checks[artwork_id].append(now)
                stuck[artwork_id] = Unfinished(artwork_id, stuck[artwork_id].created_at, now)
            elif now >= finishes[artwork_id]:
                seen_finished[artwork_id] = now
                del young[artwork_id]  # terminal: no longer unfinished
            else:
                young[artwork_id] = Unfinished(artwork_id, young[artwork_id].created_at, now)
        now += tick
    # Every stuck artwork was re-checked within the first 200 ticks (the backlog
    # drains at 4 a tick less what the young ones take), then every 6 h (its
    # back-off) and a few ticks of queue, never starved by the others.
    for times in checks.values():
        assert len(times) == 3 and times[0] - start <= 200 * tick
        gaps = [b - a for a, b in pairwise(times)]
        assert all(RECHECK_MAX <= gap <= RECHECK_MAX + 5 * MINUTE for gap in gaps), max(gaps)
    # Every young artwork was seen finished within a minute of finishing.
    assert len(seen_finished) > 12 * 60
    assert all(seen_finished[a] - finishes[a] <= MINUTE for a in seen_finished)
