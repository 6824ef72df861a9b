"""Pure: validate artwork records from the API and map them to table rows.

One function is the whole contract: ``classify_page(items, now)`` turns the
JSON values of one list page into rows to store and records to quarantine.
Every input value ends in exactly one of the two; nothing here does I/O.

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
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from syncd.recordkeys import (
    KNOWN_TYPES,
    content_hash,
    parse_created_at,
    utc_text,
)
from syncd.rows import (
    PARAMETER_COLUMNS,
    PARAMETER_TABLE_OF,
    ArtworkRows,
    PageResult,
    Rejection,
    Unparseable,
)

MAX_PIXELS = 1_478_656
MAX_RECORD_BYTES = 1_000_000
MAX_QUARANTINE_PAYLOAD = 65_536

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _check_uuid(value: str) -> str:
    if not _UUID_RE.match(value):
        raise ValueError("not a UUID (expected 8-4-4-4-12 hexadecimal digits)")
    return value


def _parse_created_at(value: object, info: ValidationInfo) -> datetime:
    return parse_created_at(value, (info.context or {}).get("now") or datetime.now(UTC))


ArtworkId = Annotated[str, AfterValidator(_check_uuid)]
CreatedAt = Annotated[datetime, BeforeValidator(_parse_created_at)]
Level = Annotated[int, Field(ge=1, le=5)]
Side = Annotated[int, Field(ge=512, le=2048)]


class _Strict(BaseModel):
    # extra keys are ignored, not forbidden: the raw record keeps them all.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, populate_by_name=False)


class Txt2ImgParameters(_Strict):
    model: str | None = None
    prompt_mode: str | None = Field(None, alias="promptMode")
    prompt: str | None = None
    negative_prompt: str | None = Field(None, alias="negativePrompt")
    style: str | None = None
    creativity: Level | None = None
    details: Level | None = None
    aspect_ratio: str | None = Field(None, alias="aspectRatio")
    width: Side | None = None
    height: Side | None = None
    nsfw: bool | None = None

    @model_validator(mode="after")
    def _area(self) -> Txt2ImgParameters:
        if self.width is not None and self.height is not None:
            if self.width * self.height > MAX_PIXELS:
                raise ValueError(f"width x height exceeds {MAX_PIXELS:,} pixels")
        return self


class UpscalingParameters(_Strict):
    image_url: str | None = Field(None, alias="imageUrl")
    scale_factor: Annotated[int, Field(ge=2, le=8)] | None = Field(None, alias="scaleFactor")


class _ArtworkBase(_Strict):
    id: ArtworkId
    artwork_type: str = Field(alias="artworkType")
    status: str
    duration: float | None = None
    results: list[str] | None = None
    created_at: CreatedAt = Field(alias="createdAt")


class Txt2ImgArtwork(_ArtworkBase):
    artwork_type: Literal["txt2img"] = Field(alias="artworkType")
    parameters: Txt2ImgParameters


class UpscalingArtwork(_ArtworkBase):
    artwork_type: Literal["upscaling"] = Field(alias="artworkType")
    parameters: UpscalingParameters


class OtherArtwork(_ArtworkBase):
    """A type syncd has no table for: common fields only, parameters kept raw."""

    parameters: dict[str, Any]


def _artwork_tag(value: Any) -> str:
    kind = value.get("artworkType") if isinstance(value, dict) else None
    return kind if kind in KNOWN_TYPES else "other"


Artwork = Annotated[
    Annotated[Txt2ImgArtwork, Tag("txt2img")]
    | Annotated[UpscalingArtwork, Tag("upscaling")]
    | Annotated[OtherArtwork, Tag("other")],
    Discriminator(_artwork_tag),
]
_ARTWORK = TypeAdapter[Txt2ImgArtwork | UpscalingArtwork | OtherArtwork](Artwork)


# --------------------------------------------------------------------------- rows


# The rows' parameter columns are the models' fields, in order.
for _model, _table in (
    (Txt2ImgParameters, "txt2img_parameters"),
    (UpscalingParameters, "upscaling_parameters"),
):
    if PARAMETER_COLUMNS[_table] != ("artwork_id", *_model.model_fields):
        raise RuntimeError(f"syncd.rows.PARAMETER_COLUMNS[{_table!r}] does not match {_model.__name__}")


def to_rows(
    record: dict[str, Any],
    artwork: Txt2ImgArtwork | UpscalingArtwork | OtherArtwork,
    raw_json: str | None = None,
) -> ArtworkRows:
    table: str | None = None
    parameters: tuple[Any, ...] | None = None
    if not isinstance(artwork, OtherArtwork):
        table = PARAMETER_TABLE_OF[artwork.artwork_type]
        parameters = (artwork.id, *artwork.parameters.__dict__.values())
    artwork_id = artwork.id
    return ArtworkRows(
        artwork_id,
        artwork.artwork_type,
        artwork.status,
        artwork.duration,
        utc_text(artwork.created_at),
        content_hash(record),
        raw_json if raw_json is not None else orjson.dumps(record).decode(),
        table,
        parameters,
        tuple((artwork_id, position, url) for position, url in enumerate(artwork.results or ())),
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


def _payload_text(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)


def reject(value: object, reason: str, payload: str | None = None) -> Rejection:
    text = _payload_text(value) if payload is None else payload
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    if len(text) > MAX_QUARANTINE_PAYLOAD:
        text = text[:MAX_QUARANTINE_PAYLOAD] + f"... [cut: {len(text):,} characters in all]"
    artwork_id = None
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        artwork_id = value["id"][:64]
    return Rejection(reason=reason, payload=text, payload_hash=digest, artwork_id=artwork_id)


def classify(value: object, now: datetime) -> ArtworkRows | Rejection:
    """Validate one list element: rows to store, or a rejection to quarantine."""
    if isinstance(value, Unparseable):
        return reject(None, f"record: not parseable JSON ({value.error})", payload=value.text)
    if not isinstance(value, dict):
        return reject(value, f"record: expected a JSON object, got {type(value).__name__}")
    try:
        dumped = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return reject(value, "record: cannot be serialised (nested too deeply)")
    size = len(dumped)
    if size > MAX_RECORD_BYTES:
        return reject(value, f"record: {size:,} bytes, over the {MAX_RECORD_BYTES:,}-byte limit")
    try:
        artwork = _ARTWORK.validate_python(value, context={"now": now})
    except ValidationError as exc:
        return reject(value, describe_errors(exc))
    except RecursionError:
        return reject(value, "record: nested too deeply")
    return to_rows(value, artwork, dumped.decode())


_UNCHANGED = object()


def _stored_unchanged(value: object, stored_hashes: Mapping[str, str]) -> str | None:
    """The id of a record stored earlier with exactly this content, else None."""
    if not isinstance(value, dict):
        return None
    artwork_id = value.get("id")
    if not isinstance(artwork_id, str) or artwork_id not in stored_hashes:
        return None
    try:
        digest = content_hash(value)
    except (TypeError, orjson.JSONEncodeError):
        return None
    return artwork_id if stored_hashes[artwork_id] == digest else None


def classify_page(
    items: Sequence[object], now: datetime | None = None, stored_hashes: Mapping[str, str] | None = None
) -> PageResult:
    """Classify every element of one page; later duplicates of an id win.

    A record whose id and content hash are in ``stored_hashes`` was valid when
    it was stored and has not changed: it is not validated again, only listed
    in ``unchanged_ids`` (a full reconciliation then costs little more than
    the download).
    """
    now = now or datetime.now(UTC)
    result = PageResult()
    by_id: dict[str, ArtworkRows | object] = {}
    for value in items:
        unchanged = _stored_unchanged(value, stored_hashes) if stored_hashes else None
        if unchanged is not None:
            if unchanged in by_id:
                result.duplicates += 1
            by_id[unchanged] = _UNCHANGED
            if isinstance(value, dict) and value.get("artworkType") not in KNOWN_TYPES:
                result.unknown_types += 1
            continue
        outcome = classify(value, now)
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
