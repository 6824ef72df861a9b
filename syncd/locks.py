"""The one-syncer and one-archiver locks, and syncd's own lock files.

PostgreSQL: a session-level advisory lock (two servers can share one
database as active/standby; the lock dies with its connection). SQLite: an
OS file lock on ``<database>.lock`` beside the file (released by the kernel
when the process dies, even by SIGKILL), which holds the holder's PID. The
archive folder's lock is a lock file of the same kind (``lock_file``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from syncd.db import sqlite_path
from syncd.errors import DatabaseError, LockHeldError, SyncdError
from syncd.owners import foreign_file

ARCHIVE_LOCK = "archive"


@contextmanager
def sync_lock(engine: Engine, job: str = "sync") -> Iterator[None]:
    """Hold the one-syncer lock for this database, or raise LockHeldError at once.

    ``job="archive"``: the one-archiver lock instead (the image archive runs
    beside the sync, never beside another archive job on the same database).

    PostgreSQL: a session-level advisory lock (two servers can share one
    database as active/standby; the lock dies with its connection). SQLite: an
    OS file lock on ``<database>.lock`` beside the file (released by the kernel
    when the process dies, even by SIGKILL).
    """
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, job):
            yield
    else:
        with _file_lock(engine, job):
            yield


LOCK_KEY = int.from_bytes(hashlib.sha256(b"syncd:artworks").digest()[:8], "big", signed=True)
ARCHIVE_LOCK_KEY = int.from_bytes(hashlib.sha256(b"syncd:archive").digest()[:8], "big", signed=True)


def _doing(job: str) -> str:
    return "archiving images of" if job == ARCHIVE_LOCK else "syncing"


@contextmanager
def _advisory_lock(engine: Engine, job: str) -> Iterator[None]:
    key = ARCHIVE_LOCK_KEY if job == ARCHIVE_LOCK else LOCK_KEY
    conn = engine.connect()
    try:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.commit()
        if not got:
            raise LockHeldError(
                f"another syncd process is {_doing(job)} this database (PostgreSQL advisory lock held)"
            )
        try:
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
            except SQLAlchemyError:
                pass  # the connection is gone, and the lock with it
    finally:
        conn.close()


def lock_path_of(database: Path, job: str = "sync") -> Path:
    suffix = ".archive.lock" if job == ARCHIVE_LOCK else ".lock"
    return database.with_name(database.name + suffix)


@contextmanager
def _file_lock(engine: Engine, job: str) -> Iterator[None]:
    path = sqlite_path(str(engine.url))
    if path is None:  # an in-memory database is private to this process
        yield
        return
    with hold_file_lock(path, job):
        yield


@contextmanager
def hold_file_lock(database: Path, job: str = "sync") -> Iterator[None]:
    """Hold an OS lock on ``<database>.lock``, or raise LockHeldError at once."""
    lock_path = lock_path_of(database, job)
    with lock_file(
        lock_path, f"another syncd process is {_doing(job)} {database} (lock file {lock_path} is held)"
    ):
        yield


@contextmanager
def lock_file(lock_path: Path, held: str, error: type[SyncdError] = DatabaseError) -> Iterator[None]:
    """Hold an OS lock on ``lock_path``, or raise LockHeldError(``held``) at once.

    The kernel releases it when the process dies, even by SIGKILL, so a crash
    never leaves a stale lock. The lock file is syncd's own: a symlink, a
    special file or a file with other names (hard links) there is refused
    (``error``) rather than followed, truncated or written.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(lock_path, flags, 0o644)
    except OSError as exc:
        if os.path.islink(lock_path):
            raise error(
                f"the lock file {lock_path} is a symbolic link; syncd does not follow it: "
                "remove it (syncd creates its own)"
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            theirs = foreign_file(lock_path, os.geteuid())
            if theirs is not None:
                raise error(f"the lock file {theirs}") from None
        raise error(f"cannot create the lock file {lock_path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise error(
                f"the lock file {lock_path} is not a plain file (a special file, or one with other "
                "names: hard links); syncd does not write to it: remove it"
            )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 24, 0).decode("ascii", "replace").strip()
            raise LockHeldError(f"{held} by process {holder}" if holder.isdigit() else held) from None
        # Our own plain file, locked: the holder's PID is there for an operator.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_held(engine: Engine) -> bool | None:
    """Whether some process holds the one-syncer lock now (for ``syncd status``;
    takes nothing, creates nothing). None: this user cannot tell (the lock
    file is not readable)."""
    if engine.dialect.name == "postgresql":
        high, low = (LOCK_KEY >> 32) & 0xFFFFFFFF, LOCK_KEY & 0xFFFFFFFF
        with engine.connect() as conn:
            held = conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid = :high AND objid = :low AND objsubid = 1 AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"high": high, "low": low},
            ).scalar()
        return bool(held)
    path = sqlite_path(str(engine.url))
    if path is None:
        return False
    try:
        fd = os.open(lock_path_of(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # no syncd has synced here
    except OSError:
        return None  # not ours to read (another user's service): cannot tell
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we got
    return False
