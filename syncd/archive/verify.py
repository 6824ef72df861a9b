"""``syncd archive --verify``: every archived file hashed again; what is missing
or corrupt is fetched again while the API still has it.

Files are read through the folder's own descriptors, bounded by their
recorded size (syncd.archive.files): a planted link, FIFO or device is
"corrupt", never followed, read or blocked on. Rows are read in pages of
PAGE paths, so that an archive of millions costs no more memory than a few.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy import Engine

from syncd import db
from syncd.archive import rows
from syncd.archive.files import CORRUPT, PATH, ContentStore, Planted, open_dir
from syncd.errors import ArchiveStorageError, Interrupted
from syncd.wording import plural

log = logging.getLogger("syncd.archive")

PAGE = 10_000  # archived paths read at once
HASH_CHUNK = 1 << 20


class StopRequest(Protocol):
    def is_set(self) -> bool: ...


def check(
    store: ContentStore, path: str, sha256: str, size: int | None = None, stop: StopRequest | None = None
) -> str:
    """``ok``, ``missing`` or ``corrupt`` (not a plain file of the archive's
    own, or its bytes no longer hash to its name). Reads at most ``size`` + 1
    bytes; Interrupted when ``stop`` is set between two chunks."""
    found = PATH.fullmatch(path)
    if found is None:
        return "missing"  # not a name syncd gives: nothing there is touched
    try:
        shard = store.shard((found[1], found[2]), create=False)
    except FileNotFoundError:
        return "missing"
    except (Planted, OSError):
        return "corrupt"
    try:
        try:
            fd = os.open(found[3], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=shard)
        except FileNotFoundError:
            return "missing"
        except OSError:  # a link (ELOOP), or not readable
            return "corrupt"
    finally:
        os.close(shard)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "corrupt"  # a FIFO, a device: never read
        limit = (store.max_file_bytes if size is None else size) + 1
        digest, read = hashlib.sha256(), 0
        while read < limit:
            if stop is not None and stop.is_set():
                raise Interrupted("stopped by a signal while verifying; nothing was changed")
            chunk = os.read(fd, min(HASH_CHUNK, limit - read))
            if not chunk:
                break
            digest.update(chunk)
            read += len(chunk)
    finally:
        os.close(fd)
    if size is not None and read != size:
        return "corrupt"
    return "ok" if digest.hexdigest() == sha256 else "corrupt"


def set_aside(store: ContentStore, path: str) -> bool:
    """Move a corrupt file out of its content address into corrupt/ (kept for
    inspection), through the folder's own descriptors. False: nothing moved
    (a planted link on the way: the name is replaced when fetched again)."""
    found = PATH.fullmatch(path)
    if found is None:
        return False
    try:
        shard = store.shard((found[1], found[2]), create=False)
    except (Planted, OSError):
        return False
    try:
        root = store.root_fd()
        try:
            aside = open_dir(root, CORRUPT, create=True)
        finally:
            os.close(root)
        try:
            os.rename(found[3], f"{found[3]}.{uuid.uuid4().hex[:8]}", src_dir_fd=shard, dst_dir_fd=aside)
        finally:
            os.close(aside)
    except (Planted, OSError):
        return False
    finally:
        os.close(shard)
    return True


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
    store: ContentStore,
    stop: threading.Event,
    clock: Callable[[], datetime],
    *,
    accept_missing: bool = False,
) -> VerifyReport:
    """Re-hash every archived file; a missing or corrupt one (set aside in
    corrupt/) makes its images pending again, for the run that follows.

    When most files are missing, nothing is changed (ArchiveStorageError)
    unless ``accept_missing``: their rows would lose where their files are.
    """
    report = VerifyReport()
    after = ""
    while True:
        with engine.connect() as conn:
            page = rows.archived_paths(conn, after, PAGE)
        for path, sha256, size in page:
            if stop.is_set():
                raise Interrupted("stopped by a signal while verifying; nothing was changed")
            report.checked += 1
            verdict = check(store, path, sha256, size, stop)
            if verdict == "ok":
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
            f"{store.root}: is it the right folder, on its disk (mounted)? Nothing was changed. "
            "If they are lost, `syncd archive --verify --accept-missing` fetches again what the "
            "API still has"
        )
    for path in report.corrupt:
        if not set_aside(store, path):
            log.warning(
                "archive file %s: not set aside (a planted name on its way); replaced when fetched", path
            )
    for path, why in [
        *((p, "corrupt in the archive folder (found by verify): fetched again") for p in report.corrupt),
        *((p, "missing from the archive folder (found by verify): fetched again") for p in report.missing),
    ]:
        log.warning("archive file %s: %s", path, why.split(" (")[0])
        with db.writer(engine).begin() as conn:
            report.reopened += rows.reopen(conn, [path], clock(), why)
    return report
