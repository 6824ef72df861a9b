"""The CLI as a user meets it: exit codes, one-line errors. In this process
(``run_cli``) but for what needs a process of its own: another process
holding the lock, one killed mid-run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from syncd import db, locks, store
from syncd.fakeapi.server import FakeServer, Faults
from tests.conftest import run_cli, run_syncd, syncd_env


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("syncd: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"page_size": "0"}, "SYNCD_PAGE_SIZE: must be an integer from 1 to 500, got 0"),
        ({"api_url": "not a url"}, "SYNCD_API_URL: expected an http(s) URL"),
        ({"api_key_file": "/nonexistent/key"}, "does not exist"),
        ({"database_url": "oracle://x"}, "SYNCD_DATABASE_URL"),
    ],
)
def test_bad_config_exits_3_with_one_line_and_sends_nothing(
    extra: dict[str, str], needle: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(10)
    env = syncd_env(server.url, f"sqlite:///{tmp_path / 'x.db'}")
    env.update({f"SYNCD_{name.upper()}": value for name, value in extra.items()})
    if "api_key_file" in extra:
        del env["SYNCD_API_KEY"]
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 3
    assert needle in error_line(result.stderr)
    assert server.api.stats.requests == 0
    assert not (tmp_path / "x.db").exists()


def test_unknown_settings_are_one_warning_each_naming_the_closest(
    tmp_path: Path, fake_api: Callable[..., FakeServer]
) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text("page_sise = 10\nwriter_process = 'off'\n")
    env = {**syncd_env(fake_api(1).url, "sqlite:///x.db"), "SYNCD_PAGESIZE": "10"}
    result = run_cli(["run-once", "--config", str(config)], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [
        line for line in result.stderr.splitlines() if "is not a syncd setting" in line or "no longer" in line
    ]
    assert len(warnings) == 3, result.stderr
    assert (
        f"config file {config}: 'page_sise' is not a syncd setting (did you mean 'page_size'?)" in warnings[1]
    )
    assert "environment: SYNCD_PAGESIZE is not a syncd setting (did you mean SYNCD_PAGE_SIZE?)" in warnings[0]
    assert "'writer_process' is no longer used (helper processes were removed" in warnings[2]


def test_missing_api_url_exits_3(tmp_path: Path) -> None:
    env = syncd_env("http://127.0.0.1:9", "sqlite:///x.db")
    del env["SYNCD_API_URL"]
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 3
    assert "SYNCD_API_URL: not set" in error_line(result.stderr)


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_exits_4_within_a_few_requests_without_showing_it(
    status: int, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(50, faults=Faults(auth_status=status))
    env = syncd_env(server.url, f"sqlite:///{tmp_path / 's.db'}")
    env["SYNCD_API_KEY"] = "sk-live-SECRET-0123456789"
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 4
    line = error_line(result.stderr)
    assert f"the API rejected the key ({status}" in line and "SYNCD_API_KEY" in line
    assert "sk-live-SECRET" not in result.stderr + result.stdout
    assert server.api.stats.requests <= 2


def test_wrong_key_for_a_real_server_is_401(fake_api: Callable[..., FakeServer], tmp_path: Path) -> None:
    server = fake_api(5)
    env = syncd_env(server.url, f"sqlite:///{tmp_path / 's.db'}")
    env["SYNCD_API_KEY"] = "wrong"
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 4
    assert server.api.stats.by_status == {401: 1}


def test_unreachable_database_exits_6_with_one_line(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    env = syncd_env(fake_api(5).url, "postgresql://nobody@127.0.0.1:1/nothing")
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 6
    assert "cannot connect to the database postgresql+psycopg://nobody@127.0.0.1:1/nothing" in error_line(
        result.stderr
    )


def test_no_migrate_on_an_empty_database_names_the_fix(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    env = syncd_env(fake_api(5).url, f"sqlite:///{tmp_path / 'e.db'}")
    result = run_cli(["run-once", "--no-migrate"], env, cwd=tmp_path)
    assert result.returncode == 6
    assert "syncd db upgrade" in error_line(result.stderr)


def test_db_upgrade_and_current(db_url: str, tmp_path: Path) -> None:
    env = syncd_env("http://127.0.0.1:9", db_url)
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).touch()  # `db current` never creates the file
    before = run_cli(["db", "current"], env, cwd=tmp_path)
    assert before.returncode == 0 and before.stdout.startswith("empty")
    upgraded = run_cli(["db", "upgrade"], env, cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    after = run_cli(["db", "current"], env, cwd=tmp_path)
    assert after.stdout.strip().endswith("(latest)")


def test_lock_held_exits_7(db_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path) -> None:
    engine = db.create_db_engine(db_url)
    try:
        db.upgrade(engine)
        with locks.sync_lock(engine):
            result = run_syncd(["run-once"], syncd_env(fake_api(5).url, db_url), cwd=tmp_path)
        assert result.returncode == 7
        assert "another syncd process is syncing" in error_line(result.stderr)
    finally:
        engine.dispose()


def test_status_json_and_max_age(db_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path) -> None:
    env = syncd_env(fake_api(120).url, db_url, page_size="50")
    assert run_cli(["db", "upgrade"], env, cwd=tmp_path).returncode == 0
    never = run_cli(["status", "--max-age", "60"], env, cwd=tmp_path)
    assert never.returncode == 8, never.stdout + never.stderr
    assert run_cli(["run-once"], env, cwd=tmp_path).returncode == 0
    result = run_cli(["status", "--json", "--max-age", "3600"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["stale"] is False
    assert report["last_success"]["mode"] == "backfill"
    assert report["tables"]["artworks"] > 0
    stream = report["streams"][0]
    assert stream["list_order"] == "newest_first" and stream["phase"] == "idle"
    assert set(stream) >= {"cursor", "head", "tail", "listed_total", "last_incremental", "rate_limited_until"}
    text = run_cli(["status"], env, cwd=tmp_path)
    assert text.returncode == 0 and "list order        newest_first" in text.stdout
    # Ten minutes later (the run's end moved back: not a wait, and not "age > 0",
    # which a quick machine answers within the tenth of a second status rounds to).
    engine = db.create_db_engine(db_url)
    try:
        with db.writer(engine).begin() as conn:
            for run_id, finished_at in conn.execute(
                select(store.runs_table.c.id, store.runs_table.c.finished_at)
            ):
                conn.execute(
                    update(store.runs_table)
                    .where(store.runs_table.c.id == run_id)
                    .values(finished_at=finished_at - timedelta(minutes=10))
                )
    finally:
        engine.dispose()
    assert run_cli(["status", "--max-age", "900"], env, cwd=tmp_path).returncode == 0
    stale = run_cli(["status", "--max-age", "300"], env, cwd=tmp_path)
    assert stale.returncode == 8 and "STALE" in stale.stderr


def test_usage_error_exits_2(tmp_path: Path) -> None:
    assert (
        run_cli(
            ["run-once", "--no-such-flag"], syncd_env("http://x", "sqlite:///x.db"), cwd=tmp_path
        ).returncode
        == 2
    )


def test_version() -> None:
    from syncd import __version__

    result = run_cli(["--version"], syncd_env("http://x", "sqlite:///x.db"))
    assert result.returncode == 0 and __version__ in result.stdout


def test_progress_lines_on_request(fake_api: Callable[..., FakeServer], tmp_path: Path) -> None:
    env = syncd_env(fake_api(900).url, f"sqlite:///{tmp_path / 'p.db'}", page_size="100")
    result = run_cli(["run-once", "--progress"], env, cwd=tmp_path)
    assert result.returncode == 0
    # The last line has the whole run.
    line = r"backfill: 10 pages \([\d.,]+/s\), [\d,]+ artworks \([\d,]+/s\), \d+ requests, rate [\d.,]+/s, \d in flight"
    assert re.search(line, result.stderr), result.stderr
    assert "artworks/s" not in result.stdout


def test_warnings_never_land_on_the_progress_line(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(2000, faults=Faults(error_5xx=0.3))  # warnings ("retrying") between the pages
    env = syncd_env(server.url, f"sqlite:///{tmp_path / 'p.db'}", page_size="100", max_attempts="20")
    result = run_cli(["run-once", "--progress", "--no-refresh"], env, cwd=tmp_path)
    stderr = result.stderr
    assert result.returncode == 0, stderr
    warnings = [line for line in stderr.split("\n") if " WARNING " in line]
    assert warnings and "backfill: " in stderr
    for line in warnings:
        # What a terminal shows of it: from the last "clear the line" on.
        shown = line.rsplit("\r\x1b[K", 1)[-1]
        assert re.match(r"\d{4}-\d\d-\d\dT[\d:]+Z WARNING ", shown), repr(line)
        assert "backfill: " not in shown, repr(line)
    # The bar is drawn again after each warning; at the end it is left on a line
    # of its own, or cleared when a log line (the summary) came after it.
    assert "\nbackfill: " in stderr
    assert stderr.endswith("\n") or stderr.endswith("\r\x1b[K"), repr(stderr[-300:])


def test_status_shows_a_run_in_progress_and_one_its_process_abandoned(
    db_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    import signal

    from tests.conftest import start_syncd, wait_for

    server = fake_api(3000, faults=Faults(latency=0.2), malformed_fraction=0)
    env = syncd_env(server.url, db_url, page_size="50", max_requests_per_second="5")
    process = start_syncd(["run-once"], env, tmp_path)
    try:

        def status() -> dict[str, object]:
            result = run_cli(["status", "--json"], env, cwd=tmp_path)
            if result.returncode == 6 and "does not exist" in result.stderr:
                return {}  # run-once has not created the SQLite file yet (status never does)
            assert result.returncode == 0, result.stderr
            return dict(json.loads(result.stdout))

        wait_for(lambda: (status().get("running") or {}).get("pages", 0) > 0, 60, "a committed page")  # type: ignore[union-attr]
        running = status()["running"]
        assert isinstance(running, dict) and running["mode"] == "backfill" and running["alive"] is True
        text = run_cli(["status"], env, cwd=tmp_path).stdout
        assert re.search(r"running now +run 1 backfill started \S+: \d+ pages?", text), text
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
    # PostgreSQL ends the dead client's session (and its lock) when it notices.
    wait_for(lambda: status()["running"]["alive"] is False, 30, "the lock to go with the process")  # type: ignore[index]
    abandoned = status()["running"]
    assert isinstance(abandoned, dict) and abandoned["id"] == 1
    assert "abandoned     run 1 backfill" in run_cli(["status"], env, cwd=tmp_path).stdout


def test_a_reader_gone_before_the_output_ends_the_command_with_141_not_a_bug(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    # A real process (click's runner has no pipe): its stdout is a pipe whose
    # reading end is closed before it starts, so its first line meets EPIPE.
    server = fake_api(30, malformed_fraction=0)
    env = syncd_env(server.url, f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert run_cli(["run-once"], env, cwd=tmp_path).returncode == 0
    reader, writer = os.pipe()
    os.close(reader)
    with os.fdopen(writer, "w") as closed_pipe:
        result = subprocess.run(
            [sys.executable, "-m", "syncd", "status"],
            env=env,
            cwd=tmp_path,
            stdout=closed_pipe,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 141, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


def test_an_answer_echoing_the_key_in_a_header_never_shows_it_on_the_command_line(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    # The error quotes the Content-Encoding it refuses; the key in it is masked
    # on the error line and on check's api line, as in the log.
    server = fake_api(10, faults=Faults(content_encoding="br, test-key"))
    env = syncd_env(server.url, f"sqlite:///{tmp_path / 'db.sqlite'}", max_attempts="1")
    for command in (["run-once"], ["check"]):
        result = run_cli(command, env, cwd=tmp_path)
        assert result.returncode == 5, result.stdout + result.stderr
        output = result.stdout + result.stderr
        assert "Content-Encoding 'br, [REDACTED]'" in output, output
        assert "test-key" not in output, output
