"""Issue 14: every misconfiguration is one clear line and a documented exit code, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from syncd import db
from syncd.fakeapi.server import FakeServer
from tests.conftest import run_cli, run_syncd, syncd_env


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("syncd: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on (on every address, as the metrics endpoint would)."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        yield holder.getsockname()[1]


# ---------------------------------------------------------------- busy ports


@pytest.mark.parametrize("where", ["environment", "toml"])
def test_a_busy_metrics_port_is_a_config_error_naming_the_setting_its_source_and_the_port(
    where: str, busy_port: int, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    env = syncd_env(fake_api(5).url, f"sqlite:///{tmp_path / 'd.db'}", interval="60")
    config = tmp_path / "syncd.toml"
    if where == "environment":
        env["SYNCD_METRICS_PORT"] = str(busy_port)
        told_by = "set in the environment"
    else:
        config.write_text(f"metrics_port = {busy_port}\n")
        told_by = f"set by metrics_port in {config}"
    args = ["daemon"] if where == "environment" else ["daemon", "--config", str(config)]
    result = run_syncd(args, env, cwd=tmp_path, timeout=60)  # the daemon: a process of its own
    assert result.returncode == 3, result.stderr
    assert error_line(result.stderr) == (
        f"syncd: error: SYNCD_METRICS_PORT: port {busy_port} is already in use ({told_by}); "
        "choose another port"
    )


def test_mock_api_on_a_busy_port_is_one_line_and_exit_3(busy_port: int, tmp_path: Path) -> None:
    env = syncd_env("http://x", "sqlite:///x.db")
    result = run_cli(["mock-api", "--port", str(busy_port)], env, cwd=tmp_path, timeout=60)
    assert result.returncode == 3
    assert error_line(result.stderr) == (
        f"syncd: error: mock-api --host 127.0.0.1 --port {busy_port}: port {busy_port} is already in use; "
        "choose another --port (0 picks a free one)"
    )
    unknown = run_cli(["mock-api", "--host", "no-such-host.invalid"], env, cwd=tmp_path, timeout=60)
    assert unknown.returncode == 3
    line = error_line(unknown.stderr)
    assert "no-such-host.invalid is not a known host name; choose another --host" in line


# ---------------------------------------------------------------- postgres:// URLs


@pytest.mark.postgres
def test_postgres_scheme_urls_work_end_to_end(
    postgres_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """Heroku, Docker and libpq write postgres://; SQLAlchemy alone no longer accepts it."""
    url = make_url(postgres_url).set(drivername="postgres").render_as_string(hide_password=False)
    assert url.startswith("postgres://")
    env = syncd_env(fake_api(60).url, url, page_size="25")
    current = run_cli(["db", "current"], env, cwd=tmp_path)
    assert current.returncode == 0 and current.stdout.startswith("empty"), current.stderr
    upgraded = run_cli(["db", "upgrade"], env, cwd=tmp_path)
    assert upgraded.returncode == 0 and "(latest)" in upgraded.stdout, upgraded.stderr
    synced = run_cli(["run-once"], env, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    report = json.loads(run_cli(["status", "--json"], env, cwd=tmp_path).stdout)
    assert report["database"].startswith("postgresql+psycopg://")
    assert report["tables"]["artworks"] > 0 and report["last_success"]["mode"] == "backfill"


# ---------------------------------------------------------------- SQLite files and directories


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["db", "current"]])
def test_reading_commands_never_create_a_database_file(command: list[str], tmp_path: Path) -> None:
    env = syncd_env("http://127.0.0.1:9", "sqlite:///typo.db")
    result = run_cli(command, env, cwd=tmp_path)
    assert result.returncode == 6
    assert error_line(result.stderr) == (
        f"syncd: error: the database file {tmp_path / 'typo.db'} does not exist "
        "(SYNCD_DATABASE_URL, set in the environment: sqlite:///typo.db); "
        "run `syncd run-once` or `syncd db upgrade` to create it"
    )
    assert list(tmp_path.iterdir()) == []  # no file, no -wal, -shm or .lock


def test_the_missing_file_message_names_the_default_and_writers_still_create_it(tmp_path: Path) -> None:
    env = syncd_env("http://127.0.0.1:9", "unused")
    del env["SYNCD_DATABASE_URL"]
    status = run_cli(["status"], env, cwd=tmp_path)
    assert status.returncode == 6
    assert "(SYNCD_DATABASE_URL, the default: sqlite:///syncd.db)" in error_line(status.stderr)
    assert not (tmp_path / "syncd.db").exists()
    assert run_cli(["db", "upgrade"], env, cwd=tmp_path).returncode == 0
    assert (tmp_path / "syncd.db").is_file()
    assert run_cli(["status"], env, cwd=tmp_path).returncode == 0


def test_a_missing_directory_is_named_before_any_request(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(5)
    env = syncd_env(server.url, f"sqlite:///{tmp_path / 'no' / 'such' / 's.db'}")
    for command in (["run-once"], ["db", "upgrade"]):
        result = run_cli(command, env, cwd=tmp_path)
        assert result.returncode == 6
        assert error_line(result.stderr) == (
            f"syncd: error: the directory {tmp_path / 'no' / 'such'} for the database does not exist: "
            "create it, or correct the URL"
        )
    assert server.api.stats.requests == 0
    assert list(tmp_path.iterdir()) == []


def run_unprivileged(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI as a user whom file permissions bind: root keeps its uid but loses
    the capabilities that override them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        prefix = [setpriv or "setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
        # Dropping capabilities needs setpriv and CAP_SETPCAP, which some containers withhold.
        if setpriv is None or subprocess.run([*prefix, "true"], check=False).returncode != 0:
            pytest.skip("running as root, and cannot drop the capabilities that override permissions")
    return subprocess.run(
        [*prefix, sys.executable, "-m", "syncd", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Path]:
    """A migrated SQLite database in a directory of its own; permissions restored afterwards."""
    directory = tmp_path / "data"
    directory.mkdir()
    path = directory / "syncd.db"
    env = syncd_env("http://127.0.0.1:9", f"sqlite:///{path}")
    assert run_cli(["db", "upgrade"], env, cwd=tmp_path).returncode == 0
    for leftover in directory.glob("syncd.db?*"):  # the -wal, -shm and .lock of that run
        leftover.unlink()
    yield path
    directory.chmod(0o755)
    path.chmod(0o644)


def test_a_read_only_directory_is_told_apart_from_a_missing_one(
    database: Path, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(5)
    directory = database.parent
    directory.chmod(0o555)
    uid = os.geteuid()
    expected = (
        f"syncd: error: the directory {directory} for the database is not writable by this user "
        f"(uid {uid}); SQLite keeps the database's -wal and -shm files beside it, and syncd its .lock file"
    )
    new = syncd_env(server.url, f"sqlite:///{directory / 'new.db'}")
    existing = syncd_env(server.url, f"sqlite:///{database}")
    for command, env in ((["run-once"], new), (["run-once"], existing)):
        result = run_unprivileged(command, env, cwd=tmp_path)
        assert result.returncode == 6, result.stderr
        assert error_line(result.stderr) == expected
    assert server.api.stats.requests == 0
    # A reader needs no writable folder: it opens the file read-only and creates nothing.
    for command in (["status"], ["db", "current"]):
        read = run_unprivileged(command, existing, cwd=tmp_path)
        assert read.returncode == 0, read.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["syncd.db"]


def test_a_read_only_file_stops_writers_before_any_request_and_still_serves_readers(
    database: Path, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(5)
    database.chmod(0o444)
    env = syncd_env(server.url, f"sqlite:///{database}")
    for command in (["run-once"], ["db", "upgrade"]):
        result = run_unprivileged(command, env, cwd=tmp_path)
        assert result.returncode == 6, result.stderr
        assert error_line(result.stderr) == (
            f"syncd: error: the database file {database} is read-only for this user (uid {os.geteuid()})"
        )
    assert server.api.stats.requests == 0
    status = run_unprivileged(["status"], env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert f"schema        {db.HEAD_REVISION}" in status.stdout


# ---------------------------------------------------------------- the key in clear text


def test_make_client_warns_of_a_key_in_clear_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    from syncd import app
    from tests.conftest import make_settings

    # A port no other test uses: the warning is once per process and message.
    settings = make_settings("http://api.example.com:61999", "sqlite://")
    for _ in range(3):
        app.make_client(settings).close()
    warnings = [r.getMessage() for r in caplog.records if "sent in clear text" in r.getMessage()]
    assert warnings == [settings.cleartext_warning()]


def local_non_loopback_address() -> str:
    """This machine's address on its default route (no packet is sent), or skip."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            pytest.skip("no network route: no address but loopback")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("the default route leaves from a loopback address")
    return address


def test_plain_http_to_another_host_warns_once_and_require_https_refuses_it(tmp_path: Path) -> None:
    from syncd.fakeapi.data import Dataset
    from syncd.fakeapi.server import FakeApi

    address = local_non_loopback_address()
    server = FakeServer(FakeApi(Dataset(30, 1), api_key="test-key"), host="0.0.0.0").start()
    try:
        url = f"http://{address}:{server.server_address[1]}"
        env = syncd_env(url, f"sqlite:///{tmp_path / 'c.db'}", page_size="10")
        result = run_cli(["run-once"], env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
        assert len(warnings) == 1 and "sent in clear text" in warnings[0], result.stderr
        assert f"SYNCD_API_URL: {url} (set in the environment) is plain http://" in warnings[0]
        served = server.api.stats.requests
        assert served > 0
        strict = run_cli(["run-once"], {**env, "SYNCD_REQUIRE_HTTPS": "yes"}, cwd=tmp_path)
        assert strict.returncode == 3
        assert error_line(strict.stderr).startswith(f"syncd: error: SYNCD_API_URL: {url} ")
        assert server.api.stats.requests == served  # refused before any request
        assert "test-key" not in result.stderr + strict.stderr
    finally:
        server.stop()


def test_require_https_leaves_loopback_alone(fake_api: Callable[..., FakeServer], tmp_path: Path) -> None:
    env = syncd_env(fake_api(20).url, f"sqlite:///{tmp_path / 'l.db'}", require_https="true")
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "clear text" not in result.stderr


# ---------------------------------------------------------------- options where they apply

API_FLAGS = ("--api-url", "--api-key-file", "--page-size")
SHARED_FLAGS = ("--config", "--database-url", "--log-format", "--log-level")


@pytest.mark.parametrize(
    ("command", "calls_the_api"),
    [
        (["run-once"], True),
        (["daemon"], True),
        (["status"], False),
        (["db", "upgrade"], False),
        (["db", "current"], False),
    ],
)
def test_api_flags_only_on_the_commands_that_call_the_api(command: list[str], calls_the_api: bool) -> None:
    from click.testing import CliRunner

    from syncd.cli import cli

    shown = CliRunner().invoke(cli, [*command, "--help"]).output
    assert all(flag in shown for flag in SHARED_FLAGS), shown
    assert all((flag in shown) is calls_the_api for flag in API_FLAGS), shown
    if not calls_the_api:
        refused = CliRunner().invoke(cli, [*command, "--api-url", "https://x"])
        assert refused.exit_code == 2 and "No such option '--api-url'" in refused.output
