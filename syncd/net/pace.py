"""Request starts paced by one RateLimiter, shared by the threads that send.

The API client and the image fetcher each have their own (their own budgets:
the image hosts are not the API); the limiter is changed only here, under
the pacer's lock. Slots are claimed in the order requests ask,
so that with several in flight they go out in the order they are needed. A
429 that asks for quiet while a request waits for its slot sends it to a new
slot after the quiet. A waiting request asks every NAP_STEP whether it is
still wanted, so that an abandoned one never sleeps on for minutes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from syncd.net.limiter import RateLimiter

NAP_STEP = 0.2  # seconds: how often a waiting request asks whether it is still wanted


class Unwanted(Exception):
    """The caller no longer wants this answer: the request was not sent (again)."""


class Pacer:
    def __init__(
        self, limiter: RateLimiter, *, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.limiter = limiter
        self.lock = threading.Lock()  # guards the limiter (and what its owner counts with it)
        self._clock, self._sleep = clock, sleep

    def pace(self, wanted: Callable[[], bool] | None = None) -> float:
        """Wait for a slot of the limiter's pace; when the request may go."""
        if wanted is not None and not wanted():
            raise Unwanted
        with self.lock:
            now = self._clock()
            slot = self.limiter.reserve(now)
        while True:
            if slot > now:
                self.nap(slot - now, wanted)
            if wanted is not None and not wanted():
                raise Unwanted
            with self.lock:
                now = self._clock()
                if now >= self.limiter.quiet_until:
                    self.limiter.record_sent(now)
                    return now
                slot = self.limiter.reserve(now)

    def nap(self, seconds: float, wanted: Callable[[], bool] | None) -> None:
        """Sleep ``seconds``; a request nobody wants any more stops at once (Unwanted)."""
        if wanted is None:
            self._sleep(seconds)
            return
        until = self._clock() + seconds
        while (left := until - self._clock()) > 0:
            if not wanted():
                raise Unwanted
            self._sleep(min(left, NAP_STEP))

    def quiet(self, seconds: float) -> None:
        """Send nothing for ``seconds`` from now (a Retry-After, a spent quota)."""
        with self.lock:
            self.limiter.not_before(self._clock() + seconds)

    def throttled(self, sent_at: float, seconds: float) -> None:
        """A 429 to the request sent at ``sent_at``: slow down, and quiet for ``seconds``."""
        with self.lock:
            self.limiter.on_throttled(self._clock(), sent_at)
            self.limiter.not_before(self._clock() + seconds)

    def succeeded(self, sent_at: float) -> None:
        with self.lock:
            self.limiter.on_success(self._clock(), sent_at)

    def cap(self, rate: float) -> None:
        """The server states its limit: no faster than ``rate`` requests/s."""
        with self.lock:
            self.limiter.cap(rate)

    def reach(self, rate: float) -> None:
        """The rate the requests in flight allow (what "pushing" is measured against)."""
        with self.lock:
            self.limiter.reach = rate

    @property
    def rate(self) -> float:
        """The pace now, requests/s."""
        with self.lock:
            return self.limiter.rate

    def wait(self) -> float:
        """Seconds until the limiter lets the next request go (its pace, or a quiet)."""
        with self.lock:
            return self.limiter.wait_time(self._clock())
