"""Pure: validate artwork records from the API and map them to table rows.

One function is the whole contract: ``classify_page(items, now)`` turns the
JSON values of one list page into rows to store and records to quarantine.
Every input value ends in exactly one of the two; nothing here does I/O. The
rules that paging and change detection share with validation (the createdAt
rule, the content hash, the stored UTC text) live here too, so that there is
one of each.

Rules (documented in docs/schema.md, "What syncd accepts"):

* Types are checked strictly: a string is never coerced to a number, a number
  never to a string; strings are kept exactly as received.
* Documented numeric ranges are enforced (creativity/details 1..5,
  width/height 512..2048 with width*height <= 1,478,656, scaleFactor 2..8).
  Enumerated strings (model, style, ...) are *not* closed: the API adds values
  over time and rejecting them would quarantine good data.
* ``createdAt`` must be an ISO-8601 date-time, not before 2020-01-01 and not
  more than a day ahead of syncd's clock (such a record would corrupt the
  list-order bookkeeping). A time without offset is read as UTC.
* An ``artworkType`` syncd does not know is accepted with the common fields
  only; its parameters stay in ``raw``.
* A record over ``MAX_RECORD_BYTES`` serialised is quarantined; its stored
  payload is cut to ``MAX_QUARANTINE_PAYLOAD`` characters with a marker.
* The same id twice in one page: the last occurrence wins (it is the newer
  read of the same artwork); the duplicate is counted, not quarantined.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, NamedTuple, NotRequired

import orjson
from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    with_config,
)
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from syncd.redaction import contains as contains_secret
from syncd.redaction import redact

MAX_PIXELS = 1_478_656
MAX_RECORD_BYTES = 1_000_000
MAX_RECORD_DEPTH = 32  # containers inside containers; real records have 3
MAX_QUARANTINE_PAYLOAD = 65_536
LABEL_LENGTH = 64  # artworkType and status: the varchar(64) columns
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

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# U+0000 in a serialised record: "\u0000" after an even number of backslashes
# (an odd one before it would make it the literal text "\u0000").
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


# --------------------------------------------------------------------------- shared rules


def parse_created_at(value: object, now: datetime) -> datetime:
    """The createdAt rule: an ISO-8601 string, in UTC, from 2020 to a day ahead of ``now``."""
    if not isinstance(value, str):
        raise ValueError("expected an ISO-8601 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        raise ValueError("not an ISO-8601 date-time") from None
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
        raise ValueError("beyond the dates a database can hold") from None
    if parsed < EARLIEST_CREATED_AT:
        raise ValueError("before 2020-01-01, which the API cannot have produced")
    if parsed > now + FUTURE_TOLERANCE:
        raise ValueError("more than a day in the future")
    return parsed


def utc_text(moment: datetime) -> str:
    """A UTC time in the stored text form (what models.UTCDateTime writes on SQLite)."""
    if moment.tzinfo is not UTC:  # once per record in a backfill: skip the no-op conversion
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


def from_utc_text(text: str) -> datetime:
    """The aware UTC datetime of a stored time (``utc_text``, or any ISO-8601 text)."""
    return datetime.fromisoformat(text).astimezone(UTC)


def canonical_json(record: object) -> bytes:
    """The record as JSON with its keys sorted: what ``raw`` stores and the hash digests.

    An integer beyond 64 bits (which orjson does not write) is written
    exactly by the standard library instead: ``raw`` keeps every digit sent.
    Raises orjson.JSONEncodeError when neither can write the value.
    """
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        try:
            text = json.dumps(
                record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            )
        except (TypeError, ValueError, RecursionError):
            raise exc from None
        return text.encode("utf-8", "surrogatepass")


def content_hash(record: object, canonical: bytes | None = None) -> str:
    """A digest of the record's content, independent of key order."""
    return hashlib.blake2b(canonical or canonical_json(record), digest_size=16).hexdigest()


def list_key(value: object, now: datetime) -> tuple[str | None, datetime | None]:
    """Cheap (id, createdAt) of a list element, for paging decisions.

    The same rules as validation for both (None when unusable), so that the
    planner can decide the next request before the page is validated, and no
    id it keeps as an anchor (sync_state) is one validation would refuse.
    """
    if not isinstance(value, dict):
        return None, None
    try:
        created_at: datetime | None = parse_created_at(value.get("createdAt"), now)
    except ValueError:
        created_at = None
    return checked_id(value.get("id")), created_at


# --------------------------------------------------------------------------- validation models


def checked_id(value: object) -> str | None:
    """``value`` as an artwork id, if it is one: exactly 8-4-4-4-12 hexadecimal
    digits, in lower case (the canonical form: a UUID's case carries nothing,
    and an upper-case copy must not be a second row for the same artwork).

    Nothing around the digits: an id with whitespace (a trailing newline too)
    is refused, not mended.
    """
    if not isinstance(value, str) or not _UUID_RE.fullmatch(value):
        return None
    return value.lower()


def _check_id(value: str) -> str:
    canonical = checked_id(value)
    if canonical is None:
        raise ValueError("not a UUID (expected exactly 8-4-4-4-12 hexadecimal digits, nothing around them)")
    return canonical


def _parse_created_at(value: object, info: ValidationInfo) -> datetime:
    return parse_created_at(value, (info.context or {}).get("now") or datetime.now(UTC))


def _check_area(parameters: Txt2ImgParameters) -> Txt2ImgParameters:
    width, height = parameters.get("width"), parameters.get("height")
    if width is not None and height is not None and width * height > MAX_PIXELS:
        raise ValueError(f"width x height exceeds {MAX_PIXELS:,} pixels")
    return parameters


ArtworkId = Annotated[str, AfterValidator(_check_id)]
# Plain: the rule's own datetime is kept (pydantic would re-check it, and swap
# its time zone for one of its own that every row then converts back).
CreatedAt = Annotated[datetime, PlainValidator(_parse_created_at)]
Label = Annotated[str, Field(max_length=LABEL_LENGTH)]  # fits the varchar(64) columns
Level = Annotated[int, Field(ge=1, le=5)]
Side = Annotated[int, Field(ge=512, le=2048)]
# Strict: a string is never coerced to a number, nor a number to a string.
# Keys syncd does not know are ignored here; the raw record keeps them all.
_STRICT = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


@with_config(_STRICT)
class Txt2ImgParameters(TypedDict, total=False):
    model: str | None
    promptMode: str | None
    prompt: str | None
    negativePrompt: str | None
    style: str | None
    creativity: Level | None
    details: Level | None
    aspectRatio: str | None
    width: Side | None
    height: Side | None
    nsfw: bool | None


@with_config(_STRICT)
class UpscalingParameters(TypedDict, total=False):
    imageUrl: str | None
    scaleFactor: Annotated[int, Field(ge=2, le=8)] | None


@with_config(_STRICT)
class _ArtworkBase(TypedDict):
    id: ArtworkId
    artworkType: Label
    status: Label
    duration: NotRequired[float | None]
    results: NotRequired[list[str] | None]
    createdAt: CreatedAt


@with_config(_STRICT)
class Txt2ImgArtwork(_ArtworkBase):
    artworkType: Literal["txt2img"]  # type: ignore[misc]
    parameters: Annotated[Txt2ImgParameters, AfterValidator(_check_area)]


@with_config(_STRICT)
class UpscalingArtwork(_ArtworkBase):
    artworkType: Literal["upscaling"]  # type: ignore[misc]
    parameters: UpscalingParameters


@with_config(_STRICT)
class OtherArtwork(_ArtworkBase):
    """A type syncd has no table for: common fields only, parameters kept raw."""

    parameters: dict[str, Any]


def _artwork_tag(value: Any) -> str:
    kind = value.get("artworkType") if isinstance(value, dict) else None
    return kind if kind in KNOWN_TYPES else "other"


# TypedDicts, not models: validation returns plain dicts, three times faster.
_ARTWORK: TypeAdapter[Txt2ImgArtwork | UpscalingArtwork | OtherArtwork] = TypeAdapter(
    Annotated[
        Annotated[Txt2ImgArtwork, Tag("txt2img")]
        | Annotated[UpscalingArtwork, Tag("upscaling")]
        | Annotated[OtherArtwork, Tag("other")],
        Discriminator(_artwork_tag),
    ]
)


# --------------------------------------------------------------------------- rows


PARAMETER_TABLE_OF = {"txt2img": "txt2img_parameters", "upscaling": "upscaling_parameters"}
# The parameter tables' columns and the API's names for them, in the order of
# ArtworkRows.parameters (a test holds them to the schema's columns).
PARAMETER_FIELDS: dict[str, dict[str, str]] = {
    "txt2img_parameters": {
        "model": "model",
        "prompt_mode": "promptMode",
        "prompt": "prompt",
        "negative_prompt": "negativePrompt",
        "style": "style",
        "creativity": "creativity",
        "details": "details",
        "aspect_ratio": "aspectRatio",
        "width": "width",
        "height": "height",
        "nsfw": "nsfw",
    },
    "upscaling_parameters": {"image_url": "imageUrl", "scale_factor": "scaleFactor"},
}
PARAMETER_COLUMNS: dict[str, tuple[str, ...]] = {
    table: ("artwork_id", *fields) for table, fields in PARAMETER_FIELDS.items()
}
_API_NAMES = {table: tuple(fields.values()) for table, fields in PARAMETER_FIELDS.items()}


class ArtworkRows(NamedTuple):
    """Everything one valid record writes, as plain values the driver takes as they are."""

    id: str
    artwork_type: str
    status: str
    duration: float | None
    created_at: str  # UTC, in the stored text form: 2024-07-29T15:51:28.071000Z
    content_hash: str
    raw_json: str  # the record as received, as canonical_json (keys sorted)
    parameters_table: str | None
    parameters: tuple[Any, ...] | None  # in PARAMETER_COLUMNS[parameters_table] order
    results: tuple[tuple[str, int, str], ...]  # (artwork_id, position, url)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def parameters_by_column(self) -> dict[str, Any] | None:
        if self.parameters_table is None or self.parameters is None:
            return None
        return dict(zip(PARAMETER_COLUMNS[self.parameters_table], self.parameters, strict=True))


@dataclass(frozen=True, slots=True)
class Unparseable:
    """A list element the JSON parser refused on its own (kept as text)."""

    text: str
    error: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """A value that failed validation, with the reason and the payload as received."""

    reason: str
    payload: str
    payload_hash: str
    artwork_id: str | None


@dataclass
class PageResult:
    rows: list[ArtworkRows] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    unchanged_ids: list[str] = field(default_factory=list)  # stored with this very content
    duplicates: int = 0
    unknown_types: int = 0


def to_rows(
    record: dict[str, Any], artwork: Txt2ImgArtwork | UpscalingArtwork | OtherArtwork, canonical: bytes
) -> ArtworkRows:
    """The rows of one validated record (``artwork``: what validation returned;
    ``canonical``: the record's canonical_json)."""
    artwork_id: str = artwork["id"]
    kind: str = artwork["artworkType"]
    table = PARAMETER_TABLE_OF.get(kind)
    parameters: tuple[Any, ...] | None = None
    if table is not None:
        parameters = (artwork_id, *map(artwork["parameters"].get, _API_NAMES[table]))
    urls = artwork.get("results")
    return ArtworkRows(
        artwork_id,
        kind,
        artwork["status"],
        artwork.get("duration"),
        utc_text(artwork["createdAt"]),
        content_hash(record, canonical),
        canonical.decode(),
        table,
        parameters,
        tuple([(artwork_id, position, url) for position, url in enumerate(urls or ())]),
    )


def describe_errors(exc: ValidationError, *, limit: int = 3) -> str:
    """'parameters.creativity: Input should be less than or equal to 5 (got 9); ...'"""
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        loc = [str(p) for p in error["loc"]]
        if loc and loc[0] in (*KNOWN_TYPES, "other"):
            loc = loc[1:]  # the union's tag is noise to a reader
        where = ".".join(loc) or "record"
        message = error["msg"].removeprefix("Value error, ")
        got = _short_repr(error.get("input"))
        parts.append(
            f"{where}: {message} (got {got})" if error["type"] != "missing" else f"{where}: {message}"
        )
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _short_repr(value: object, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _too_deep(value: object, limit: int = MAX_RECORD_DEPTH) -> bool:
    """Whether containers nest more than ``limit`` deep (iterative: any depth is safe)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _capped(value: object, depth: int = 0) -> object:
    """``value`` with what nests deeper than the limit replaced by a marker (for a payload)."""
    if depth >= MAX_RECORD_DEPTH:
        return f"[nested deeper than {MAX_RECORD_DEPTH} levels: cut]"
    if isinstance(value, dict):
        return {key: _capped(child, depth + 1) for key, child in value.items()}
    if isinstance(value, list):
        return [_capped(child, depth + 1) for child in value]
    return value


def _payload_json(value: object) -> str:
    """``value`` as JSON for the quarantine, whatever a parsed answer holds. An
    integer beyond 64 bits or a lone surrogate (which orjson refuses) goes
    through the standard library, escaped to ASCII so that both databases
    store it: a record that cannot be written must still be quarantined,
    or the run fails on it, and every run after it."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)


def storable_text(text: str) -> str:
    """Text both databases store exactly: U+0000 (which PostgreSQL refuses) written as \\u0000."""
    return text.replace("\x00", "\\u0000")


def reject(value: object, reason: str, payload: str | None = None, secrets: Sequence[str] = ()) -> Rejection:
    """A rejection of ``value``; its payload is ``payload`` (raw text) or ``value``
    as JSON, stored as text both databases hold and without ``secrets``."""
    if payload is None:
        payload = _payload_json(_capped(value) if _too_deep(value) else value)
    text = storable_text(redact(payload, secrets))
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    if len(text) > MAX_QUARANTINE_PAYLOAD:
        text = text[:MAX_QUARANTINE_PAYLOAD] + f"... [cut: {len(text):,} characters in all]"
    artwork_id = None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        given = checked_id(value["id"]) or value["id"]
        artwork_id = storable_text(redact(given, secrets))[:LABEL_LENGTH]
    reason = storable_text(redact(reason, secrets))
    return Rejection(reason=reason, payload=text, payload_hash=digest, artwork_id=artwork_id)


def refusal(rows: ArtworkRows, reason: str) -> Rejection:
    """A validated record that the database refused after all, for the quarantine."""
    return reject({"id": rows.id}, reason, payload=rows.raw_json)


def classify(value: object, now: datetime, secrets: Sequence[str] = ()) -> ArtworkRows | Rejection:
    """Validate one list element: rows to store, or a rejection to quarantine.

    Validated means storable: what passes is stored exactly by SQLite and
    PostgreSQL alike (no U+0000, labels within their columns, dates a
    database holds, canonical ids). A record that holds one of ``secrets``
    (the API key, echoed) is quarantined with it redacted: the key never
    reaches the database.
    """

    def rejected(reason: str, payload: str | None = None, subject: object = value) -> Rejection:
        return reject(subject, reason, payload, secrets)

    if isinstance(value, Unparseable):
        return rejected(f"record: not parseable JSON ({value.error})", value.text, None)
    try:
        dumped = canonical_json(value)
    except orjson.JSONEncodeError:  # the serialiser stops at 254 levels
        dumped = None
    # Only a record with that many brackets can nest that deep: the walk is rare.
    if dumped is None or (dumped.count(b"[") + dumped.count(b"{") > MAX_RECORD_DEPTH and _too_deep(value)):
        return rejected(f"record: nested deeper than {MAX_RECORD_DEPTH} levels")
    if not isinstance(value, dict):
        return rejected(f"record: expected a JSON object, got {type(value).__name__}")
    size = len(dumped)
    if size > MAX_RECORD_BYTES:
        return rejected(f"record: {size:,} bytes, over the {MAX_RECORD_BYTES:,}-byte limit")
    if secrets and contains_secret(dumped, secrets):  # in any form: percent-encoded, base64, hex...
        return rejected("record: contains the API key (redacted here)", dumped.decode())
    if b"\\u0000" in dumped and _NUL_ESCAPE.search(dumped):
        return rejected("record: contains the character U+0000, which PostgreSQL cannot store")
    try:
        artwork = _ARTWORK.validate_python(value, context={"now": now})
    except ValidationError as exc:
        return rejected(describe_errors(exc))
    return to_rows(value, artwork, dumped)


_UNCHANGED = object()


def _stored_unchanged(value: object, artwork_id: str | None, stored_hashes: Mapping[str, str]) -> str | None:
    """The id of a record (whose id is ``artwork_id``) stored earlier with exactly this content, else None."""
    if not isinstance(value, dict):
        return None
    if artwork_id is None or artwork_id not in stored_hashes:
        return None
    try:
        digest = content_hash(value)
    except (TypeError, orjson.JSONEncodeError):  # nested beyond what the serialiser takes
        return None
    return artwork_id if stored_hashes[artwork_id] == digest else None


def classify_page(
    items: Sequence[object],
    now: datetime | None = None,
    stored_hashes: Mapping[str, str] | None = None,
    secrets: Sequence[str] = (),
    *,
    ids: Sequence[str | None] | None = None,
) -> PageResult:
    """Classify every element of one page; later duplicates of an id win.

    A record whose id and content hash are in ``stored_hashes`` was valid when
    it was stored and has not changed: it is not validated again, only listed
    in ``unchanged_ids`` (a full reconciliation then costs little more than
    the download). ``ids``: each element's id as ``list_key`` judged it, when
    the caller has them (else judged here).
    """
    now = now or datetime.now(UTC)
    result = PageResult()
    by_id: dict[str, ArtworkRows | object] = {}
    if ids is None:
        ids = [checked_id(value.get("id")) if isinstance(value, dict) else None for value in items]
    for value, artwork_id in zip(items, ids, strict=True):
        unchanged = _stored_unchanged(value, artwork_id, stored_hashes) if stored_hashes else None
        if unchanged is not None:
            if unchanged in by_id:
                result.duplicates += 1
            by_id[unchanged] = _UNCHANGED
            if isinstance(value, dict) and value.get("artworkType") not in KNOWN_TYPES:
                result.unknown_types += 1
            continue
        outcome = classify(value, now, secrets)
        if isinstance(outcome, Rejection):
            result.rejected.append(outcome)
            continue
        if outcome.id in by_id:
            result.duplicates += 1
        by_id[outcome.id] = outcome
    result.rows = [rows for rows in by_id.values() if isinstance(rows, ArtworkRows)]
    result.unchanged_ids = [key for key, rows in by_id.items() if rows is _UNCHANGED]
    result.unknown_types += sum(1 for rows in result.rows if rows.parameters_table is None)
    return result
