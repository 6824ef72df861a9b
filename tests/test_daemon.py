"""The daemon as a real process: ticks, graceful stop, sd_notify, metrics, one active syncer."""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import Engine, select

from syncd import db, store
from syncd.fakeapi.server import FakeServer, Faults
from tests.conftest import backdate_checks, count, daemon, free_port, run_cli, syncd_env, wait_for

RUN_LINE = re.compile(r"syncd: run (\d+) (\w+) (\w+):")


def runs(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                select(store.runs_table.c.mode, store.runs_table.c.outcome).order_by(store.runs_table.c.id)
            )
        ]  # type: ignore[misc]


def test_daemon_picks_up_new_artworks_each_tick_and_stops_cleanly(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(500, malformed_fraction=0)
    env = syncd_env(server.url, db_url, page_size="100", interval="1")
    with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
        wait_for(lambda: count(engine) == len(server.api.dataset.valid()), 30, "the backfill")
        added = server.api.dataset.add(37)
        wait_for(lambda: count(engine) == len(server.api.dataset.valid()), 30, "the new artworks")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "syncd daemon started" in log and "stopped" in log
    with engine.connect() as conn:
        stored = set(conn.execute(select(store.artworks.c.id)).scalars())
    assert {a.id for a in added} <= stored
    modes = [mode for mode, _ in runs(engine)]
    assert modes[0] == "backfill" and "incremental" in modes


def test_sigterm_to_an_idle_daemon_says_no_run_is_in_flight(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(50, malformed_fraction=0)
    port = free_port()
    env = syncd_env(server.url, db_url, interval="3600", metrics_port=str(port))

    def idle() -> bool:
        # Recorded, and the tick over (the gauge goes to 0 only once the run's
        # job has returned): a run just recorded may still be finishing.
        if runs(engine) != [("backfill", "success")]:
            return False
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        return "\nsyncd_run_started_timestamp_seconds 0.0\n" in body

    with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
        wait_for(idle, 30, "the backfill's tick to be over")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "stopping: no run in flight" in log and "waiting for" not in log


def test_sigterm_during_backfill_exits_0_records_interrupted_and_resumes(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    total = 4000
    server = fake_api(total, faults=Faults(slow=1.0, delay=0.05), malformed_fraction=0)
    # A paced backfill (~4 s at 10 requests/s) that the signal finds half done.
    env = syncd_env(server.url, db_url, page_size="100", interval="60", max_requests_per_second="10")
    with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
        wait_for(lambda: count(engine) >= 600, 60, "some committed pages")
        # The API answers nothing more: the signal finds the backfill unfinished
        # however slow this machine (and a stop must not wait for the network).
        server.api.hold()
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - sent < 10
        server.api.release()
    # The held requests answer the stopped process; then the counts start again.
    wait_for(lambda: server.api.in_flight == 0, 30, "the held requests to be answered")
    assert runs(engine)[0] == ("backfill", "interrupted")
    assert "stopping: waiting for the sync run in flight" in (tmp_path / "daemon.log").read_text()
    committed = count(engine)
    assert committed < total
    server.api.faults.slow = 0
    server.api.reset_stats()
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert server.api.stats.list_requests <= -(-(total - committed) // 100) + 2
    assert count(engine) == total


def test_sd_notify_ready_and_watchdog(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(50)
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(20)
    env = {
        **syncd_env(server.url, sqlite_url, interval="60"),
        "NOTIFY_SOCKET": str(sock_path),
        "WATCHDOG_USEC": "1000000",
    }
    messages: list[str] = []
    try:
        with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
            while not (any("READY=1" in m for m in messages) and any("WATCHDOG=1" in m for m in messages)):
                messages.append(listener.recv(4096).decode())
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
            while not any("STOPPING=1" in m for m in messages):
                messages.append(listener.recv(4096).decode())
    finally:
        listener.close()
    ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
    assert all("WATCHDOG=1" not in m for m in messages[:ready]), "watchdog pings before READY"


def test_metrics_endpoint_serves_the_documented_names(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(300, faults=Faults(rate_limit=3))  # 7 pages at 3/s: a 429 and its wait
    port = free_port()
    env = syncd_env(server.url, sqlite_url, page_size="50", interval="60", metrics_port=str(port))
    with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
        engine = db.create_db_engine(sqlite_url)
        try:
            wait_for(
                lambda: (tmp_path / "daemon.log").read_text().count("success") >= 1, 60, "a successful run"
            )
        finally:
            engine.dispose()
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    for name in (
        'syncd_runs_total{mode="backfill",outcome="success"} 1.0',
        'syncd_artworks_synced_total{result="inserted"}',
        'syncd_api_requests_total{code="200"}',
        "syncd_rate_limited_total",
        "syncd_retry_wait_seconds_total",
        "syncd_last_success_timestamp_seconds",
        'syncd_run_duration_seconds_bucket{le="0.1",mode="backfill"}',
    ):
        assert name in body, name
    # The wait the API asked for: in the metrics, and logged once per deadline.
    until = re.search(r"^syncd_rate_limited_until_timestamp_seconds (\S+)$", body, re.MULTILINE)
    assert until is not None and float(until[1]) > time.time() - 120, body
    # The limiter's pace: below the ceiling of 1000/s after the 429s; nothing in flight between runs.
    pace = re.search(r"^syncd_api_request_rate (\S+)$", body, re.MULTILINE)
    assert pace is not None and 0 < float(pace[1]) < 1000, body
    assert re.search(r"^syncd_api_requests_in_flight 0\.0$", body, re.MULTILINE), body
    log = (tmp_path / "daemon.log").read_text()
    waits = log.count("rate limited by the API: no request before")
    assert 1 <= waits <= server.api.stats.by_status[429], log  # type: ignore[index]


def test_run_once_while_a_daemon_syncs_exits_7(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(300)
    server.api.hold()  # the daemon's first request hangs: it is inside a run, holding the lock
    env = syncd_env(server.url, db_url, page_size="100", interval="60")
    with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
        wait_for(lambda: server.api.held > 0, 30, "the daemon's first request")
        result = run_cli(["run-once"], env, cwd=tmp_path)
        assert result.returncode == 7
        assert "another syncd process is syncing" in result.stderr
        server.api.release()
        wait_for(lambda: count(engine) == len(server.api.dataset.valid()), 30, "the daemon's backfill")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_two_daemons_one_syncs_at_a_time_and_the_standby_takes_over(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(800, faults=Faults(slow=1.0, delay=0.02))
    env = syncd_env(server.url, db_url, page_size="100", interval="1")
    with (
        daemon(env, tmp_path, tmp_path / "a.log") as first,
        daemon(env, tmp_path, tmp_path / "b.log") as second,
    ):
        wait_for(lambda: count(engine) == len(server.api.dataset.valid()), 60, "the backfill")
        # One daemon's request hangs, inside a run that holds the lock: the
        # other's ticks meanwhile must skip (ticks are too quick to overlap by chance).
        server.api.hold()
        wait_for(lambda: server.api.held > 0, 30, "a tick's request to hang")

        def skipped() -> bool:
            logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
            return "tick skipped: another syncd process is syncing" in logs

        wait_for(skipped, 30, "the other daemon's tick to skip")
        # Kill one (the one syncing, or the standby): the other carries on.
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        killed_at = datetime.now(UTC)
        server.api.dataset.add(25)
        server.api.release()

        def a_run_since_the_kill() -> bool:
            with engine.connect() as conn:
                started = conn.execute(
                    select(store.runs_table.c.started_at).where(store.runs_table.c.outcome == "success")
                ).scalars()
                return any(moment > killed_at for moment in started)

        wait_for(a_run_since_the_kill, 30, "the other daemon to sync on")
        wait_for(lambda: count(engine) == len(server.api.dataset.valid()), 30, "the new artworks")
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0
    with engine.connect() as conn:
        spans = conn.execute(
            select(
                store.runs_table.c.started_at, store.runs_table.c.finished_at, store.runs_table.c.outcome
            ).order_by(store.runs_table.c.started_at)
        ).all()
    finished = [(start, end) for start, end, outcome in spans if end is not None and outcome != "crashed"]
    for (_, end), (next_start, _) in itertools.pairwise(finished):
        assert end <= next_start, "two runs overlapped: two syncers at once"


def test_a_rejected_key_is_logged_each_tick_without_a_retry_storm(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(100, faults=Faults(auth_status=401))
    env = syncd_env(server.url, sqlite_url, interval="1")
    with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
        wait_for(
            lambda: (tmp_path / "daemon.log").read_text().count("the API rejected the key") >= 3,
            30,
            "three ticks",
        )
        assert process.poll() is None  # still running
        ticks = (tmp_path / "daemon.log").read_text().count("the API rejected the key")
        assert server.api.stats.requests <= ticks + 1  # one request per tick, no retries
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert "AuthError" in (tmp_path / "daemon.log").read_text()


def test_refresh_visits_every_unfinished_artwork_in_turn_and_the_syncs_keep_their_interval(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """2,000 artworks stuck unfinished for a day (all due at once: far more than a
    refresh can take), and a young artwork before every list request that
    finishes a second after it is made. Counted by the fake's logs: the syncs
    come every interval; each young one is re-checked within its back-off and
    seen finished within seconds; the backlog is visited in turn, each stuck
    artwork at most once (its back-off is 6 h)."""
    server = fake_api(2000, malformed_fraction=0, unknown_fraction=0, pending_fraction=1.0)
    env = syncd_env(
        server.url,
        db_url,
        page_size="100",
        interval="0.6",
        refresh_interval="0.3",
        max_requests_per_second="40",
    )
    assert run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path).returncode == 0
    stuck = {a.id for a in server.api.dataset.items}
    backdate_checks(engine)
    server.api.faults.update({"add_per_request": 1, "finish_after": 1.0})
    server.api.reset_stats()
    api = server.api
    with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
        # Ten syncs and fifty re-checks of the backlog, however long a busy
        # machine takes for them (not a window that a stalled daemon fills
        # with fewer: ten syncs once came with 47 re-checks).
        wait_for(
            lambda: (
                len(api.list_times) >= 10
                and sum(1 for _, artwork_id in list(api.get_log) if artwork_id in stuck) >= 50
            ),
            120,
            "ten syncs and fifty re-checks of the backlog",
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    # Counted, not timed: between two syncs, at most two refreshes' worth of
    # re-checks (each sends for 0.15 s at 40/s, and up to 8 more are in flight),
    # though the refresh always had more to do: the refresh leaves the syncs
    # their turn, every interval. Before, one refresh took them all.
    starts = api.list_times
    syncs = len(starts)
    gets_between = [
        sum(1 for when, _ in api.get_log if before < when < after)
        for before, after in itertools.pairwise(starts)
    ]
    assert syncs >= 10 and max(gets_between) <= 2 * (6 + 8), gets_between
    # The backlog visited in turn: never the same stuck artwork twice.
    stuck_checks = [artwork_id for _, artwork_id in api.get_log if artwork_id in stuck]
    assert len(stuck_checks) >= 50 and len(stuck_checks) == len(set(stuck_checks))
    # Each young artwork (one made before each list request): re-checked while
    # unfinished at least once between any two syncs (its back-off is 0.3 s, a
    # refresh every 0.3 s), and stored finished a few syncs after it was made
    # (it finishes 1 s old; the syncs are 0.6 s apart).
    young = sorted((a for a in api.dataset.items if a.created_wall is not None), key=lambda a: a.index)
    assert len(young) == syncs
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(store.artworks.c.id, store.artworks.c.status)).all())
    for made, artwork in enumerate(young[:-5]):
        assert statuses[artwork.id] == "done", (artwork.id, made, syncs)
        checks = [when for when, artwork_id in api.get_log if artwork_id == artwork.id]
        for before, after in itertools.pairwise([starts[made], *checks]):
            assert sum(1 for start in starts if before < start < after) <= 2, (artwork.id, checks)


def test_metrics_move_during_a_run_and_the_gauges_show_it(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """A refresh of 400 artworks at 20 requests/s takes seconds: scraped meanwhile,
    the request counter moves, the run in progress shows, and the backlog is counted."""
    server = fake_api(400, malformed_fraction=0, unknown_fraction=0, pending_fraction=1.0)
    port = free_port()
    env = syncd_env(
        server.url,
        sqlite_url,
        page_size="100",
        interval="60",
        refresh_interval="30",
        max_requests_per_second="20",
        metrics_port=str(port),
    )
    assert run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path).returncode == 0
    engine = db.create_db_engine(sqlite_url)
    try:
        backdate_checks(engine)
    finally:
        engine.dispose()

    def scrape() -> dict[str, float]:
        try:
            body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return {}
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("syncd_")
        }

    def during_refresh() -> dict[str, float]:
        metrics = scrape()
        return metrics if metrics.get('syncd_run_in_progress{mode="refresh"}') == 1 else {}

    with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
        wait_for(lambda: bool(during_refresh().get('syncd_api_requests_total{code="200"}')), 30, "a refresh")
        first = during_refresh()
        code_200 = 'syncd_api_requests_total{code="200"}'
        # Five answers more, counted as they come, while the same refresh goes on
        # (400 re-checks at 20/s: it lasts ~20 s, however fast the machine).
        wait_for(lambda: during_refresh().get(code_200, 0) >= first[code_200] + 5, 30, "five answers more")
        second = during_refresh()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert first and second, "the refresh ended meanwhile: nothing to compare"
    assert second[code_200] >= first[code_200] + 5
    assert second["syncd_run_pages"] == 0  # a refresh writes no list page
    assert first["syncd_run_started_timestamp_seconds"] > time.time() - 60
    assert first["syncd_refresh_backlog"] == 400 and first["syncd_refresh_due"] >= 300
    assert first['syncd_run_in_progress{mode="incremental"}'] == 0
