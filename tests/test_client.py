"""The API client with a mock transport and a fake clock: status table, retries, pacing."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from syncd.api.body import BrokenBody, parse_array, split_top_level_array
from syncd.api.client import ApiClient, ClientOptions
from syncd.config import Secret
from syncd.errors import ApiError, AuthError, BadRequestError, RetriesExhaustedError
from syncd.net.pace import Unwanted
from syncd.net.retry import backoff_delay, parse_retry_after
from syncd.records import Unparseable

KEY = "sk-test-DO-NOT-LEAK-42"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class FakeClock:
    """Monotonic and wall clocks that move only when syncd sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.now - 1000.0)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


Handler = Callable[[httpx.Request], httpx.Response]


def client_for(
    handler: Handler, clock: FakeClock | None = None, **options: float
) -> tuple[ApiClient, FakeClock, list[httpx.Request]]:
    clock = clock or FakeClock()
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    limits = {"max_requests_per_second": 1000.0, "max_attempts": 5, "max_retry_wait": 300.0, **options}
    client = ApiClient(
        "https://api.example",
        Secret(KEY),
        options=ClientOptions(**limits),  # type: ignore[arg-type]
        transport=httpx.MockTransport(record),
        clock=clock.monotonic,
        sleep=clock.sleep,
        wall=clock.wall,
        rng=random.Random(1),
    )
    return client, clock, seen


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, content=orjson.dumps(body), headers={"Content-Type": "application/json", **(headers or {})}
    )


def sequence(*responses: httpx.Response) -> Handler:
    queue = list(responses)
    return lambda request: queue.pop(0) if len(queue) > 1 else queue[0]


def test_list_page_sends_bearer_key_and_paging() -> None:
    client, _, seen = client_for(lambda r: json_response(200, [{"id": "x"}]))
    assert client.fetch_list_page(40, 20) == [{"id": "x"}]
    assert seen[0].url.params["skip"] == "40" and seen[0].url.params["limit"] == "20"
    assert seen[0].headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("status", "error", "fragment"),
    [
        (401, AuthError, "the API rejected the key (401 Unauthorized) supplied by SYNCD_API_KEY"),
        (403, AuthError, "the API rejected the key (403 Forbidden)"),
        (
            400,
            BadRequestError,
            "refused GET /v1/artworks?skip=0&limit=10 with 400 Bad Request: limit must not be greater than 500",
        ),
        (404, ApiError, "is SYNCD_API_URL the API's base URL?"),
        (422, BadRequestError, "422"),
    ],
)
def test_fatal_statuses_fail_at_once(status: int, error: type[Exception], fragment: str) -> None:
    client, clock, seen = client_for(
        lambda r: json_response(
            status, {"message": ["limit must not be greater than 500"], "statusCode": status}
        )
    )
    with pytest.raises(error) as info:
        client.fetch_list_page(0, 10)
    assert fragment in str(info.value)
    assert KEY not in str(info.value)
    assert len(seen) == 1 and clock.slept == []


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried_with_backoff(status: int) -> None:
    client, clock, seen = client_for(
        sequence(httpx.Response(status, text="<html>bad gateway</html>"), json_response(200, []))
    )
    assert client.fetch_list_page(0, 10) == []
    assert len(seen) == 2 and len(clock.slept) == 1 and 0 <= clock.slept[0] <= 0.5


@pytest.mark.parametrize(
    "broken",
    [
        httpx.Response(200, text="<!DOCTYPE html><html>maintenance</html>"),
        httpx.Response(200, content=b'[{"id": "a"}, {"id": '),
        json_response(200, {"data": []}),
        httpx.Response(200, content=b""),
    ],
)
def test_broken_200_bodies_are_retried(broken: httpx.Response) -> None:
    client, _, seen = client_for(sequence(broken, json_response(200, [1])))
    assert client.fetch_list_page(0, 10) == [1]
    assert len(seen) == 2


def test_network_errors_and_timeouts_are_retried() -> None:
    failures: list[Exception] = [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("cut"),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop(0)
        return json_response(200, [])

    client, _, seen = client_for(handler)
    assert client.fetch_list_page(0, 10) == []
    assert len(seen) == 4
    assert client.stats.by_status["network"] == 2 and client.stats.by_status["timeout"] == 1


def test_retry_after_seconds_is_waited_exactly_and_reported() -> None:
    clock = FakeClock()
    sent_at: list[float] = []
    answers = sequence(
        json_response(429, {"message": "slow down"}, {"Retry-After": "7"}), json_response(200, [])
    )

    def timed(request: httpx.Request) -> httpx.Response:
        sent_at.append(clock.now)
        return answers(request)

    client, _, _ = client_for(timed, clock)
    client.fetch_list_page(0, 10)
    assert sent_at[1] - sent_at[0] >= 7.0
    assert client.rate_limited_until == T0 + timedelta(seconds=7)
    assert client.limiter.rate < 1000.0  # slowed down after the 429


def test_retry_after_http_date() -> None:
    when = email.utils.format_datetime(T0 + timedelta(seconds=30), usegmt=True)
    client, clock, _ = client_for(
        sequence(json_response(429, {}, {"Retry-After": when}), json_response(200, []))
    )
    client.fetch_list_page(0, 10)
    assert sum(clock.slept) >= 30.0


def test_429_without_retry_after_backs_off() -> None:
    client, clock, seen = client_for(
        sequence(json_response(429, {}), json_response(429, {}), json_response(200, []))
    )
    client.fetch_list_page(0, 10)
    assert len(seen) == 3 and 0 < sum(clock.slept) <= 0.5 + 1.0 + 0.01


def test_attempts_exhausted() -> None:
    client, _, seen = client_for(lambda r: httpx.Response(503), max_attempts=3)
    with pytest.raises(RetriesExhaustedError, match="after 3 attempts: 503"):
        client.fetch_list_page(0, 10)
    assert len(seen) == 3


@pytest.mark.parametrize("header", ["3600", "31536000"])
def test_a_long_retry_after_is_clamped_to_the_total_wait_bound(header: str) -> None:
    client, clock, seen = client_for(
        lambda r: json_response(429, {}, {"Retry-After": header}), max_retry_wait=60
    )
    with pytest.raises(RetriesExhaustedError, match="SYNCD_MAX_RETRY_WAIT"):
        client.fetch_list_page(0, 10)
    # One wait of the bound, then the next 429 would pass it: no year-long sleep.
    assert len(seen) == 2 and sum(clock.slept) == pytest.approx(60.0)
    assert client.rate_limited_until == T0 + timedelta(seconds=120)  # the second, clamped too


@pytest.mark.parametrize("header", ["inf", "nan", "1" + "0" * 400, "-inf", "1e308"])
def test_an_absurd_retry_after_falls_back_to_the_backoff(header: str) -> None:
    client, clock, seen = client_for(
        sequence(json_response(429, {}, {"Retry-After": header}), json_response(200, []))
    )
    assert client.fetch_list_page(0, 10) == []
    assert len(seen) == 2 and 0 <= sum(clock.slept) <= 0.5
    assert client.rate_limited_until is None  # nothing worth persisting


def test_get_artwork_404_is_none() -> None:
    client, _, seen = client_for(lambda r: json_response(404, {"message": "Artwork not found"}))
    assert client.get_artwork("abc/../x") is None
    assert seen[0].url.raw_path == b"/v1/artworks/abc%2F..%2Fx"


def test_persisted_deadline_is_honoured_before_the_first_request() -> None:
    client, clock, _ = client_for(lambda r: json_response(200, []))
    client.wait_until(T0 + timedelta(seconds=42))
    client.fetch_list_page(0, 10)
    assert sum(clock.slept) >= 42.0


def test_pacing_keeps_under_the_configured_rate() -> None:
    client, clock, _seen = client_for(lambda r: json_response(200, []), max_requests_per_second=4.0)
    for _ in range(9):
        client.fetch_list_page(0, 10)
    assert clock.now - 1000.0 >= 2.0 - 1e-9  # 9 requests at 4/s span at least 2 s


# ------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (email.utils.format_datetime(T0 + timedelta(seconds=90), usegmt=True), 90.0),
        (email.utils.format_datetime(T0 - timedelta(seconds=90), usegmt=True), 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, T0) == expected


def test_backoff_delay_is_full_jitter_and_capped() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(attempt, base=0.5, cap=10, rng=rng) for attempt in range(12) for _ in range(50)]
    assert all(0 <= d <= 10 for d in delays)
    assert max(delays) > 8 and min(delays) < 0.5


def test_the_clients_rate_climbs_back_to_the_ceiling_after_a_429() -> None:
    client, clock, _ = client_for(
        sequence(json_response(429, {}, {"Retry-After": "1"}), json_response(200, [])),
        max_requests_per_second=10.0,
    )
    client.fetch_list_page(0, 10)  # a 429 on the first request, then its retry succeeds
    # Too little history to measure the server: half, then a first probe up
    # (5% more) when the retry succeeds after the second's wait.
    assert client.limiter.rate == pytest.approx(5.0 * 1.05)
    started = clock.now
    for _ in range(400):
        client.fetch_list_page(0, 10)
        if client.limiter.rate == 10.0:
            break
    assert client.limiter.rate == 10.0
    assert clock.now - started < 10  # a guess is probed up quickly: 5% more every half second


def test_the_server_stated_limit_and_quota_are_heeded_once_it_has_answered_429() -> None:
    headers = {"RateLimit-Policy": "4;w=1", "RateLimit-Remaining": "0", "RateLimit-Reset": "3"}
    throttled = json_response(429, {"message": "slow down"}, {**headers, "Retry-After": "1"})
    client, clock, _ = client_for(
        sequence(json_response(200, [], headers), throttled, json_response(200, [], headers)),
        max_requests_per_second=10.0,
    )
    client.fetch_list_page(0, 10)
    assert client.limiter.max_rate == 10.0  # a header alone: not yet believed
    client.fetch_list_page(0, 10)  # a 429, then the retry's 200
    assert client.limiter.max_rate == 4.0
    sent = clock.now
    client.fetch_list_page(0, 10)
    assert clock.now - sent >= 3.0  # the quota was spent: not before it resets


def test_requests_in_flight_follow_the_latency_and_the_rate() -> None:
    clock = FakeClock()

    def slow(request: httpx.Request) -> httpx.Response:
        clock.now += 0.4  # the answer takes 400 ms
        return json_response(200, [])

    client, _, _ = client_for(slow, clock, max_requests_per_second=10.0, max_in_flight=16)
    assert client.in_flight_target() == 1  # no answer yet: latency unknown
    client.fetch_list_page(0, 10)
    assert client.in_flight_target() == 10  # 10/s x (0.4 s + 0.5 s of slack), and one more
    assert client.in_flight_target(demand=2.0) == 1  # the caller takes 2 pages a second: 2 x 0.4
    assert client.in_flight_target(demand=5.0) == 2
    client.limiter.rate = 100.0
    assert client.in_flight_target() == 16  # SYNCD_MAX_IN_FLIGHT


def test_split_and_parse_hostile_bodies() -> None:
    assert split_top_level_array(b'[{"a": "x,]"}, [1, [2]], "s\\"q"]') == [
        b'{"a": "x,]"}',
        b"[1, [2]]",
        b'"s\\"q"',
    ]
    deep = b"[" + b'{"id": "ok"}, ' + b'{"p": ' + b"[" * 5000 + b"]" * 5000 + b"}]"
    elements = parse_array(deep)
    assert elements[0] == {"id": "ok"} and isinstance(elements[1], Unparseable)
    with pytest.raises(BrokenBody):
        parse_array(b'[{"id": "a"}, {"id": ')
    with pytest.raises(BrokenBody):
        parse_array(b"[" + b"[" * 5000)
    with pytest.raises(BrokenBody, match="not an array"):
        parse_array(b'{"a": 1}')


def test_an_answer_trickling_in_byte_by_byte_is_cut_off_at_the_requests_deadline() -> None:
    """Each byte within the read timeout, the whole never: headers and body alike."""
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 1000:
                    if stop.is_set():
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break
                    time.sleep(0.05)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    options = ClientOptions(
        connect_timeout=0.5, read_timeout=0.5, max_attempts=2, max_requests_per_second=100
    )
    client = ApiClient(f"http://127.0.0.1:{listener.getsockname()[1]}", Secret(KEY), options=options)
    started = time.monotonic()
    try:
        with pytest.raises(RetriesExhaustedError, match="an answer must be complete within 1s"):
            client.fetch_list_page(0, 10)
        # Two attempts of 1 s each and a short backoff: nowhere near the 50 s of
        # trickle (the bound is between the two, far from both, for a busy machine).
        assert time.monotonic() - started < 25
    finally:
        stop.set()
        client.close()
        listener.close()
        thread.join(timeout=5)


def test_a_spent_quota_is_waited_for_only_when_its_reset_is_plausible() -> None:
    spent = {"RateLimit-Remaining": "0", "RateLimit-Reset": "5"}
    first_429 = json_response(429, {"message": "slow down"}, {"Retry-After": "0"})
    client, clock, _ = client_for(sequence(first_429, json_response(200, [], spent)))
    client.fetch_list_page(0, 10)
    sent = clock.now
    client.fetch_list_page(0, 10)
    assert clock.now - sent >= 5.0
    absurd = {"RateLimit-Remaining": "0", "RateLimit-Reset": "999999"}
    client, clock, _ = client_for(sequence(first_429, json_response(200, [], absurd)))
    for _ in range(3):
        client.fetch_list_page(0, 10)
    assert clock.now - 1000.0 < 1.0  # a server saying so on every answer cannot stall syncd


def test_rate_limit_headers_its_own_answers_contradict_never_slow_syncd() -> None:
    """RateLimit-Remaining: 0 with a minute's reset on every 200 (and a stated
    limit of one request a minute) held syncd to a request a minute: without a
    429 the server has not shown that it limits anything, so no header slows syncd."""
    lying = {"RateLimit-Remaining": "0", "RateLimit-Reset": "60", "RateLimit-Policy": "1;w=60"}
    client, clock, seen = client_for(lambda r: json_response(200, [], lying), max_requests_per_second=5.0)
    for _ in range(50):
        client.fetch_list_page(0, 10)
    assert len(seen) == 50
    assert clock.now - 1000.0 < 11.0  # 50 requests at the ceiling's 5/s, not 50 minutes
    assert client.limiter.max_rate == 5.0


def test_a_429s_retry_after_holds_every_request_from_its_headers_on() -> None:
    """Not only once its (maybe slow) body is read: other threads must not send meanwhile."""
    clock = FakeClock()
    holds: list[float] = []

    def body() -> Iterator[bytes]:
        yield b'{"message": '
        holds.append(client.limiter.wait_time(clock.now))  # while the body is still coming
        yield b'"slow down"}'

    client, _, _ = client_for(
        sequence(httpx.Response(429, headers={"Retry-After": "30"}, content=body()), json_response(200, [])),
        clock,
    )
    client.fetch_list_page(0, 10)
    assert holds and holds[0] >= 30.0 - 1e-6


def test_a_request_no_longer_wanted_is_neither_sent_nor_retried() -> None:
    client, _, seen = client_for(lambda r: json_response(200, []))
    with pytest.raises(Unwanted):
        client.fetch_list_page(0, 10, wanted=lambda: False)
    assert seen == []
    wanted = [True]

    def failing(request: httpx.Request) -> httpx.Response:
        wanted[0] = False  # the caller moved on while this one was answered
        return json_response(503, {"message": "busy"})

    client, _, seen = client_for(failing)
    with pytest.raises(Unwanted):
        client.fetch_list_page(0, 10, wanted=lambda: wanted[0])
    assert len(seen) == 1


def test_slots_go_to_requests_in_the_order_they_asked() -> None:
    """With several requests waiting for the pace, the first to ask goes first:
    pages are needed in order, and one sent late holds up every page after it.

    The order is made, not hoped for: each request asks (it is sent, or waits
    for its slot) before the next is started, and the clock moves only when
    the test wakes the waiting ones, each at its slot, earliest first."""
    import threading

    from tests.conftest import wait_for

    sent: list[int] = []
    now = [1000.0]
    waiting: list[tuple[float, threading.Event]] = []  # (the slot slept for, its wake-up)
    lock = threading.Lock()

    def record(request: httpx.Request) -> httpx.Response:
        with lock:
            sent.append(int(request.url.params["skip"]))
        return json_response(200, [])

    def sleep(seconds: float) -> None:
        wake = threading.Event()
        with lock:
            waiting.append((now[0] + seconds, wake))
        assert wake.wait(10)

    def asked() -> int:
        with lock:
            return len(sent) + len(waiting)

    client = ApiClient(
        "https://api.example",
        Secret(KEY),
        options=ClientOptions(max_requests_per_second=20.0),
        transport=httpx.MockTransport(record),
        clock=lambda: now[0],
        sleep=sleep,
    )
    threads = []
    for skip in range(8):
        thread = threading.Thread(target=client.fetch_list_page, args=(skip, 10))
        thread.start()
        threads.append(thread)
        wait_for(lambda skip=skip: asked() == skip + 1, 10, f"request {skip} to ask")  # type: ignore[misc]
    assert waiting, "no request waited for the pace: nothing to order"
    for slot, wake in sorted(waiting, key=lambda entry: entry[0]):
        before = len(sent)
        now[0] = slot
        wake.set()
        wait_for(lambda before=before: len(sent) > before, 10, "the request woken to be sent")  # type: ignore[misc]
    for thread in threads:
        thread.join(10)
    assert sent == list(range(8))


def test_a_request_no_longer_wanted_stops_waiting_between_attempts() -> None:
    """A refresh past its deadline drops its requests: one asleep before a retry
    (or its slot) looks up every NAP_STEP and stops, instead of sleeping on for
    up to a minute and keeping its thread."""
    from syncd.net.pace import Unwanted

    client, clock, seen = client_for(lambda r: json_response(503, {"message": "busy"}), max_attempts=20)
    wanted_until = clock.now + 5.0
    with pytest.raises(Unwanted):
        client.get_artwork("a1", wanted=lambda: clock.now < wanted_until)
    assert clock.now <= wanted_until + 0.2 + 1e-9  # not the rest of a backoff of up to 60 s
    assert 1 < len(seen) < 20
