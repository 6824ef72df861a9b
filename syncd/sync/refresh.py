"""Pure: which unfinished artworks to re-check, and when.

An artwork whose status is not terminal (``processing``, ``pending``, a status
syncd does not know, ``error``...) is re-checked by id. How often depends on
its age when it was last checked: a young one is about to finish and is
looked at every few seconds; one unfinished for an hour every few minutes;
one unfinished for days every few hours. Every unfinished artwork has a due
time (last checked + its back-off), and a refresh takes the most urgent of
those due (``plan_refresh``), so each is visited in turn however long the
backlog, and none is left behind by the ones before it (a refresh that
always took the oldest N never reached the N+1st).

"Last checked" is ``last_seen_at``: any answer that carried the artwork (a
list page or a GET) is a check. A check that failed is remembered by the
caller (``failed``) and counts as a check for the back-off, so that an
artwork the API keeps failing on goes to the back of the queue instead of
holding its head. A refresh's 404 that is not believed yet (syncd.sync.byid,
DELETION_GRACE) is noted there with a time to come: the artwork is due again
just after the grace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from syncd.state import Unfinished

# Re-check after this share of the artwork's age at its last check ...
RECHECK_FRACTION = 0.05
# ... and at most this long after it: even an artwork unfinished for days is
# looked at a few times a day (the API deletes artworks 8 days after creation).
RECHECK_MAX = timedelta(hours=6)


def recheck_after(age: timedelta, floor: timedelta) -> timedelta:
    """The back-off of an artwork this old at its last check: a twentieth of
    its age, at least ``floor`` (how often refreshes run), at most RECHECK_MAX.

    At the default floor of 10 s: every 10 s for its first 3 minutes, every
    30 s at 10 minutes, 3 minutes at an hour, 6 hours from 5 days on.
    """
    return min(RECHECK_MAX, max(floor, age * RECHECK_FRACTION))


def plan_refresh(
    unfinished: Iterable[Unfinished],
    now: datetime,
    *,
    floor: timedelta,
    failed: Mapping[str, datetime] | None = None,
) -> list[str]:
    """The ids due by ``now``, the most urgent first.

    Urgency is lateness measured in the artwork's own back-off, and a whole
    back-off late is as late as any: among those, the shortest back-off (the
    youngest) goes first, then the longest overdue. So after a pause, a
    backlog of artworks stuck for days (hours overdue) cannot hold back one a
    minute old, which is due every few seconds and is the one about to
    change; the stuck ones share what the young leave, most overdue first.
    """
    failed = failed or {}
    due: list[tuple[float, timedelta, timedelta, str]] = []
    for artwork in unfinished:
        failed_at = failed.get(artwork.id)
        checked = artwork.checked_at if failed_at is None else max(artwork.checked_at, failed_at)
        back_off = recheck_after(checked - artwork.created_at, floor)
        late = now - (checked + back_off)
        if late >= timedelta(0):
            due.append((-min(1.0, late / back_off), back_off, -late, artwork.id))
    due.sort()
    return [artwork_id for *_, artwork_id in due]
