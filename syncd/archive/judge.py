"""Whether a folder or a bucket is the archive the database knows: the one
rule, asked by every archive job and by ``syncd check``, before anything is
created there.

    judge(store, engine)   True: the store carries syncd's marker. False: it
                           does not, and the database says no image is
                           archived in it: a new archive, marked once the job
                           holds it. ArchiveStorageError (exit 9) when it does
                           not while the database says images are archived in
                           it: a disk not mounted (its mount point empty, or
                           gone), another server's folder, another bucket or
                           prefix. Refused then, or every image would look
                           missing (and be fetched again, or marked gone).

It creates nothing, neither in the store (a folder that does not exist is
not created: it is unmarked) nor in the database (a database without the
archive's table, or None for one not created yet, has nothing archived).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, func, inspect, select

from syncd.archive import rows
from syncd.archive.discover import files
from syncd.archive.files import MARKER
from syncd.archive.plan import FileStatus
from syncd.archive.store import ArchiveStore
from syncd.errors import ArchiveStorageError


def judge(store: ArchiveStore, engine: Engine | None) -> bool:
    """True when ``store`` is marked; False when it is not and nothing is
    archived in it; ArchiveStorageError when it is not, yet images are."""
    if store.marked():
        return True
    if engine is None:
        return False
    with engine.connect() as conn:
        held = archived_in(conn, store.id)
    if held:
        raise ArchiveStorageError(
            f"{store.describe()} is not the archive the database knows ({MARKER} is not in it, yet "
            f"{held:,} images are archived): is its disk mounted, or is this another server's "
            f"folder (or another bucket or prefix)? To make it the archive, create {MARKER} in it "
            "and run `syncd archive --verify --accept-missing`"
        )
    return False


def archived_in(conn: Connection, store_id: str) -> int:
    """The images the database says are archived in the store ``store_id``,
    whatever its schema revision (``syncd check`` reads a database a run
    has not upgraded yet): 0 without the archive's table; before the store
    column (revision 0007), every archived image was in a folder."""
    schema = inspect(conn)
    if not schema.has_table(files.name):
        return 0
    if "store" in {column["name"] for column in schema.get_columns(files.name)}:
        return rows.archived_count(conn, store_id)
    if store_id.startswith("s3://"):
        return 0
    archived = files.c.status == FileStatus.ARCHIVED.value
    return int(conn.execute(select(func.count()).select_from(files).where(archived)).scalar_one())
