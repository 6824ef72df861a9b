"""Requests in flight against a fake with the shape of a remote API: every
answer takes a while, and (some tests) a server-side limit answers 429."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from syncd import store
from syncd.fakeapi.server import FakeServer, Faults
from tests.conftest import Wire, backdate_checks, released_when, run_cli, syncd_env

L = 100


def stored_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(store.artworks.c.id)).scalars())


def valid_ids(server: FakeServer) -> set[str]:
    return {a.id for a in server.api.dataset.valid()}


def test_a_backfill_keeps_requests_in_flight_up_to_the_maximum(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(3000, faults=Faults(latency=0.1), malformed_fraction=0)
    env = syncd_env(server.url, db_url, page_size=str(L), max_in_flight="4")
    result = run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = server.api.stats
    assert 2 <= stats.peak_in_flight <= 4
    stored = stored_ids(engine)
    assert len(stored) == len(set(stored)) and set(stored) == valid_ids(server)
    pages = math.ceil((3000 - 1) / (L - 1))
    # The pages of the scan, the one that confirms its end, and at most the
    # ones asked ahead past the end.
    assert pages + 1 <= stats.list_requests <= pages + 1 + 3


def test_one_request_in_flight_when_told(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(1000, faults=Faults(latency=0.05), malformed_fraction=0)
    env = syncd_env(server.url, sqlite_url, page_size=str(L), max_in_flight="1")
    assert run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path).returncode == 0
    assert server.api.stats.peak_in_flight == 1
    # Nothing asked ahead: the pages, and the one that confirms the end.
    assert server.api.stats.list_requests == math.ceil((1000 - 1) / (L - 1)) + 1


def test_the_refresh_runs_its_requests_concurrently(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(300, faults=Faults(latency=0.1), malformed_fraction=0, pending_fraction=1.0)
    env = syncd_env(server.url, db_url, page_size=str(L), max_in_flight="5")
    assert run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path).returncode == 0
    server.api.dataset.finish_pending()
    backdate_checks(engine)
    server.api.reset_stats()
    result = run_cli(["run-once"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = server.api.stats
    assert stats.get_requests == 300 - L  # the first page's artworks were updated by the list read
    assert 2 <= stats.peak_in_flight <= 5
    with engine.connect() as conn:
        statuses = list(conn.execute(select(store.artworks.c.status)).scalars())
    assert len(statuses) == 300 and "processing" not in statuses


@pytest.mark.parametrize("blocks", [False, True], ids=["bucket", "penalty-box"])
def test_a_server_limit_below_the_ceiling_gets_no_early_request(
    blocks: bool,
    db_url: str,
    engine: Engine,
    fake_api: Callable[..., FakeServer],
    tmp_path: Path,
    wire: Wire,
) -> None:
    """Several requests in flight meet 429s: every one of them waits for the
    Retry-After, the limiter slows down, and nothing is lost."""
    # The first answer is a 429 (scripted: certain however slow this machine);
    # then a bucket of 10/s below syncd's 40/s. Once the scan is under way the
    # API holds what comes until two requests are in flight at once.
    faults = Faults(first_answers="429", latency=0.1, rate_limit=10, rate_limit_blocks=blocks)
    server = fake_api(1000, faults=faults, malformed_fraction=0)
    env = syncd_env(server.url, db_url, page_size="50", max_requests_per_second="40")
    with released_when(server, lambda: server.api.held >= 2, from_list=3):
        result = run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = server.api.stats
    assert stats.by_status and stats.by_status.get(429, 0) > 0
    assert stats.peak_in_flight >= 2
    assert wire.early() == [], "a request was sent before a Retry-After the client had read was over"
    assert "pace now" in result.stderr  # the 429 is logged with the limiter's new pace
    stored = stored_ids(engine)
    assert len(stored) == len(set(stored)) and set(stored) == valid_ids(server)


@pytest.mark.parametrize("order", ["newest_first", "oldest_first", "random"])
def test_pages_in_flight_while_the_list_shifts_lose_nothing(
    order: str, db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    faults = Faults(order=order, latency=0.03, add_per_request=3, delete_oldest_per_request=1)
    server = fake_api(1500, faults=faults, malformed_fraction=0, unknown_fraction=0.02)
    present_throughout = valid_ids(server)
    env = syncd_env(server.url, db_url, page_size=str(L), max_in_flight="6")
    # Pages in flight together whatever the machine's speed: after the first
    # page, nothing is answered until two requests wait at once.
    with released_when(server, lambda: server.api.held >= 2, from_list=1):
        assert run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path).returncode == 0
    assert server.api.stats.peak_in_flight >= 2
    present_throughout &= valid_ids(server)
    server.api.faults.add_per_request = server.api.faults.delete_oldest_per_request = 0
    assert run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path).returncode == 0
    stored = stored_ids(engine)
    assert len(stored) == len(set(stored))
    # Every artwork the API ever listed (pages fetched ahead and not used included).
    served = {i for i in server.api.served if server.api.dataset.ever[i].malformed is None}
    assert set(stored) == served
    assert present_throughout <= set(stored) and valid_ids(server) <= set(stored)


def test_a_server_that_states_its_limit_is_not_pushed_into_429s_once_it_has_shown_it(
    sqlite_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path, wire: Wire
) -> None:
    """Rate-limit headers are believed once the server has answered a 429 (a
    header its answers contradict must not throttle syncd): then RateLimit-Policy
    caps syncd's ceiling and a spent quota waits for its reset. The 429s are
    those of the requests on the wire when the first came, no more."""
    # The first answer is the 429 (scripted), so that it comes however slow this
    # machine is; the rest of the run (~10 requests at 5/s) must bring no other.
    faults = Faults(first_answers="429", latency=0.05, rate_limit=5, rate_limit_headers=True)
    server = fake_api(500, faults=faults, malformed_fraction=0)
    env = syncd_env(server.url, sqlite_url, page_size="50", max_requests_per_second="40", max_in_flight="4")
    result = run_cli(["run-once", "--no-refresh"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stats = server.api.stats
    assert stats.by_status is not None and 1 <= stats.by_status.get(429, 0) <= 4, stats.by_status
    assert wire.early() == []


def test_request_threads_are_started_only_when_none_is_free() -> None:
    """Each thread that allocates holds a malloc arena (RSS): one at a time
    needs one thread, four at once need four, and never more than allowed."""
    import threading

    from syncd.net.inflight import InFlight

    pool = InFlight(4)
    try:
        for n in range(20):
            assert pool.submit(lambda n=n: n).result(timeout=5) == n
        assert len(pool._threads) == 1
        gate = threading.Barrier(5)
        futures = [pool.submit(gate.wait, 5) for _ in range(4)]
        gate.wait(5)  # all four run at once, or this times out
        for future in futures:
            future.result(timeout=5)
        assert len(pool._threads) == 4
        blocked = [pool.submit(threading.Event().wait, 0.2) for _ in range(6)]
        for future in blocked:
            future.result(timeout=5)
        assert len(pool._threads) == 4
    finally:
        pool.close()
