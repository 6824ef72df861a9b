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
the archive's store (syncd.archive.store); a request has a deadline for the whole answer (connect
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
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import urljoin, urlsplit

import httpx

from syncd import __version__, locations
from syncd.archive.plan import Verdict, media_type, verdict_for_status
from syncd.archive.store import ArchiveStore, NotAnImage, NotPlaceable, NotStored, StoreBusy, Stored, TooLarge
from syncd.errors import one_line
from syncd.net.core import Exhausted, RequestCore, phrase
from syncd.net.deadline import PeerCheck
from syncd.net.limiter import RateLimiter
from syncd.net.pace import Pacer, Unwanted
from syncd.net.retry import Retriable, RetryPolicy, parse_retry_after
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


# Told the file a download is about to become, before it is placed: (path,
# sha256, size, content type). See syncd.archive.store.Claim.
Claim = Callable[[str, str, int, str], None]


class FetchFailure(Exception):
    """The image could not be kept in this run; ``verdict`` says what follows."""

    def __init__(self, verdict: Verdict, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason


@dataclass(frozen=True)
class _Redirect:
    location: str | None


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


class _NoCookies(DefaultCookiePolicy):
    """Image hosts get nothing back from syncd: no cookie is ever stored."""

    def set_ok(self, cookie: object, request: object) -> bool:
        return False


class _HostPacing:
    """The pace of one host under the ceiling for all (syncd.net.core.Pacing):
    a request waits for both; only the host's own 429s slow it."""

    def __init__(self, host: Pacer, ceiling: Pacer) -> None:
        self.host, self.ceiling = host, ceiling

    def pace(self, wanted: Callable[[], bool] | None = None) -> float:
        sent_at = self.host.pace(wanted)
        self.ceiling.pace(wanted)
        return sent_at

    def nap(self, seconds: float, wanted: Callable[[], bool] | None) -> None:
        self.ceiling.nap(seconds, wanted)

    def quiet(self, seconds: float) -> None:
        self.host.quiet(seconds)

    def throttled(self, sent_at: float, seconds: float) -> None:
        self.host.throttled(sent_at, seconds)

    def succeeded(self, sent_at: float) -> None:
        self.host.succeeded(sent_at)


class ImageFetcher:
    def __init__(
        self,
        store: ArchiveStore,
        options: FetchOptions | None = None,
        *,
        secrets: tuple[str, ...] = (),
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.options = options = options or FetchOptions()
        self._secrets = secrets
        self._clock, self._sleep = clock, sleep
        # The ceiling for all hosts together; never slowed by one host's 429s.
        self.pacer = Pacer(RateLimiter(max_rate=options.max_requests_per_second), clock=clock, sleep=sleep)
        self._hosts: dict[str, Pacer] = {}
        self._hosts_lock = threading.Lock()
        self.deadline = (
            options.connect_timeout + options.read_timeout + store.max_file_bytes / MIN_TRANSFER_RATE
        )
        self._core = RequestCore(
            headers={"User-Agent": f"syncd/{__version__} (image archive)", "Accept": "image/*"},
            connect_timeout=options.connect_timeout,
            read_timeout=options.read_timeout,
            deadline=self.deadline,
            policy=RetryPolicy(
                attempts=options.attempts,
                backoff_base=BACKOFF_BASE,
                backoff_cap=BACKOFF_CAP,
                # A longer Retry-After ends the file's tries for this run (it is
                # failed, and tried again by a later run) rather than holding a worker.
                max_retry_after=MAX_RETRY_AFTER,
                longer_retry_after="give up",
            ),
            transport=transport,
            check_peer=peer_check(allow_private=options.allow_private),
            cookies=CookieJar(policy=_NoCookies()),
            rng=rng,
        )

    def close(self) -> None:
        self._core.close()

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

    def fetch(
        self, url: str, wanted: Callable[[], bool] | None = None, claim: Claim | None = None
    ) -> Fetched:
        """Download ``url`` into the store; FetchFailure when it cannot be kept now.
        ``claim`` is told what the file will be once its bytes are hashed,
        before it is placed.

        ArchiveStorageError (no room, the store refused) and Unwanted (the run
        stops) pass through.
        """
        self._check_url(url)
        pacing = _HostPacing(self.host_pacer(url), self.pacer)
        try:
            return self._core.send(
                lambda: self._follow(url, pacing, wanted, claim), pacing=pacing, wanted=wanted
            )
        except Exhausted as exc:
            raise FetchFailure(Verdict.RETRY, f"{exc.failure.reason} ({exc.why})") from None

    def _follow(
        self, url: str, pacing: _HostPacing, wanted: Callable[[], bool] | None, claim: Claim | None
    ) -> Fetched:
        """One attempt: ``url``, and the redirects from it (each checked where it is made)."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                answer = self._core.exchange(
                    current, lambda response: self._judge(response, wanted, claim), pacing=pacing
                )
            except ForbiddenAddress as exc:
                raise FetchFailure(Verdict.REFUSED, str(exc)) from None
            except (httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError, ValueError) as exc:
                # httpx refuses the URL (an IDNA error, a control character, ...):
                # the same URL would be refused again.
                raise FetchFailure(
                    Verdict.REFUSED, f"not a URL that can be fetched ({type(exc).__name__})"
                ) from None
            if isinstance(answer, Fetched):
                return answer
            current = self._redirect(current, answer.location)
        raise FetchFailure(Verdict.FAILED, f"more than {MAX_REDIRECTS} redirects")

    def _judge(
        self, response: httpx.Response, wanted: Callable[[], bool] | None, claim: Claim | None
    ) -> Fetched | _Redirect:
        """What one answer means for the image (the table in the module's docstring)."""
        status = response.status_code
        if status in (301, 302, 303, 307, 308):
            return _Redirect(response.headers.get("Location"))
        if status == 200:
            return self._keep(response, wanted, claim)
        verdict = verdict_for_status(status)
        reason = f"{status} {phrase(status)}"
        if verdict is Verdict.RETRY:
            retry_after = None
            if status == 429:
                retry_after = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
            raise Retriable(reason, kind=str(status), retry_after=retry_after, throttled=status == 429)
        raise FetchFailure(verdict, reason)

    def _keep(
        self, response: httpx.Response, wanted: Callable[[], bool] | None, claim: Claim | None
    ) -> Fetched:
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
                told = None if claim is None else lambda p, h, n: claim(p, h, n, declared)
                stored = receiver.finish(told)
        except (NotAnImage, TooLarge, NotPlaceable, NotStored, StoreBusy) as exc:
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
        if contains_secret(url, self._secrets):  # in any form: percent-encoded, base64, hex...
            raise FetchFailure(
                Verdict.REFUSED, "the URL carries the API key: not fetched (the key goes to the API only)"
            )
        try:
            host = locations.http_url(url).hostname or ""
            httpx.URL(url)
        except locations.NotAnHttpUrl as exc:
            why = {"credentials": "a URL with credentials (user@host)", "port": "not a valid URL"}
            raise FetchFailure(
                Verdict.REFUSED, f"{why.get(exc.problem, 'not an http(s) URL')}: not fetched"
            ) from None
        except (ValueError, UnicodeError, httpx.InvalidURL):
            raise FetchFailure(Verdict.REFUSED, "not a valid URL: not fetched") from None
        refused = locations.refusal(host, allow_private=self.options.allow_private)
        if refused is not None:  # a metadata service, link-local, ... in any notation
            raise FetchFailure(Verdict.REFUSED, f"{refused}: not fetched")


def _content_length(header: str | None) -> int | None:
    if header is None or not header.strip().isdigit() or len(header) > 20:
        return None
    return int(header)
