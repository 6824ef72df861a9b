"""`syncd demo` run twice: the second run changes nothing and fetches no image."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd.cli import cli


def demo(tmp_path: Path) -> str:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:  # the demo sets logging up for itself: put the test's back
        result = CliRunner().invoke(cli, ["demo", "--count", "300"])
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    assert result.exit_code == 0, result.output
    return result.output


def count(output: str, name: str) -> int:
    found = re.search(rf"^  {name}\s+([\d,]+)$", output, re.MULTILINE)
    assert found, output
    return int(found.group(1).replace(",", ""))


def test_a_demo_run_twice_reports_no_change_the_second_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its image host took a new port each run, and the URLs naming it made
    every artwork "updated" (484 of 500) on unchanged data."""
    monkeypatch.chdir(tmp_path)
    first = demo(tmp_path)
    assert count(first, "inserted") > 250
    second = demo(tmp_path)
    assert count(second, "inserted") == 0 and count(second, "updated") == 0
    assert count(second, "requests") == 1
    assert "0 archived (0 new files, 0 bytes)" in second
