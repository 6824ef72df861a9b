"""What a new operator meets first: --version, a group named alone, option types in --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncd import SCHEMA_REVISION, __version__
from syncd.cli import cli
from syncd.config import load_settings
from syncd.errors import ConfigError


def test_version_names_the_schema_revision_it_expects() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"syncd {__version__} (database schema revision {SCHEMA_REVISION})"


def test_a_group_named_alone_lists_its_commands_and_succeeds() -> None:
    for args, commands in (([], ("run-once", "daemon", "status", "db")), (["db"], ("current", "upgrade"))):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert all(re.search(rf"^  {name}\s", result.output, re.MULTILINE) for name in commands), (
            result.output
        )


def test_numeric_options_say_so_in_help() -> None:
    for args, options in (
        (["run-once", "--help"], {"--page-size": "INTEGER"}),
        (["daemon", "--help"], {"--interval": "FLOAT", "--full-sync-interval": "FLOAT"}),
        (["status", "--help"], {"--max-age": "FLOAT"}),
    ):
        result = CliRunner().invoke(cli, args)
        for option, kind in options.items():
            assert re.search(rf"{option} {kind}\b", result.output), (args, option, result.output)


def test_the_missing_postgres_extra_is_named_for_a_clone_too(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real_find_spec(name, *a)
    )
    with pytest.raises(
        ConfigError, match=r"pip install 'syncd\[postgres\]' \(in a clone: pip install '\.\[postgres\]'\)"
    ):
        load_settings(
            env={"SYNCD_DATABASE_URL": "postgresql://syncd@db/syncd"}, system_config_path=Path("/nonexistent")
        )
