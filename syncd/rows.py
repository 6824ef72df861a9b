"""Pure and light: what a validated page writes, as plain values.

The types that cross between syncd's processes and reach the database driver.
Validation (``syncd.records``, pydantic) produces them; the store and the
writer process (``syncd.sync.writing``) consume them without loading pydantic.
"""

from __future__ import annotations

import marshal
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from syncd.recordkeys import TERMINAL_STATUSES

PARAMETER_TABLE_OF = {"txt2img": "txt2img_parameters", "upscaling": "upscaling_parameters"}
# Columns of the parameter tables, in the order of ArtworkRows.parameters:
# the validation models' field names (syncd.records checks this at import).
PARAMETER_COLUMNS: dict[str, tuple[str, ...]] = {
    "txt2img_parameters": (
        "artwork_id",
        "model",
        "prompt_mode",
        "prompt",
        "negative_prompt",
        "style",
        "creativity",
        "details",
        "aspect_ratio",
        "width",
        "height",
        "nsfw",
    ),
    "upscaling_parameters": ("artwork_id", "image_url", "scale_factor"),
}


class ArtworkRows(NamedTuple):
    """Everything one valid record writes, as plain values.

    Plain strings, numbers and tuples: the rows go to the driver as they are,
    and a page of them crosses to or from a helper process cheaply.
    """

    id: str
    artwork_type: str
    status: str
    duration: float | None
    created_at: str  # UTC, in the stored text form: 2024-07-29T15:51:28.071000Z
    content_hash: str
    raw_json: str  # the record as received, serialised once
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

    def to_wire(self) -> bytes:
        """The page as bytes for another process: marshal of plain tuples (several
        times cheaper to load than pickled objects)."""
        return marshal.dumps(
            (
                [tuple(rows) for rows in self.rows],
                [(r.reason, r.payload, r.payload_hash, r.artwork_id) for r in self.rejected],
                self.unchanged_ids,
                self.duplicates,
                self.unknown_types,
            )
        )

    @classmethod
    def from_wire(cls, data: bytes) -> PageResult:
        rows, rejected, unchanged_ids, duplicates, unknown_types = marshal.loads(data)  # noqa: S302
        return cls(
            [ArtworkRows._make(values) for values in rows],
            [Rejection(*values) for values in rejected],
            unchanged_ids,
            duplicates,
            unknown_types,
        )
