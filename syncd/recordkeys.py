"""Pure and light: what syncd reads of a record without validating it.

The rules that paging and change detection share with validation (the
createdAt rule, the content hash, the stored UTC text), kept free of pydantic
so that a no-op run (syncd.quick) can use them without loading it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

TERMINAL_STATUSES = frozenset({"done", "failed", "succeeded", "canceled"})
# SQL: the artworks the refresh job re-fetches. A partial index (migration
# 0002) holds just these; every query for them repeats this very text, since
# SQLite uses a partial index only for a query that repeats its terms.
PENDING_REFRESH = (
    f"status NOT IN ({', '.join(repr(status) for status in sorted(TERMINAL_STATUSES))}) "
    "AND remote_deleted_at IS NULL"
)
KNOWN_TYPES = ("txt2img", "upscaling")
EARLIEST_CREATED_AT = datetime(2020, 1, 1, tzinfo=UTC)
FUTURE_TOLERANCE = timedelta(days=1)


def parse_created_at(value: object, now: datetime) -> datetime:
    """The createdAt rule: an ISO-8601 string, in UTC, from 2020 to a day ahead of ``now``."""
    if not isinstance(value, str):
        raise ValueError("expected an ISO-8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO-8601 date-time") from None
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if parsed < EARLIEST_CREATED_AT:
        raise ValueError("before 2020-01-01, which the API cannot have produced")
    if parsed > now + FUTURE_TOLERANCE:
        raise ValueError("more than a day in the future")
    return parsed


def utc_text(moment: datetime) -> str:
    """A UTC time in the stored text form (what models.UTCDateTime writes on SQLite)."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:26] + "Z"


def from_utc_text(text: str) -> datetime:
    """The aware UTC datetime of a stored time (``utc_text``, or any ISO-8601 text)."""
    return datetime.fromisoformat(text).astimezone(UTC)


def content_hash(record: dict[str, Any]) -> str:
    """A digest of the record's content, independent of key order."""
    canonical = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


def list_key(value: object, now: datetime) -> tuple[str | None, datetime | None]:
    """Cheap (id, createdAt) of a list element, for paging decisions.

    Same rules as validation for the date (None when unreadable or out of range),
    so the planner can decide the next request before the page is validated.
    """
    if not isinstance(value, dict):
        return None, None
    artwork_id = value.get("id")
    try:
        created_at: datetime | None = parse_created_at(value.get("createdAt"), now)
    except ValueError:
        created_at = None
    return (artwork_id if isinstance(artwork_id, str) else None), created_at
