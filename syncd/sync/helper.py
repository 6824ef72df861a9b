"""Helper processes of a long run: a child interpreter fed over its stdin.

syncd starts at most two for a long run into SQLite (``syncd.sync.validation``
and ``syncd.sync.writing``): Python code in one process runs one thread at a
time, and a backfill has more Python work than one core does alone.

A helper is a fresh interpreter (``python -P -m <module>``; not a fork: syncd
has threads and open database connections) talking in frames over its stdin
and stdout: a 4-byte big-endian length, then the data. It greets once its
imports are done, answers requests in order, ignores SIGINT and SIGTERM (a
stop is syncd's to handle; a terminal's Ctrl-C and systemd's SIGTERM reach the
whole group) and exits when its input closes, which includes syncd being
killed.

This module uses the standard library only: helpers import it first.
"""

from __future__ import annotations

import atexit
import os
import select
import signal
import struct
import subprocess
import sys
from collections.abc import Callable
from typing import IO

_LENGTH = struct.Struct(">I")
GREETING = b"syncd helper ready"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class HelperFailed(Exception):
    """The helper process is gone or answered nonsense."""


def write_frame(stream: IO[bytes], data: bytes) -> None:
    """One frame; ``stream`` must be buffered (a raw write may be partial)."""
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame, or None when the other side closed the pipe between frames."""
    header = stream.read(_LENGTH.size)
    if not header:
        return None
    if len(header) < _LENGTH.size:
        raise HelperFailed("a frame was cut short")
    (length,) = _LENGTH.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        raise HelperFailed("a frame was cut short")
    return data


# Helpers started ahead of need (``prestart``), by module, until a run takes them.
_prestarted: dict[str, HelperProcess] = {}


def prestart(*modules: str) -> None:
    """Start helpers now, for a run that will want them: a first backfill.

    Their imports then overlap syncd's own start instead of its first pages.
    A helper nobody takes ends when syncd exits (its input closes).
    """
    if not _prestarted:
        atexit.register(_close_prestarted)
    for module in modules:
        if module not in _prestarted:
            try:
                _prestarted[module] = HelperProcess(module)
            except OSError:
                return  # the run starts its own, or does without


def _close_prestarted() -> None:
    while _prestarted:
        _prestarted.popitem()[1].close()


class HelperProcess:
    """One helper, seen from syncd. Not thread-safe: one caller at a time."""

    @classmethod
    def start(cls, module: str) -> HelperProcess:
        """A helper running ``module``: one started ahead (if still alive), or a new one."""
        helper = _prestarted.pop(module, None)
        if helper is not None and helper.process.poll() is None:
            return helper
        return cls(module)

    def __init__(self, module: str) -> None:
        # -P: the working directory is not on the path (only our syncd).
        self.process = subprocess.Popen(  # noqa: S603 (our interpreter, our module)
            [sys.executable, "-P", "-m", module],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self._ready = False

    def ready(self, *, wait: bool) -> bool:
        """Whether the helper has greeted (its imports are done); ``wait`` for it or not."""
        if self._ready:
            return True
        assert self.process.stdout is not None
        if not wait and not select.select([self.process.stdout], [], [], 0)[0]:
            return False
        if self.receive() != GREETING:
            raise HelperFailed("it did not start properly")
        self._ready = True
        return True

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        try:
            write_frame(self.process.stdin, data)
        except (BrokenPipeError, ValueError) as exc:  # ValueError: the pipe was closed here
            raise HelperFailed("it is gone") from exc

    def receive(self) -> bytes:
        assert self.process.stdout is not None
        try:
            data = read_frame(self.process.stdout)
        except ValueError as exc:
            raise HelperFailed("it is gone") from exc
        if data is None:
            raise HelperFailed("it closed its output")
        return data

    def close(self, timeout: float = 2.0) -> None:
        """Close its input (which ends it) and reap it; kill it if it lingers."""
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_helper(serve: Callable[[IO[bytes], IO[bytes]], None]) -> None:
    """The ``__main__`` of a helper module: serve stdin to stdout until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Buffered streams of our own: with PYTHONUNBUFFERED set, sys.stdout.buffer
    # is a raw FileIO, whose write() may write part of a frame (a stop or any
    # signal during a large write) and say so only in its return value.
    requests = os.fdopen(sys.stdin.fileno(), "rb", closefd=False)
    answers = os.fdopen(sys.stdout.fileno(), "wb", closefd=False)
    try:
        serve(requests, answers)
    except BrokenPipeError:
        pass
