"""The documentation is tested: every example query runs, every command is documented."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from syncd import db
from syncd.app import archive, run_once
from syncd.cli import cli
from syncd.fakeapi.images import ImageFaults
from tests.conftest import REPO, World, make_settings

BLOCK = re.compile(r"```sql( sqlite| postgresql)?\n(.*?)```", re.DOTALL)


def example_queries() -> list[tuple[str, str]]:
    """(dialect or 'both', query) for every sql block in docs/schema.md."""
    doc = (REPO / "docs" / "schema.md").read_text()
    return [((tag or " both").strip(), body.strip().rstrip(";")) for tag, body in BLOCK.findall(doc)]


def normalise(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal | float):
        return round(float(value), 2)
    return value


def run_queries(engine: Engine, dialect: str) -> dict[str, list[tuple[Any, ...]]]:
    results = {}
    with engine.connect() as conn:
        for tag, query in example_queries():
            if tag in ("both", dialect):
                rows = conn.execute(text(query)).all()
                results[query] = [tuple(normalise(v) for v in row) for row in rows]
    return results


def test_docs_have_at_least_five_portable_queries() -> None:
    assert sum(1 for tag, _ in example_queries() if tag == "both") >= 5


def test_every_example_query_runs_and_means_the_same_on_both_databases(
    sqlite_url: str, postgres_url: str, world: Callable[..., World], tmp_path: Path
) -> None:
    # Some images are gone (expired); none waits, so the archive's lag is the same on both.
    # Small images: the queries need rows, not bytes.
    w = world(
        300,
        seed=11,
        image_faults=ImageFaults(gone=0.1, size=2048),
        unknown_fraction=0.03,
        malformed_fraction=0.01,
    )
    answers = {}
    for name, url in (("sqlite", sqlite_url), ("postgresql", postgres_url)):
        settings = make_settings(
            w.api.url,
            url,
            page_size="100",
            archive_dir=str(tmp_path / name),
            archive_min_free_bytes="0",
            archive_max_requests_per_second="1000",
        )
        run_once(settings)
        archive(settings)
        engine = db.create_db_engine(url)
        try:
            answers[name] = run_queries(engine, name)
        finally:
            engine.dispose()
    portable = [q for tag, q in example_queries() if tag == "both"]
    for query in portable:
        if "sync_runs" in query:
            continue  # run times differ between the two syncs, by nature
        sqlite_rows, postgres_rows = answers["sqlite"][query], answers["postgresql"][query]
        if "ORDER BY last_seen_at" in query:
            # Pages fetched concurrently are seen in an order that differs from
            # run to run; the rows (fewer than the LIMIT) must not.
            sqlite_rows, postgres_rows = sorted(sqlite_rows), sorted(postgres_rows)
        assert sqlite_rows == postgres_rows, query
        assert answers["sqlite"][query], f"no rows, so the query proves little: {query}"
    # The dialect-specific variants agree too (per-day counts, raw JSON reads).
    sqlite_only = [r for q, r in answers["sqlite"].items() if q not in portable]
    postgres_only = [r for q, r in answers["postgresql"].items() if q not in portable]
    assert sqlite_only == postgres_only
    assert all(sqlite_only)


def all_commands() -> list[list[str]]:
    """The path of every command and group, `syncd` itself first."""
    paths: list[list[str]] = [[]]

    def walk(group: Any, prefix: list[str]) -> None:
        context = click.Context(group)
        for name in group.list_commands(context):  # the lazily loaded ones too (demo, mock-api)
            paths.append([*prefix, name])
            command = group.get_command(context, name)
            if isinstance(command, click.Group):
                walk(command, [*prefix, name])

    walk(cli, [])
    return paths


@pytest.mark.parametrize("path", all_commands(), ids=lambda path: " ".join(["syncd", *path]))
def test_every_command_and_group_has_help_with_an_example_and_is_in_the_readme(path: list[str]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0
    command: Any = cli
    for name in path:
        command = command.get_command(click.Context(command), name)
    assert command.help and len(command.help.strip()) > 20
    # An example block as click prints it: "Example" at the start of a line, commands indented below.
    example = re.search(r"^  Example[^\n]*:\n((?:    \S.*\n)+)", result.output, re.MULTILINE)
    assert example, f"`syncd {' '.join(path)} --help` shows no example:\n{result.output}"
    assert all("syncd" in line for line in example.group(1).splitlines()), example.group(1)
    readme = (REPO / "README.md").read_text()
    assert f"syncd {' '.join(path)}" in readme, f"`syncd {' '.join(path)}` is not in the README"


def test_readme_documents_every_exit_code() -> None:
    from syncd.errors import ExitCode

    readme = (REPO / "README.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\|\s*{int(code)}\s*\|", readme, re.MULTILINE), f"exit code {int(code)} missing"
    assert re.search(r"^\|\s*8\s*\|", readme, re.MULTILINE)


def test_every_setting_is_documented() -> None:
    """By its exact name, where a reader looks it up: a row of the README's
    table (SYNCD_API_KEY_FILE's row does not document SYNCD_API_KEY) and a key
    of the example file (archive_interval, or a comment's "interval", is not
    the key interval)."""
    from syncd.config import SPECS

    readme = (REPO / "README.md").read_text()
    example = (REPO / "deploy" / "syncd.toml.example").read_text()
    missing = []
    for spec in SPECS:
        # A row of the settings table, not a mention in passing.
        if not re.search(rf"^\| `{re.escape(spec.env)}` \|", readme, re.MULTILINE):
            missing.append(f"{spec.env} has no row in the README's settings table")
        # A key of the example file, set or commented out: "name = ..." or "# name = ...".
        key = rf"^[ \t]*(?:#[ \t]*)?{re.escape(spec.name)}[ \t]*="
        if spec.name != "api_key" and not re.search(key, example, re.MULTILINE):
            missing.append(f"{spec.name} is not a key in deploy/syncd.toml.example")
    assert not missing, "\n".join(missing)


def exactly(name: str) -> re.Pattern[str]:
    """``name`` as a whole word: not a part of a longer name."""
    return re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")


def test_a_setting_named_only_inside_a_longer_name_is_not_documented() -> None:
    assert not exactly("SYNCD_API_KEY").search("`SYNCD_API_KEY_FILE` | file holding the key")
    assert not exactly("interval").search("archive_interval = 60")
    assert exactly("SYNCD_API_KEY").search("| `SYNCD_API_KEY` | Bearer key |")


def test_every_environment_variable_syncd_its_tests_and_tools_read_is_in_the_readme() -> None:
    """Not only the settings: what the tests, the benchmarks and CI read too."""
    sources = [
        *(REPO / "syncd").rglob("*.py"),
        *(REPO / "bench").glob("*.py"),
        REPO / "tests" / "conftest.py",
        *(REPO / "scripts").iterdir(),
        *(REPO / ".ci").iterdir(),
    ]
    names = {
        name
        for source in sources
        if source.is_file() and source.suffix in ("", ".py", ".sh")
        for name in re.findall(r"(?<![A-Za-z0-9_])SYNCD_[A-Z0-9_]*[A-Z0-9]", source.read_text())
    }
    readme = (REPO / "README.md").read_text()
    missing = sorted(name for name in names if not exactly(name).search(readme))
    assert not missing, f"not in the README: {missing}"


def test_the_example_configuration_loads_without_a_warning() -> None:
    from syncd.config import load_settings

    settings = load_settings(env={}, config_path=REPO / "deploy" / "syncd.toml.example")
    assert settings.warnings == () and settings.require_https
    assert settings.source_of("api_url").startswith("api_url in ")


def test_the_units_documentation_is_what_pip_installs_beside_syncd() -> None:
    import tomllib

    unit = (REPO / "deploy" / "syncd.service").read_text()
    exec_start = re.search(r"^ExecStart=(/\S+)/bin/syncd ", unit, re.MULTILINE)
    assert exec_start, "ExecStart= is not <venv>/bin/syncd"
    venv = exec_start.group(1)
    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    installed = {
        f"{venv}/{target}/{Path(source).name}": REPO / source
        for target, sources in data_files.items()
        for source in sources
    }
    urls = " ".join(re.findall(r"^Documentation=(.*)$", unit, re.MULTILINE)).split()
    assert urls
    for url in urls:
        assert url.startswith("file://"), url
        path = url.removeprefix("file://")
        assert path in installed, f"{url} is not installed with syncd (pyproject.toml data-files)"
        assert installed[path].is_file()


def test_changelog_exists() -> None:
    assert (Path(REPO) / "CHANGELOG.md").read_text().startswith("# Changelog")


def test_every_package_is_in_the_wheel() -> None:
    """A package missing from pyproject.toml works in the editable install of
    the tests and fails in a user's `pip install .` (the slow quick-start test
    finds it too, but only in CI's slow suite)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "syncd").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found <= listed, f"packages not in pyproject.toml: {sorted(found - listed)}"
