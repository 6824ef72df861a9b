"""The no-op run without the engine: what it writes, and when it hands over."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from syncd import db, store
from syncd.app import run_once
from syncd.fakeapi.server import FakeServer, Faults
from syncd.quick import QuickRun, first_backfill_likely, http_get, sqlite_file, try_quick_run
from tests.conftest import make_settings, run_syncd, syncd_env

# Columns a run may move whatever it does: times, and the run's own id.
MOVING = {"last_seen_at", "updated_at", "started_at", "finished_at", "id"}


def backfilled(
    fake_api: Callable[..., FakeServer], tmp_path: Path, **dataset: Any
) -> tuple[FakeServer, Path]:
    server = fake_api(230, seed=4, malformed_fraction=0, **dataset)
    path = tmp_path / "syncd.db"
    run_once(make_settings(server.url, f"sqlite:///{path}", page_size="50"))
    return server, path


def tables(path: Path) -> dict[str, list[dict[str, Any]]]:
    engine = db.create_db_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return {
                name: [
                    dict(row) for row in conn.execute(select(table).order_by(*table.primary_key)).mappings()
                ]
                for name, table in (
                    ("artworks", store.artworks),
                    ("sync_state", store.state_table),
                    ("sync_runs", store.runs_table),
                    ("rejected_records", store.rejected_table),
                )
            }
    finally:
        engine.dispose()


def without(rows: list[dict[str, Any]], moving: set[str]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in moving} for row in rows]


def quick(server: FakeServer, path: Path, **extra: str) -> QuickRun | None:
    return try_quick_run(make_settings(server.url, f"sqlite:///{path}", page_size="50", **extra))


def test_a_quick_no_op_writes_exactly_what_the_engine_writes(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server, path = backfilled(fake_api, tmp_path, unknown_fraction=0.05)
    engine_copy = tmp_path / "engine.db"
    shutil.copy(path, engine_copy)
    before = tables(path)

    server.api.reset_stats()
    outcome = quick(server, path)
    assert outcome is not None and not outcome.refresh_pending
    assert server.api.stats.list_requests == 1
    run_once(make_settings(server.url, f"sqlite:///{engine_copy}", page_size="50"))

    by_quick, by_engine = tables(path), tables(engine_copy)
    for name in by_quick:
        assert without(by_quick[name], MOVING) == without(by_engine[name], MOVING), name
    moved = {r["id"] for r in by_quick["artworks"]} - {
        a["id"] for a, b in zip(before["artworks"], by_quick["artworks"], strict=True) if a == b
    }
    moved_by_engine = {
        b["id"] for a, b in zip(before["artworks"], by_engine["artworks"], strict=True) if a != b
    }
    assert moved == moved_by_engine and len(moved) == 50  # the page read: last_seen_at only
    run = by_quick["sync_runs"][-1]
    assert (run["mode"], run["outcome"], run["requests"], run["unchanged"]) == (
        "incremental",
        "success",
        1,
        50,
    )
    assert outcome.summary.run_id == run["id"]
    assert outcome.summary.counts.unknown_type == by_engine["sync_runs"][-1]["unknown_type"]


def test_anything_new_is_left_to_the_engine(fake_api: Callable[..., FakeServer], tmp_path: Path) -> None:
    server, path = backfilled(fake_api, tmp_path)
    server.api.dataset.add(3)
    assert quick(server, path) is None
    runs = tables(path)["sync_runs"]
    assert [r["mode"] for r in runs] == ["backfill"]  # nothing written


def test_a_changed_artwork_is_left_to_the_engine(fake_api: Callable[..., FakeServer], tmp_path: Path) -> None:
    server, path = backfilled(fake_api, tmp_path)
    newest = server.api.dataset.items[-1]
    newest.value = dict(newest.value, status="failed")
    newest._json = None
    assert quick(server, path) is None


def test_a_429_records_its_deadline_and_hands_over(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server, path = backfilled(fake_api, tmp_path)
    server.api.faults.rate_limit = 0.01  # an empty bucket: the next request waits ~100 s
    server.api.reset_stats()
    assert quick(server, path) is None
    assert server.api.stats.by_status == {429: 1}
    state = tables(path)["sync_state"][0]
    assert state["rate_limited_until"] is not None
    assert state["rate_limited_until"] > datetime.now(UTC) + timedelta(seconds=1)
    # While the deadline stands, the quick path does not even ask.
    server.api.reset_stats()
    assert quick(server, path) is None
    assert server.api.stats.requests == 0


def test_unfinished_artworks_are_refreshed_by_the_engine_after_a_quick_list_run(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server, path = backfilled(fake_api, tmp_path, pending_fraction=0.2)
    outcome = quick(server, path)
    assert outcome is not None and outcome.refresh_pending
    server.api.dataset.finish_pending()
    env = syncd_env(server.url, f"sqlite:///{path}", page_size="50")
    result = run_syncd(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "incremental run" in result.stdout and "refresh run" in result.stdout
    engine = db.create_db_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert store.pending_refresh(conn) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///x.db?mode=ro",
        "postgresql://u@h/db",
        "sqlite:///file:x",
        "sqlite:///my%20file.db",
    ],
)
def test_only_plain_sqlite_files_take_the_quick_path(url: str) -> None:
    assert sqlite_file(url) is None


def test_proxies_and_missing_files_are_left_to_the_engine(
    fake_api: Callable[..., FakeServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, path = backfilled(fake_api, tmp_path)
    assert try_quick_run(make_settings(server.url, f"sqlite:///{tmp_path / 'absent.db'}")) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    server.api.reset_stats()
    assert quick(server, path) is None
    assert server.api.stats.requests == 0


def test_a_file_that_is_not_a_database_is_left_to_the_engine_to_report(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(10)
    path = tmp_path / "notes.db"
    path.write_text("not a database\n" * 100)
    assert try_quick_run(make_settings(server.url, f"sqlite:///{path}")) is None
    result = run_syncd(["run-once"], syncd_env(server.url, f"sqlite:///{path}"), cwd=tmp_path)
    assert result.returncode == 6, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert server.api.stats.requests == 0


def test_the_cli_no_op_is_one_request_and_reports_like_the_engine(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server, path = backfilled(fake_api, tmp_path)
    server.api.reset_stats()
    env = syncd_env(server.url, f"sqlite:///{path}", page_size="50")
    result = run_syncd(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert server.api.stats.list_requests == 1 and server.api.stats.requests == 1
    assert "syncd incremental run 2: success" in result.stdout
    assert "  unchanged              50\n" in result.stdout


def test_full_runs_never_take_the_quick_path(fake_api: Callable[..., FakeServer], tmp_path: Path) -> None:
    server, path = backfilled(fake_api, tmp_path)
    server.api.reset_stats()
    env = syncd_env(server.url, f"sqlite:///{path}", page_size="50")
    result = run_syncd(["run-once", "--full"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "syncd full run 2: success" in result.stdout
    assert server.api.stats.list_requests >= 230 // 49  # the whole list, not one page


def test_broken_answers_hand_over_and_the_engine_completes(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server, path = backfilled(fake_api, tmp_path)
    for fault in (
        {"truncated": 1.0},
        {"non_json": 1.0},
        {"not_a_list": 1.0},
        {"error_5xx": 1.0},
        {"reset": 1.0},
    ):
        server.api.faults = Faults()
        server.api.faults.update(fault)
        assert quick(server, path) is None, fault
    server.api.faults = Faults()
    assert quick(server, path) is not None


# ------------------------------------------------------------ the HTTP client


@contextmanager
def canned(response: bytes) -> Iterator[str]:
    """A server that answers one connection with ``response`` and closes it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(response)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        thread.join(5)
        listener.close()


def get(url: str) -> tuple[int, dict[str, str], bytes] | None:
    return http_get(
        urlsplit(url),
        "/v1/artworks?skip=0&limit=2",
        {"Accept": "application/json"},
        connect_timeout=5,
        read_timeout=5,
    )


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", (200, b"[]")),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n1;x=y\r\n]\r\n0\r\n\r\n",
            (200, b"[]"),
        ),
        (b"HTTP/1.0 429 Too Many\r\nRetry-After: 7\r\n\r\n", (429, b"")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n[1,2", None),  # cut short
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[1", None),  # cut short
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\nxx", None),
        (b"SSH-2.0-OpenSSH\r\n\r\n", None),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n[]", None),
        (b"", None),
    ],
)
def test_the_minimal_http_client_reads_what_it_understands_and_refuses_the_rest(
    response: bytes, expected: tuple[int, bytes] | None
) -> None:
    with canned(response) as url:
        answer = get(url)
    if expected is None:
        assert answer is None
    else:
        assert answer is not None and (answer[0], answer[2]) == expected


def test_a_closed_port_is_none() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert get(f"http://127.0.0.1:{port}") is None


def test_helpers_start_early_only_for_a_first_backfill_into_a_new_file(tmp_path: Path) -> None:
    new = tmp_path / "new.db"
    assert first_backfill_likely(make_settings("http://127.0.0.1:9", f"sqlite:///{new}"))
    new.touch()  # an existing file: a no-op, an incremental run, or a resumed backfill
    assert not first_backfill_likely(make_settings("http://127.0.0.1:9", f"sqlite:///{new}"))
    assert not first_backfill_likely(make_settings("http://127.0.0.1:9", "sqlite://"))
    assert not first_backfill_likely(make_settings("http://127.0.0.1:9", "postgresql://u@localhost/x"))
