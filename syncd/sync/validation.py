"""Where list pages are validated: in the fetch thread, or in one helper process.

Parsing, validating and hashing records is Python code, and so is binding
rows for the database driver; in one process the GIL runs them one after the
other. With a second core, a long run moves validation to a helper process:
this process fetches and writes, the helper validates the page after. The
helper receives the body as fetched and sends back the page's rows as
marshal data (``PageResult.to_wire``): plain tuples, cheap to load.

The helper is started only when a run proves long (it costs an interpreter
start), as ``python -m syncd.sync.validation`` talking over its stdin and
stdout. If it dies, syncd says so and goes on validating here: the helper may
speed a run up, never fail it. It ignores SIGINT and SIGTERM (a stop is this
process's to handle; systemd signals the whole cgroup) and exits when its
input closes, which includes this process being killed.

The helper imports only syncd.records and syncd.api.body: no database code.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import signal
import struct
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import IO, Any

from syncd.api.body import parse_array
from syncd.records import PageResult, classify_page

log = logging.getLogger(__name__)

# Frames on the pipes: a 4-byte big-endian length, then marshal data.
_LENGTH = struct.Struct(">I")
_GREETING = b"syncd validation helper ready"


class HelperMode(StrEnum):
    AUTO = "auto"  # a helper for long runs into SQLite, when more than one CPU is available
    ON = "on"  # a helper for every run, from its first page (tests, benchmarks)
    OFF = "off"  # validate in the fetch thread


class HelperFailed(Exception):
    """The helper process is gone or answered nonsense."""


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class PageValidator:
    """Validates pages for one run; ``close`` it when the run ends.

    Used from one thread at a time (the fetch thread); ``close`` may come
    from another, and makes a page in flight fail over to this process.
    """

    def __init__(self, mode: HelperMode | str = HelperMode.AUTO, *, database_in_process: bool = True) -> None:
        self.mode = HelperMode(mode)
        # SQLite works in this process and leaves the second CPU idle; a
        # PostgreSQL server needs it for the inserts (measured: the helper
        # made a PostgreSQL backfill ~10% slower, an SQLite one faster).
        self.database_in_process = database_in_process
        self._helper: subprocess.Popen[bytes] | None = None
        self._failed = False
        self._ready = False
        self.pages_in_helper = 0
        if self.mode is HelperMode.ON:
            self.start_helper()

    @property
    def helper_running(self) -> bool:
        return self._helper is not None

    def expect_long_run(self) -> None:
        """A hint from the sync loop: more pages are coming than a short run has."""
        if self.mode is HelperMode.AUTO and self.database_in_process and available_cpus() > 1:
            self.start_helper()

    def start_helper(self) -> None:
        if self._helper is not None or self._failed:
            return
        try:
            # A fresh interpreter (not a fork: this process has threads and open
            # database connections), reading pages on stdin until it closes.
            self._helper = subprocess.Popen(
                # -P: the working directory is not on the path (only our syncd).
                [sys.executable, "-P", "-m", "syncd.sync.validation"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
        except OSError as exc:
            self._give_up(f"cannot start it ({exc.strerror or exc})")

    def validate(
        self, body: bytes, items: list[Any], now: datetime, stored_hashes: Mapping[str, str]
    ) -> PageResult:
        """The page's rows, rejections and unchanged ids (see records.classify_page)."""
        helper = self._helper
        if helper is not None:
            try:
                assert helper.stdin is not None
                assert helper.stdout is not None
                if not self._helper_ready(helper.stdout):
                    return classify_page(items, now, stored_hashes)
                _write_frame(helper.stdin, marshal.dumps((body, now.isoformat(), dict(stored_hashes))))
                result = PageResult.from_wire(_read_frame(helper.stdout))
                self.pages_in_helper += 1
                return result
            except (HelperFailed, OSError, ValueError, EOFError) as exc:
                if self._helper is not None:  # not closed meanwhile: a real failure
                    self._give_up(f"it failed ({exc})")
        return classify_page(items, now, stored_hashes)

    def _helper_ready(self, answers: IO[bytes]) -> bool:
        """Whether the helper has started (it greets once its imports are done).

        Until then pages are validated here, rather than wait for its start;
        in mode "on", the first page waits for it (deterministic for tests).
        """
        if self._ready:
            return True
        if self.mode is not HelperMode.ON and not select.select([answers], [], [], 0)[0]:
            return False
        if _read_frame(answers) != _GREETING:
            raise HelperFailed("it did not start properly")
        self._ready = True
        return True

    def close(self) -> None:
        helper, self._helper = self._helper, None
        if helper is None:
            return
        # Closing its stdin ends it; never wait for a page in it (a stop must not hang).
        for stream in (helper.stdin, helper.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            helper.wait(timeout=2)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()

    def _give_up(self, why: str) -> None:
        log.warning("validation helper process: %s; validating in this process instead", why)
        self._failed = True
        self.close()


def _write_frame(stream: IO[bytes], data: bytes) -> None:
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> bytes:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise HelperFailed("it closed its output")
    (length,) = _LENGTH.unpack(header)
    data = stream.read(length)
    if len(data) < length:
        raise HelperFailed("its answer was cut short")
    return data


# ------------------------------------------------------------ in the helper


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The helper's loop: one answer per page, until its input closes."""
    _write_frame(answers, _GREETING)
    while True:
        header = requests.read(_LENGTH.size)
        if len(header) < _LENGTH.size:
            return  # syncd closed the pipe, or is gone
        (length,) = _LENGTH.unpack(header)
        body, now, stored_hashes = marshal.loads(requests.read(length))  # noqa: S302 (our parent)
        page = classify_page(parse_array(body), datetime.fromisoformat(now), stored_hashes)
        _write_frame(answers, page.to_wire())


if __name__ == "__main__":
    # A stop is syncd's to handle (a terminal's Ctrl-C and systemd's SIGTERM
    # reach the whole group); the helper ends when its input closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:
        pass
