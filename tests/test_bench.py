"""The benchmark script runs (with a tiny N) so it cannot rot; its numbers are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


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
