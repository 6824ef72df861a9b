"""sync_state.scan_since: the floor of a scan started by run-once --since

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

A scan with a floor stores only the artworks created at or after it and sees
none of the older ones, so it judges no deletions. Stopped half-way (a crash,
a signal), it resumes as what it was: with its floor, and still judging no
deletions, even when the run that resumes it was not given --since. NULL: a
scan without a floor, or no scan in progress. Additive: no query breaks.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        # The models' UTCDateTime: text on SQLite, timestamptz on PostgreSQL.
        utc = sa.DateTime(timezone=True).with_variant(sa.String(27), "sqlite")
        batch.add_column(sa.Column("scan_since", utc, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("scan_since")
