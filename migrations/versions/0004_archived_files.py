"""archived_files: the image archive's record of every image an artwork references

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

The API deletes artworks and their images 8 days after creation. With
SYNCD_ARCHIVE_DIR set, syncd downloads each result image and each upscaling
input image into a content-addressed folder; this table says, per image,
whether it is archived (and where, by its sha256), gone, failed (and why),
or pending (and when it is next tried). Additive: no query breaks.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The models' UTCDateTime: text on SQLite, timestamptz on PostgreSQL.
    utc = sa.DateTime(timezone=True).with_variant(sa.String(27), "sqlite")
    op.create_table(
        "archived_files",
        sa.Column("artwork_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("expires_at", utc, nullable=False),
        sa.Column("discovered_at", utc, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("content_type", sa.String(100), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("fetched_at", utc, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", utc, nullable=True),
        sa.ForeignKeyConstraint(
            ["artwork_id"],
            ["artworks.id"],
            name="fk_archived_files_artwork_id_artworks",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artwork_id", "role", "position", name="pk_archived_files"),
    )
    op.create_index("ix_archived_files_next_attempt_at", "archived_files", ["next_attempt_at"])
    op.create_index("ix_archived_files_status", "archived_files", ["status"])
    op.create_index("ix_archived_files_sha256", "archived_files", ["sha256"])
    # An image another artwork names too (an upscaling's input is often a
    # generated image) is found archived by its URL, not fetched again.
    op.create_index("ix_archived_files_url", "archived_files", ["url"])


def downgrade() -> None:
    op.drop_table("archived_files")
