"""The README's quick start, run as written on a copy of the repository (a real `pip install .`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO


def quick_start_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.DOTALL)


def test_readme_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[1] in (REPO / ".ci" / "run").read_text()


@pytest.mark.slow
def test_quick_start_install_and_demo_work_on_a_fresh_copy(tmp_path: Path) -> None:
    """A non-editable install: also proves the wheel carries the migrations."""
    copy = tmp_path / "syncd"
    shutil.copytree(
        REPO,
        copy,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "*.db*", "__pycache__", "*.egg-info", "build", ".*_cache"
        ),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCD_", "VIRTUAL_ENV"))}
    result = subprocess.run(
        quick_start_commands()[0],
        shell=True,
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "syncd backfill run 1: success" in result.stdout
    assert "artwork_type" in result.stdout
    assert (copy / "syncd-demo.db").exists()
