"""The analysts' schema: typed SQLAlchemy 2 tables (a public interface).

Every table and column is documented in docs/schema.md; the schema is created
and changed only by Alembic migrations (migrations/versions), and a test checks
that these models and the migrations agree. Timestamps are UTC: ``timestamptz``
on PostgreSQL, ISO-8601 text (``2024-07-29T15:51:28.071000Z``) on SQLite, so
SQLite's date functions and plain string comparison both work.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from syncd.records import PENDING_REFRESH, from_utc_text, utc_text


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both dialects.

    PostgreSQL stores ``timestamptz``. SQLite stores fixed-width ISO-8601 text
    with a ``Z`` suffix: it sorts as time does and SQLite's ``date()``,
    ``strftime()`` and ``julianday()`` read it.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(27))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return utc_text(value) if dialect.name == "sqlite" else value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return from_utc_text(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSON on both dialects (PostgreSQL ``json`` keeps the record's text as sent;
# analysts use ->> on PostgreSQL and json_extract() on SQLite).
RawJSON = JSON().with_variant(postgresql.JSON(), "postgresql")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Artwork(Base):
    __tablename__ = "artworks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    artwork_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(64))
    duration: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    remote_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    content_hash: Mapped[str] = mapped_column(String(32))
    raw: Mapped[Any] = mapped_column(RawJSON)

    __table_args__ = (
        Index(None, "created_at"),
        Index(None, "artwork_type", "status"),
        Index(None, "status"),
        Index(
            "ix_artworks_pending_refresh",
            "created_at",
            "id",
            sqlite_where=text(PENDING_REFRESH),
            postgresql_where=text(PENDING_REFRESH),
        ),
    )


class Txt2ImgParameters(Base):
    __tablename__ = "txt2img_parameters"

    artwork_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("artworks.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str | None] = mapped_column(Text)
    prompt_mode: Mapped[str | None] = mapped_column(Text)
    prompt: Mapped[str | None] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    style: Mapped[str | None] = mapped_column(Text)
    creativity: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[int | None] = mapped_column(Integer)
    aspect_ratio: Mapped[str | None] = mapped_column(Text)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    nsfw: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (Index(None, "style"), Index(None, "model"))


class UpscalingParameters(Base):
    __tablename__ = "upscaling_parameters"

    artwork_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("artworks.id", ondelete="CASCADE"), primary_key=True
    )
    image_url: Mapped[str | None] = mapped_column(Text)
    scale_factor: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (Index(None, "scale_factor"),)


class ArtworkResult(Base):
    __tablename__ = "artwork_results"

    artwork_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("artworks.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)


class RejectedRecord(Base):
    __tablename__ = "rejected_records"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    payload_hash: Mapped[str] = mapped_column(String(64), unique=True)
    artwork_id: Mapped[str | None] = mapped_column(String(64), index=True)
    stream: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    first_run_id: Mapped[int | None] = mapped_column(BigInteger)
    last_run_id: Mapped[int | None] = mapped_column(BigInteger)
    times_seen: Mapped[int] = mapped_column(Integer)


class SyncRun(Base):
    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    stream: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pages: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    inserted: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    unknown_type: Mapped[int] = mapped_column(Integer, default=0)
    marked_deleted: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    syncd_version: Mapped[str] = mapped_column(String(32))

    __table_args__ = (Index(None, "started_at"), Index(None, "outcome"))


class SyncState(Base):
    """One row per stream: what the next run needs to know, in plain columns."""

    __tablename__ = "sync_state"

    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    list_order: Mapped[str] = mapped_column(String(16))
    scan_order: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(16))
    cursor_skip: Mapped[int] = mapped_column(Integer)
    cursor_id: Mapped[str | None] = mapped_column(String(64))
    cursor_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    head_id: Mapped[str | None] = mapped_column(String(64))
    head_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    tail_id: Mapped[str | None] = mapped_column(String(64))
    tail_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    listed_total: Mapped[int | None] = mapped_column(Integer)
    scan_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    previous_scan_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    scan_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    backfill_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_full_sync_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rate_limited_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ArchivedFile(Base):
    """One image an artwork references (a result, or an upscaling input) and
    what the archive holds of it (docs/schema.md, "archived_files")."""

    __tablename__ = "archived_files"

    artwork_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("artworks.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    discovered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    content_type: Mapped[str | None] = mapped_column(String(100))
    path: Mapped[str | None] = mapped_column(Text)
    # Which archive holds the file (revision 0007): s3://BUCKET/PREFIX, or
    # file://HOST/PATH for a folder; empty for a folder's before 0007.
    store: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index(None, "next_attempt_at"),
        Index(None, "status"),
        Index(None, "sha256"),
        Index(None, "url"),
        # What a look for work reads (revision 0005): the pending images in
        # deadline order (a pending image is due from its artwork's creation),
        # the failed ones by when they are due again.
        Index("ix_archived_files_due", "status", "next_attempt_at", "expires_at"),
    )


class ArchiveState(Base):
    """The image archive's switch, and its walk through the artworks stored
    before it was turned on (one row, ``id`` 1; docs/schema.md)."""

    __tablename__ = "archive_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    images_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    walk_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    walk_id: Mapped[str | None] = mapped_column(String(64))
    walked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
