"""Pure: the adaptive request-rate limiter, and the rate-limit headers a server may send.

Nothing here sleeps or reads a clock; callers pass ``now`` (monotonic seconds
for the limiter, a UTC datetime for HTTP dates) and do the waiting.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from syncd.net.retry import ABSURD_RETRY_AFTER


@dataclass
class RateLimiter:
    """Spaces request starts to at most ``rate`` per second and finds the
    server's limit: it starts at the ceiling, settles just below what the
    server accepted when it answers 429, then probes back up.

    The pace (documented in the README, tested in tests/test_backoff.py):

    - A 429 to a request sent after the last slowdown starts an episode; 429s
      to requests already in flight before it change nothing more.
    - If syncd was pushing (sending at 40% or more of what it could: its
      rate, or ``reach``, what its requests in flight allow), the rate becomes
      ``margin`` x the server's rate as measured: what it accepted over the
      last ``window`` seconds (``span``), over ``span + burst`` seconds, for
      a server's bucket starts with some of a second's worth. With fewer than
      three answers or a second to tell, half the rate it was really sending,
      probed up every ``guess_calm`` seconds until a 429 tells more.
    - If it was not pushing (a few requests now and then, so the limit is
      elsewhere), half its rate, and each success adds back ``max_rate /
      recovery_requests`` up to ``recover_to`` of where it was.
    - Without a 429, the rate grows ``grow`` times every ``calm`` seconds
      (``near_calm`` within ``near`` of the rate measured), up to ``max_rate``:
      it keeps probing for more, gently where the limit was.
    - A server that states its limit (RateLimit-Policy) caps the ceiling.

    Pure: callers pass monotonic seconds (``now``, and each request's
    ``sent_at``) and do the waiting.
    """

    max_rate: float
    min_rate: float = 0.05
    window: float = 8.0
    margin: float = 0.95
    grow: float = 1.05
    calm: float = 2.0
    near: float = 0.9
    near_calm: float = 10.0
    guess_calm: float = 0.5
    recovery_requests: int = 50
    recover_to: float = 0.8
    burst: float = 0.75
    # The most the caller can send per second (requests in flight / latency),
    # when it knows: a rate above it is not what the server refused.
    reach: float = math.inf
    rate: float = 0.0
    _next_at: float = 0.0
    quiet_until: float = 0.0  # nothing may be sent before this (the last Retry-After)
    _slowed_at: float = float("-inf")  # when the rate was last lowered
    _probed_at: float = float("-inf")  # when it was last raised by a probe
    _recover_until: float = 0.0  # fast recovery up to this rate (after an idle 429)
    _sent: deque[float] = field(default_factory=deque)  # when recent requests were sent
    _accepted: deque[float] = field(default_factory=deque)  # when recent accepted ones were sent
    _first_sent: float | None = None
    _found: float | None = None  # the server's rate, as the last 429 told it

    def __post_init__(self) -> None:
        if self.rate <= 0:
            self.rate = self.max_rate
        self.min_rate = min(self.min_rate, self.max_rate)

    def wait_time(self, now: float) -> float:
        """Seconds to wait before the next request may be sent."""
        return max(0.0, self._next_at - now)

    def reserve(self, now: float) -> float:
        """Claim the next slot, in the order callers ask (the caller sleeps until
        it, then sends, unless a 429 asked for quiet meanwhile)."""
        slot = max(now, self._next_at)
        self._next_at = slot + 1.0 / self.rate
        return slot

    def record_sent(self, now: float) -> None:
        """A request went out at ``now`` (for the rate the server is offered)."""
        if self._first_sent is None:
            self._first_sent = now
        self._sent.append(now)
        self._forget(now)

    def not_before(self, moment: float) -> None:
        """The server asked for quiet until ``moment``."""
        self._next_at = max(self._next_at, moment)
        self.quiet_until = max(self.quiet_until, moment)

    def on_success(self, now: float, sent_at: float) -> None:
        self._accepted.append(sent_at)
        self._forget(now)
        if self.rate < self._recover_until:
            self.rate = min(
                self._recover_until, self.max_rate, self.rate + self.max_rate / self.recovery_requests
            )
        elif now - max(self._slowed_at, self._probed_at) >= self._calm():
            self.rate = min(self.max_rate, self.rate * self.grow)
            self._probed_at = now

    def on_throttled(self, now: float, sent_at: float) -> None:
        if sent_at < self._slowed_at:
            return  # in flight before the last slowdown: the same episode
        self._forget(sent_at)
        first = self._first_sent if self._first_sent is not None else sent_at
        span = min(self.window, sent_at - first)
        sent = sum(1 for moment in self._sent if moment <= sent_at)
        offered = sent / span if span > 0 else self.rate
        self._recover_until = 0.0
        if offered < 0.4 * min(self.rate, self.reach):  # not pushing: the limit is elsewhere
            self._recover_until = self.recover_to * self.rate
            target = self.rate / 2
        elif span >= 1.0 and len(self._accepted) >= 3:
            # A server's bucket starts with some of a second's worth and refills at
            # its rate: what it accepted over ``span`` is about rate x (span + burst).
            self._found = len(self._accepted) / (span + self.burst)
            target = self.margin * min(self.rate, self._found)
        else:
            # A guess, probed up quickly until a 429 with more history tells: half
            # what was sent, and no more than a short history's measure suggests
            # (unthrottled, a fraction of a second of sending says little).
            self._found = None
            target = min(self.rate, offered) / 2
            if len(self._accepted) >= 3:
                target = min(target, self.margin * len(self._accepted) / (span + self.burst))
        self.rate = max(self.min_rate, target)
        self._slowed_at = now

    def _calm(self) -> float:
        """Seconds between probes: ``near_calm`` within ``near`` of the rate measured
        at the last 429 (either way), else ``calm``."""
        if self._found is None:
            return self.guess_calm if self._slowed_at > float("-inf") else self.calm
        if self.near * self._found <= self.rate <= self._found / self.near:
            return self.near_calm
        return self.calm

    def cap(self, rate: float) -> None:
        """The server said what it allows (RateLimit-Policy): never ask for more."""
        self.max_rate = max(self.min_rate, min(self.max_rate, rate))
        self.rate = min(self.rate, self.max_rate)
        self._recover_until = min(self._recover_until, self.max_rate)

    def _forget(self, now: float) -> None:
        for moments in (self._sent, self._accepted):
            while moments and moments[0] < now - self.window:
                moments.popleft()


@dataclass(frozen=True)
class RateLimitHeaders:
    """What a server said of its limit, when it says (RateLimit-*, X-RateLimit-*)."""

    per_second: float | None = None  # from RateLimit-Policy: "10;w=1" is 10 per second
    remaining: int | None = None
    reset: float | None = None  # seconds until the quota refills


def parse_rate_limit_headers(headers: Mapping[str, str], now: datetime) -> RateLimitHeaders:
    """The draft IETF headers (RateLimit-Limit/-Remaining/-Reset, RateLimit-Policy,
    or one ``RateLimit: limit=10, remaining=3, reset=2``) and the common
    X-RateLimit-* ones (a Reset above 10^9 is a Unix time). Unreadable: None."""
    fields: dict[str, str] = {}
    combined = headers.get("RateLimit")
    if combined:
        for part in combined.split(","):
            name, _, value = part.strip().partition("=")
            fields[name.strip().lower()] = value.strip()
    for prefix in ("RateLimit-", "X-RateLimit-"):
        for name in ("Remaining", "Reset"):
            header = headers.get(prefix + name)
            if header is not None:
                fields.setdefault(name.lower(), header.strip())
    per_second = None
    policy = headers.get("RateLimit-Policy")
    if policy:
        quota, _, params = policy.split(",")[0].partition(";")
        window = dict(
            (key.strip().lower(), value.strip())
            for key, _, value in (p.partition("=") for p in params.split(";"))
        ).get("w", "1")
        per_second = _finite(quota, window)
    remaining = _number(fields.get("remaining"))
    reset = _number(fields.get("reset"))
    if reset is not None and reset > 1e9:  # a Unix time, not a delay
        reset = max(0.0, reset - now.timestamp())
    return RateLimitHeaders(
        per_second=per_second,
        remaining=int(remaining) if remaining is not None else None,
        reset=reset if reset is not None and reset <= ABSURD_RETRY_AFTER else None,
    )


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None and len(text) <= 32 else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _finite(quota: str, window: str) -> float | None:
    limit, seconds = _number(quota.strip()), _number(window)
    return limit / seconds if limit and seconds else None
