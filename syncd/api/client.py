"""The artworks API client: the key, the paths, what an answer means.

Requests go through the one request core (``syncd.net.core``: the pace,
the attempts, the deadline of each whole answer, httpx's exceptions). What
is the API's own is here: the Bearer key, the list and by-id paths, how a
page is read and judged, and the status table, by what the caller does next
(see syncd.errors):

    200        parsed body (a JSON array for the list, an object for one artwork)
    404        (one artwork) None; (the list) ApiError: the base URL is wrong
    401, 403   AuthError at once: no retry
    400, 4xx   BadRequestError at once, with the API's message
    429        wait exactly Retry-After (or back off), slow the limiter, retry
    5xx        back off with full jitter, retry
    timeouts, resets, truncated/non-JSON/non-array bodies, a body that cannot
    be decoded (a wrong Content-Encoding), an answer slower than the request's
    deadline or larger than MAX_BODY_BYTES: back off, retry

Every wait is bounded: each request has a deadline for connecting and the
whole answer (SYNCD_CONNECT_TIMEOUT + SYNCD_READ_TIMEOUT, checked as the body
arrives); a Retry-After is clamped to SYNCD_MAX_RETRY_WAIT (an absurd one is
ignored for the backoff); retries stop at ``max_attempts`` or when the next
wait would take the total past ``max_retry_wait``: RetriesExhaustedError.

Messages carry the method, path and query, never a header value, and the
API's own words with the key redacted: they are safe to log and to store.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import orjson

from syncd import __version__
from syncd.api.body import BrokenBody, parse_array, parse_object
from syncd.config import Secret
from syncd.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    RetriesExhaustedError,
    WrongAnswerError,
)
from syncd.net.core import Exhausted, RequestCore, phrase
from syncd.net.encoding import BodyTooLarge, BoundedBody, CorruptBody, EncodingRefused
from syncd.net.limiter import RateLimiter, parse_rate_limit_headers
from syncd.net.pace import Pacer
from syncd.net.retry import Retriable, RetryPolicy, parse_retry_after
from syncd.records import checked_id
from syncd.redaction import maskable, redact

log = logging.getLogger(__name__)

# The longest wait a spent quota (RateLimit-Remaining: 0) may ask for: rate
# limit windows are seconds to a minute; anything longer goes by 429s.
QUOTA_WAIT_LIMIT = 60.0
# Seconds of the caller's pauses that requests queued ahead cover (see in_flight_target).
IN_FLIGHT_SLACK = 0.5
BACKOFF_BASE = 0.5
BACKOFF_CAP = 60.0
# Real pages are about 0.5 MB (500 records); the largest a record of the
# longest prompt and many signed result URLs could make is about 3 MB. A
# larger answer is a broken one. The cap bounds memory too: a body is held
# once (decoded into one buffer, never joined from pieces), and however it is
# encoded it never grows past the cap (syncd.net.encoding).
MAX_BODY_BYTES = 16 * 1024 * 1024
ERROR_BODY_BYTES = 64 * 1024  # of a non-200 answer, for its message


@dataclass
class ClientOptions:
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_attempts: int = 8
    max_retry_wait: float = 900.0
    max_requests_per_second: float = 5.0
    max_in_flight: int = 8
    # False for a one-off run: a host name that does not resolve or a refused
    # port is said at once; the daemon waits for the server to come back.
    retry_unreachable: bool = True


@dataclass
class RequestStats:
    """Counters of what was sent (every attempt counts as a request)."""

    requests: int = 0
    list_requests: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    retry_wait_seconds: float = 0.0
    in_flight: int = 0  # requests sent and not yet answered, now


class RequestObserver(Protocol):
    """Told of each answer as it comes (the daemon's metrics move during a run)."""

    def answered(self, code: str) -> None: ...  # a status code, or timeout/network/undecodable
    def throttled(self) -> None: ...  # a 429
    def retry_wait(self, seconds: float) -> None: ...  # a wait before a retry begins


class ApiClient:
    """Synchronous client; thread-safe, so that request threads may share it."""

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        *,
        key_source: str = "SYNCD_API_KEY",
        options: ClientOptions | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        observer: RequestObserver | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.options = options = options or ClientOptions()
        self._stopping = stopping  # a stop was asked for: retries are not announced
        self.observer = observer
        self.key_source = key_source
        self._secrets = maskable([api_key.reveal()])
        self._clock, self._wall = clock, wall
        # The latest deadline a 429's Retry-After set (wall clock), for the
        # engine to persist: a restarted syncd must wait it out too.
        self.rate_limited_until: datetime | None = None
        self._pacer = Pacer(RateLimiter(max_rate=options.max_requests_per_second), clock=clock, sleep=sleep)
        self.limiter = self._pacer.limiter  # to read (the pacer alone changes it)
        self.latency: float | None = None  # seconds an answer takes (moving average)
        self._limit_enforced = False  # a 429 came: the server's rate-limit headers are believed
        self.stats = RequestStats()
        self._stats_lock = threading.Lock()
        deadline = options.connect_timeout + options.read_timeout
        self._core = RequestCore(
            base_url=base_url,
            headers={
                "Authorization": f"Bearer {api_key.reveal()}",
                "Accept": "application/json",
                "User-Agent": f"syncd/{__version__}",
            },
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            deadline=deadline,
            timeout_hint=(
                f"an answer must be complete within {deadline:g}s, SYNCD_CONNECT_TIMEOUT + SYNCD_READ_TIMEOUT"
            ),
            policy=RetryPolicy(
                attempts=options.max_attempts,
                backoff_base=BACKOFF_BASE,
                backoff_cap=BACKOFF_CAP,
                max_retry_after=options.max_retry_wait,
                total_wait=options.max_retry_wait,
                total_wait_name="SYNCD_MAX_RETRY_WAIT",
                retry_unreachable=options.retry_unreachable,
            ),
            transport=transport,
            wall=wall,
            rng=rng,
        )

    def close(self) -> None:
        self._core.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ endpoints

    def fetch_list_page(self, skip: int, limit: int, wanted: Callable[[], bool] | None = None) -> list[Any]:
        """One page of the list: every element as received (objects or not).

        ``wanted``: asked before each attempt is sent; once it says no, the
        request is abandoned (``Unwanted``) instead of sent or retried.
        """
        page = self._request("/v1/artworks", {"skip": skip, "limit": limit}, expect="array", wanted=wanted)
        assert isinstance(page, list)  # of at most ``limit`` elements (judged in _parse, so retried)
        return page

    def get_artwork(self, artwork_id: str, wanted: Callable[[], bool] | None = None) -> Any:
        """One artwork's JSON value as received (validation judges it), or None on 404.

        Another artwork's record (an object whose id is a different one, as a
        cache mixing answers up would send) contradicts what was asked:
        WrongAnswerError, nothing of it is used. Any other value (no id, not
        an object, a body the parser refuses) is a bad record, for validation
        to quarantine.

        ``wanted``: as for ``fetch_list_page``.
        """
        path = f"/v1/artworks/{quote(artwork_id, safe='')}"
        value = self._request(path, None, expect="object", wanted=wanted)
        answered = checked_id(value.get("id")) if isinstance(value, dict) else None
        if answered is not None and answered != checked_id(artwork_id):
            raise WrongAnswerError(
                f"GET {path} answered with the record of another artwork ({answered}): not used"
            )
        return value

    @property
    def secrets(self) -> tuple[str, ...]:
        """What must never be logged or stored: the key."""
        return self._secrets

    def redact(self, text: str) -> str:
        """``text`` without the key, in any form: for anything that may carry the API's words."""
        return redact(text, self._secrets)

    def limiter_wait(self) -> float:
        """Seconds until the limiter lets the next request go (its pace, or a Retry-After)."""
        return self._pacer.wait()

    def wait_until(self, moment: datetime) -> None:
        """Honour a Retry-After deadline persisted by an earlier process (at most
        SYNCD_MAX_RETRY_WAIT from now, whatever an older syncd persisted)."""
        seconds = min((moment - self._wall()).total_seconds(), self.options.max_retry_wait)
        if seconds > 0:
            self._pacer.quiet(seconds)

    def in_flight_target(self, demand: float | None = None) -> int:
        """How many requests to keep in flight: as many as the rate allowed
        sends within one request's latency and IN_FLIGHT_SLACK more seconds,
        plus one (or, when ``demand``, the requests per second the caller can
        take, is lower: as many as it takes within the latency); at most
        SYNCD_MAX_IN_FLIGHT. One until the first answer tells
        the latency. The slack keeps requests queued at the limiter while the
        caller is busy (a commit, a checkpoint): without it, every pause of
        the caller is a pause on the wire. Those queued are not sent early: the
        limiter paces them."""
        latency, rate = self.latency, self._pacer.rate
        if latency is None:
            return 1
        if demand is not None and demand < rate:
            # The caller is the bound, not the pace: what it takes within the
            # latency (the next page is asked for before this one is written, so
            # one still overlaps the two; more would only hold memory).
            wanted = math.ceil(demand * latency)
        else:
            wanted = math.ceil(rate * (latency + IN_FLIGHT_SLACK)) + 1
        return max(1, min(self.options.max_in_flight, wanted))

    # ------------------------------------------------------------ one request

    def _request(
        self, path: str, params: dict[str, int] | None, *, expect: str, wanted: Callable[[], bool] | None
    ) -> Any:
        what = f"GET {path}" + (f"?skip={params['skip']}&limit={params['limit']}" if params else "")

        def attempt() -> Any:
            with self._stats_lock:
                self.stats.requests += 1
                self.stats.list_requests += params is not None
                self.stats.in_flight += 1
            sent = self._clock()

            def judge(response: httpx.Response) -> Any:
                return self._judge(response, what, expect, None if params is None else params["limit"], sent)

            try:
                return self._core.exchange(path, judge, pacing=self._pacer, params=params)
            except Retriable as failure:
                if failure.kind in ("timeout", "network"):
                    self._count(failure.kind)
                raise
            finally:
                with self._stats_lock:
                    self.stats.in_flight -= 1

        try:
            return self._core.send(attempt, pacing=self._pacer, wanted=wanted, on_retry=self._retrying(what))
        except Exhausted as exc:
            if exc.failure.unreachable and not self.options.retry_unreachable:
                raise ApiError(
                    f"cannot reach the API for {what}: {exc.failure.reason}; is SYNCD_API_URL right?"
                ) from None
            raise RetriesExhaustedError(
                f"{what} kept failing; gave up {exc.why}: {exc.failure.reason}"
            ) from None

    def _retrying(self, what: str) -> Callable[[Retriable, float, int], None]:
        def on_retry(failure: Retriable, delay: float, attempt: int) -> None:
            if self._stopping():
                return  # the wait that follows ends the run: no retry to announce
            log.warning(
                "%s: %s; retrying in %.1fs (attempt %d of %d)%s",
                what,
                failure.reason,
                delay,
                attempt + 1,
                self.options.max_attempts,
                f"; pace now {self._pacer.rate:.3g} requests/s" if failure.throttled else "",
            )
            with self._stats_lock:
                self.stats.retry_wait_seconds += delay
            if self.observer is not None:
                self.observer.retry_wait(delay)

        return on_retry

    def _judge(self, response: httpx.Response, what: str, expect: str, most: int | None, sent: float) -> Any:
        """What one answer means (the status table in the module's docstring)."""
        status = response.status_code
        try:
            content = self._read(response, MAX_BODY_BYTES if status == 200 else ERROR_BODY_BYTES)
        except (EncodingRefused, CorruptBody) as exc:
            self._count("undecodable")
            raise Retriable(f"200 with a body that cannot be decoded: {exc}", kind="undecodable") from None
        except BodyTooLarge as exc:
            self._count("undecodable")
            raise Retriable(f"200 with {exc}", kind="undecodable") from None
        self._heed(response.headers, self._clock() - sent, throttled=status == 429)
        self._count(str(status))
        if status == 200:
            return self._parse(content, expect, most)
        if status == 404 and expect == "object":
            return None
        message = self._api_message(content)
        if status in (401, 403):
            raise AuthError(
                f"the API rejected the key ({status} {phrase(status)}) supplied by "
                f"{self.key_source}; check or rotate it: {message}",
                status_code=status,
            )
        if status == 429:
            raise self._throttled(response, message)
        if status >= 500:
            raise Retriable(f"{status} {phrase(status)}: {message}", kind=str(status))
        if status == 404:
            raise ApiError(f"{what} answered 404 Not Found: is SYNCD_API_URL the API's base URL? {message}")
        raise BadRequestError(
            f"the API refused {what} with {status} {phrase(status)}: {message}", status_code=status
        )

    def _throttled(self, response: httpx.Response, message: str) -> Retriable:
        """A 429: counted, and its Retry-After kept (wall clock) for the engine to persist."""
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self._wall())
        with self._stats_lock:
            self.stats.throttled += 1
            if retry_after is not None:
                until = self._wall() + timedelta(seconds=min(retry_after, self.options.max_retry_wait))
                if self.rate_limited_until is None or until > self.rate_limited_until:
                    self.rate_limited_until = until
        if self.observer is not None:
            self.observer.throttled()
        return Retriable(
            f"429 Too Many Requests: {message}", kind="429", retry_after=retry_after, throttled=True
        )

    def _heed(self, headers: httpx.Headers, seconds: float, *, throttled: bool) -> None:
        """What an answer tells about the server: how long it takes (for how many
        requests to keep in flight) and what rate it allows, when it says."""
        self.latency = seconds if self.latency is None else 0.8 * self.latency + 0.2 * seconds
        self._pacer.reach(self.options.max_in_flight / max(self.latency, 1e-3))
        # Rate-limit headers slow syncd only once the server has shown that it
        # enforces a limit (a 429): a header that its own answers contradict
        # ("RateLimit-Remaining: 0, Reset: 60" on every 200) must not throttle
        # harder than the 429s do. Before that, the limiter finds the pace.
        self._limit_enforced = self._limit_enforced or throttled
        if not self._limit_enforced:
            return
        limits = parse_rate_limit_headers(headers, self._wall())
        if limits.per_second is not None:
            self._pacer.cap(limits.per_second)
        # A spent quota: wait for its reset, if that is a plausible window. A
        # longer one is not believed (a 429 with Retry-After will say so, logged,
        # persisted and bounded): a server repeating it must not stall syncd.
        quota_wait = limits.reset if limits.remaining == 0 else None
        if quota_wait is None:
            return
        if 0 < quota_wait <= QUOTA_WAIT_LIMIT:
            self._pacer.quiet(quota_wait)
        if quota_wait > 1:
            log.info(
                "the API says its quota is spent (RateLimit-Remaining: 0); %s",
                f"waiting {quota_wait:.0f}s for its reset"
                if quota_wait <= QUOTA_WAIT_LIMIT
                else f"a reset {quota_wait:.0f}s away is not believed (over {QUOTA_WAIT_LIMIT:.0f}s)",
            )

    def _read(self, response: httpx.Response, limit: int) -> bytearray:
        """The body, decoded, up to ``limit`` bytes: a page over it is broken
        (BodyTooLarge), an error's body is cut there (it is read for its message)."""
        is_page = response.status_code == 200
        encoding = response.headers.get("Content-Encoding")
        if response.is_stream_consumed:  # a body read already (a test's transport): decoded by httpx
            return self._read_chunks(BoundedBody(None, limit, truncate=not is_page), [response.content])
        try:
            body = BoundedBody(encoding, limit, truncate=not is_page)
        except EncodingRefused:
            if is_page:
                raise
            return bytearray()  # an error's message in an encoding syncd does not read: without it
        try:
            return self._read_chunks(body, response.iter_raw())
        except CorruptBody:
            if is_page:
                raise
            return bytearray()

    @staticmethod
    def _read_chunks(body: BoundedBody, chunks: Iterable[bytes]) -> bytearray:
        for chunk in chunks:
            body.feed(chunk)
            if body.full:
                break
        return body.finish()

    def _parse(self, content: bytearray, expect: str, most: int | None) -> Any:
        try:
            value = parse_array(content) if expect == "array" else parse_object(content)
        except BrokenBody as exc:
            raise Retriable(f"200 with a broken body: {exc}", kind="200") from None
        if most is not None and isinstance(value, list) and len(value) > most:
            raise Retriable(
                f"200 with {len(value):,} elements for limit={most}: not the page asked for", kind="200"
            )
        return value

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats.by_status[key] += 1
        if self.observer is not None:
            self.observer.answered(key)

    def _api_message(self, content: bytearray) -> str:
        """The error body's ``message`` (string or list), or a short note on the body;
        the API's words, with the key redacted should they echo it."""
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            return "(no JSON error body)" if content else "(empty body)"
        message = body.get("message") if isinstance(body, dict) else None
        if isinstance(message, list):
            message = "; ".join(str(m) for m in message)
        if not message:
            return "(no message)"
        text = self.redact(str(message))
        return text if len(text) <= 300 else text[:297] + "..."
