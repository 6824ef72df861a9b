"""Image downloads: their own host, their own budget, never a credential.

Image hosts are not the API. The fetcher has its own rate ceiling
(SYNCD_ARCHIVE_MAX_REQUESTS_PER_SECOND, for all hosts together) and a pace
per host that its 429s slow (as the API client's), so that one throttling
host never slows the others. It sends no Authorization header and no
cookie, to any host, and no URL that carries the API key. Redirects are
followed by hand, at most MAX_REDIRECTS, only to http(s), and never from
https to plain http. Where it may connect is syncd.locations' to say: never
a cloud's metadata service, a link-local, multicast or reserved address,
however the URL spells it and whatever a name resolves to (each
connection's peer address is judged); private and loopback hosts only with
SYNCD_ARCHIVE_ALLOW_PRIVATE (the default). Bodies are asked for and kept as they are
(``Accept-Encoding: identity``; a compressed one is refused, never
inflated: a small gzip can unpack to gigabytes). Every byte is streamed to
the archive folder; a request has a deadline for the whole answer (connect
+ read timeouts, plus the time the largest file allowed takes at
MIN_TRANSFER_RATE).

What an answer means for the image (syncd.archive.plan.verdict_for_status):

    200 image/*          kept (streamed, hashed, renamed into place)
    404, 410             gone: no retry
    5xx, 429, timeouts,  retried in this run with back-off (a 429's
    resets, cut bodies   Retry-After heeded), then failed until a later run
    other 4xx, a type    failed with the reason (a later run tries again)
    that is no image, a
    body over the limit,
    a compressed body
    a URL syncd never    failed and given up at once (not http(s), the key in
    fetches              it, credentials, a forbidden address, one httpx refuses)
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urljoin, urlsplit

import httpx

from syncd import __version__, locations
from syncd.archive.files import ContentStore, NotAnImage, NotPlaceable, Stored, TooLarge
from syncd.archive.plan import Verdict, media_type, verdict_for_status
from syncd.errors import one_line
from syncd.net.core import tls_context
from syncd.net.deadline import PeerCheck, install, request_deadline
from syncd.net.limiter import RateLimiter
from syncd.net.pace import Pacer, Unwanted
from syncd.net.retry import backoff_delay, parse_retry_after
from syncd.redaction import contains as contains_secret

MAX_REDIRECTS = 5
ATTEMPTS_PER_RUN = 3
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
# A Retry-After longer than this ends the file's tries for this run (it is
# failed, and tried again at a later run), rather than holding a worker.
MAX_RETRY_AFTER = 60.0
MIN_TRANSFER_RATE = 256 * 1024  # bytes per second a download must keep up, on average
MAX_HOSTS = 256  # per-host paces kept (the least recently added are forgotten)


@dataclass(frozen=True)
class FetchOptions:
    max_requests_per_second: float = 10.0
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    attempts: int = ATTEMPTS_PER_RUN
    allow_private: bool = True  # private and loopback image hosts (SYNCD_ARCHIVE_ALLOW_PRIVATE)


@dataclass(frozen=True)
class Fetched:
    stored: Stored
    content_type: str


class FetchFailure(Exception):
    """The image could not be kept in this run; ``verdict`` says what follows."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: float | None = None, throttled: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.retry_after, self.throttled = reason, retry_after, throttled


class ForbiddenAddress(Exception):
    """The host resolved to an address no image lives at (syncd.locations)."""


def peer_check(*, allow_private: bool) -> PeerCheck:
    """The check of each connection's peer address (syncd.net.deadline.install):
    whatever notation the URL used, the address it resolved to is judged."""

    def check(peer: str) -> None:
        address = locations.host_address(peer) if peer else None
        reason = (
            "no network address"
            if address is None
            else locations.refusal(str(address), allow_private=allow_private)
        )
        if reason is not None:
            raise ForbiddenAddress(f"the host resolves to {peer or 'nothing'}: {reason}; not fetched")

    return check


def _guarded_transport(allow_private: bool) -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(verify=tls_context())
    return install(transport, check_peer=peer_check(allow_private=allow_private))


class _NoCookies(DefaultCookiePolicy):
    """Image hosts get nothing back from syncd: no cookie is ever stored."""

    def set_ok(self, cookie: object, request: object) -> bool:
        return False


class ImageFetcher:
    def __init__(
        self,
        store: ContentStore,
        options: FetchOptions | None = None,
        *,
        secrets: tuple[str, ...] = (),
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.options = options or FetchOptions()
        self._rng = rng or random.Random()
        self._secrets = secrets
        self._clock, self._sleep = clock, sleep
        # The ceiling for all hosts together; never slowed by one host's 429s.
        self.pacer = Pacer(
            RateLimiter(max_rate=self.options.max_requests_per_second), clock=clock, sleep=sleep
        )
        self._hosts: dict[str, Pacer] = {}
        self._hosts_lock = threading.Lock()
        self.deadline = (
            self.options.connect_timeout
            + self.options.read_timeout
            + store.max_file_bytes / MIN_TRANSFER_RATE
        )
        self._http = httpx.Client(
            headers={
                "User-Agent": f"syncd/{__version__} (image archive)",
                "Accept": "image/*",
                "Accept-Encoding": "identity",
            },
            timeout=httpx.Timeout(self.options.read_timeout, connect=self.options.connect_timeout),
            transport=transport or _guarded_transport(self.options.allow_private),
            follow_redirects=False,
            cookies=CookieJar(policy=_NoCookies()),
        )

    def close(self) -> None:
        self._http.close()

    def host_pacer(self, url: str) -> Pacer:
        """The pace of ``url``'s host (its 429s slow it, and only it)."""
        host = urlsplit(url).hostname or ""
        with self._hosts_lock:
            pacer = self._hosts.get(host)
            if pacer is None:
                if len(self._hosts) >= MAX_HOSTS:
                    del self._hosts[next(iter(self._hosts))]
                limiter = RateLimiter(max_rate=self.options.max_requests_per_second)
                pacer = self._hosts[host] = Pacer(limiter, clock=self._clock, sleep=self._sleep)
            return pacer

    def fetch(self, url: str, wanted: Callable[[], bool] | None = None) -> Fetched:
        """Download ``url`` into the store; FetchFailure when it cannot be kept now.

        ArchiveStorageError (no room) and Unwanted (the run stops) pass through.
        """
        self._check_url(url)
        host = self.host_pacer(url)
        for attempt in range(self.options.attempts):
            sent_at = host.pace(wanted)
            self.pacer.pace(wanted)
            try:
                fetched = self._follow(url, wanted)
            except _Retry as exc:
                delay = (
                    exc.retry_after
                    if exc.retry_after is not None
                    else backoff_delay(attempt, base=BACKOFF_BASE, cap=BACKOFF_CAP, rng=self._rng)
                )
                if exc.throttled:
                    host.throttled(sent_at, min(delay, MAX_RETRY_AFTER))
                if attempt + 1 >= self.options.attempts or delay > MAX_RETRY_AFTER:
                    raise FetchFailure(
                        Verdict.RETRY, f"{exc.reason} (after {attempt + 1} attempts)"
                    ) from None
                if not exc.throttled:
                    self.pacer.nap(delay, wanted)
                continue
            host.succeeded(sent_at)
            return fetched
        raise AssertionError("unreachable")

    def _follow(self, url: str, wanted: Callable[[], bool] | None) -> Fetched:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                with request_deadline(self.deadline), self._http.stream("GET", current) as response:
                    status = response.status_code
                    if status in (301, 302, 303, 307, 308):
                        current = self._redirect(current, response.headers.get("Location"))
                        continue
                    if status == 200:
                        return self._keep(response, wanted)
                    verdict = verdict_for_status(status)
                    reason = f"{status} {_phrase(status)}"
                    if verdict is Verdict.RETRY:
                        retry_after = parse_retry_after(
                            response.headers.get("Retry-After"), datetime.now(UTC)
                        )
                        raise _Retry(reason, retry_after if status == 429 else None, throttled=status == 429)
                    raise FetchFailure(verdict, reason)
            except ForbiddenAddress as exc:
                raise FetchFailure(Verdict.REFUSED, str(exc)) from None
            except (httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError, ValueError) as exc:
                # httpx refuses the URL (an IDNA error, a control character, ...):
                # the same URL would be refused again.
                raise FetchFailure(
                    Verdict.REFUSED, f"not a URL that can be fetched ({type(exc).__name__})"
                ) from None
            except httpx.TimeoutException as exc:
                raise _Retry(
                    f"timed out ({type(exc).__name__}, the whole answer within {self.deadline:g}s)"
                ) from None
            except httpx.DecodingError:
                raise _Retry("a body that cannot be decoded (a wrong Content-Encoding?)") from None
            except (httpx.TransportError, httpx.StreamError) as exc:
                raise _Retry(f"connection failed or cut short ({type(exc).__name__})") from None
        raise FetchFailure(Verdict.FAILED, f"more than {MAX_REDIRECTS} redirects")

    def _keep(self, response: httpx.Response, wanted: Callable[[], bool] | None) -> Fetched:
        declared = media_type(response.headers.get("Content-Type"))
        if declared is None or not declared.startswith("image/"):
            shown = one_line((response.headers.get("Content-Type") or "none")[:60])
            raise FetchFailure(Verdict.FAILED, f"the content type {shown!r} is not an image")
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            # Images are compressed already; a compressed body could inflate to
            # gigabytes from a few bytes (it is never inflated, only refused).
            shown = one_line(encoding[:40])
            raise FetchFailure(Verdict.FAILED, f"a compressed body (Content-Encoding: {shown}): refused")
        store = self.store
        length = _content_length(response.headers.get("Content-Length"))
        if length is not None and length > store.max_file_bytes:
            raise FetchFailure(
                Verdict.FAILED,
                f"{length:,} bytes: larger than SYNCD_ARCHIVE_MAX_FILE_BYTES ({store.max_file_bytes:,})",
            )
        store.check_room(length or 0)
        try:
            with store.receive() as receiver:
                for chunk in response.iter_raw():
                    if wanted is not None and not wanted():
                        raise Unwanted
                    receiver.write(chunk)
                stored = receiver.finish()
        except (NotAnImage, TooLarge, NotPlaceable) as exc:
            raise FetchFailure(Verdict.FAILED, str(exc)) from None
        return Fetched(stored, declared)

    def _redirect(self, current: str, location: str | None) -> str:
        if not location:
            raise FetchFailure(Verdict.FAILED, "a redirect without a Location")
        target = urljoin(current, location.strip())
        if urlsplit(current).scheme == "https" and urlsplit(target).scheme == "http":
            raise FetchFailure(Verdict.FAILED, "redirected from https to plain http: refused")
        self._check_url(target)  # as the first URL was, before it was paced
        return target

    def _check_url(self, url: str) -> None:
        """Only http(s) URLs to a named or public host, without credentials or the key."""
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            parts.port  # noqa: B018 (raises on a malformed port)
            httpx.URL(url)
        except (ValueError, UnicodeError, httpx.InvalidURL):
            raise FetchFailure(Verdict.REFUSED, "not a valid URL") from None
        if contains_secret(url, self._secrets):  # in any form: percent-encoded, base64, hex...
            raise FetchFailure(
                Verdict.REFUSED, "the URL carries the API key: not fetched (the key goes to the API only)"
            )
        if parts.scheme not in ("http", "https") or not host:
            raise FetchFailure(Verdict.REFUSED, "not an http(s) URL: not fetched")
        if "@" in parts.netloc:
            raise FetchFailure(Verdict.REFUSED, "a URL with credentials (user@host): not fetched")
        refused = locations.refusal(host, allow_private=self.options.allow_private)
        if refused is not None:  # a metadata service, link-local, ... in any notation
            raise FetchFailure(Verdict.REFUSED, f"{refused}: not fetched")


def _content_length(header: str | None) -> int | None:
    if header is None or not header.strip().isdigit() or len(header) > 20:
        return None
    return int(header)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
