"""The store's writes: insert, rewrite or touch by the stored content hashes; idempotent."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select

from syncd import db, store
from syncd.fakeapi.data import Dataset
from syncd.records import classify_page
from syncd.state import Counts

FIRST = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SECOND = datetime(2026, 11, 30, 12, 1, tzinfo=UTC)
TABLES = ("artworks", "txt2img_parameters", "upscaling_parameters", "artwork_results")
VALUES = [artwork.value for artwork in Dataset(30, seed=3, malformed_fraction=0).items]


def pages() -> tuple[list[Any], list[Any]]:
    """A stored page, and a next one that repeats part of it (one record changed)
    in the middle, between records never seen: what a list shifting under the
    reader gives."""
    changed = copy.deepcopy(VALUES[7])
    changed["status"] = "failed" if changed["status"] != "failed" else "done"
    again = [*VALUES[5:7], changed, *VALUES[8:10]]
    return VALUES[:10], [*VALUES[10:15], *again, *VALUES[15:30]]


def write(engine: Engine, values: list[Any], now: datetime) -> Counts:
    """As the engine writes a page: stored hashes looked up once, in the write transaction."""
    with db.writer(engine).begin() as conn:
        ids = [value["id"] for value in values]
        stored = store.stored_hashes(conn, ids)
        page = classify_page(values, now, stored)
        return store.write_page(conn, page, stored, now=now, run_id=1)


def contents(engine: Engine, *, moving: bool = True) -> dict[str, list[tuple[Any, ...]]]:
    tables = {"artworks": store.artworks, "artwork_results": store.results_table, **store.PARAMETER_TABLES}
    skip = set() if moving else {"first_seen_at", "last_seen_at", "updated_at"}
    with engine.connect() as conn:
        return {
            name: sorted(
                tuple(value for column, value in row._mapping.items() if column not in skip)
                for row in conn.execute(select(tables[name])).all()
            )
            for name in TABLES
        }


def test_a_shifted_page_inserts_the_new_rewrites_the_changed_and_touches_the_rest(engine: Engine) -> None:
    stored, shifted = pages()
    first = write(engine, stored, FIRST)
    second = write(engine, shifted, SECOND)
    assert (first.inserted, first.updated, first.unchanged, first.pages) == (10, 0, 0, 1)
    assert (second.inserted, second.updated, second.unchanged) == (20, 1, 4)
    with engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(store.artworks)).all()}
    assert len(rows) == 30
    assert rows[VALUES[7]["id"]].status == shifted[7]["status"]
    assert rows[VALUES[7]["id"]].updated_at == SECOND
    assert rows[VALUES[6]["id"]].last_seen_at == SECOND and rows[VALUES[6]["id"]].updated_at == FIRST
    assert rows[VALUES[0]["id"]].last_seen_at == FIRST


def test_a_rewrite_replaces_the_parameter_and_result_rows(engine: Engine) -> None:
    record = copy.deepcopy(next(v for v in VALUES if v["artworkType"] == "txt2img" and v["results"]))
    write(engine, [record], FIRST)
    record["results"] = [*record["results"][:1], "https://cdn.example/new.webp"]
    record["parameters"] = {"prompt": "a different cat"}
    assert write(engine, [record], SECOND).updated == 1
    with engine.connect() as conn:
        urls = conn.execute(select(store.results_table.c.url).order_by(store.results_table.c.position))
        assert list(urls.scalars())[-1] == "https://cdn.example/new.webp"
        table = store.PARAMETER_TABLES["txt2img_parameters"]
        assert conn.execute(select(table.c.prompt, table.c.style)).one() == ("a different cat", None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, len(VALUES) - 1), min_size=1, max_size=12), st.integers(1, 3))
def test_property_writing_a_page_again_changes_nothing_but_when_it_was_seen(
    engine: Engine, picks: list[int], times: int
) -> None:
    with db.writer(engine).begin() as conn:
        for table in (store.results_table, *store.PARAMETER_TABLES.values(), store.artworks):
            conn.execute(delete(table))
    page = [VALUES[index] for index in picks]
    write(engine, page, FIRST)
    once = contents(engine)
    for _ in range(times):
        counts = write(engine, page, SECOND)
        assert counts.inserted == counts.updated == 0 and counts.unchanged == len(set(picks))
    assert contents(engine, moving=False) == {
        name: sorted(row[:5] + row[8:] if name == "artworks" else row for row in rows)
        for name, rows in once.items()
    }
