"""Pure: when a complete scan may mark the artworks it missed as deleted.

syncd is the only long-term copy: an artwork wrongly marked ``remote_deleted_at``
tells an analyst it is gone while the API still has it, and one never fetched
because a scan "ended" early is lost for good once the API deletes it. So a
scan's word that artworks are gone is believed only when nothing says the
scan missed part of the list (docs/sync-algorithm.md, "Deletion"):

1. **Its own checks.** The artworks a scan missed are asked for by id (up to
   DELETION_CHECKS, see the engine). Should any of them answer with its
   record, the scan did not see the whole list (a short page, a replica
   behind, a list that moved): nothing is marked from it.
2. **A sane shrink.** The vendor's 8-day retention removes about an eighth of
   an account's artworks a day. A scan that misses more than a quarter of the
   stored artworks, plus an eighth for each day since the newest of them was
   last seen, is not believed either: a broken list, or another account's
   key, looks just like that.

A withheld verdict marks nothing, says so once (a warning and the metric
``syncd_deletions_withheld_total``), and the scan is not the "complete scan
before" that the next one compares with.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from syncd.state import Misses

BELIEVED_SHRINK = 0.25  # of the stored artworks, at once
BELIEVED_SHRINK_PER_DAY = 1 / 8  # more for each day since the missed were last seen (8-day retention)


class Withheld(StrEnum):
    INCOMPLETE = "incomplete"  # the scan's own checks found artworks it missed alive
    SHRANK = "shrank"  # the list shrank more than retention explains


@dataclass(frozen=True)
class Checks:
    """The by-id checks of missed artworks: how many were asked, answered with
    their record (alive) or 404 (gone); the rest failed and tell nothing."""

    asked: int
    alive: int
    gone: int


def believed_share(days: float) -> float:
    """The share of the stored artworks a scan may miss and be believed."""
    return min(1.0, BELIEVED_SHRINK + BELIEVED_SHRINK_PER_DAY * max(0.0, days))


@dataclass(frozen=True)
class Verdict:
    withheld: Withheld | None
    reason: str = ""  # for the warning, when withheld

    @property
    def believed(self) -> bool:
        return self.withheld is None


def judge(misses: Misses, checks: Checks, now: datetime) -> Verdict:
    """Whether the artworks the scan missed may be marked deleted."""
    if checks.alive:
        return Verdict(
            Withheld.INCOMPLETE,
            f"{checks.alive} of the {checks.asked} artworks it missed that were asked for by id exist: "
            "the scan did not see the whole list",
        )
    lost = misses.missed
    if lost == 0 or misses.live == 0:
        return Verdict(None)
    since = misses.last_seen or now
    days = max(0.0, (now - since) / timedelta(days=1))
    share = lost / misses.live
    allowed = believed_share(days)
    if share > allowed:
        return Verdict(
            Withheld.SHRANK,
            f"it missed {lost:,} of the {misses.live:,} stored artworks ({share:.0%}); syncd believes at "
            f"most {allowed:.0%} gone when the missed were last seen {_days(days)} ago (a quarter, and an "
            "eighth a day: the API's retention)",
        )
    return Verdict(None)


def _days(days: float) -> str:
    if days < 1:
        hours = days * 24
        return f"{hours:.0f} hour" + ("" if round(hours) == 1 else "s")
    return f"{days:.1f} days"
