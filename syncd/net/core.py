"""One way to make a request: the API client and the image fetcher both use it.

``RequestCore`` owns the httpx client (one TLS context per process, a
deadline for each whole answer, no redirects followed for the caller, no
compression asked for), and gives two things:

* ``exchange``: one request, its answer judged by the caller while it
  streams. A 429's Retry-After holds every request of the pace from the
  moment its headers arrive, not once its body is read. httpx's exceptions
  become one ``Retriable`` (a timeout, a failed or cut connection); anything
  else the caller's judge raises passes through.
* ``send``: the attempts of one request, as its ``RetryPolicy`` says:
  paced, a failed attempt waited for (a 429's Retry-After, else backoff with
  full jitter), no retry for an answer nobody waits for any more
  (``Unwanted``), and ``Exhausted`` when the policy gives up.

What each caller keeps: the API client its key, paths and page judging; the
image fetcher its redirects, address guard and files.
"""

from __future__ import annotations

import functools
import random
import socket
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.cookiejar import CookieJar
from typing import Protocol, TypeVar

import certifi
import httpx

from syncd.net.deadline import install, request_deadline
from syncd.net.pace import Unwanted
from syncd.net.retry import Retriable, RetryPolicy, parse_retry_after

T = TypeVar("T")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle takes ~40 ms, and the
    daemon makes a client for every run (a refresh every 10 s)."""
    return ssl.create_default_context(cafile=certifi.where())


def phrase(status: int) -> str:
    """The reason phrase of an HTTP status ("Unknown" for one it does not have)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _unreachable(exc: BaseException) -> str | None:
    """Why no server could be talked to, when the failure says so: a host name
    that does not resolve, or a port nobody listens on."""
    if not isinstance(exc, httpx.ConnectError):
        return None
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(cause, ConnectionRefusedError):
            return "the connection was refused (nothing listens at that address and port)"
        cause = cause.__cause__ or cause.__context__
    return None


class Pacing(Protocol):
    """When requests may go (syncd.net.pace.Pacer, or a composite of them)."""

    def pace(self, wanted: Callable[[], bool] | None = None) -> float: ...
    def nap(self, seconds: float, wanted: Callable[[], bool] | None) -> None: ...
    def quiet(self, seconds: float) -> None: ...
    def throttled(self, sent_at: float, seconds: float) -> None: ...
    def succeeded(self, sent_at: float) -> None: ...


class Exhausted(Exception):
    """The policy gave up on a request: ``failure`` was its last attempt's, ``why`` says when."""

    def __init__(self, failure: Retriable, why: str) -> None:
        super().__init__(f"{why}: {failure.reason}")
        self.failure, self.why = failure, why


class RequestCore:
    def __init__(
        self,
        *,
        headers: dict[str, str],
        connect_timeout: float,
        read_timeout: float,
        deadline: float,
        policy: RetryPolicy,
        base_url: str = "",
        timeout_hint: str = "",
        transport: httpx.BaseTransport | None = None,
        check_peer: Callable[[str], None] | None = None,
        cookies: CookieJar | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy
        self.deadline = deadline  # seconds for a whole answer: connect, headers and body
        self._timeout_hint = timeout_hint or f"the whole answer within {deadline:g}s"
        self._wall = wall
        self._rng = rng or random.Random()
        self._close_streams: Callable[[], None] = lambda: None
        if transport is None:
            transport = httpx.HTTPTransport(verify=tls_context())
            # Each socket operation within the request's deadline (syncd.net.deadline).
            self._close_streams = install(transport, check_peer=check_peer)
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Accept-Encoding": "identity", **headers},
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=False,
            cookies=cookies,
        )

    def close(self) -> None:
        """Close every connection, those of requests still under way too (their
        threads then fail at once, and their results are dropped anyway)."""
        self.http.close()
        self._close_streams()

    def exchange(
        self,
        url: str,
        judge: Callable[[httpx.Response], T],
        *,
        pacing: Pacing,
        params: dict[str, int] | None = None,
    ) -> T:
        """One GET of ``url``; ``judge`` reads the answer while it streams."""
        try:
            with request_deadline(self.deadline), self.http.stream("GET", url, params=params) as response:
                if response.status_code == 429:
                    seconds = parse_retry_after(response.headers.get("Retry-After"), self._wall())
                    if seconds is not None:
                        pacing.quiet(min(seconds, self.policy.max_retry_after))
                return judge(response)
        except httpx.TimeoutException as exc:
            raise Retriable(
                f"timed out ({type(exc).__name__}; {self._timeout_hint})", kind="timeout"
            ) from None
        except httpx.UnsupportedProtocol:
            raise  # not a network fault: the caller refuses such a URL
        except (httpx.TransportError, httpx.StreamError) as exc:
            text = str(exc).strip()
            detail = text.splitlines()[0][:200] if text else "no details"
            unreachable = _unreachable(exc)
            reason = f"connection failed ({type(exc).__name__}: {detail})"
            if unreachable:
                reason = f"{unreachable} ({type(exc).__name__}: {detail})"
            raise Retriable(reason, kind="network", unreachable=unreachable is not None) from None

    def send(
        self,
        attempt: Callable[[], T],
        *,
        pacing: Pacing,
        wanted: Callable[[], bool] | None = None,
        on_retry: Callable[[Retriable, float, int], None] | None = None,
    ) -> T:
        """``attempt`` (an exchange, or a chain of them) until it succeeds or the
        policy gives up (Exhausted). ``on_retry(failure, delay, attempt)`` is
        told of each wait before it begins (logs, metrics)."""
        policy = self.policy
        waited = 0.0
        for number in range(policy.attempts):
            sent_at = pacing.pace(wanted)
            try:
                result = attempt()
            except Retriable as failure:
                delay = policy.delay(number, failure, self._rng)
                if failure.throttled:
                    pacing.throttled(sent_at, delay)
                if wanted is not None and not wanted():
                    raise Unwanted from None  # no retry for an answer nobody waits for
                why = policy.gives_up(number, failure, delay, waited)
                if why is not None:
                    raise Exhausted(failure, why) from None
                if on_retry is not None:
                    on_retry(failure, delay, number)
                waited += delay
                if not failure.throttled:  # a 429's quiet is the pace's own wait
                    pacing.nap(delay, wanted)
                continue
            pacing.succeeded(sent_at)
            return result
        raise AssertionError("unreachable")
