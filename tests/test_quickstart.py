"""The README's quick start, run as written on a copy of the repository (a real `pip install .`)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
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


# What the quick start installs into .venv, which a fresh shell does not have on its PATH.
VENV_PROGRAMS = ("syncd", "pip", "python")
ACTIVATE = ("source .venv/bin/activate", ". .venv/bin/activate")


def simple_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line (split at &&, ||, ;, |), without comments."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            yield command
            command = []
        else:
            command.append(token)
    yield command


def program_of(command: list[str]) -> str | None:
    words = [w for w in command if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w)]  # VAR=value prefixes
    return words[0] if words else None


def commands_that_need_the_venv(markdown: str) -> list[str]:
    """Each command line of a ```sh block that runs syncd, pip or python bare
    before the block activated .venv, and each "Run `...`" that does."""
    wrong = []
    for block in re.findall(r"```sh\n(.*?)```", markdown, re.DOTALL):
        activated = False
        for line in block.splitlines():
            activated = activated or line.strip().startswith(ACTIVATE)
            programs = [program_of(c) for c in simple_commands(line)]
            if not activated and any(p in VENV_PROGRAMS for p in programs):
                wrong.append(line)
    for command in re.findall(r"\bRun `([^`]+)`", markdown):
        if any(program_of(c) in VENV_PROGRAMS for c in simple_commands(command)):
            wrong.append(command)
    return wrong


def test_every_readme_command_works_after_the_quick_start() -> None:
    """A shell after the quick start has no syncd on its PATH: .venv/bin/syncd, or activate first."""
    assert commands_that_need_the_venv((REPO / "README.md").read_text()) == []
    assert commands_that_need_the_venv(
        "Run `syncd demo` again.\n```sh\nexport X=1\nSYNCD_API_URL=x syncd run-once  # c\n"
        "pip install . && .venv/bin/syncd demo\n. .venv/bin/activate\nsyncd status\n```\n"
        "```sh\npython -m syncd\n```\n"
    ) == [
        "SYNCD_API_URL=x syncd run-once  # c",
        "pip install . && .venv/bin/syncd demo",
        "python -m syncd",
        "syncd demo",
    ]


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
    # The unit's Documentation= (deploy/syncd.service), installed with the package.
    guide = copy / ".venv" / "share" / "doc" / "syncd" / "deploy.md"
    assert guide.read_text() == (REPO / "docs" / "deploy.md").read_text()
    # The README's later commands: "Run .venv/bin/syncd demo again", and after activating.
    again = subprocess.run(
        ".venv/bin/syncd demo && . .venv/bin/activate && syncd db current --database-url sqlite:///syncd-demo.db",
        shell=True,
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "syncd incremental run" in again.stdout and again.stdout.strip().endswith("(latest)")
