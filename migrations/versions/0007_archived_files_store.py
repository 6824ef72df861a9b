"""archived_files.store: which archive each file is in (a folder of one server, or a bucket)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Until 0007 ``path`` alone said where an archived file is: relative to the
folder of whichever server archived it, which the database does not know.
With the archive in an object store (SYNCD_ARCHIVE_URL), every server of an
active/standby pair shares it; ``store`` says which archive holds the file
(``s3://BUCKET/PREFIX``, or ``file://HOST/PATH`` for a folder) and ``path``
is its key inside it (the object key is PREFIX/path). A claim is a pending
row whose ``path`` and ``store`` are set: a download hashed and about to be
put there (a server taking over after a crash looks before fetching it).

Rows archived before this revision keep an empty ``store``: a folder's, as
they always were. Additive: no query breaks.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("archived_files") as batch:
        batch.add_column(sa.Column("store", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("archived_files") as batch:
        batch.drop_column("store")
