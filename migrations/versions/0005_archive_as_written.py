"""the archive records images as their artworks are written: archive_state, a due index

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07

Until 0004 every look for images to archive read every image of the last
10 days (and nothing older). From 0005 on, with the archive on for the
database, the transaction that writes an artwork also writes a pending
archived_files row for each of its images, and a look reads only what is due
by the index added here: (status, next_attempt_at, expires_at). A pending
image is due from its artwork's creation (next_attempt_at), so the index
holds pending images in deadline order and the oldest is its first entry.

archive_state (one row) says since when images are recorded with their
artworks, and how far the archive's walk through the artworks stored before
has come (it records their images, newest first, resumable). A database
whose archive was in use is switched on here; the walk then runs at the next
archive run, in batches, not in this migration. Additive: no query breaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RETENTION_HOURS = 192  # the API's 8 days, exactly (an interval of days follows a session's time zone)


def upgrade() -> None:
    # The models' UTCDateTime: text on SQLite, timestamptz on PostgreSQL.
    utc = sa.DateTime(timezone=True).with_variant(sa.String(27), "sqlite")
    state = op.create_table(
        "archive_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("images_since", utc, nullable=True),
        sa.Column("walk_created_at", utc, nullable=True),
        sa.Column("walk_id", sa.String(64), nullable=True),
        sa.Column("walked_at", utc, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_archive_state"),
    )
    op.create_index("ix_archived_files_due", "archived_files", ["status", "next_attempt_at", "expires_at"])
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    now = datetime.now(UTC)
    in_use = bind.execute(sa.text("SELECT 1 FROM archived_files LIMIT 1")).first() is not None
    since = (now.isoformat(timespec="microseconds")[:26] + "Z") if sqlite else now
    op.bulk_insert(state, [{"id": 1, "images_since": since if in_use else None}])
    # A pending image is due from its artwork's creation (its deadline less the
    # 8 days), or its discovery when that is earlier: the index's order.
    if sqlite:
        created = (
            f"strftime('%Y-%m-%dT%H:%M:%S', expires_at, '-{RETENTION_HOURS} hours') || substr(expires_at, 20)"
        )
        due_since = f"min({created}, discovered_at)"
    else:
        due_since = f"LEAST(expires_at - interval '{RETENTION_HOURS} hours', discovered_at)"
    bind.execute(sa.text(f"UPDATE archived_files SET next_attempt_at = {due_since} WHERE status = 'pending'"))


def downgrade() -> None:
    op.drop_index("ix_archived_files_due", table_name="archived_files")
    op.drop_table("archive_state")
