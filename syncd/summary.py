"""What a run did: its counters and its summary line. Light, for syncd.quick too."""

from __future__ import annotations

from dataclasses import dataclass, fields

STREAM = "artworks"


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

    def line(self) -> str:
        c = self.counts
        text = (
            f"run {self.run_id} {self.mode} {self.outcome}: {c.pages} pages, {c.requests} requests, "
            f"{c.inserted} inserted, {c.updated} updated, {c.unchanged} unchanged, "
            f"{c.rejected} rejected, {c.unknown_type} unknown type, "
            f"{c.marked_deleted} marked deleted, {self.seconds:.1f}s"
        )
        return text + (f" ({self.error})" if self.error else "")
