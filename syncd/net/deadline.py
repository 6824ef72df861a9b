"""A deadline for a whole request: connect, headers and body, however they trickle.

httpx's timeouts are per operation: a server that sends its headers or its
body one byte at a time, each within the read timeout, holds a request for
as long as it likes. Here every socket operation of the thread's current
request gets at most the time left before the request's deadline, so the
whole answer arrives within it or the request times out (httpx.ReadTimeout,
ConnectTimeout, ...), which the client retries like any timeout.

The network backend of httpx's connection pool is wrapped (``install``);
``request_deadline`` sets the deadline for the requests of one thread.

The wrapper also knows every connection it opened, so that closing a client
closes them all: httpx's pool closes only the connections it still holds,
and a run ends with requests under way (their results dropped), whose
connections would otherwise be left open until the garbage collector found
them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

_local = threading.local()


@contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Socket operations of this thread's requests end ``seconds`` from now at the latest."""
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = None


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    deadline: float | None = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, streams: _Streams) -> None:
        self._stream = stream
        self._streams = streams

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._streams.forget(self)
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        tls = self._stream.start_tls(ssl_context, server_hostname, bounded)
        # The TLS stream wraps this one's socket: closing it closes both.
        self._streams.forget(self)
        return self._streams.opened(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Streams:
    """The connections one client opened and has not closed."""

    def __init__(self) -> None:
        self._open: set[_Stream] = set()
        self._lock = threading.Lock()
        self._closed = False

    def opened(self, stream: httpcore.NetworkStream) -> _Stream:
        wrapped = _Stream(stream, self)
        with self._lock:
            if not self._closed:
                self._open.add(wrapped)
                return wrapped
        # A request under way when its client closed has just connected.
        stream.close()
        raise httpcore.ConnectError("the client was closed")

    def forget(self, stream: _Stream) -> None:
        with self._lock:
            self._open.discard(stream)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            left, self._open = self._open, set()
        for stream in left:
            stream._stream.close()


PeerCheck = Callable[[str], None]  # raises when a connected peer's address is refused


class _Backend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend, check_peer: PeerCheck | None = None) -> None:
        self._backend = backend
        self._check_peer = check_peer
        self.streams = _Streams()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, bounded, local_address, socket_options)
        if self._check_peer is not None:
            # The address the name resolved to, whatever notation the URL used.
            peer = stream.get_extra_info("server_addr")
            try:
                self._check_peer(str(peer[0]) if isinstance(peer, tuple) and peer else "")
            except BaseException:
                stream.close()
                raise
        return self.streams.opened(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        if self._check_peer is not None:
            self._check_peer(path)  # no network address: whatever it says, refused
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return self.streams.opened(self._backend.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def install(transport: httpx.HTTPTransport, *, check_peer: PeerCheck | None = None) -> Callable[[], None]:
    """Bound ``transport``'s socket operations by the thread's request deadline;
    ``check_peer`` is given each connection's peer address and may refuse it.
    Returns what closes every connection the transport opened (after
    ``transport.close()``), the ones of requests still under way too.

    httpx does not take a network backend; its pool (httpcore) does, so the
    pool's is wrapped. tests/test_client.py holds this to a real socket.
    """
    pool = transport._pool
    if not isinstance(pool, httpcore.ConnectionPool):  # pragma: no cover (httpx changed)
        raise TypeError("httpx's transport has no httpcore connection pool to bound")
    backend = _Backend(pool._network_backend, check_peer)
    pool._network_backend = backend
    return backend.streams.close
