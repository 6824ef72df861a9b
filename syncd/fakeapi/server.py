"""The fake Tengr.ai v1 API over a real socket, with fault injection.

``syncd mock-api`` serves this; tests, the benchmark and the demo use it.
v1 semantics: Bearer auth (401 without or with a wrong key, 403 for a
forbidden key), ``skip``/``limit`` validation with 400, JSON error bodies,
``GET /v1/artworks/{id}`` with 404. Faults (``Faults``) are drawn from a seeded
random generator, so a run is repeatable. Control endpoints under ``/_fake/``
(no auth) let tests change the data and read counters:

    GET  /_fake/stats                  counters (requests, by status, early requests, distinct
                                       artworks listed)
    POST /_fake/reset-stats            counters and request logs start again
    POST /_fake/add?count=N[&pending=1]  create N artworks now
    POST /_fake/delete-oldest?count=N  delete the N oldest
    POST /_fake/finish-pending         pending artworks become done
    POST /_fake/faults                 JSON body: Faults fields to change
    POST /_fake/poison?kinds=A,B       serve artworks as hostile records (fakeapi.data.POISONS)
    POST /_fake/heal                   serve them as they were again
    POST /_fake/hold                   API requests wait (unanswered) until released
    POST /_fake/release                answer the held requests, and hold no more

Retention (``Faults.retention``, seconds; 0 off): the real API deletes an
artwork, and its images, 8 days after creation. Before answering a list or get
request (and the image server, ``syncd.fakeapi.images``, before each image
request) the dataset deletes what is due (``Dataset.expire``): live artworks
``retention`` seconds after creation, those made before serving spread over one
retention window, oldest first. A few seconds of it stand for 8 days in tests.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import gzip
import math
import random
import socket
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import orjson

from syncd.fakeapi.data import Dataset

DEFAULT_KEY = "demo-key"
PROMISE = "X-Fake-Promise"  # internal: the deadline a 429 promised (not sent)
REACTION = 0.05  # seconds a client has to read a 429 before its next request counts as early
HOLD_LIMIT = 120.0  # seconds a held request waits at most: a test that forgets to release never hangs


@dataclass
class Faults:
    """What can go wrong, per list/get request. Probabilities are 0..1."""

    rate_limit: float = 0.0  # requests per second allowed (token bucket); 0 = unlimited
    # After a 429, refuse everything until its Retry-After elapses (as NestJS's
    # throttler blocks), not only what finds the bucket empty.
    rate_limit_blocks: bool = False
    retry_after_http_date: bool = False  # send Retry-After as an HTTP date
    retry_after_missing: float = 0.0  # share of 429s sent without Retry-After
    error_5xx: float = 0.0
    truncated: float = 0.0  # body cut short, connection closed
    non_json: float = 0.0  # 200 with an HTML page
    not_a_list: float = 0.0  # 200 with a JSON object
    reset: float = 0.0  # connection closed without an answer
    slow: float = 0.0  # share of responses delayed by `delay`
    delay: float = 0.0
    add_per_request: int = 0  # new artworks created (now: createdAt the wall clock) before each list request
    finish_after: float = 0.0  # seconds after which a pending artwork created now finishes (0: never)
    delete_oldest_per_request: int = 0
    auth_status: int = 0  # answer every API request with this status (401/403)
    fail_from_request: int = 0  # list requests from this number on answer 503 (0: off)
    # List requests for this offset or a later one answer 503 (-1: off): the same
    # pages fail whatever order requests in flight arrive in.
    fail_from_skip: int = -1
    order: str = "newest_first"  # newest_first | oldest_first | random
    # Hostile bytes (what proxies, CDNs and bugs produce):
    content_encoding: str = ""  # this Content-Encoding on 200 answers, the body left plain
    bom: bool = False  # a UTF-8 byte-order mark before every 200 body
    retry_after: str = ""  # every 429's Retry-After, verbatim ("inf", "31536000", ...); not enforced
    dribble: float = 0.0  # seconds between the bytes of every 200 body
    # Answers repeat the key they were sent: error messages (as is, and
    # percent-encoded, base64, base64url and hex, with and without "Bearer ")
    # and a header.
    echo_key: bool = False
    message_suffix: str = ""  # appended to every error message (newlines, escapes: log forgery)
    # The shape of a remote API:
    latency: float = 0.0  # seconds before every API answer (requests are served concurrently)
    rate_limit_headers: bool = False  # RateLimit-Limit/-Remaining/-Reset and RateLimit-Policy on answers
    retention: float = 0.0  # seconds an artwork lives before the API deletes it (0: forever)
    # Misbehaving answers (what a real server does on a bad day):
    # At most ``limit - short_by`` items for any skip in short_from..short_to: a
    # page answered short mid-list (items filtered after paging, a replica behind).
    short_from: int = -1
    short_to: int = -1
    short_by: int = 0
    hidden: int = 0  # the N oldest artworks are left out of every list answer (GET by id still has them)
    wrong_artwork: bool = False  # GET /v1/artworks/{id} answers with another, never listed, artwork's record
    # GET /v1/artworks/{id} finds an artwork only by its id exactly as listed: another
    # spelling of it (the lower-case copy of an upper-case id) is 404.
    exact_id_case: bool = False
    # 200 bodies really encoded, with that Content-Encoding: "gzip", "deflate",
    # "gzip, gzip" (stacked), "br" (not encoded: the header is the test); with
    # "bomb:" before it, the body is 1 GiB of spaces instead, gzip'ed once or twice.
    compressed: str = ""
    spent_quota_header: bool = False  # "RateLimit-Remaining: 0, RateLimit-Reset: 60" on every 200: a lie
    # The answers of the first API requests, in order: "429,503" answers the first
    # with a 429 (Retry-After: 1, kept as any other), the second with a 503; the
    # faults above apply from then on. A test that needs a fault to happen
    # scripts it rather than hoping a rate or a draw brings it.
    first_answers: str = ""

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise ValueError(f"unknown fault {key!r}")
            setattr(self, key, type(getattr(self, key))(value))


@dataclass
class Stats:
    requests: int = 0
    list_requests: int = 0
    get_requests: int = 0
    # Arrived before a Retry-After deadline we gave, REACTION seconds after it was
    # written: a guess at when the client read it (a busy client may read it later).
    # In-process tests judge from the client's side instead (tests/conftest.py: wire).
    early_requests: int = 0
    peak_in_flight: int = 0  # most API requests being answered at once
    by_status: Counter[int] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["by_status"] = {str(k): v for k, v in (self.by_status or Counter()).items()}
        return data


class FakeApi:
    """State shared by the handler threads; every mutation holds ``lock``."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        api_key: str = DEFAULT_KEY,
        forbidden_keys: tuple[str, ...] = (),
        faults: Faults | None = None,
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.api_key = api_key
        self.forbidden_keys = forbidden_keys
        self.faults = faults or Faults()
        self.rng = random.Random(seed ^ 0x5EED)
        self.lock = threading.Lock()
        self.stats = Stats(by_status=Counter())
        self._tokens = 0.0
        self._last_refill = time.monotonic()
        self._retry_deadline = 0.0
        # Retry-After promises: (when the 429 reached the client, or None while on
        # its way; the deadline). A request is early only if it arrives after a
        # 429 was delivered (and REACTION seconds more, for the client to read it)
        # and before its deadline: one sent meanwhile could not know.
        self._promises: list[tuple[float | None, float]] = []
        self.list_log: list[tuple[int, int]] = []  # (skip, limit) of each list request
        self.list_times: list[float] = []  # time.time() of each list request answered
        self.get_log: list[tuple[float, str]] = []  # (time.time(), id) of each single-artwork request
        self.served: set[str] = set()  # every id any list answer carried: "ever listed"
        # The ids list answers carried since the counters were reset: what a
        # client was told by its list reads (the benchmark: which unfinished
        # artworks a refresh need not ask for by id).
        self.listed: set[str] = set()
        self.first_request_at: float | None = None  # wall clock (time.time()) of the first API request
        # In-process tests: called (under the lock) with the list request's number
        # before it is answered, to change the data between two pages.
        self.before_list: Callable[[int], None] | None = None
        self._open = threading.Event()  # cleared: API requests are held (a server that hangs)
        self._open.set()
        self.held = 0  # requests waiting at the gate now
        self.in_flight = 0  # API requests being answered now

    def expire_due(self) -> None:
        """Under the lock: delete the artworks whose retention is over."""
        if self.faults.retention > 0:
            self.dataset.expire(time.time(), self.faults.retention)

    def hold(self) -> None:
        """From now on, API requests hang unanswered until ``release`` (at most ``HOLD_LIMIT``)."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_at_gate(self) -> None:
        if self._open.is_set():
            return
        with self.lock:
            self.held += 1
        try:
            self._open.wait(HOLD_LIMIT)
        finally:
            with self.lock:
                self.held -= 1

    def reset_stats(self) -> None:
        with self.lock:
            self._reset_stats_locked()

    def _reset_stats_locked(self) -> None:
        """Counters and request logs start again (the data and faults stay)."""
        self.stats = Stats(by_status=Counter())
        self.list_log = []
        self.list_times = []
        self.get_log = []
        self.listed = set()
        self.first_request_at = None

    def stats_report(self) -> dict[str, Any]:
        """Under the lock: the counters, and how many distinct artworks list answers carried."""
        return {**self.stats.as_dict(), "artworks_listed": len(self.listed)}

    def scripted(self) -> int | None:
        """Under the lock: the status ``Faults.first_answers`` gives this request, if any."""
        script = [answer.strip() for answer in self.faults.first_answers.split(",") if answer.strip()]
        number = self.stats.requests  # counted before the answer is decided: 1 for the first
        return int(script[number - 1]) if 1 <= number <= len(script) else None

    def throttle(self) -> float | None:
        """Seconds the client must wait, or None when the request may pass."""
        rate = self.faults.rate_limit
        now = time.monotonic()
        self._promises = [(delivered, deadline) for delivered, deadline in self._promises if deadline > now]
        if any(delivered is not None and delivered + REACTION <= now for delivered, _ in self._promises):
            self.stats.early_requests += 1
        if self.scripted() == 429:
            return 1.0
        if self.faults.rate_limit_blocks and now < self._retry_deadline:
            return self._retry_deadline - now
        if rate <= 0:
            return None
        self._tokens = min(self.burst, self._tokens + (now - self._last_refill) * rate)
        self._last_refill = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return (1 - self._tokens) / rate

    @property
    def burst(self) -> float:
        return max(1.0, self.faults.rate_limit)

    def promise(self, deadline: float) -> int:
        """A 429's deadline, kept from now; ``delivered`` once the client has it."""
        self._retry_deadline = max(self._retry_deadline, deadline)
        self._promises.append((None, deadline))
        return len(self._promises) - 1

    def delivered(self, deadline: float) -> None:
        self._promises = [
            (time.monotonic() if delivered is None and until == deadline else delivered, until)
            for delivered, until in self._promises
        ]

    def limit_headers(self) -> dict[str, str]:
        """The draft IETF RateLimit headers for the token bucket (window of one second)."""
        rate = self.faults.rate_limit
        if not (self.faults.rate_limit_headers and rate > 0):
            return {}
        remaining = int(self._tokens)
        reset = 0 if remaining else math.ceil((1 - self._tokens) / rate)
        return {
            "RateLimit-Limit": str(math.floor(self.burst)),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(reset),
            # Whole requests per window: a window of 10 s states fractional rates too.
            "RateLimit-Policy": f"{round(rate * 10)};w=10",
        }


def encoded_forms(secret: str) -> list[str]:
    """``secret`` as a server or proxy that echoes a request may write it:
    percent-encoded (upper and lower hex), base64 and base64url (with and
    without "Bearer ", with and without padding), and hex."""
    raw = secret.encode()
    bearer = b"Bearer " + raw
    forms = [
        "".join(f"%{byte:02X}" for byte in raw),
        "".join(f"%{byte:02x}" for byte in raw),
        quote(secret, safe=""),
        base64.b64encode(raw).decode(),
        base64.b64encode(bearer).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(bearer).decode().rstrip("="),
        raw.hex(),
        raw.hex().upper(),
    ]
    return list(dict.fromkeys(forms))


# gzip of gzip of 1 GiB of spaces (zlib level 9): 1,828 bytes. Inflated once,
# it is the single-layer bomb (1 MB of gzip).
_GZIP_GZIP_BOMB = base64.b64decode(
    """
H4sIAAAAAAACA+3cIW7TYRjA4Y52CUHAEMsEgloOQDJDUswyxwTTC3JiZ2gJQaExOwBJD4BAkiB2g22OA1QhpiCFNrsDyf/3POZ7
9SvffPk9//RwtPFgvPr+fjMspp//vDhYPhoBAAAAA7e4/TDe2QzT9fXRySkAAAAwdO+ePJ5sjwK/z569tg4AAAAYvI+vDve2PwR+
zS8m1gEAAACDt3/3c7a9BVytvz59ax8AAAAweDeCAQAAAJAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAi
GAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAA
ANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2C
AQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAA
AC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIY
AAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA
0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIB
AAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAA
MYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgA
AAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQ
IhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEA
AADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAt
ggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAiGAAA
AAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAAANAi
GAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGCAQAA
ANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAAADGC
AQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIYAAAA
ADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA0CIY
AAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIBAAAA
0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAALYIB
AAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQIhgAAAAA
LYIBAAAA0CIYAAAAADGCAQAAANAiGAAAAAAtggEAAADQIhgAAAAAMYIBAAAA0CIYAAAAAC2CAQAAANAiGAAAAAAxggEAAADQcn4f
DJgsV2++He+O/q+XX+Y/Lv+9s78mCHezyuwPAA==
""".replace("\n", "")
)


@functools.cache
def _bomb(layers: int) -> bytes:
    return _GZIP_GZIP_BOMB if layers == 2 else zlib.decompress(_GZIP_GZIP_BOMB, zlib.MAX_WBITS | 16)


def encoded_body(body: bytes, how: str) -> tuple[bytes, str]:
    """``body`` encoded as ``how`` says (see Faults.compressed), and its Content-Encoding."""
    bomb = how.startswith("bomb:")
    encoding = how.removeprefix("bomb:").strip()
    layers = [part.strip() for part in encoding.split(",")]
    if bomb:
        if set(layers) != {"gzip"} or len(layers) > 2:
            raise ValueError(f"a bomb is gzip once or twice, not {encoding!r}")
        return _bomb(len(layers)), encoding
    for layer in layers:
        if layer == "gzip":
            body = gzip.compress(body, mtime=0)
        elif layer == "deflate":
            body = zlib.compress(body)
        # anything else (br, zstd): the header alone, which syncd must refuse unread
    return body, encoding


class QuietHandler(BaseHTTPRequestHandler):
    """What the fake's servers share: HTTP/1.1 keep-alive, no Nagle delay, no logging."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's
        # algorithm and delayed ACKs add ~40 ms to every small response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read counters instead

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Handler(QuietHandler):
    server: FakeServer

    # ------------------------------------------------------------ plumbing

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        phrase = HTTPStatus(status).phrase
        body = orjson.dumps({"message": message, "statusCode": status, "error": phrase})
        self._send(status, body, headers=headers)

    def _count(self, status: int) -> None:
        assert self.server.api.stats.by_status is not None
        self.server.api.stats.by_status[status] += 1

    # ------------------------------------------------------------ routes

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/_fake/stats":
            with self.server.api.lock:
                self._send(200, orjson.dumps(self.server.api.stats_report()))
            return
        if parts.path == "/v1/artworks" or parts.path.startswith("/v1/artworks/"):
            self._api(parts.path, parse_qs(parts.query, keep_blank_values=True))
            return
        self._error(404, f"Cannot GET {parts.path}")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        api = self.server.api
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with api.lock:
            if parts.path == "/_fake/add":
                pending = query.get("pending") == "1"
                added = api.dataset.add(int(query.get("count", "1")), pending=pending or None)
                self._send(200, orjson.dumps({"added": [a.id for a in added]}))
            elif parts.path == "/_fake/delete-oldest":
                removed = api.dataset.delete_oldest(int(query.get("count", "1")))
                self._send(200, orjson.dumps({"deleted": [a.id for a in removed]}))
            elif parts.path == "/_fake/finish-pending":
                self._send(200, orjson.dumps({"finished": api.dataset.finish_pending()}))
            elif parts.path == "/_fake/faults":
                try:
                    api.faults.update(orjson.loads(body or b"{}"))
                except (ValueError, TypeError) as exc:
                    self._error(400, str(exc))
                    return
                self._send(200, orjson.dumps(asdict(api.faults)))
            elif parts.path == "/_fake/poison":
                try:
                    poisoned = api.dataset.poison(query.get("kinds", "").split(","), api.api_key)
                except ValueError as exc:
                    self._error(400, str(exc))
                    return
                self._send(200, orjson.dumps({kind: a.id for kind, a in poisoned.items()}))
            elif parts.path == "/_fake/heal":
                api.dataset.heal()
                self._send(200, b"{}")
            elif parts.path in ("/_fake/hold", "/_fake/release"):
                (api.hold if parts.path == "/_fake/hold" else api.release)()
                self._send(200, b"{}")
            elif parts.path == "/_fake/reset-stats":
                api._reset_stats_locked()
                self._send(200, b"{}")
            else:
                self._error(404, f"Cannot POST {parts.path}")

    def _api(self, path: str, query: dict[str, list[str]]) -> None:
        api = self.server.api
        with api.lock:
            api.in_flight += 1
            api.stats.peak_in_flight = max(api.stats.peak_in_flight, api.in_flight)
        try:
            self._answer_api(path, query)
        finally:
            with api.lock:
                api.in_flight -= 1

    def _answer_api(self, path: str, query: dict[str, list[str]]) -> None:
        api = self.server.api
        faults = api.faults
        api.wait_at_gate()
        with api.lock:
            if api.first_request_at is None:
                api.first_request_at = time.time()
            api.stats.requests += 1
            is_list = path == "/v1/artworks"
            if is_list:
                api.stats.list_requests += 1
            else:
                api.stats.get_requests += 1
            status, body, headers, fault = self._decide(path, query, is_list)
            self._count(status)
            if status == 200:
                headers = {**headers, **api.limit_headers()}
        if faults.latency:
            time.sleep(faults.latency)
        promise = headers.pop(PROMISE, None) if headers else None
        if fault == "slow" or (faults.slow and faults.delay and api.rng.random() < faults.slow):
            time.sleep(faults.delay)
        if fault == "reset":
            self.close_connection = True
            self.connection.close()
            return
        if fault == "truncated":
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: max(1, len(body) // 2)])
            self.wfile.flush()
            self.close_connection = True
            return
        content_type = "text/html" if fault in ("non_json", "html_5xx") else "application/json"
        headers = dict(headers)
        if faults.echo_key:
            headers["X-Echo-Authorization"] = self.headers.get("Authorization", "")
        if promise is not None:
            self._send(status, body, content_type, headers)
            with api.lock:
                api.delivered(float(promise))
            return
        if status == 200:
            if faults.bom:
                body = b"\xef\xbb\xbf" + body
            if faults.content_encoding:
                headers["Content-Encoding"] = faults.content_encoding
            if faults.compressed:
                body, headers["Content-Encoding"] = encoded_body(body, faults.compressed)
            if faults.spent_quota_header:
                headers.update({"RateLimit-Remaining": "0", "RateLimit-Reset": "60"})
            if faults.dribble:
                self._dribble(body, content_type, headers, faults.dribble)
                return
        self._send(status, body, content_type, headers)

    def _dribble(self, body: bytes, content_type: str, headers: dict[str, str], pause: float) -> None:
        """A 200 answer sent one byte at a time (a slowloris in reverse)."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            for index in range(len(body)):
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
                time.sleep(pause)
        except OSError:  # the client gave up, as it should
            self.close_connection = True

    def _decide(
        self, path: str, query: dict[str, list[str]], is_list: bool
    ) -> tuple[int, bytes, dict[str, str], str | None]:
        """Under the lock: the answer to one API request, faults included."""
        api = self.server.api
        faults = api.faults
        rng = api.rng

        auth = self.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None

        def error(
            status: int, message: str, headers: dict[str, str] | None = None
        ) -> tuple[int, bytes, dict[str, str], str | None]:
            if faults.echo_key:
                forms = "; ".join(encoded_forms(key or auth))
                message = f"{message} (request: Authorization {auth}; as logged: {forms})"
            message += faults.message_suffix
            body = orjson.dumps(
                {"message": message, "statusCode": status, "error": HTTPStatus(status).phrase}
            )
            return status, body, headers or {}, None

        if faults.auth_status in (401, 403):
            return error(faults.auth_status, "Invalid API key" if faults.auth_status == 401 else "Forbidden")
        if key is None or (key != api.api_key and key not in api.forbidden_keys):
            return error(401, "Unauthorized")
        if key in api.forbidden_keys:
            return error(403, "This API key is not allowed to list artworks")

        wait = api.throttle()
        if wait is not None:
            # Counted from when the client has the answer, after the latency: a
            # server says how long from its answer, not from the request.
            seconds = max(1, math.ceil(wait - faults.latency))
            headers: dict[str, str] = api.limit_headers()
            if faults.retry_after:  # a broken header: it promises nothing the server keeps
                headers["Retry-After"] = faults.retry_after
            elif rng.random() >= faults.retry_after_missing:
                if faults.retry_after_http_date:
                    # A moment, in whole seconds (rounded up so it never undershoots):
                    # the promise is that moment, however long the answer takes.
                    now_wall = time.time()
                    moment = math.ceil(now_wall + faults.latency) + seconds
                    headers["Retry-After"] = email.utils.formatdate(moment, usegmt=True)
                    deadline = time.monotonic() + (moment - now_wall)
                else:
                    headers["Retry-After"] = str(seconds)
                    # The wait starts when the client has the answer, after the latency.
                    deadline = time.monotonic() + faults.latency + seconds
                headers[PROMISE] = str(deadline)
                api.promise(float(headers[PROMISE]))
            return error(429, "ThrottlerException: Too Many Requests", headers)

        scripted = api.scripted()
        if scripted is not None and scripted != 429:
            return error(scripted, HTTPStatus(scripted).phrase)
        if is_list and faults.fail_from_request and api.stats.list_requests >= faults.fail_from_request:
            return error(503, "Service Unavailable")
        if is_list and faults.fail_from_skip >= 0:
            skip = query.get("skip", ["0"])[-1]
            if skip.isdigit() and int(skip) >= faults.fail_from_skip:
                return error(503, "Service Unavailable")
        if faults.error_5xx and rng.random() < faults.error_5xx:
            status = rng.choice((500, 502, 503, 504))
            if status == 500:
                return error(500, "Internal server error")
            return status, f"<html><body><h1>{status} Bad Gateway</h1></body></html>".encode(), {}, "html_5xx"
        if faults.reset and rng.random() < faults.reset:
            return 200, b"", {}, "reset"

        if is_list:
            status, body = self._list(query)
        else:
            status, body = self._get(path.removeprefix("/v1/artworks/"))
        if status != 200:
            return status, body, {}, None
        if faults.non_json and rng.random() < faults.non_json:
            return (
                200,
                b"<!DOCTYPE html><html><body>Service temporarily unavailable</body></html>",
                {},
                "non_json",
            )
        if is_list and faults.not_a_list and rng.random() < faults.not_a_list:
            return 200, b'{"data": "maintenance"}', {}, None
        if faults.truncated and rng.random() < faults.truncated:
            return 200, body, {}, "truncated"
        return 200, body, {}, None

    def _list(self, query: dict[str, list[str]]) -> tuple[int, bytes]:
        api = self.server.api
        faults = api.faults

        def bad(message: str) -> tuple[int, bytes]:
            return 400, orjson.dumps({"message": [message], "statusCode": 400, "error": "Bad Request"})

        try:
            skip = int(query.get("skip", ["0"])[-1])
            limit = int(query.get("limit", ["10"])[-1])
        except ValueError:
            return bad("skip and limit must be integers")
        if skip < 0:
            return bad("skip must not be less than 0")
        if not 1 <= limit <= 500:
            return bad(
                "limit must not be greater than 500" if limit > 500 else "limit must not be less than 1"
            )
        api.expire_due()
        if faults.add_per_request:
            api.dataset.add(faults.add_per_request, live=True)
        if faults.delete_oldest_per_request:
            api.dataset.delete_oldest(faults.delete_oldest_per_request)
        if api.before_list is not None:
            api.before_list(api.stats.list_requests)
        api.list_log.append((skip, limit))
        api.list_times.append(time.time())
        if faults.hidden:
            oldest = {a.id for a in api.dataset.items[: faults.hidden]}
            visible = [a for a in api.dataset.ordered(faults.order) if a.id not in oldest]
            listed = visible[skip : skip + limit]
        else:
            listed = api.dataset.page(faults.order, skip, limit)
        if faults.short_from <= skip <= faults.short_to:
            listed = listed[: max(0, limit - faults.short_by)]
        if faults.finish_after:
            api.dataset.finish_due(listed, faults.finish_after, time.time())
        ids = [a.id for a in listed if a.id is not None]
        api.served.update(ids)
        api.listed.update(ids)
        return 200, b"[" + b",".join(a.json() for a in listed) + b"]"

    def _get(self, artwork_id: str) -> tuple[int, bytes]:
        api = self.server.api
        api.get_log.append((time.time(), artwork_id))
        api.expire_due()
        artwork = api.dataset.find(artwork_id)
        if artwork is not None and api.faults.exact_id_case and artwork.id != artwork_id:
            artwork = None
        if artwork is not None and api.faults.finish_after:
            api.dataset.finish_due([artwork], api.faults.finish_after, time.time())
        if artwork is None:
            return 404, orjson.dumps(
                {"message": "Artwork not found", "statusCode": 404, "error": "Not Found"}
            )
        if api.faults.wrong_artwork and isinstance(artwork.value, dict):
            # Another artwork's record, one the list never showed (a cache mix-up).
            other = dict(artwork.value, id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"other:{artwork_id}")))
            return 200, orjson.dumps(other)
        return 200, artwork.json()


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, api: FakeApi, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.api = api
        self._thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (killed, timed out) is normal here.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeServer:
        """Serve in a background thread (for tests and the demo)."""
        # A short poll: stop() waits for it (0.5 s by default), and tests stop many servers.
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.api.release()
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
