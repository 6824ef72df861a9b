"""The one request core (syncd/net): the retry policy, the exception map, an unreachable server."""

from __future__ import annotations

import logging
import random
import socket
import threading
import time

import httpx
import pytest

from syncd.api.client import ApiClient, ClientOptions
from syncd.app import run_once
from syncd.config import Secret
from syncd.errors import ApiError, Interrupted, RetriesExhaustedError
from syncd.net.core import Exhausted, RequestCore
from syncd.net.limiter import RateLimiter
from syncd.net.pace import Pacer
from syncd.net.retry import Retriable, RetryPolicy
from tests.conftest import make_settings

POLICY = RetryPolicy(attempts=4, backoff_base=0.5, backoff_cap=8.0, max_retry_after=60.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.naps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.naps.append(seconds)
        self.now += seconds


def core_for(handler: httpx.MockTransport, policy: RetryPolicy = POLICY) -> tuple[RequestCore, Pacer, Clock]:
    clock = Clock()
    pacer = Pacer(RateLimiter(max_rate=1000.0), clock=clock.monotonic, sleep=clock.sleep)
    core = RequestCore(
        headers={},
        connect_timeout=1,
        read_timeout=1,
        deadline=2,
        policy=policy,
        base_url="https://host.example",
        transport=handler,
        rng=random.Random(1),
    )
    return core, pacer, clock


def judge(response: httpx.Response) -> int:
    if response.status_code >= 500:
        raise Retriable(f"{response.status_code}", kind=str(response.status_code))
    return response.status_code


def test_the_policy_waits_retry_after_or_backoff_and_gives_up_by_its_rules() -> None:
    rng = random.Random(1)
    throttled = Retriable("429", kind="429", retry_after=30.0, throttled=True)
    assert POLICY.delay(0, throttled, rng) == 30.0
    assert POLICY.delay(0, Retriable("429", kind="429", retry_after=600.0), rng) == 60.0  # clamped
    assert 0 <= POLICY.delay(3, Retriable("503", kind="503"), rng) <= 4.0  # 0.5 * 2**3, full jitter
    assert POLICY.gives_up(3, throttled, 1.0, 0.0) == "after 4 attempts"
    give_up = RetryPolicy(
        attempts=4, backoff_base=0.5, backoff_cap=8.0, max_retry_after=60.0, longer_retry_after="give up"
    )
    assert give_up.gives_up(0, Retriable("429", kind="429", retry_after=600.0), 60.0, 0.0) is not None
    budget = RetryPolicy(
        attempts=9,
        backoff_base=0.5,
        backoff_cap=8.0,
        max_retry_after=60.0,
        total_wait=10.0,
        total_wait_name="X",
    )
    assert budget.gives_up(1, throttled, 8.0, 5.0) == "the next wait (8s) would pass X (10s)"
    unreachable = Retriable("no such host", kind="network", unreachable=True)
    assert POLICY.gives_up(0, unreachable, 1.0, 0.0) is None  # the daemon's: tried again
    one_off = RetryPolicy(
        attempts=9, backoff_base=0.5, backoff_cap=8.0, max_retry_after=60.0, retry_unreachable=False
    )
    assert one_off.gives_up(0, unreachable, 1.0, 0.0) == "at once: the server cannot be reached"


def test_send_retries_what_is_retriable_and_succeeds() -> None:
    answers = iter([503, 502, 200])
    core, pacer, clock = core_for(httpx.MockTransport(lambda r: httpx.Response(next(answers))))
    assert core.send(lambda: core.exchange("/x", judge, pacing=pacer), pacing=pacer) == 200
    assert len(clock.naps) >= 2


def test_send_gives_up_with_the_last_failure() -> None:
    core, pacer, _ = core_for(httpx.MockTransport(lambda r: httpx.Response(503)))
    with pytest.raises(Exhausted, match="after 4 attempts: 503"):
        core.send(lambda: core.exchange("/x", judge, pacing=pacer), pacing=pacer)


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        (httpx.ConnectError("[Errno -2] Name or service not known"), "does not resolve"),
        (httpx.ConnectError("[Errno 111] Connection refused"), "refused"),
        (httpx.ConnectError("[Errno 113] No route to host"), None),
        (httpx.ReadTimeout("timed out"), None),
    ],
)
def test_httpx_failures_become_one_retriable_and_an_unreachable_server_is_told_apart(
    error: httpx.TransportError, unreachable: str | None
) -> None:
    cause = {
        "does not resolve": socket.gaierror(-2, "Name or service not known"),
        "refused": ConnectionRefusedError(111, "refused"),
    }

    def fail(request: httpx.Request) -> httpx.Response:
        if unreachable is not None:
            raise error from cause[unreachable]
        raise error

    core, pacer, _ = core_for(httpx.MockTransport(fail))
    with pytest.raises(Retriable) as caught:
        core.exchange("/x", judge, pacing=pacer)
    assert caught.value.unreachable is (unreachable is not None)
    if unreachable is not None:
        assert unreachable in caught.value.reason


def test_run_once_says_at_once_that_the_api_cannot_be_reached(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in the host was retried 8 times (25-44 s, 7-8 warnings) before exit 5."""
    with socket.socket() as holder:  # a port nobody listens on
        holder.bind(("127.0.0.1", 0))
        closed_port = holder.getsockname()[1]
    caplog.set_level(logging.WARNING)
    for url, why in (
        ("http://no-such-host.invalid", "does not resolve"),
        (f"http://127.0.0.1:{closed_port}", "refused"),
    ):
        with pytest.raises(ApiError, match=f"cannot reach the API .*{why}.*is SYNCD_API_URL right") as caught:
            run_once(make_settings(url, sqlite_url))
        assert not isinstance(caught.value, RetriesExhaustedError)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_the_daemons_client_keeps_trying_an_unreachable_server() -> None:
    attempts = 0

    def refused(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        raise httpx.ConnectError("refused") from ConnectionRefusedError(111, "refused")

    clock = Clock()
    client = ApiClient(
        "https://api.example",
        Secret("test-key-123"),
        options=ClientOptions(max_attempts=3, max_requests_per_second=1000.0),
        transport=httpx.MockTransport(refused),
        clock=clock.monotonic,
        sleep=clock.sleep,
    )
    with client, pytest.raises(RetriesExhaustedError, match="after 3 attempts"):
        client.fetch_list_page(0, 10)
    assert attempts == 3


def test_no_retry_is_announced_once_a_stop_was_asked_for(caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C logged "connection failed (ReadError: Bad file descriptor); retrying
    in 0.3s (attempt 1 of 8)" before exit 130: the stop cut the read, and the
    retry that followed was never going to happen."""

    def cut(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("Bad file descriptor")

    def stopped_sleep(seconds: float) -> None:
        raise Interrupted("stopped by a signal")

    client = ApiClient(
        "https://api.example",
        Secret("test-key-123"),
        options=ClientOptions(max_requests_per_second=1000.0),
        transport=httpx.MockTransport(cut),
        sleep=stopped_sleep,
        stopping=lambda: True,
    )
    caplog.set_level(logging.DEBUG)
    with client, pytest.raises(Interrupted):
        client.fetch_list_page(0, 10)
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_closing_the_core_closes_a_connection_its_request_opened_meanwhile() -> None:
    """A run ends with requests under way and closes its client. httpx's pool
    closes the connections it holds; one whose connect completes just after
    was left open, for the garbage collector to find (a ResourceWarning, an
    error wherever it surfaced) and its request sent on it regardless."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    ended = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while chunk := conn.recv(4096):
                received.append(chunk)
        ended.set()

    connected, closed = threading.Event(), threading.Event()

    def connect_held_until_closed(peer: str) -> None:
        connected.set()
        assert closed.wait(30)

    core = RequestCore(
        headers={},
        connect_timeout=30,
        read_timeout=30,
        deadline=60,
        policy=POLICY,
        base_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
        check_peer=connect_held_until_closed,
    )
    pacer = Pacer(RateLimiter(max_rate=1000.0), clock=time.monotonic, sleep=time.sleep)
    failures: list[BaseException] = []

    def request() -> None:
        try:
            core.exchange("/x", judge, pacing=pacer)
        except BaseException as exc:
            failures.append(exc)

    threading.Thread(target=serve, daemon=True).start()
    requester = threading.Thread(target=request)
    requester.start()
    try:
        assert connected.wait(30)
        core.close()
    finally:
        closed.set()
        requester.join(30)
        listener.close()
    assert ended.wait(30), "the connection was left open"
    assert received == []  # no request sent on it
    assert len(failures) == 1 and isinstance(failures[0], Retriable), failures
    assert "the client was closed" in str(failures[0])
