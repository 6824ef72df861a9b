"""``syncd check``: the configuration tried, nothing synced.

Each item is looked at once and said in one line, ok or the problem:

    settings   the settings load (their warnings said)
    api        one request (GET /v1/artworks?limit=1) with the key; a host
               that does not resolve or a refused port is said at once
    database   it connects, its schema revision, and that it can be written
               (an SQLite file that does not exist yet is fine when its
               folder can hold it: `run-once` creates it; the file is read
               as `status` reads it, and nothing is created here)
    archive    (when configured) the folder: its marker judged as an archive run
               judges it (syncd.archive.judge: no marker while the database
               says images are archived in it is the run's exit 9), writable,
               its free space; or the bucket: it answers a HEAD with these
               credentials, its marker judged the same way

A problem's exit code is the one the command that meets it would end with
(3 settings, 4 the key, 5 the API, 6 the database, 9 the archive); with
several, the first in that order. Nothing is written anywhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from syncd import SCHEMA_REVISION, db
from syncd.config import Settings
from syncd.errors import (
    ArchiveStorageError,
    DatabaseUnreachable,
    ExitCode,
    SchemaError,
    SyncdError,
)
from syncd.wording import plural, size

if TYPE_CHECKING:
    from syncd.archive.store import ArchiveStore


@dataclass
class Item:
    name: str
    problem: SyncdError | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        status = "ok" if self.ok else "PROBLEM"
        text = self.detail if self.problem is None else str(self.problem)
        return f"{self.name:<10}{status:<9}{text}"


@dataclass
class Report:
    items: list[Item] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        codes = [item.problem.exit_code for item in self.items if item.problem is not None]
        return min(codes, default=ExitCode.OK)


def check(settings: Settings, *, api: Callable[[Settings], str] | None = None) -> Report:
    """Look at each item of ``settings``; ``api`` overrides how the API is tried (tests)."""
    report = Report()
    report.items.append(_item("api", lambda: (api or _try_api)(settings)))
    report.items.append(_item("database", lambda: _try_database(settings)))
    folder = settings.archive_dir
    if folder is not None:
        report.items.append(_item("archive", lambda: _try_archive(settings, folder)))
    if settings.archive_url is not None:
        report.items.append(_item("archive", lambda: _try_bucket(settings)))
    return report


def _item(name: str, look: Callable[[], str]) -> Item:
    try:
        return Item(name, detail=look())
    except SyncdError as exc:
        return Item(name, problem=exc)


def _try_api(settings: Settings) -> str:
    from dataclasses import replace

    from syncd.app import make_client

    one_request = replace(settings, max_attempts=1)  # a check asks once; the answer is the verdict
    url, _ = settings.require_api()
    started = time.monotonic()
    with make_client(one_request, retry_unreachable=False) as client:
        page = client.fetch_list_page(0, 1)
    took = time.monotonic() - started
    return (
        f"{url} answered GET /v1/artworks?limit=1 with {plural(len(page), 'artwork')} in {took:.2f}s; "
        f"the key ({settings.describe_key_source()}) was taken"
    )


def _try_database(settings: Settings) -> str:
    shown = db.safe_url(settings.database_url)
    path = db.sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        problem = db.sqlite_problem(path, write=True)
        if problem is not None:
            raise DatabaseUnreachable(problem)
        return f"{shown}: does not exist yet; its folder can hold it (run-once creates it)"
    with db.reading(settings.database_url) as engine:  # creates nothing, not even for a while
        db.check_connection(engine, write=False)
        version = db.schema_version(engine)
    if not version.known:
        raise SchemaError(
            f"{shown}: schema revision {version.current} is newer than this syncd's "
            f"({SCHEMA_REVISION}): upgrade syncd"
        )
    if version.current is None:
        schema = "no schema yet (run-once creates it)"
    elif version.up_to_date:
        schema = f"schema revision {version.current} (current)"
    else:
        schema = f"schema revision {version.current}, behind {version.head} (run-once upgrades it)"
    unwritable = db.sqlite_problem(path, write=True) if path is not None else None
    if unwritable is not None:
        raise DatabaseUnreachable(f"{shown}: connected, {schema}; but {unwritable}")
    return f"{shown}: connected, writable, {schema}"


def _try_archive(settings: Settings, folder: Path) -> str:
    from syncd.app import archive_store

    marked = _judged(settings, archive_store(settings))  # as the archive run judges it, first
    if not folder.exists():
        parent = next((p for p in folder.parents if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK | os.X_OK):
            raise ArchiveStorageError(
                f"the archive folder {folder} does not exist and {parent} is not writable by this user"
            )
        return f"{folder}: does not exist yet; {parent} can hold it (the first archive run creates it)"
    if not folder.is_dir():
        raise ArchiveStorageError(f"the archive folder {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ArchiveStorageError(f"the archive folder {folder} is not writable by this user")
    info = os.statvfs(folder)
    free = info.f_bavail * info.f_frsize
    if free < settings.archive_min_free_bytes:
        raise ArchiveStorageError(
            f"the archive folder {folder} has {size(free)} free, below SYNCD_ARCHIVE_MIN_FREE_BYTES "
            f"({size(settings.archive_min_free_bytes)})"
        )
    return f"{folder}: writable, {marked}, {size(free)} free"


def _try_bucket(settings: Settings) -> str:
    from syncd.app import archive_store

    store = archive_store(settings)
    try:
        store.prepare()
        marked = _judged(settings, store)
    finally:
        store.close()
    return f"{store.describe()}: answers, the credentials taken, {marked}"


def _judged(settings: Settings, store: ArchiveStore) -> str:
    """The archive's marker, judged against the database by the rule every
    archive job follows (syncd.archive.judge): ArchiveStorageError where a
    run would refuse the store. Creates nothing: a database that does not
    exist yet has nothing archived; one that cannot be read is the database
    line's problem, and the marker is then only looked at."""
    from syncd.archive.judge import judge

    path = db.sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        return _marker(judge(store, None))
    try:
        with db.reading(settings.database_url) as engine:  # as the database line reads it
            return _marker(judge(store, engine))
    except ArchiveStorageError:
        raise
    except (SyncdError, SQLAlchemyError):
        return _marker(store.marked(), judged=False)


def _marker(marked: bool, *, judged: bool = True) -> str:
    if marked:
        return "its marker present"
    return "no marker yet" if judged else "no marker (not judged: the database cannot be read)"
