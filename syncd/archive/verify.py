"""``syncd archive --verify``: every archived file hashed again; what is missing
or corrupt is fetched again while the API still has it.

The store is asked about each file (syncd.archive.store): a folder's are
read through its own descriptors, bounded by their recorded size
(syncd.archive.files): a planted link, FIFO or device is "corrupt", never
followed, read or blocked on; a bucket's objects are looked at (HEAD: their
size and SHA-256 checksum), or read and hashed again with ``deep``
(syncd.archive.s3). Rows are read in pages of PAGE paths, so that an archive
of millions costs no more memory than a few.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from syncd import db
from syncd.archive import rows
from syncd.archive.store import OK, ArchiveStore, StopRequest
from syncd.errors import ArchiveStorageError, Interrupted
from syncd.wording import plural

log = logging.getLogger("syncd.archive")

PAGE = 10_000  # archived paths read at once


def check(
    store: ArchiveStore, path: str, sha256: str, size: int | None = None, stop: StopRequest | None = None
) -> str:
    """``ok``, ``missing`` or ``corrupt``: the store's word on one file, read in full."""
    return store.check(path, sha256, size, stop, deep=True)


# More than this share of the archived files missing (of at least a few) is
# a folder not mounted, or another server's, not a loss: verify changes nothing.
MOSTLY_MISSING = 0.5


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    missing: list[str] = field(default_factory=list)  # paths
    corrupt: list[str] = field(default_factory=list)
    reopened: int = 0  # images made pending again (fetched again if still available)

    def line(self) -> str:
        return (
            f"verified {plural(self.checked, 'file')}: {self.ok} ok, {len(self.missing)} missing, "
            f"{len(self.corrupt)} corrupt; {plural(self.reopened, 'image')} to fetch again"
        )


def verify_archive(
    engine: Engine,
    store: ArchiveStore,
    stop: threading.Event,
    clock: Callable[[], datetime],
    *,
    accept_missing: bool = False,
    deep: bool = False,
) -> VerifyReport:
    """Check every archived file (a folder's are always hashed again; a
    bucket's with ``deep``); a missing or corrupt one (set aside) makes its
    images pending again, for the run that follows.

    When most files are missing, nothing is changed (ArchiveStorageError)
    unless ``accept_missing``: their rows would lose where their files are.
    """
    report = VerifyReport()
    after = ""
    while True:
        with engine.connect() as conn:
            page = rows.archived_paths(conn, after, PAGE, store.id)
        for path, sha256, size in page:
            if stop.is_set():
                raise Interrupted("stopped by a signal while verifying; nothing was changed")
            report.checked += 1
            verdict = store.check(path, sha256, size, stop, deep=deep)
            if verdict == OK:
                report.ok += 1
            else:
                (report.corrupt if verdict == "corrupt" else report.missing).append(path)
        if len(page) < PAGE:
            break
        after = page[-1][0]
    if (
        not accept_missing
        and len(report.missing) >= 10
        and len(report.missing) > MOSTLY_MISSING * report.checked
    ):
        raise ArchiveStorageError(
            f"{len(report.missing):,} of the {report.checked:,} archived files are missing from "
            f"{store.describe()}: is it the right one (a folder on its disk, mounted; the right bucket "
            "and prefix)? Nothing was changed. "
            "If they are lost, `syncd archive --verify --accept-missing` fetches again what the "
            "API still has"
        )
    for path in report.corrupt:
        if not store.set_aside(path):
            log.warning(
                "archive file %s: not set aside (a planted name on its way); replaced when fetched", path
            )
    for path, why in [
        *((p, "corrupt in the archive (found by verify): fetched again") for p in report.corrupt),
        *((p, "missing from the archive (found by verify): fetched again") for p in report.missing),
    ]:
        log.warning("archive file %s: %s", path, why.split(" (")[0])
        with db.writer(engine).begin() as conn:
            report.reopened += rows.reopen(conn, [path], clock(), why, store.id)
    return report
