"""initial schema: artworks, parameters, results, quarantine, runs and state

Revision ID: 0001
Revises:
Create Date: 2026-11-30

Types are spelled out here rather than imported from syncd.models, so this
revision means the same thing forever, whatever the models become.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def utc() -> sa.types.TypeEngine[object]:
    """timestamptz on PostgreSQL; fixed-width ISO-8601 text on SQLite."""
    return sa.DateTime(timezone=True).with_variant(sa.String(27), "sqlite")


def row_id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "artworks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("artwork_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("created_at", utc(), nullable=False),
        sa.Column("first_seen_at", utc(), nullable=False),
        sa.Column("last_seen_at", utc(), nullable=False),
        sa.Column("updated_at", utc(), nullable=False),
        sa.Column("remote_deleted_at", utc(), nullable=True),
        sa.Column("content_hash", sa.String(32), nullable=False),
        sa.Column("raw", sa.JSON().with_variant(postgresql.JSON(), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_artworks"),
    )
    op.create_index("ix_artworks_created_at", "artworks", ["created_at"])
    op.create_index("ix_artworks_artwork_type_status", "artworks", ["artwork_type", "status"])
    op.create_index("ix_artworks_status", "artworks", ["status"])

    op.create_table(
        "txt2img_parameters",
        sa.Column("artwork_id", sa.String(64), nullable=False),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("prompt_mode", sa.Text(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("negative_prompt", sa.Text(), nullable=True),
        sa.Column("style", sa.Text(), nullable=True),
        sa.Column("creativity", sa.Integer(), nullable=True),
        sa.Column("details", sa.Integer(), nullable=True),
        sa.Column("aspect_ratio", sa.Text(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("nsfw", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["artwork_id"],
            ["artworks.id"],
            name="fk_txt2img_parameters_artwork_id_artworks",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artwork_id", name="pk_txt2img_parameters"),
    )
    op.create_index("ix_txt2img_parameters_style", "txt2img_parameters", ["style"])
    op.create_index("ix_txt2img_parameters_model", "txt2img_parameters", ["model"])

    op.create_table(
        "upscaling_parameters",
        sa.Column("artwork_id", sa.String(64), nullable=False),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("scale_factor", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["artwork_id"],
            ["artworks.id"],
            name="fk_upscaling_parameters_artwork_id_artworks",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artwork_id", name="pk_upscaling_parameters"),
    )
    op.create_index(
        "ix_upscaling_parameters_scale_factor", "upscaling_parameters", ["scale_factor"]
    )

    op.create_table(
        "artwork_results",
        sa.Column("artwork_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["artwork_id"],
            ["artworks.id"],
            name="fk_artwork_results_artwork_id_artworks",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artwork_id", "position", name="pk_artwork_results"),
    )

    op.create_table(
        "rejected_records",
        sa.Column("id", row_id(), nullable=False),
        sa.Column("payload_hash", sa.String(64), nullable=False),
        sa.Column("artwork_id", sa.String(64), nullable=True),
        sa.Column("stream", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("first_seen_at", utc(), nullable=False),
        sa.Column("last_seen_at", utc(), nullable=False),
        sa.Column("first_run_id", sa.BigInteger(), nullable=True),
        sa.Column("last_run_id", sa.BigInteger(), nullable=True),
        sa.Column("times_seen", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rejected_records"),
        sa.UniqueConstraint("payload_hash", name="uq_rejected_records_payload_hash"),
    )
    op.create_index("ix_rejected_records_artwork_id", "rejected_records", ["artwork_id"])

    op.create_table(
        "sync_runs",
        sa.Column("id", row_id(), nullable=False),
        sa.Column("stream", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("started_at", utc(), nullable=False),
        sa.Column("finished_at", utc(), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("inserted", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("unknown_type", sa.Integer(), nullable=False),
        sa.Column("marked_deleted", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("syncd_version", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sync_runs"),
    )
    op.create_index("ix_sync_runs_started_at", "sync_runs", ["started_at"])
    op.create_index("ix_sync_runs_outcome", "sync_runs", ["outcome"])

    op.create_table(
        "sync_state",
        sa.Column("stream", sa.String(64), nullable=False),
        sa.Column("list_order", sa.String(16), nullable=False),
        sa.Column("scan_order", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("cursor_skip", sa.Integer(), nullable=False),
        sa.Column("cursor_id", sa.String(64), nullable=True),
        sa.Column("cursor_created_at", utc(), nullable=True),
        sa.Column("head_id", sa.String(64), nullable=True),
        sa.Column("head_created_at", utc(), nullable=True),
        sa.Column("tail_id", sa.String(64), nullable=True),
        sa.Column("tail_created_at", utc(), nullable=True),
        sa.Column("listed_total", sa.Integer(), nullable=True),
        sa.Column("scan_started_at", utc(), nullable=True),
        sa.Column("backfill_completed_at", utc(), nullable=True),
        sa.Column("last_full_sync_at", utc(), nullable=True),
        sa.Column("rate_limited_until", utc(), nullable=True),
        sa.Column("updated_at", utc(), nullable=False),
        sa.PrimaryKeyConstraint("stream", name="pk_sync_state"),
    )


def downgrade() -> None:
    for table in (
        "sync_state",
        "sync_runs",
        "rejected_records",
        "artwork_results",
        "upscaling_parameters",
        "txt2img_parameters",
        "artworks",
    ):
        op.drop_table(table)
