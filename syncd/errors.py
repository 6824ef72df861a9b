"""The one exception hierarchy of syncd, grouped by what the caller does next.

    SyncdError                    base; every message is safe to log (no secrets)
    ├── ConfigError               fix the configuration; no API request was sent -> exit 3
    ├── ApiError                  the API could not be used
    │   ├── AuthError             401/403: the key was rejected; do not retry    -> exit 4
    │   ├── BadRequestError       400: syncd sent something wrong; do not retry  -> exit 5
    │   ├── WrongAnswerError      an answer contradicts the request (another
    │   │                         artwork's record): not used, not retried
    │   └── RetriesExhaustedError 429/5xx/timeouts/broken bodies, retried within
    │                             the request (syncd.net.retry), outlasted the
    │                             retry budget                                   -> exit 5
    ├── DatabaseError             the database could not be used                 -> exit 6
    │   ├── DatabaseUnreachable   cannot connect at all
    │   └── SchemaError           schema missing, older or newer than this syncd
    ├── LockHeldError             another syncd is syncing this database         -> exit 7
    ├── ArchiveStorageError       the archive folder cannot take files (full,
    │                             below SYNCD_ARCHIVE_MIN_FREE_BYTES, not writable) -> exit 9
    └── Interrupted               a signal asked the run to stop                 -> exit 130

Third-party exceptions are converted at the boundary (``raise X(...) from exc``).
Record-level validation failures are not exceptions here: a bad record is
quarantined (see ``syncd.records``) and the run goes on.
"""

from __future__ import annotations

import errno
import socket
from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of the ``syncd`` CLI (documented in the README)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    CONFIG = 3
    AUTH = 4
    API = 5
    DATABASE = 6
    LOCKED = 7
    STALE = 8
    ARCHIVE_STORAGE = 9
    INTERRUPTED = 130
    OUTPUT_CLOSED = 141  # as a shell reports a process that SIGPIPE ended


class SyncdError(Exception):
    """Base class; ``exit_code`` tells the CLI how to end the process."""

    exit_code: ExitCode = ExitCode.INTERNAL


class ConfigError(SyncdError):
    """A setting is missing or invalid. The message names the setting and its source."""

    exit_code = ExitCode.CONFIG


class WrongUserError(SyncdError):
    """Run as root against state another user owns (the service's): what syncd
    would create there, that user could not write. Said with how to run as it."""

    exit_code = ExitCode.CONFIG


class InstallError(SyncdError):
    """syncd's own files (its migrations) cannot be read by the user running it:
    installed where only another user can read."""

    exit_code = ExitCode.CONFIG


class ApiError(SyncdError):
    """The artworks API could not be used."""

    exit_code = ExitCode.API


class AuthError(ApiError):
    """401/403: the API key was rejected. Retrying cannot help."""

    exit_code = ExitCode.AUTH

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class BadRequestError(ApiError):
    """400 or another 4xx: the request itself is wrong. Retrying cannot help."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class WrongAnswerError(ApiError):
    """The API answered, but not what was asked (GET /v1/artworks/A with B's
    record). Nothing of the answer is used; the request is not retried."""


class RetriesExhaustedError(ApiError):
    """A transient fault persisted past the configured attempts or total wait."""


class DatabaseError(SyncdError):
    """The database could not be used."""

    exit_code = ExitCode.DATABASE


class DatabaseUnreachable(DatabaseError):
    """Connecting to the database failed."""


class SchemaError(DatabaseError):
    """The schema is missing, behind (and migration was disabled), or ahead of syncd."""


class LockHeldError(SyncdError):
    """Another syncd process holds the sync lock for this database."""

    exit_code = ExitCode.LOCKED


class ArchiveStorageError(SyncdError):
    """The archive folder cannot take more files: the disk is full, the free
    space floor is reached, or the folder is not writable. The archive job
    stops; nothing is marked, so the files are fetched once there is room."""

    exit_code = ExitCode.ARCHIVE_STORAGE


class Interrupted(SyncdError):
    """A signal asked the run to stop; committed pages stay."""

    exit_code = ExitCode.INTERRUPTED


# C0 and C1 control characters, DEL, and the Unicode line and paragraph
# separators: what could break a log line in two or rewrite a terminal.
_CONTROLS = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}
_CONTROLS.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``...): a line of
    syncd's can never be split, or a terminal driven, by what the API sent."""
    return text.translate(_CONTROLS)


def database_reason(exc: BaseException) -> str:
    """The first line of what the database driver said, for a DatabaseError message."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return (lines[0] if lines else type(cause).__name__)[:300]


def listen_reason(exc: OSError, host: str, port: int) -> str:
    """Why a server could not listen on ``host:port``, in the words an operator acts on."""
    if isinstance(exc, socket.gaierror):
        return f"{host} is not a known host name"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use"
    if exc.errno == errno.EACCES and 0 < port < 1024:
        return f"port {port} is below 1024, and this user may not listen on such ports"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine"
    return f"cannot listen on {host}:{port} ({exc.strerror or type(exc).__name__})"
