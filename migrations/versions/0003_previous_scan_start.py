"""sync_state.previous_scan_started_at: deletions need two scans (or a 404)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

An artwork missing from one complete scan may only have moved ahead of it
while the list shifted. syncd now marks it deleted when GET /v1/artworks/{id}
answers 404, or when the scan before missed it too: not seen since that
scan began. This column keeps when that scan began, across the runs of a
scan. Additive: no query breaks.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        # The models' UTCDateTime: text on SQLite, timestamptz on PostgreSQL.
        utc = sa.DateTime(timezone=True).with_variant(sa.String(27), "sqlite")
        batch.add_column(sa.Column("previous_scan_started_at", utc, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("previous_scan_started_at")
