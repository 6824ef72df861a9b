"""Pure: the sync's bookkeeping, shared by the planner (which decides it) and the
store (which persists it): a stream's state (one ``sync_state`` row) and a run's
counters (the columns of ``sync_runs``).

Nothing here imports another syncd module, so both layers can depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from syncd.wording import plural

STREAM = "artworks"


class ListOrder(StrEnum):
    UNKNOWN = "unknown"
    NEWEST_FIRST = "newest_first"
    OLDEST_FIRST = "oldest_first"
    UNORDERED = "unordered"

    @property
    def is_sorted(self) -> bool:
        return self in (ListOrder.NEWEST_FIRST, ListOrder.OLDEST_FIRST)

    def merge(self, other: ListOrder) -> ListOrder:
        if self == other or other == ListOrder.UNKNOWN:
            return self
        if self == ListOrder.UNKNOWN:
            return other
        return ListOrder.UNORDERED


class Phase(StrEnum):
    BACKFILL = "backfill"  # the first complete scan has not finished
    FULL = "full"  # a reconciliation scan is in progress
    IDLE = "idle"  # the last scan completed; runs are incremental


class Mode(StrEnum):
    BACKFILL = "backfill"
    INCREMENTAL = "incremental"
    FULL = "full"
    REFRESH = "refresh"


@dataclass
class StreamState:
    """Mirror of one ``sync_state`` row (see docs/schema.md)."""

    stream: str
    list_order: ListOrder = ListOrder.UNKNOWN
    scan_order: ListOrder = ListOrder.UNKNOWN
    phase: Phase = Phase.BACKFILL
    cursor_skip: int = 0
    cursor_id: str | None = None
    cursor_created_at: datetime | None = None
    head_id: str | None = None
    head_created_at: datetime | None = None
    tail_id: str | None = None
    tail_created_at: datetime | None = None
    listed_total: int | None = None
    scan_started_at: datetime | None = None
    previous_scan_started_at: datetime | None = None  # of the complete scan before this one
    scan_since: datetime | None = None  # the floor of the scan in progress (run-once --since)
    backfill_completed_at: datetime | None = None
    last_full_sync_at: datetime | None = None
    rate_limited_until: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> StreamState:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["list_order"] = ListOrder(values["list_order"])
        values["scan_order"] = ListOrder(values["scan_order"])
        values["phase"] = Phase(values["phase"])
        return cls(**values)

    def to_row(self) -> dict[str, Any]:
        """The ``sync_state`` columns."""
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row.update(list_order=str(self.list_order), scan_order=str(self.scan_order), phase=str(self.phase))
        return row


@dataclass
class Counts:
    """What a run did; the columns of ``sync_runs`` with the same names."""

    pages: int = 0
    requests: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    unknown_type: int = 0
    marked_deleted: int = 0

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> Counts:
        return Counts(**{f.name: getattr(self, f.name) for f in fields(self)})

    @property
    def artworks(self) -> int:
        """Artworks stored or confirmed by the run."""
        return self.inserted + self.updated + self.unchanged


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A stored artwork whose status is not terminal (syncd.sync.refresh plans its re-checks)."""

    id: str
    created_at: datetime
    checked_at: datetime  # when an answer last carried it (last_seen_at)


@dataclass(frozen=True)
class Misses:
    """What a complete scan missed: stored artworks not marked deleted (``live``),
    those of them it did not see (``missed``), and the latest moment any of
    those had been seen (None when none was missed)."""

    live: int
    missed: int
    last_seen: datetime | None


@dataclass
class RunSummary:
    run_id: int
    mode: str
    outcome: str
    counts: Counts
    seconds: float
    list_order: str
    error: str | None = None
    stream: str = STREAM
    # Why the artworks a complete scan missed were not marked deleted
    # (syncd.sync.deletions.Withheld), if they were not.
    deletions_withheld: str | None = None
    # Of the records it quarantined: first seen by this run, and seen before.
    rejected_new: int = 0
    rejected_again: int = 0

    def line(self) -> str:
        c = self.counts
        text = (
            f"run {self.run_id} {self.mode} {self.outcome}: {plural(c.pages, 'page')}, "
            f"{plural(c.requests, 'request')}, "
            f"{c.inserted} inserted, {c.updated} updated, {c.unchanged} unchanged, "
            f"{c.rejected} rejected, {c.unknown_type} unknown type, "
            f"{c.marked_deleted} marked deleted, {self.seconds:.1f}s"
        )
        if self.deletions_withheld:
            text += f" (deletions withheld: {self.deletions_withheld})"
        return text + (f" ({self.error})" if self.error else "")
