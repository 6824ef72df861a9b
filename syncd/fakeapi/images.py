"""The fake API's images on a second origin, with fault injection.

The real API deletes an artwork and its images 8 days after creation, so syncd
archives every result image and every upscaling input. This server plays the
CDN those URLs point at: a ``Dataset`` made with ``image_origin=server.url``
names its images here, and ``attach`` gives the server the ``FakeApi`` whose
dataset says which images exist (live artworks only; with
``Faults.retention`` it expires what is due before each image request, as the
API does).

    GET  /artworks/<id>/<n>.<ext>   result n of a live artwork (200), else 404
    GET  /uploads/<index>.<ext>     the input of a live upscaling artwork, else 404
    GET  /r/<path>                  the same image (where ``redirect`` faults point)
    GET  /_fake/stats               counters (ImageStats)
    POST /_fake/reset-stats         counters start again
    POST /_fake/faults              JSON body: ImageFaults fields to change

Image bytes are a function of the path (``image_bytes``): a test knows the
sha256 of any URL without fetching it (``expected_sha256``). Random faults draw
from a seeded generator; per-URL faults (gone, wrong_type, redirect) from a
hash of the path, so a URL that is gone is gone on every attempt.
"""

from __future__ import annotations

import hashlib
import posixpath
import random
import re
import struct
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import orjson

from syncd.fakeapi.server import FakeApi, QuietHandler

CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}
MIN_IMAGE_SIZE = 2 * 1024
MAX_IMAGE_SIZE = 256 * 1024
CHUNK = 64 * 1024  # bytes per write of a body: a 5 MB image is not one write
DRIBBLE_CHUNK = 1024
REDIRECTED = "/r"  # prefix of the path a ``redirect`` fault sends the client to
HTML_PAGE = b"<!DOCTYPE html><html><body><h1>Image temporarily unavailable</h1></body></html>"

_RESULT = re.compile(r"/artworks/([^/]+)/(\d+)\.[A-Za-z0-9]+")
_UPLOAD = re.compile(r"/uploads/(\d+)\.[A-Za-z0-9]+")


def _digest(path: str) -> bytes:
    return hashlib.sha256(path.encode()).digest()


def _header(extension: str, digest: bytes, size: int) -> bytes:
    """The start of a real file of this format: what a sniffing client checks."""
    width = 256 + int.from_bytes(digest[4:6], "big") % 1793
    height = 256 + int.from_bytes(digest[6:8], "big") % 1793
    if extension == ".png":
        ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    if extension in (".jpg", ".jpeg"):
        return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    if extension == ".webp":
        # RIFF's size counts what follows its own 8 bytes; VP8's what follows its 8.
        return (
            b"RIFF" + struct.pack("<I", max(0, size - 8)) + b"WEBPVP8 " + struct.pack("<I", max(0, size - 20))
        )
    return b""


def image_bytes(path: str, size: int = 0) -> bytes:
    """The image at ``path`` (the URL's path): the same bytes every time.

    A header of the extension's format, then pseudo-random bytes; 2-256 KiB
    (by a hash of the path) unless ``size`` is positive."""
    digest = _digest(path)
    if size <= 0:
        size = MIN_IMAGE_SIZE + int.from_bytes(digest[:4], "big") % (MAX_IMAGE_SIZE - MIN_IMAGE_SIZE + 1)
    header = _header(posixpath.splitext(path)[1].lower(), digest, size)[:size]
    return header + random.Random(int.from_bytes(digest, "big")).randbytes(size - len(header))


def image_path(url: str) -> str:
    """The path part of an image URL: what names the image, whatever the origin."""
    return urlsplit(url).path


def expected_sha256(url: str, size: int = 0) -> str:
    """The sha256 (hex) of the image a URL of the fake serves (``size`` as ImageFaults.size)."""
    return hashlib.sha256(image_bytes(image_path(url), size)).hexdigest()


def _share(salt: str, path: str) -> float:
    """A number in [0, 1) fixed by the path: per-URL faults pick the same URLs every time."""
    return int.from_bytes(_digest(f"{salt}:{path}")[:8], "big") / 2**64


@dataclass
class ImageFaults:
    """What can go wrong, per image request. Shares are 0..1; all off by default."""

    latency: float = 0.0  # seconds before every answer (requests are served concurrently)
    error_5xx: float = 0.0  # share of requests answered 500/502/503
    truncated: float = 0.0  # share of 200s cut in half, connection closed (Content-Length says all)
    reset: float = 0.0  # share of connections closed without an answer
    slow: float = 0.0  # share of answers delayed by ``delay``
    delay: float = 0.0
    dribble: float = 0.0  # seconds between the 1 KiB chunks of every 200 body
    gone: float = 0.0  # share of URLs (by hash) answered 404, as if expired
    wrong_type: float = 0.0  # share of URLs (by hash) answered 200 text/html
    redirect: float = 0.0  # share of URLs (by hash) answered 302 to /r/<path> here
    fail_first: int = 0  # every URL answers 503 to its first N requests (transient failures)
    size: int = 0  # every image exactly this many bytes (0: 2-256 KiB by hash)
    rate_limit: float = 0.0  # requests per second (token bucket, burst of one second); over it 429
    redirect_to: str = ""  # every image request answered 302 to this absolute URL + the path
    gone_after: int = 0  # an artwork's images answer 410 once N requests were made for them (0: off)

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise ValueError(f"unknown image fault {key!r}")
            setattr(self, key, type(getattr(self, key))(value))


@dataclass
class ImageStats:
    requests: int = 0  # image requests (control endpoints not counted)
    by_status: Counter[int] = field(default_factory=Counter)  # answers sent (a reset is none)
    authorization_seen: int = 0  # requests with an Authorization or Cookie header: a leaked key
    peak_in_flight: int = 0  # most image requests being answered at once
    served: Counter[str] = field(default_factory=Counter)  # path -> complete image bodies sent
    bytes_sent: int = 0  # body bytes written, truncated bodies included

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["by_status"] = {str(k): v for k, v in self.by_status.items()}
        data["served"] = dict(self.served)
        return data


@dataclass
class _Answer:
    status: int
    content_type: str = "text/plain"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    image: str | None = None  # the image path whose bytes are the body (made outside the lock)
    fault: str | None = None  # "reset" | "truncated"
    delay: float = 0.0


class _ImageHandler(QuietHandler):
    server: ImageServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        server = self.server
        if path == "/_fake/stats":
            with server.lock:
                body = orjson.dumps(server.stats.as_dict())
            self._send(200, body, "application/json", {})
            return
        with server.lock:
            server.stats.requests += 1
            if "Authorization" in self.headers or "Cookie" in self.headers:
                server.stats.authorization_seen += 1
            server.in_flight += 1
            server.stats.peak_in_flight = max(server.stats.peak_in_flight, server.in_flight)
        try:
            self._image(path)
        finally:
            with server.lock:
                server.in_flight -= 1

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path == "/_fake/reset-stats":
            server.reset_stats()
            self._send(200, b"{}", "application/json", {})
        elif path == "/_fake/faults":
            try:
                changed = server.update_faults(orjson.loads(body or b"{}"))
            except (ValueError, TypeError) as exc:
                self._send(400, orjson.dumps({"message": str(exc)}), "application/json", {})
                return
            self._send(200, orjson.dumps(changed), "application/json", {})
        else:
            self._send(404, b"Not Found", "text/plain", {})

    def _image(self, path: str) -> None:
        server = self.server
        if server.faults.latency:
            time.sleep(server.faults.latency)
        with server.lock:
            answer = server.decide(path)
            if answer.fault != "reset":
                server.stats.by_status[answer.status] += 1
        if answer.delay:
            time.sleep(answer.delay)
        if answer.fault == "reset":
            self.close_connection = True
            self.connection.close()
            return
        if answer.image is None:
            self._send(answer.status, answer.body, answer.content_type, answer.headers)
            with server.lock:
                server.stats.bytes_sent += len(answer.body)
            return
        self._stream(answer.image, answer.content_type, answer.fault == "truncated")

    def _stream(self, image: str, content_type: str, truncated: bool) -> None:
        """A 200 image body in chunks: cut in half (and the connection closed)
        when truncated, 1 KiB at a time when dribbling."""
        server = self.server
        body = image_bytes(image, server.faults.size)
        pause = server.faults.dribble
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        end = max(1, len(body) // 2) if truncated else len(body)
        step = DRIBBLE_CHUNK if pause else CHUNK
        sent = 0
        try:
            while sent < end:
                chunk = body[sent : min(end, sent + step)]
                self.wfile.write(chunk)
                sent += len(chunk)
                if pause:
                    self.wfile.flush()
                    time.sleep(pause)
            self.wfile.flush()
        except OSError:  # the client gave up: normal for a client with a deadline
            self.close_connection = True
        with server.lock:
            server.stats.bytes_sent += sent
            if sent == len(body):
                server.stats.served[image] += 1
        if truncated:
            self.close_connection = True


class ImageServer(ThreadingHTTPServer):
    """The image origin. Bound in the constructor, so ``url`` is known before
    the dataset that names it is made; ``attach`` the API afterwards."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, faults: ImageFaults | None = None, *, seed: int = 0
    ) -> None:
        super().__init__((host, port), _ImageHandler)
        self.faults = faults or ImageFaults()
        self.stats = ImageStats()
        self.api: FakeApi | None = None
        self.lock = threading.Lock()  # stats, faults' state; taken before the API's lock, never after
        self.rng = random.Random(seed ^ 0x1A6E5)
        self.in_flight = 0
        self._url_requests: Counter[str] = Counter()  # for fail_first
        self._artwork_requests: Counter[str] = Counter()  # for gone_after
        self._tokens = max(1.0, self.faults.rate_limit)
        self._last_refill = time.monotonic()
        self._thread: threading.Thread | None = None

    def attach(self, api: FakeApi) -> ImageServer:
        """Serve the images of this API's dataset (made with ``image_origin=self.url``)."""
        self.api = api
        return self

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (killed, timed out) is normal here.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def start(self) -> ImageServer:
        """Serve in a background thread (for tests and the demo)."""
        # A short poll: stop() waits for it, and tests stop a server each.
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-images", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def reset_stats(self) -> None:
        with self.lock:
            self.stats = ImageStats()

    def update_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change faults; the per-URL counts of ``fail_first`` and ``gone_after``
        start again, so that new values apply to every URL alike."""
        with self.lock:
            self.faults.update(changes)
            self._url_requests.clear()
            self._artwork_requests.clear()
            self._tokens = max(1.0, self.faults.rate_limit)
            return asdict(self.faults)

    # ------------------------------------------------------------ decisions

    def _throttled(self) -> bool:
        rate = self.faults.rate_limit
        if rate <= 0:
            return False
        now = time.monotonic()
        self._tokens = min(max(1.0, rate), self._tokens + (now - self._last_refill) * rate)
        self._last_refill = now
        if self._tokens >= 1:
            self._tokens -= 1
            return False
        return True

    def decide(self, path: str) -> _Answer:
        """Under ``lock``: the answer to one image request, faults included."""
        faults = self.faults
        if faults.redirect_to:
            return _Answer(302, headers={"Location": faults.redirect_to.rstrip("/") + path})
        if self._throttled():
            return _Answer(429, body=b"Too Many Requests", headers={"Retry-After": "1"})
        redirected = path.startswith(REDIRECTED + "/")
        image = path.removeprefix(REDIRECTED) if redirected else path
        self._url_requests[image] += 1
        if self._url_requests[image] <= faults.fail_first:
            return _Answer(503, body=b"Service Unavailable")
        if faults.error_5xx and self.rng.random() < faults.error_5xx:
            status = self.rng.choice((500, 502, 503))
            return _Answer(status, "text/html", f"<html><body><h1>{status}</h1></body></html>".encode())
        if faults.reset and self.rng.random() < faults.reset:
            return _Answer(0, fault="reset")
        if faults.gone and _share("gone", image) < faults.gone:
            return _Answer(404, body=b"Not Found")
        artwork = self._owner(image)
        if artwork is None:
            return _Answer(404, body=b"Not Found")
        if faults.gone_after:
            self._artwork_requests[artwork] += 1
            if self._artwork_requests[artwork] > faults.gone_after:
                return _Answer(410, body=b"Gone")
        if faults.wrong_type and _share("wrong_type", image) < faults.wrong_type:
            return _Answer(200, "text/html", HTML_PAGE)
        if not redirected and faults.redirect and _share("redirect", image) < faults.redirect:
            return _Answer(302, headers={"Location": REDIRECTED + image})
        extension = posixpath.splitext(image)[1].lower()
        answer = _Answer(200, CONTENT_TYPES.get(extension, "application/octet-stream"), image=image)
        if faults.truncated and self.rng.random() < faults.truncated:
            answer.fault = "truncated"
        if faults.slow and faults.delay and self.rng.random() < faults.slow:
            answer.delay = faults.delay
        return answer

    def _owner(self, image: str) -> str | None:
        """Which live artwork names this image (its id, or "#index" for an
        upload), or None: not an image of the dataset, or deleted."""
        api = self.api
        if api is None:
            return None
        with api.lock:
            api.expire_due()
            if match := _RESULT.fullmatch(image):
                artwork = api.dataset.find(match[1])
                if artwork is None or not isinstance(artwork.value, dict):
                    return None
                results = artwork.value.get("results")
                n = int(match[2])
                if isinstance(results, list) and n < len(results) and _names(results[n], image):
                    return match[1]
                return None
            if match := _UPLOAD.fullmatch(image):
                artwork = api.dataset.find_index(int(match[1]))
                value = artwork.value if artwork is not None else None
                if not (isinstance(value, dict) and value.get("artworkType") == "upscaling"):
                    return None
                parameters = value.get("parameters")
                if isinstance(parameters, dict) and _names(parameters.get("imageUrl"), image):
                    return f"#{match[1]}"
            return None


def _names(url: Any, image: str) -> bool:
    return isinstance(url, str) and image_path(url) == image
