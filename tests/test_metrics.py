"""The daemon's metrics alone: counters that move during a run count each page once."""

from __future__ import annotations

from syncd.metrics import Metrics
from syncd.state import Counts, RunSummary


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, name
    return found


def test_progress_counts_each_page_once_even_after_a_rewind() -> None:
    metrics = Metrics()
    # A run writes 3 pages, rolls back 2 of them (a rewind) and writes them again.
    for pages in (1, 3, 1, 3):
        metrics.record_progress(7, "backfill", Counts(pages=pages, inserted=100 * pages))
    assert value(metrics, "syncd_pages_total") == 3
    assert value(metrics, "syncd_artworks_synced_total", result="inserted") == 300
    assert value(metrics, "syncd_run_in_progress", mode="backfill") == 1
    # The next run counts from zero again.
    metrics.record_progress(8, "incremental", Counts(pages=1, inserted=2))
    assert value(metrics, "syncd_pages_total") == 4
    metrics.run_ended()
    assert value(metrics, "syncd_run_in_progress", mode="incremental") == 0


def test_a_withheld_deletion_is_counted_by_why() -> None:
    metrics = Metrics()
    withheld = RunSummary(
        3, "full", "success", Counts(pages=9), 1.0, "newest_first", deletions_withheld="shrank"
    )
    metrics.record_run(withheld, 1000.0)
    metrics.record_run(RunSummary(4, "full", "success", Counts(pages=9), 1.0, "newest_first"), 1001.0)
    assert value(metrics, "syncd_deletions_withheld_total", reason="shrank") == 1
    assert (
        metrics.registry.get_sample_value("syncd_deletions_withheld_total", {"reason": "incomplete"}) is None
    )
