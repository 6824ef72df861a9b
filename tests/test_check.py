"""`syncd check`: each item one line, ok or the problem, and the exit code a real run would end with."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from syncd import db
from syncd.fakeapi.server import FakeServer
from tests.conftest import invoke_cli


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`syncd check` in this process, with exactly ``env``'s SYNCD_* settings."""
    return invoke_cli("check", *args, env=env)


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}


@pytest.fixture
def api(fake_api: Callable[..., FakeServer]) -> FakeServer:
    return fake_api(20, malformed_fraction=0)


def settings_env(server: FakeServer, database: str, **extra: str) -> dict[str, str]:
    return {
        "SYNCD_API_URL": server.url,
        "SYNCD_API_KEY": "test-key",
        "SYNCD_DATABASE_URL": database,
        **{f"SYNCD_{k.upper()}": v for k, v in extra.items()},
    }


def test_all_well_is_a_line_each_and_exit_0_and_nothing_is_created(api: FakeServer, tmp_path: Path) -> None:
    database = tmp_path / "syncd.db"
    result = check(settings_env(api, f"sqlite:///{database}", archive_dir=str(tmp_path / "images")))
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert list(found) == ["settings", "api", "database", "archive"]
    assert all(" ok " in line for line in found.values()), result.stdout + result.stderr
    assert "answered GET /v1/artworks?limit=1" in found["api"]
    assert api.api.stats.requests == 1 and api.api.list_log == [(0, 1)]  # one request
    assert "does not exist yet" in found["database"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no database, lock or folder made


def test_an_existing_database_says_its_schema_revision(api: FakeServer, db_url: str, engine: object) -> None:
    result = check(settings_env(api, db_url))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"schema revision {db.HEAD_REVISION} (current)" in lines(result)["database"]


@pytest.mark.parametrize(
    ("case", "code", "item", "words"),
    [
        ("bad setting", 3, "settings", "SYNCD_PAGE_SIZE: must be an integer"),
        ("rejected key", 4, "api", "the API rejected the key (401"),
        ("no such host", 5, "api", "the host name does not resolve"),
        ("failing API", 5, "api", "500"),
        ("no database folder", 6, "database", "does not exist: create it"),
        ("newer schema", 6, "database", "newer than this syncd"),
        ("archive not a folder", 9, "archive", "is not a folder"),
    ],
)
def test_each_problem_is_one_line_and_its_exit_code(
    case: str, code: int, item: str, words: str, api: FakeServer, tmp_path: Path
) -> None:
    database = tmp_path / "syncd.db"
    env = settings_env(api, f"sqlite:///{database}")
    if case == "bad setting":
        env["SYNCD_PAGE_SIZE"] = "9999"
    elif case == "rejected key":
        env["SYNCD_API_KEY"] = "not-the-key"
    elif case == "no such host":
        env["SYNCD_API_URL"] = "https://no-such-host.invalid"
    elif case == "failing API":
        api.api.faults.error_5xx = 1.0
    elif case == "no database folder":
        env["SYNCD_DATABASE_URL"] = f"sqlite:///{tmp_path / 'missing' / 'syncd.db'}"
    elif case == "newer schema":
        engine = db.create_db_engine(env["SYNCD_DATABASE_URL"])
        db.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        engine.dispose()
    elif case == "archive not a folder":
        (tmp_path / "images").write_text("a file where the folder should be")
        env["SYNCD_ARCHIVE_DIR"] = str(tmp_path / "images")
    result = check(env)
    assert result.returncode == code, result.stdout + result.stderr
    assert words in lines(result)[item] and " PROBLEM " in lines(result)[item], result.stdout + result.stderr
    if case == "failing API":
        assert api.api.stats.requests == 1  # asked once: the answer is the verdict
    if case == "bad setting":
        assert list(lines(result)) == ["settings"]  # nothing else can be tried


def test_several_problems_are_all_said_and_the_first_decides_the_code(
    api: FakeServer, tmp_path: Path
) -> None:
    env = settings_env(api, f"sqlite:///{tmp_path / 'missing' / 'syncd.db'}", api_key="not-the-key")
    result = check(env)
    assert result.returncode == 4  # the key before the database
    assert " PROBLEM " in lines(result)["api"] and " PROBLEM " in lines(result)["database"]


@pytest.mark.parametrize(("revision", "code"), [("0003", 0), ("0006", 9)])
def test_the_archive_is_judged_in_a_database_a_run_has_not_upgraded_yet(
    revision: str, code: int, api: FakeServer, tmp_path: Path
) -> None:
    """Before the archive's table (0004) nothing is archived; before its store
    column (0007) every archived image was in a folder: an empty folder is then
    refused, as `syncd archive` refuses it once it has upgraded the schema."""
    from sqlalchemy import create_engine

    database = tmp_path / "syncd.db"
    engine = db.create_db_engine(f"sqlite:///{database}")
    db.upgrade(engine, revision)
    engine.dispose()
    if revision == "0006":
        raw = create_engine(f"sqlite:///{database}")  # no foreign keys: the rows alone
        with raw.begin() as conn:
            for position in range(2):
                conn.execute(
                    text(
                        "INSERT INTO archived_files (artwork_id, role, position, url, status, expires_at, "
                        "discovered_at, attempts) VALUES ('a', 'result', :p, 'https://i/x.png', 'archived', "
                        "'2026-11-01T00:00:00.000000Z', '2026-11-01T00:00:00.000000Z', 1)"
                    ),
                    {"p": position},
                )
        raw.dispose()
    (tmp_path / "images").mkdir()
    result = check(settings_env(api, f"sqlite:///{database}", archive_dir=str(tmp_path / "images")))
    line = lines(result)["archive"]
    assert result.returncode == code, result.stdout + result.stderr
    if code:
        assert " PROBLEM " in line and "yet 2 images are archived" in line, line
    else:
        assert "writable, no marker yet" in line, line
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == []
