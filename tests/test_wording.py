"""How syncd says counts and spans to a person."""

from __future__ import annotations

from syncd.state import Counts, RunSummary
from syncd.wording import duration, plural, size


def test_plural_says_one_in_the_singular_and_every_other_count_in_the_plural() -> None:
    assert plural(1, "image") == "1 image"
    assert plural(0, "image") == "0 images"
    assert plural(1234, "artwork") == "1,234 artworks"
    assert plural(1.0, "second") == "1 second" and plural(2.5, "second") == "2.5 seconds"
    assert plural(2, "entry", "entries") == "2 entries"
    assert plural(1_000_000.0, "second") == "1,000,000 seconds"  # not 1e+06


def test_a_run_of_one_page_says_so_in_the_singular() -> None:
    line = RunSummary(7, "incremental", "success", Counts(pages=1, requests=1), 0.2, "newest_first").line()
    assert "1 page, 1 request," in line


def test_durations_and_sizes_read_at_a_glance() -> None:
    assert [duration(s) for s in (None, 45, 600, 3 * 3600 + 20 * 60, 2 * 86400 + 4 * 3600)] == [
        "?",
        "45s",
        "10m",
        "3h 20m",
        "2d 4h",
    ]
    assert size(512) == "512 bytes" and size(1) == "1 byte" and size(3 << 30) == "3.0 GiB"
