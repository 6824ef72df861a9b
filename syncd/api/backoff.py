"""Pure: Retry-After parsing, backoff delays, and the adaptive request-rate limiter.

Nothing here sleeps or reads a clock; callers pass ``now`` (monotonic seconds
for the limiter, a UTC datetime for HTTP dates) and do the waiting.
"""

from __future__ import annotations

import email.utils
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random


# A Retry-After beyond this (about 31 years) is not a rate limit but a broken
# header: syncd backs off as if there were none. Anything shorter is honoured
# up to SYNCD_MAX_RETRY_WAIT.
ABSURD_RETRY_AFTER = 1e9


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date).

    None when absent, unreadable or absurd (not finite, or beyond
    ABSURD_RETRY_AFTER); never negative. The caller clamps what is left to
    its own bound (SYNCD_MAX_RETRY_WAIT).
    """
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - now).total_seconds()
    if not math.isfinite(seconds) or seconds > ABSURD_RETRY_AFTER:
        return None
    return max(0.0, seconds)


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    ceiling = min(cap, base * (2 ** min(attempt, 30)))
    return rng.uniform(0, ceiling)


@dataclass
class RateLimiter:
    """Spaces requests to at most ``rate`` per second, adapting to 429s (AIMD).

    A 429 divides the rate by ``decrease`` (not below ``min_rate``). Each
    success adds ``max_rate / recovery_requests`` back, up to ``max_rate``:
    after one 429 from the ceiling, ``recovery_requests / decrease`` successes
    bring the rate back to it.
    """

    max_rate: float
    min_rate: float = 0.05
    decrease: float = 2.0
    recovery_requests: int = 50
    rate: float = 0.0
    _next_at: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0:
            self.rate = self.max_rate
        self.min_rate = min(self.min_rate, self.max_rate)

    def wait_time(self, now: float) -> float:
        """Seconds to wait before the next request may be sent."""
        return max(0.0, self._next_at - now)

    def sent(self, now: float) -> None:
        """Record a request sent at ``now``; the next one is due 1/rate later."""
        self._next_at = max(now, self._next_at) + 1.0 / self.rate

    def not_before(self, moment: float) -> None:
        """The server asked for quiet until ``moment``."""
        self._next_at = max(self._next_at, moment)

    def on_success(self) -> None:
        self.rate = min(self.max_rate, self.rate + self.max_rate / self.recovery_requests)

    def on_throttled(self) -> None:
        self.rate = max(self.min_rate, self.rate / self.decrease)
