"""`syncd demo` run twice: the second run changes nothing and fetches no image,
and what it leaves behind (database, images, locks) leaves a clone clean."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli, syncd_env


def demo(tmp_path: Path) -> str:
    result = run_cli(["demo", "--count", "300"], syncd_env("http://x", "sqlite:///x.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout


def count(output: str, name: str) -> int:
    found = re.search(rf"^  {name}\s+([\d,]+)$", output, re.MULTILINE)
    assert found, output
    return int(found.group(1).replace(",", ""))


def test_a_demo_run_twice_reports_no_change_the_second_time(tmp_path: Path) -> None:
    """Its image host took a new port each run, and the URLs naming it made
    every artwork "updated" (484 of 500) on unchanged data."""
    first = demo(tmp_path)
    assert "backfill" in first and "artwork_type" in first  # the run, then the analyst's query
    assert count(first, "inserted") > 250
    assert (tmp_path / "syncd-demo.db").exists()
    second = demo(tmp_path)
    assert "incremental" in second
    assert count(second, "inserted") == 0 and count(second, "updated") == 0
    assert count(second, "requests") == 1
    assert "0 archived (0 new files, 0 bytes)" in second


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_the_demo_leaves_a_clone_clean(tmp_path: Path) -> None:
    """The quick start runs the demo in the clone: `git status` must stay clean."""
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    demo(tmp_path)
    demo(tmp_path)
    assert git("status", "--porcelain", "--untracked-files=all") == "?? .gitignore\n"
