"""The store's writes: a page written assuming its rows are new ends exactly as one written row by row."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from syncd import db, store
from syncd.fakeapi.data import Dataset
from syncd.records import classify_page
from syncd.rows import ArtworkRows
from syncd.summary import Counts

FIRST = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SECOND = datetime(2026, 11, 30, 12, 1, tzinfo=UTC)
TABLES = ("artworks", "txt2img_parameters", "upscaling_parameters", "artwork_results")


def rows_of(values: list[dict[str, Any]]) -> list[ArtworkRows]:
    page = classify_page(values, FIRST)
    assert not page.rejected
    return page.rows


def pages() -> tuple[list[ArtworkRows], list[ArtworkRows]]:
    """A stored page, and a next one that repeats part of it (one record changed)
    in the middle, between records never seen: what a list shifting under the
    reader gives."""
    values = [artwork.value for artwork in Dataset(30, seed=3, malformed_fraction=0).items]
    changed = copy.deepcopy(values[7])
    changed["status"] = "failed" if changed["status"] != "failed" else "done"
    again = [*values[5:7], changed, *values[8:10]]
    return rows_of(values[:10]), rows_of([*values[10:15], *again, *values[15:30]])


def write(engine: Engine, batches: list[tuple[list[ArtworkRows], datetime, bool]]) -> list[Counts]:
    counts = []
    with db.writer(engine).begin() as conn:
        for batch, now, assume_new in batches:
            counts.append(store.write_artworks(conn, batch, now, assume_new=assume_new))
    return counts


def contents(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    tables = {"artworks": store.artworks, "artwork_results": store.results_table, **store.PARAMETER_TABLES}
    with engine.connect() as conn:
        return {
            name: sorted(tuple(row) for row in conn.execute(select(tables[name])).all()) for name in TABLES
        }


def test_assumed_new_rows_that_are_stored_after_all_are_decided_as_usual(engine: Engine) -> None:
    stored, shifted = pages()
    first, second = write(engine, [(stored, FIRST, False), (shifted, SECOND, True)])
    assert (first.inserted, first.updated, first.unchanged) == (10, 0, 0)
    assert (second.inserted, second.updated, second.unchanged) == (20, 1, 4)
    with engine.connect() as conn:
        count = conn.execute(select(store.artworks.c.id)).all()
        status = conn.execute(select(store.artworks.c.status).where(store.artworks.c.id == shifted[7].id))
        assert len(count) == 30
        assert status.scalar_one() == shifted[7].status


def test_the_assumed_and_the_looked_up_writes_store_the_same(tmp_path: Path) -> None:
    stored, shifted = pages()
    engines = [db.create_db_engine(f"sqlite:///{tmp_path / name}") for name in ("assumed.db", "looked-up.db")]
    try:
        for engine, assume_new in zip(engines, (True, False), strict=True):
            db.upgrade(engine)
            write(engine, [(stored, FIRST, assume_new), (shifted, SECOND, assume_new)])
        assumed, looked_up = (contents(engine) for engine in engines)
        assert assumed == looked_up
        assert len(assumed["artworks"]) == 30 and assumed["artwork_results"]
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.parametrize("position", ["first", "last"])
def test_a_conflict_at_either_end_of_the_batch(engine: Engine, position: str) -> None:
    stored, shifted = pages()
    repeated = stored[0]
    fresh = shifted[:5]
    batch = [repeated, *fresh] if position == "first" else [*fresh, repeated]
    _, counts = write(engine, [(stored, FIRST, False), (batch, SECOND, True)])
    assert (counts.inserted, counts.updated, counts.unchanged) == (5, 0, 1)
    assert len(contents(engine)["artworks"]) == 15
