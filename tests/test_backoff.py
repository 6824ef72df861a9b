"""The rate limiter and the rate-limit headers: pure, with simulated time.

The last tests run the limiter against a simulated server with a token bucket
(the fake API's rule: a 429 with Retry-After when the bucket is empty, and a
429 to everything before that deadline), requests in flight and a latency:
the shape of a remote, rate-limited API, minutes of it in milliseconds.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from syncd.net.limiter import RateLimiter, parse_rate_limit_headers

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def send(limiter: RateLimiter, now: float) -> None:
    """A request sent at ``now``, as the client's pacer sends it: its slot claimed, then recorded."""
    limiter.reserve(now)
    limiter.record_sent(now)


def accept(limiter: RateLimiter, count: int, rate: float, start: float = 0.0) -> float:
    """``count`` requests sent at ``rate`` per second from ``start``, all accepted;
    the time after the last."""
    t = start
    for _ in range(count):
        send(limiter, t)
        limiter.on_success(t + 0.1, t)
        t += 1 / rate
    return t


def test_a_429_settles_just_below_the_rate_the_server_accepted() -> None:
    limiter = RateLimiter(max_rate=10.0)
    t = accept(limiter, 40, rate=10.0)  # pushing at the ceiling for 4 s, all accepted
    limiter.on_throttled(t, t)
    # 40 accepted in 4 s, from a bucket that held some of a second's worth at the start.
    assert limiter.rate == pytest.approx(0.95 * 40 / (4 + 0.75))


def test_429s_to_requests_already_in_flight_are_one_episode() -> None:
    limiter = RateLimiter(max_rate=10.0)
    t = accept(limiter, 40, rate=10.0)
    limiter.on_throttled(t, sent_at=t - 0.3)
    settled = limiter.rate
    for late in (0.1, 0.2, 0.3):  # sent before that 429 came back: they could not know
        limiter.on_throttled(t + late, sent_at=t - 0.2 + late / 10)
    assert limiter.rate == settled
    send(limiter, t + 0.5)
    limiter.on_throttled(t + 1.0, sent_at=t + 0.5)  # sent after the slowdown: a new episode
    assert limiter.rate < settled


def test_a_429_with_too_little_history_halves_the_rate_it_was_sending() -> None:
    limiter = RateLimiter(max_rate=8.0)
    send(limiter, 0.0)
    send(limiter, 0.125)
    limiter.on_throttled(0.3, 0.125)
    assert limiter.rate == 4.0


def test_a_429_while_idle_halves_the_rate_and_recovers_fast() -> None:
    """A few requests now and then: a 429 tells nothing of the server's rate."""
    limiter = RateLimiter(max_rate=5.0, recovery_requests=50)
    t = accept(limiter, 8, rate=0.5)  # 8 requests over 16 s, far below the ceiling
    limiter.on_throttled(t, t)
    assert limiter.rate == 2.5
    for n in range(15):
        limiter.on_success(t + n, t + n)  # each adds 5/50, up to 0.8 x 5
    assert limiter.rate == pytest.approx(4.0)


def test_without_429s_the_rate_probes_back_up_to_the_ceiling() -> None:
    limiter = RateLimiter(max_rate=20.0)
    t = accept(limiter, 80, rate=20.0)
    limiter.on_throttled(t, t)  # found: 80 / (4 + 0.75) = 16.8/s
    settled = limiter.rate
    assert settled == pytest.approx(0.95 * 80 / 4.75)
    # Near the rate found: 5% more after each 10 calm seconds.
    t = accept(limiter, 10, rate=1.0, start=t + 1)
    assert limiter.rate == pytest.approx(settled * 1.05)
    # Further from it (the server allows more now), every 2 s; never past the ceiling.
    accept(limiter, 300, rate=1.0, start=t)
    assert limiter.rate == 20.0


def test_a_rate_above_what_the_caller_can_send_is_not_what_was_refused() -> None:
    """At a ceiling of 80/s with 8 in flight and 0.3 s answers, syncd sends
    ~27/s: a 429 then is about that rate, not a sign of idling."""
    limiter = RateLimiter(max_rate=80.0, reach=8 / 0.3)
    t = accept(limiter, 80, rate=26.0)
    limiter.on_throttled(t, t)
    assert limiter.rate == pytest.approx(0.95 * 80 / (80 / 26.0 + 0.75))


def test_never_before_a_deadline_and_never_below_the_floor() -> None:
    limiter = RateLimiter(max_rate=10.0, min_rate=0.5)
    limiter.not_before(5.0)
    assert limiter.wait_time(1.0) == pytest.approx(4.0)
    for n in range(20):
        limiter.on_throttled(6.0 + n, 6.0 + n)
    assert limiter.rate == 0.5


def test_a_stated_policy_caps_the_ceiling() -> None:
    limiter = RateLimiter(max_rate=40.0)
    limiter.cap(12.0)
    assert (limiter.max_rate, limiter.rate) == (12.0, 12.0)
    limiter.cap(0.0)  # absurd: never below the floor
    assert limiter.max_rate == limiter.min_rate


def test_recovery_never_passes_a_stated_cap() -> None:
    limiter = RateLimiter(max_rate=5.0)
    t = accept(limiter, 8, rate=0.5)  # idle: a 429 then recovers fast, towards 4/s
    limiter.on_throttled(t, t)
    limiter.cap(1.0)
    for n in range(200):
        limiter.on_success(t + n, t + n)
    assert limiter.rate <= 1.0


@pytest.mark.parametrize(
    ("headers", "per_second", "remaining", "reset"),
    [
        ({"RateLimit-Policy": "10;w=1", "RateLimit-Remaining": "3", "RateLimit-Reset": "2"}, 10.0, 3, 2.0),
        ({"RateLimit-Policy": "600;w=60, 10;w=1"}, 10.0, None, None),
        ({"RateLimit": "limit=10, remaining=0, reset=1"}, None, 0, 1.0),
        (
            {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1764547230"},
            None,
            0,
            30.0,
        ),
        (
            {"RateLimit-Policy": "ten;w=x", "RateLimit-Remaining": "-1", "RateLimit-Reset": "nan"},
            None,
            None,
            None,
        ),
        ({"RateLimit-Reset": "1" + "0" * 40}, None, None, None),
        ({}, None, None, None),
    ],
)
def test_rate_limit_headers(
    headers: dict[str, str], per_second: float | None, remaining: int | None, reset: float | None
) -> None:
    moment = datetime.fromtimestamp(1764547200, UTC)
    parsed = parse_rate_limit_headers(headers, moment)
    assert (parsed.per_second, parsed.remaining, parsed.reset) == (per_second, remaining, reset)


# ------------------------------------------------------------ against a simulated server


@dataclass
class Bucket:
    """The fake API's server-side limit: tokens at ``rate``/s up to a burst of
    one second (full at the start: the server was idle); when empty, a 429
    whose Retry-After (whole seconds, at least 1) counts from when the client
    has the answer, and 429s to everything before that deadline. A request is
    early when it arrives after a 429 reached the client and before its
    deadline."""

    rate: float
    latency: float
    penalty: bool = False  # also refuse everything until the deadline (Faults.rate_limit_blocks)
    tokens: float = -1.0
    refilled: float = 0.0
    deadline: float = 0.0
    promises: list[tuple[float, float]] = field(default_factory=list)  # (delivered at, deadline)
    early: int = 0

    def arrive(self, now: float) -> float | None:
        """None: accepted; else the Retry-After in seconds."""
        burst = max(1.0, self.rate)
        if self.tokens < 0:
            self.tokens = burst
        delivered = now + self.latency
        if any(at + 0.05 <= now < until for at, until in self.promises):
            self.early += 1
        if self.penalty and now < self.deadline:
            seconds = float(max(1, math.ceil(self.deadline - delivered)))
        else:
            self.tokens = min(burst, self.tokens + (now - self.refilled) * self.rate)
            self.refilled = now
            if self.tokens >= 1:
                self.tokens -= 1
                return None
            seconds = float(max(1, math.ceil((1 - self.tokens) / self.rate - self.latency)))
        self.deadline = max(self.deadline, delivered + seconds)
        self.promises.append((delivered, delivered + seconds))
        return seconds


@dataclass
class Outcome:
    seconds: float
    accepted: int
    refused: int
    early: int


def simulate(
    ceiling: float,
    server_rate: float | None,
    latency: float,
    pages: int,
    max_in_flight: int = 8,
    penalty: bool = False,
) -> Outcome:
    """``pages`` requests as the client and the engine send them: paced by the
    limiter, as many in flight as the rate and latency need (the client's
    in_flight_target), and on a 429: slow down, honour Retry-After for every
    request, ask again."""
    limiter = RateLimiter(max_rate=ceiling, reach=max_in_flight / latency)
    bucket = Bucket(server_rate, latency, penalty) if server_rate else None
    events: list[tuple[float, int, str, float]] = [(0.0, 0, "pace", 0.0)]
    accepted = refused = outstanding = wanted = 0
    finished = 0.0
    while events:
        now, serial, kind, sent_at = heapq.heappop(events)
        if kind == "pace":
            target = max(1, min(max_in_flight, math.ceil(limiter.rate * latency) + 1))
            if wanted + accepted >= pages or outstanding >= target:
                continue  # parked: a completion paces again
            wait = limiter.wait_time(now)
            if wait > 0:
                heapq.heappush(events, (now + wait, serial, "pace", 0.0))
                continue
            send(limiter, now)
            outstanding += 1
            wanted += 1
            retry_after = bucket.arrive(now) if bucket else None
            answer = "ok" if retry_after is None else str(retry_after)
            heapq.heappush(events, (now + latency, serial + 1, answer, now))
            heapq.heappush(events, (now, serial + 2, "pace", 0.0))  # maybe one more in flight
            continue
        outstanding -= 1
        wanted -= 1
        if kind == "ok":
            limiter.on_success(now, sent_at)
            accepted += 1
            finished = now
        else:
            limiter.on_throttled(now, sent_at)
            limiter.not_before(now + float(kind))
            refused += 1
        heapq.heappush(events, (now, serial + 3, "pace", 0.0))
    return Outcome(finished, accepted, refused, bucket.early if bucket else 0)


def test_with_the_ceiling_at_the_allowed_rate_a_backfill_takes_the_floor() -> None:
    outcome = simulate(ceiling=10.0, server_rate=None, latency=0.4, pages=400)
    assert outcome.refused == 0
    assert outcome.seconds <= 1.05 * 400 / 10.0


@pytest.mark.parametrize("blocks", [False, True], ids=["bucket", "bucket-and-penalty-box"])
@pytest.mark.parametrize(("server_rate", "latency"), [(10.0, 0.4), (5.0, 0.3), (2.5, 0.5), (20.0, 0.3)])
def test_a_limit_4x_below_the_ceiling_is_found_and_kept(
    server_rate: float, latency: float, blocks: bool
) -> None:
    """The target for a sustained backfill: <= 5% of requests refused, <= 1.3 x
    the floor, none early. (The first 429 finds the pipeline full: with a
    penalty box, every request in flight is refused; 300 pages amortise it.)"""
    pages = max(300, int(40 * server_rate))
    outcome = simulate(
        ceiling=4 * server_rate, server_rate=server_rate, latency=latency, pages=pages, penalty=blocks
    )
    assert outcome.accepted == pages
    assert outcome.refused <= 0.05 * (outcome.accepted + outcome.refused), outcome
    assert outcome.seconds <= 1.3 * pages / server_rate, outcome
    assert outcome.early == 0


def test_a_short_backfill_pays_for_the_first_429_and_little_more() -> None:
    """81 pages (40,000 artworks at 500 a page), ceiling 40/s, server 10/s: the
    first 429 costs the requests in flight (8 at most), then it holds."""
    outcome = simulate(ceiling=40.0, server_rate=10.0, latency=0.4, pages=81)
    assert outcome.refused <= 8, outcome
    assert outcome.seconds <= 1.3 * 81 / 10.0, outcome
    assert outcome.early == 0
