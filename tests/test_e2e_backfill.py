"""End to end: the fake API -> a real `syncd run-once` process -> the analysts' tables."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, select

from syncd import db, store
from syncd.fakeapi.data import Dataset
from syncd.fakeapi.server import FakeServer
from tests.conftest import run_cli, syncd_env

TXT2IMG_FIELDS = {
    "model": "model",
    "promptMode": "prompt_mode",
    "prompt": "prompt",
    "negativePrompt": "negative_prompt",
    "style": "style",
    "creativity": "creativity",
    "details": "details",
    "aspectRatio": "aspect_ratio",
    "width": "width",
    "height": "height",
    "nsfw": "nsfw",
}


def snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the data tables, sorted, as plain dicts."""
    tables = {
        "artworks": store.artworks,
        "txt2img_parameters": store.PARAMETER_TABLES["txt2img_parameters"],
        "upscaling_parameters": store.PARAMETER_TABLES["upscaling_parameters"],
        "artwork_results": store.results_table,
        "rejected_records": store.rejected_table,
    }
    out = {}
    with engine.connect() as conn:
        for name, table in tables.items():
            rows = [dict(row) for row in conn.execute(select(table)).mappings()]
            out[name] = sorted(rows, key=lambda r: orjson.dumps(r, default=str, option=orjson.OPT_SORT_KEYS))
    return out


def assert_matches_dataset(engine: Engine, dataset: Dataset) -> None:
    """The tables hold exactly the dataset's valid records, with the values sent."""
    data = snapshot(engine)
    artworks = {row["id"]: row for row in data["artworks"]}
    valid = dataset.valid()
    assert set(artworks) == {a.id for a in valid}
    assert len(data["artworks"]) == len(valid)  # exactly once
    txt2img = {row["artwork_id"]: row for row in data["txt2img_parameters"]}
    upscaling = {row["artwork_id"]: row for row in data["upscaling_parameters"]}
    results: dict[str, list[tuple[int, str]]] = {}
    for row in data["artwork_results"]:
        results.setdefault(row["artwork_id"], []).append((row["position"], row["url"]))

    for fake in valid:
        value = fake.value
        row = artworks[fake.id]
        assert row["artwork_type"] == value["artworkType"]
        assert row["status"] == value["status"]
        assert row["duration"] == value["duration"]
        assert row["created_at"] == datetime.fromisoformat(value["createdAt"]).astimezone(UTC)
        assert row["raw"] == value
        assert row["remote_deleted_at"] is None
        assert sorted(results.get(fake.id, [])) == list(enumerate(value["results"]))
        params = value["parameters"]
        if value["artworkType"] == "txt2img":
            stored = txt2img.pop(fake.id)
            for api_name, column in TXT2IMG_FIELDS.items():
                assert stored[column] == params.get(api_name), (fake.id, column)
        elif value["artworkType"] == "upscaling":
            stored = upscaling.pop(fake.id)
            assert stored["image_url"] == params.get("imageUrl")
            assert stored["scale_factor"] == params.get("scaleFactor")
    assert txt2img == {} and upscaling == {}, "parameter rows without a matching artwork type"
    with engine.connect() as conn:  # SQLite is not asked to enforce the foreign keys: check them
        for child in ("txt2img_parameters", "upscaling_parameters", "artwork_results"):
            orphans = conn.exec_driver_sql(
                f"SELECT COUNT(*) FROM {child} WHERE artwork_id NOT IN (SELECT id FROM artworks)"
            ).scalar()
            assert orphans == 0, child
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []

    malformed = [a for a in dataset.items if a.malformed]
    rejected_payloads = [orjson.loads(row["raw"]) for row in data["rejected_records"]]
    assert len(data["rejected_records"]) == len(malformed)
    assert sorted(map(orjson.dumps, rejected_payloads)) == sorted(orjson.dumps(a.value) for a in malformed)
    assert all(row["reason"] for row in data["rejected_records"])


def test_run_once_backfills_every_record_then_changes_nothing(
    db_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(3000, seed=7, unknown_fraction=0.01, malformed_fraction=0.005)
    dataset = server.api.dataset
    assert any(a.malformed for a in dataset.items) and any(
        a.value.get("artworkType") not in ("txt2img", "upscaling") for a in dataset.valid()
    )
    env = syncd_env(server.url, db_url, page_size="200")

    first = run_cli(["run-once"], env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "backfill" in first.stdout and "inserted" in first.stdout

    engine = db.create_db_engine(db_url)
    try:
        assert_matches_dataset(engine, dataset)
        unknown = [a for a in dataset.valid() if a.value["artworkType"] not in ("txt2img", "upscaling")]
        with engine.connect() as conn:
            kinds = {
                r.id: r.artwork_type
                for r in conn.execute(select(store.artworks.c.id, store.artworks.c.artwork_type))
            }
        assert all(kinds[a.id] == a.value["artworkType"] for a in unknown)
        before = snapshot(engine)

        second = run_cli(["run-once"], env, cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        after = snapshot(engine)
        # Only last_seen_at (and the quarantine's sighting counters) may move.
        for name in ("txt2img_parameters", "upscaling_parameters", "artwork_results"):
            assert after[name] == before[name]

        def stable(rows: list[dict[str, Any]], moving: set[str]) -> list[dict[str, Any]]:
            return sorted(
                ({k: v for k, v in r.items() if k not in moving} for r in rows), key=lambda r: str(r)
            )

        assert stable(after["artworks"], {"last_seen_at"}) == stable(before["artworks"], {"last_seen_at"})
        assert stable(after["rejected_records"], {"last_seen_at", "last_run_id", "times_seen"}) == stable(
            before["rejected_records"], {"last_seen_at", "last_run_id", "times_seen"}
        )
        with engine.connect() as conn:
            runs = conn.execute(select(store.runs_table).order_by(store.runs_table.c.id)).mappings().all()
        assert [r["outcome"] for r in runs] == ["success", "success"]
        assert runs[0]["mode"] == "backfill" and runs[0]["inserted"] == len(dataset.valid())
        # The counts count artworks, not reads: a page's overlap item, read twice
        # by the backfill, is not "unchanged" (a new file reported "unchanged 10").
        assert runs[0]["unchanged"] == 0 and re.search(r"unchanged +0\n", first.stdout), first.stdout
        assert runs[0]["rejected"] == sum(1 for a in dataset.items if a.malformed)
        assert runs[1]["mode"] == "incremental" and runs[1]["inserted"] == 0 and runs[1]["updated"] == 0
        # The no-op run reads the newest page once: each valid artwork on it is unchanged.
        assert runs[1]["unchanged"] == sum(1 for a in dataset.items[-200:] if not a.malformed)
    finally:
        engine.dispose()


def test_changed_artwork_is_rewritten_and_others_keep_updated_at(
    db_url: str, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    server = fake_api(60, seed=3, malformed_fraction=0, unknown_fraction=0)
    env = syncd_env(server.url, db_url, page_size="25")
    assert run_cli(["run-once"], env, cwd=tmp_path).returncode == 0
    engine = db.create_db_engine(db_url)
    try:
        before = {r["id"]: r for r in snapshot(engine)["artworks"]}
        # The newest artwork changes at the source: new status, different results.
        newest = server.api.dataset.items[-1]
        newest.value = dict(
            newest.value, status="failed", results=["https://cdn/x/0.webp", "https://cdn/x/1.webp"]
        )
        newest._json = None
        result = run_cli(["run-once"], env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        after_snapshot = snapshot(engine)
        after = {r["id"]: r for r in after_snapshot["artworks"]}
        assert after[newest.id]["status"] == "failed"
        assert after[newest.id]["updated_at"] > before[newest.id]["updated_at"]
        urls = sorted(
            (r["position"], r["url"])
            for r in after_snapshot["artwork_results"]
            if r["artwork_id"] == newest.id
        )
        assert urls == [(0, "https://cdn/x/0.webp"), (1, "https://cdn/x/1.webp")]
        unchanged = [i for i in before if i != newest.id]
        assert all(after[i]["updated_at"] == before[i]["updated_at"] for i in unchanged)
    finally:
        engine.dispose()
