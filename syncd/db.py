"""Engines, SQLite pragmas and schema migrations (the locks: syncd.locks).

SQLite runs in WAL mode with a busy timeout, so analysts can read (even hold
long read transactions) while syncd writes, and a briefly locked database is
waited for rather than a crash. PostgreSQL needs nothing special.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError as SADatabaseError
from sqlalchemy.exc import InterfaceError as SAInterfaceError
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from syncd import SCHEMA_REVISION
from syncd.errors import DatabaseError, DatabaseUnreachable, InstallError, SchemaError

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_CACHE_KIB = 16_384
# Checkpoint (the only fsync in WAL mode with synchronous=NORMAL) once the WAL
# holds ~256 MiB instead of SQLite's ~4 MiB. Each checkpoint rewrites the index
# pages that a page of random UUIDs touches everywhere, so fewer checkpoints
# write far less; the WAL file is then cut back to 64 MiB.
SQLITE_AUTOCHECKPOINT_PAGES = 64_000
SQLITE_WAL_SIZE_LIMIT = 64 * 1024 * 1024
PACKAGE_DIR = Path(__file__).resolve().parent


def normalise_url(url: str) -> str:
    """Default PostgreSQL URLs to the psycopg 3 driver (the ``postgres`` extra)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_AUTOCHECKPOINT_PAGES}")
    cursor.execute(f"PRAGMA journal_size_limit = {SQLITE_WAL_SIZE_LIMIT}")
    # Random-key (UUID) index inserts miss a 2 MiB page cache once the file
    # outgrows it: each miss is a read, and dirty pages spill to the WAL
    # mid-transaction. 16 MiB halves a backfill's system time; it is a bound,
    # and a small database never fills it.
    cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    # Foreign keys stay declared (PostgreSQL enforces them), but SQLite, which
    # checks them only on request, is not asked: the parent lookup for every
    # parameter and result row cost 10-18% of a backfill's inserts. syncd
    # writes each artwork before its rows, in one transaction, and never
    # deletes one; the tests check the tables with PRAGMA foreign_key_check.
    cursor.execute("PRAGMA foreign_keys = OFF")
    cursor.close()


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and FK checks."""
    url = normalise_url(url)
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


# ------------------------------------------------------------------ readers

# SQLite's unix locks: a SHARED lock is a read lock on these bytes of the
# database file; the last connection to close takes them exclusively to
# checkpoint the WAL into the file and delete the -wal and -shm.
_SQLITE_SHARED_FIRST = 0x40000000 + 2
_SQLITE_SHARED_SIZE = 510


@contextmanager
def reading(url: str) -> Iterator[Engine]:
    """An engine for a command that only reads (``status``, ``db current``,
    ``check``), which may run as another user than the database's.

    PostgreSQL: the usual engine. SQLite: the file is opened read-only and
    nothing is created beside it, so the reader needs no writable folder, and
    no -wal or -shm file of its own is left where the service could not write
    it. A WAL database whose -wal and -shm exist (the service has it open, or
    stopped without a checkpoint) is read through them (SQLite's ``mode=ro``).
    One without a -wal is wholly in its file, read as it is (``immutable``):
    for as long as the engine lives, a SHARED lock (SQLite's, taken here) keeps
    a writer that closes from checkpointing into the file or deleting the
    -wal and -shm it made meanwhile; should the file change all the same (a
    checkpoint of a writer that stays open), the read is refused, not trusted.
    """
    path = sqlite_path(url)
    if path is None:
        engine = create_db_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()
        return
    path = path.absolute()
    if not path.is_file():  # a reader never creates it (nor its folder)
        raise DatabaseUnreachable(
            sqlite_problem(path, write=False) or f"the database file {path} does not exist"
        )
    with _shared_lock(path):
        wal, shm = (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm"))
        immutable = not wal.exists()
        if not immutable and not shm.exists() and path.stat().st_uid != os.geteuid():
            owner = path.stat().st_uid
            raise DatabaseUnreachable(
                f"the database's {wal} has no -shm file beside it, which SQLite would create to read it, "
                f"as this user (uid {os.geteuid()}), where its owner (uid {owner}) could not write it: "
                f"run the command as uid {owner}, or any command that writes (as it), which recovers the WAL"
            )
        before = _file_signature(path)
        engine = _sqlite_reader(url, path, immutable=immutable)
        try:
            yield engine
        finally:
            engine.dispose()
            if immutable and _file_signature(path) != before:
                raise DatabaseError(
                    f"the database file {path} changed while syncd read it (a writer checkpointed its WAL): "
                    "what was read may not be consistent; run the command again"
                )


def _sqlite_reader(url: str, path: Path, *, immutable: bool) -> Engine:
    uri = f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)

    engine = create_engine(normalise_url(url), creator=connect)
    event.listen(engine, "connect", _sqlite_reader_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_reader_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # BEGIN is ours, as for a writer: one snapshot per transaction
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    cursor.execute("PRAGMA query_only = ON")
    cursor.close()


def _file_signature(path: Path) -> tuple[int, ...]:
    info = path.stat()
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


@contextmanager
def _shared_lock(path: Path) -> Iterator[None]:
    """SQLite's SHARED lock on the database file, held by this open file (an
    OFD lock: closing SQLite's own descriptors does not release it). Waits as
    SQLite would for a writer that holds it exclusively. Where the lock
    cannot be taken (not Linux, a file system without locks), nothing is
    held: the change of the file is still noticed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield  # connecting says what is wrong (sqlite_problem)
        return
    try:
        request = struct.pack(
            "hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, _SQLITE_SHARED_FIRST, _SQLITE_SHARED_SIZE, 0
        )
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        while hasattr(fcntl, "F_OFD_SETLK"):
            try:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    break  # no such locks here (EINVAL, ENOLCK): read without
                if time.monotonic() > deadline:
                    raise DatabaseUnreachable(
                        f"the database {path} stayed locked by a writer for {SQLITE_BUSY_TIMEOUT_MS // 1000} s"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the lock


def writer(engine: Engine) -> Engine:
    """The same engine, whose transactions take SQLite's write lock at BEGIN.

    A deferred transaction that reads and then writes can fail at once with
    SQLITE_BUSY when the lock upgrade races; BEGIN IMMEDIATE waits (busy
    timeout) instead. Readers keep plain deferred BEGINs.
    """
    return engine.execution_options(syncd_write=True)


def _sqlite_connect(dbapi_connection: Any, record: Any) -> None:
    # Take transaction control away from pysqlite so BEGIN is ours (see writer()).
    dbapi_connection.isolation_level = None
    _sqlite_pragmas(dbapi_connection, record)


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("syncd_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def check_connection(engine: Engine, *, write: bool = True) -> None:
    """Connect once; one clear DatabaseUnreachable when the database cannot be used.

    ``write``: the caller will write. An SQLite file that opens but cannot be
    written (a read-only file) would otherwise fail only at the first page,
    after requests to the API.
    """
    path = sqlite_path(str(engine.url))
    if write and path is not None and path.is_file() and not os.access(path, os.W_OK, effective_ids=True):
        raise DatabaseUnreachable(
            sqlite_problem(path, write=True) or f"the database file {path} is read-only"
        )
    try:
        with engine.connect() as conn:
            # SQLite opens the file at the first statement that reads it
            conn.execute(text("SELECT count(*) FROM sqlite_master" if path is not None else "SELECT 1"))
    except (OperationalError, SAInterfaceError, SADatabaseError) as exc:  # "file is not a database", too
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        problem = sqlite_problem(path, write=write) if path is not None else None
        raise DatabaseUnreachable(
            problem or f"cannot connect to the database {safe_url(str(engine.url))}: {reason}"
        ) from None


def sqlite_problem(database: Path, *, write: bool) -> str | None:
    """What keeps this user from using the SQLite file ``database``, when it can be seen.

    SQLite says only "unable to open database file" or "attempt to write a
    readonly database", whether the directory is missing, read-only or the
    file is. A writer needs to write in the directory (SQLite's -wal and
    -shm files, syncd's lock file); a reader (``reading``) only to read the
    file, and its -wal and -shm when they are there.
    """
    path = database.absolute()
    directory = path.parent
    user = f"this user (uid {os.geteuid()})"
    if not directory.exists():
        return f"the directory {directory} for the database does not exist: create it, or correct the URL"
    if not directory.is_dir():
        return f"{directory}, where the database should be, is not a directory"
    if not os.access(directory, os.X_OK, effective_ids=True):
        return f"the directory {directory} of the database cannot be entered by {user}"
    if path.is_dir():
        return f"the database path {path} is a directory, not a file"
    if write and not os.access(directory, os.W_OK | os.X_OK, effective_ids=True):
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return (
                f"the directory {directory} for the database is on a read-only file system "
                "(under systemd's ProtectSystem=strict, allow it with ReadWritePaths=; see docs/deploy.md)"
            )
        return (
            f"the directory {directory} for the database is not writable by {user}; SQLite keeps "
            "the database's -wal and -shm files beside it, and syncd its .lock file"
        )
    if path.exists() and not os.access(path, os.R_OK, effective_ids=True):
        return f"the database file {path} is not readable by {user}"
    if write and path.exists() and not os.access(path, os.W_OK, effective_ids=True):
        return f"the database file {path} is read-only for {user}"
    if not write:
        for beside in (path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")):
            if beside.exists() and not os.access(beside, os.R_OK, effective_ids=True):
                return (
                    f"the database's {beside} is not readable by {user}, and the database cannot be read "
                    "without it (it holds what the writer wrote last)"
                )
    return None


# ------------------------------------------------------------------ migrations


def migrations_dir() -> Path:
    """Installed wheels carry the migrations inside the package; checkouts beside it.

    A checkout in a folder only its owner can read (/root) cannot serve
    another user: said so, not as a traceback from deep inside Alembic.
    """
    installed = PACKAGE_DIR / "_migrations"
    try:
        found = installed if installed.is_dir() else PACKAGE_DIR.parent / "migrations"
        problem = _migrations_problem(found)
    except PermissionError:
        found, problem = installed, "cannot be read"
    if problem is not None:
        raise InstallError(
            f"syncd's database migrations at {found} {problem} (uid {os.geteuid()}): "
            "install syncd where the user that runs it can read it (docs/deploy.md)"
        )
    return found


def _migrations_problem(folder: Path) -> str | None:
    if not folder.is_dir():
        return "are missing"
    if not all(os.access(path, os.R_OK | os.X_OK) for path in (folder, folder / "versions")):
        return "cannot be read"
    return None


def alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@dataclass(frozen=True)
class SchemaVersion:
    current: str | None
    head: str
    known: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


# The newest migration's revision (see syncd/__init__.py).
HEAD_REVISION = SCHEMA_REVISION


def schema_version(engine: Engine) -> SchemaVersion:
    try:
        with engine.connect() as conn:
            current = _current_revision(conn)
    except SQLAlchemyError as exc:
        raise DatabaseError(f"cannot read the schema version: {exc.__class__.__name__}") from None
    if current == HEAD_REVISION:
        return SchemaVersion(current=current, head=HEAD_REVISION, known=True)
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    assert head is not None
    known = current is None or _revision_known(script, current)
    return SchemaVersion(current=current, head=head, known=known)


def _current_revision(conn: Connection) -> str | None:
    from sqlalchemy import inspect

    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _revision_known(script: Any, revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def ensure_schema(engine: Engine, *, migrate: bool) -> SchemaVersion:
    """Bring the schema to head (or refuse clearly) before a sync touches it."""
    version = schema_version(engine)
    if not version.known:
        raise SchemaError(
            f"the database is at schema revision {version.current}, which this syncd "
            f"does not know (a newer syncd wrote it); upgrade syncd"
        )
    if version.up_to_date:
        return version
    if not migrate:
        where = version.current or "an empty database"
        raise SchemaError(
            f"the schema is not up to date ({where}, latest {version.head}); run `syncd db upgrade` first"
        )
    upgrade(engine)
    return schema_version(engine)


# ------------------------------------------------------------------ the lock


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL; None for PostgreSQL and for in-memory databases."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # an SQLite URI: the file is its path part
        path = database.removeprefix("file:").split("?", 1)[0]
        return Path(path) if path and path != ":memory:" else None
    return Path(database)
