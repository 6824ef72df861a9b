"""Pure: when to try a request again, and how long to wait first.

A ``RetryPolicy`` (as urllib3's ``Retry``) says how many attempts a request
gets, the backoff between them (exponential, full jitter), how long a
server's Retry-After is believed, and how long the waits of one request may
add up to. The API client and the image fetcher each have their own; the
request core (``syncd.net.core``) applies it. An attempt that another may
mend raises ``Retriable``.
"""

from __future__ import annotations

import email.utils
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime

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


class Retriable(Exception):
    """One attempt failed in a way a later one may not.

    ``kind``: what the request's counters call it (a status code, or
    timeout/network/undecodable); ``retry_after``: the seconds the server
    asked for, when it said; ``throttled``: a 429 (the pace slows);
    ``unreachable``: no server to talk to (a host name that does not
    resolve, a refused connection), which a one-off run reports at once.
    """

    def __init__(
        self,
        reason: str,
        *,
        kind: str,
        retry_after: float | None = None,
        throttled: bool = False,
        unreachable: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason, self.kind, self.retry_after = reason, kind, retry_after
        self.throttled, self.unreachable = throttled, unreachable


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a request gets and how long it waits between them.

    A Retry-After is believed up to ``max_retry_after``; a longer one is
    waited for that long (``longer_retry_after="clamp"``, the API: its 429s
    must be honoured) or ends the request's attempts for now ("give up", an
    image host: the file is tried again by a later run). ``total_wait``
    bounds the waits of one request together (``total_wait_name`` names the
    setting in the message). ``retry_unreachable``: False for a one-off run
    (a typo in the host is said at once); True for the daemon, which waits
    for the server to come back.
    """

    attempts: int
    backoff_base: float
    backoff_cap: float
    max_retry_after: float
    longer_retry_after: str = "clamp"  # or "give up"
    total_wait: float | None = None
    total_wait_name: str = "the longest total wait"
    retry_unreachable: bool = True

    def delay(self, attempt: int, failure: Retriable, rng: random.Random) -> float:
        """Seconds to wait after the failed ``attempt`` (counted from 0)."""
        if failure.retry_after is not None:
            return min(failure.retry_after, self.max_retry_after)
        return backoff_delay(attempt, base=self.backoff_base, cap=self.backoff_cap, rng=rng)

    def gives_up(self, attempt: int, failure: Retriable, delay: float, waited: float) -> str | None:
        """Why no attempt follows the failed ``attempt`` (for the message), or None."""
        if failure.unreachable and not self.retry_unreachable:
            return "at once: the server cannot be reached"
        tried = f"after {attempt + 1} attempt{'s' if attempt else ''}"
        if attempt + 1 >= self.attempts:
            return tried
        if (
            self.longer_retry_after == "give up"
            and failure.retry_after is not None
            and failure.retry_after > self.max_retry_after
        ):
            return f"{tried}: a Retry-After over {self.max_retry_after:g}s"
        if self.total_wait is not None and waited + delay > self.total_wait:
            return f"the next wait ({delay:.0f}s) would pass {self.total_wait_name} ({self.total_wait:g}s)"
        return None
