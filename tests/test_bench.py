"""The benchmark scripts run (with tiny numbers) so they cannot rot; their timings are never asserted
(the simulated week's correctness is: no image lost).

In the slow tier (scripts/test.sh and CI run it): each starts several
processes of its own (~10-18 s a test), and the simulated week runs against
the wall clock (retention of 10 s for 8 days), which a busy machine can lose
images to."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_benchmark_runs_end_to_end_with_a_tiny_count() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "backfill.py"),
            "--count",
            "400",
            "--repeat",
            "1",
            "--postgres-url",
            "",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "syncd / (download + insert)" in result.stdout
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["count"] == 400 and report["median"]["noop_requests"] == 1
    assert set(report["ratios"]) >= {"syncd / (download + insert), SQLite", "RSS(N) / RSS(N/10)"}


def run_bench(script: str, *args: str, timeout: float = 180) -> dict[str, Any]:
    """Run bench/<script> with ``args`` and ``--json``; its JSON report (it must exit 0)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout[result.stdout.index("{") :]))


def test_archive_benchmark_runs_every_part_with_tiny_numbers(tmp_path: Path) -> None:
    report = run_bench(
        "archive.py",
        "--images", "40", "--latency-ms", "50", "--rate", "200",
        "--big-images", "20", "--image-size", "65536",
        "--week-seconds", "3", "--retention", "6", "--arrivals", "2", "--initial", "5",
        "--tmp", str(tmp_path),
    )  # fmt: skip
    assert set(report["wire"]) >= {"images", "floor_seconds", "run_seconds", "x_floor", "host_429"}
    assert report["wire"]["archived"] == report["wire"]["images"] > 0
    assert set(report["memory"]) >= {"rss_mib", "rss_ratio", "small", "big"}
    assert report["memory"]["big"]["archived"] == report["memory"]["big"]["images"] > 0
    assert set(report["week"]) >= {"images_listed", "archived_ok", "lost", "simulated_days"}
    assert list(tmp_path.iterdir()) == []  # the images written are deleted


def test_a_simulated_week_loses_no_image(tmp_path: Path) -> None:
    """Accelerated retention (10 s for 8 days), artworks arriving, 5xx from the
    image host: every image of every artwork the API listed is archived, with
    the bytes it served. A correctness property: asserted; the times are not."""
    week = run_bench(
        "archive.py",
        "--week", "--week-seconds", "8", "--retention", "10", "--arrivals", "3", "--initial", "20",
        "--latency-ms", "100", "--image-error-rate", "0.02", "--tmp", str(tmp_path),
    )["week"]  # fmt: skip
    assert week["artworks_listed"] > 20 and week["images_listed"] > 20
    assert week["lost"] == 0, week
    assert week["archived_ok"] == week["images_listed"]
    assert week["daemon_exit"] == 0 and week["daemon_error_lines"] == 0


def test_the_scale_benchmark_runs_with_tiny_numbers(tmp_path: Path) -> None:
    """The look at scale (SQLite) and a late start: the times are not asserted;
    that a late archive keeps every image, live ones first, and that a second
    run fetches nothing, are (correctness)."""
    report = run_bench(
        "archive_scale.py",
        "--sizes", "500", "--repeat", "2", "--postgres-url", "", "--artworks", "150", "--tmp", str(tmp_path)
    )  # fmt: skip
    assert report["walk"]["sqlite 500"] == {**report["walk"]["sqlite 500"], "walked": 500, "images": 1000}
    look = report["look"]["sqlite 500"]
    assert look["images"] == 1000 and {"tick", "queries", "status"} <= set(look)
    assert look["queries"]["statements"] <= 20  # a few index probes, whatever the size
    late = report["late"]
    assert late["older_than_a_month"] > 0 and late["rows_before_archive"] == 0
    assert late["lost"] == 0 and late["images_kept"] == late["images_listed"] > 0
    assert late["second_run_requests"] == 0 and late["live_first_then_history"]
    assert list(tmp_path.iterdir()) == []


def test_archive_benchmark_runs_into_a_bucket_with_tiny_numbers(tmp_path: Path) -> None:
    """The same wire and memory parts with --store s3 (a loopback moto server)."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (the dev extra has it)")
    report = run_bench(
        "archive.py",
        "--store", "s3", "--part", "wire", "--images", "30", "--latency-ms", "50", "--rate", "200",
        "--tmp", str(tmp_path),
    )  # fmt: skip
    assert report["store"] == "s3" and report["wire"]["archived"] == report["wire"]["images"] > 0
    assert list(tmp_path.iterdir()) == []


def test_the_wire_benchmark_floors_the_refresh_on_what_it_must_send() -> None:
    """The refresh rows' "needed": each run's list request, and one GET per
    unfinished artwork that no list page carried (a list page is a check, so
    those are not due). Counting a GET for every unfinished artwork made the
    refresh of 300 look 0.69 x its floor: its list page carried 100 of them.
    And none is left neither listed nor re-checked (the bench would exit 1)."""
    report = run_bench(
        "backfill.py",
        "--wire", "--count", "100", "--page-size", "100", "--repeat", "1",
        "--latency-ms", "20", "--allowed-rate", "100", "--refresh-count", "300",
    )  # fmt: skip
    refresh = {key: case for key, case in report["cases"].items() if key.startswith("refresh-")}
    assert set(refresh) == {"refresh-ceiling", "refresh-sequential", "refresh-limited"}
    for case in refresh.values():
        assert case["needed_requests"] == 1 + 300 - 100
        assert case["listed_artworks"] == 100  # the incremental run's one page
        assert case["left_unchecked"] == 0
    for key in ("refresh-ceiling", "refresh-sequential"):  # no server limit: nothing sent twice
        assert refresh[key]["sent_requests"] == refresh[key]["needed_requests"]
