"""The one-syncer lock for an SQLite database: an OS lock on ``<database>.lock``.

Light (standard library only): the no-op run (syncd.quick) takes it before
SQLAlchemy is loaded. The kernel releases the lock when the process dies,
even by SIGKILL, so a crashed syncd never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from syncd.errors import DatabaseError, LockHeldError


def lock_path_of(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


@contextmanager
def hold_file_lock(database: Path) -> Iterator[None]:
    """Hold the lock beside ``database``, or raise LockHeldError at once."""
    lock_path = lock_path_of(database)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DatabaseError(f"cannot create the lock file {lock_path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(
                f"another syncd process is syncing {database} (lock file {lock_path} is held)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
