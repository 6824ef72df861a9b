"""Where list pages are validated: in the validation thread, or in a helper process.

Parsing, validating and hashing records is Python code, and so is binding
rows for the database driver; in one process the GIL runs them one after the
other. With a second core, a long run moves validation to a helper process
(see ``syncd.sync.helper``): it receives the body as fetched and sends back the
page's rows as marshal data (``PageResult.to_wire``): plain tuples, cheap to
load, or to pass on unloaded to the writer process (``syncd.sync.writing``).

The helper is started only when a run proves long (it costs an interpreter
start). If it dies, syncd says so and goes on validating here: the helper may
speed a run up, never fail it.

The helper imports only syncd.records and syncd.api.body: no database code.
This process imports syncd.records (pydantic) only if it validates a page itself.
"""

from __future__ import annotations

import logging
import marshal
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import IO, Any

from syncd.api.body import parse_array
from syncd.rows import PageResult
from syncd.sync.helper import (
    GREETING,
    HelperFailed,
    HelperProcess,
    available_cpus,
    read_frame,
    run_helper,
    write_frame,
)

log = logging.getLogger(__name__)


class HelperMode(StrEnum):
    AUTO = "auto"  # a helper for long runs into SQLite, when more than one CPU is available
    ON = "on"  # a helper for every run, from its first page (tests, benchmarks)
    OFF = "off"  # validate in the validation thread


# A validated page: loaded, or as the helper sent it (``PageResult.to_wire``).
ValidatedPage = PageResult | bytes


def load_page(page: ValidatedPage) -> PageResult:
    return PageResult.from_wire(page) if isinstance(page, bytes) else page


class PageValidator:
    """Validates pages for one run; ``close`` it when the run ends.

    Used from one thread at a time (the validation thread); ``close`` may come
    from another, and makes a page in flight fail over to this process.
    """

    def __init__(self, mode: HelperMode | str = HelperMode.AUTO, *, database_in_process: bool = True) -> None:
        self.mode = HelperMode(mode)
        # SQLite works in this process and leaves the second CPU idle; a
        # PostgreSQL server needs it for the inserts (measured: the helper
        # made a PostgreSQL backfill ~10% slower, an SQLite one faster).
        self.database_in_process = database_in_process
        self._helper: HelperProcess | None = None
        self._failed = False
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
            self._helper = HelperProcess.start("syncd.sync.validation")
        except OSError as exc:
            self._give_up(f"cannot start it ({exc.strerror or exc})")

    def validate(
        self,
        body: bytes,
        items: list[Any],
        now: datetime,
        stored_hashes: Mapping[str, str],
        *,
        wire: bool = False,
    ) -> ValidatedPage:
        """The page's rows, rejections and unchanged ids (see records.classify_page).

        With ``wire``, a page validated in the helper stays as it sent it (for
        the writer process); otherwise it is loaded.
        """
        helper = self._helper
        if helper is not None:
            try:
                # Until the helper has started, pages are validated here rather
                # than wait for it; in mode "on" the first page waits (deterministic for tests).
                if helper.ready(wait=self.mode is HelperMode.ON):
                    helper.send(marshal.dumps((body, now.isoformat(), dict(stored_hashes))))
                    answer = helper.receive()
                    self.pages_in_helper += 1
                    return answer if wire else PageResult.from_wire(answer)
            except (HelperFailed, OSError, ValueError, EOFError) as exc:
                if self._helper is not None:  # not closed meanwhile: a real failure
                    self._give_up(f"it failed ({exc})")
        from syncd.records import classify_page

        return classify_page(items, now, stored_hashes)

    def close(self) -> None:
        helper, self._helper = self._helper, None
        if helper is not None:
            # Closing its input ends it; never wait for a page in it (a stop must not hang).
            helper.close()

    def _give_up(self, why: str) -> None:
        log.warning("validation helper process: %s; validating in this process instead", why)
        self._failed = True
        self.close()


# ------------------------------------------------------------ in the helper


def serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The helper's loop: one answer per page, until its input closes."""
    from syncd.records import classify_page

    write_frame(answers, GREETING)
    while (request := read_frame(requests)) is not None:
        body, now, stored_hashes = marshal.loads(request)  # noqa: S302 (our parent)
        page = classify_page(parse_array(body), datetime.fromisoformat(now), stored_hashes)
        write_frame(answers, page.to_wire())


if __name__ == "__main__":
    run_helper(serve)
