"""The archive run: every image of every stored artwork, live deadlines first,
one slow host slowing only itself, outcomes written in batches, an ETA."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from syncd import app, db
from syncd.archive import job, rows
from syncd.archive.job import ArchiveCounts, ArchiveProgress
from syncd.archive.plan import Due, host_cap, origin, startable
from syncd.cli import archive_progress_line
from syncd.config import Settings
from syncd.fakeapi.images import ImageFaults, ImageServer, expected_sha256
from tests.conftest import World, make_settings, run_cli, syncd_env, wait_for

files = rows.files


def settings_for(w: World, database_url: str, archive: Path | None, **extra: str) -> Settings:
    options = {"archive_dir": str(archive)} if archive is not None else {}
    return make_settings(
        w.api.url,
        database_url,
        archive_min_free_bytes="0",
        archive_max_requests_per_second="1000",
        **options,
        **extra,
    )


def table(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(files).order_by(files.c.artwork_id, files.c.role, files.c.position)))


def referenced(w: World) -> set[str]:
    urls: set[str] = set()
    for artwork in w.dataset.valid():
        urls.update(artwork.value.get("results") or [])
        if artwork.value.get("artworkType") == "upscaling" and artwork.value["parameters"].get("imageUrl"):
            urls.add(artwork.value["parameters"]["imageUrl"])
    return urls


# ------------------------------------------------------------------ every image, in order


def test_a_late_archive_keeps_every_image_of_a_long_history_live_ones_first(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    """Synced for 90 days without the archive; turned on: the images older than
    10 days (still served) are kept too, the live ones first, and a second
    run fetches nothing."""
    w = world(60, days=90)
    app.run_once(settings_for(w, db_url, None))
    assert table(engine) == []  # without the archive, no image row
    settings = settings_for(w, db_url, tmp_path / "images", archive_max_in_flight="1")
    result = app.archive(settings).result
    assert result.outcome == "success" and result.counts.walked == len(w.dataset.valid())
    stored = table(engine)
    assert {r.url for r in stored} == referenced(w)
    assert all(r.status == "archived" and r.sha256 == expected_sha256(r.url) for r in stored)
    # One download at a time: the order of fetching is the order of fetched_at.
    fetched = [r for r in sorted(stored, key=lambda r: (r.fetched_at, r.expires_at)) if r.attempts == 1]
    now = max(r.fetched_at for r in stored)
    live = [r.expires_at for r in fetched if r.expires_at > now]
    history = [r.expires_at for r in fetched if r.expires_at <= now]
    assert live and history and fetched[: len(live)] == [r for r in fetched if r.expires_at > now]
    assert live == sorted(live) and history == sorted(history, reverse=True)

    requests = w.images.stats.requests
    again = app.archive(settings).result
    assert again.counts.done == 0 and again.counts.walked == 0 and w.images.stats.requests == requests


def test_an_image_the_host_no_longer_has_is_gone_after_one_answer(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(20, days=60, image_faults=ImageFaults(gone=1.0))
    settings = settings_for(w, db_url, tmp_path / "images")
    app.run_once(settings)
    app.archive(settings)
    stored = table(engine)
    assert stored and all(r.status == "gone" and r.attempts == 1 for r in stored)
    assert w.images.stats.requests == len(stored)  # one answer each, no retry


# ------------------------------------------------------------------ hosts


def test_a_slow_host_holds_at_most_half_the_slots_and_the_others_go_on(
    sqlite_url: str, world: Callable[..., World], tmp_path: Path
) -> None:
    """16 images dribbling ~200 bytes/s on one host, first in deadline order;
    10 on a healthy host: the healthy host's are all archived while the slow
    ones are still arriving (without the cap they waited for all 16)."""
    w = world(30, image_faults=ImageFaults(size=65536))
    healthy = ImageServer().attach(w.api.api).start()
    try:
        slow_urls = _move_to(w, healthy, slow=16)
        w.images.update_faults({"dribble": 5.0})  # 1 KiB every 5 s: 64 KiB take five minutes
        settings = settings_for(w, sqlite_url, tmp_path / "images", archive_max_in_flight="8")
        app.run_once(settings)
        stop = threading.Event()
        outcome: dict[str, Any] = {}
        runner = threading.Thread(
            target=lambda: outcome.update(result=app.archive(settings, app.ArchiveOptions(stop=stop)))
        )
        runner.start()
        try:
            engine = db.create_db_engine(sqlite_url)
            try:
                wait_for(
                    lambda: healthy_archived(engine, slow_urls) == len(referenced(w) - slow_urls),
                    60,
                    "the healthy host's images archived while the slow host dribbles",
                )
                assert w.images.stats.peak_in_flight <= host_cap(8)
                assert not any(r.status == "archived" for r in table(engine) if r.url in slow_urls)
            finally:
                engine.dispose()
        finally:
            stop.set()
            runner.join(30)
        assert not runner.is_alive() and outcome["result"].result.outcome == "interrupted"
    finally:
        healthy.stop()


def _move_to(w: World, healthy: ImageServer, *, slow: int) -> set[str]:
    """Every image but those of the oldest artworks (about ``slow`` images)
    moves to the healthy host; what stays on the slow one."""
    old_origin = w.images.url
    kept: set[str] = set()
    with w.api.api.lock:
        for artwork in sorted(w.dataset.valid(), key=lambda a: a.value["createdAt"]):
            value = artwork.value
            urls = list(value.get("results") or [])
            if len(kept) + len(urls) <= slow and urls and value["artworkType"] != "upscaling":
                kept.update(urls)
                continue
            value["results"] = [u.replace(old_origin, healthy.url) for u in urls]
            if value["artworkType"] == "upscaling" and value["parameters"].get("imageUrl"):
                value["parameters"]["imageUrl"] = value["parameters"]["imageUrl"].replace(
                    old_origin, healthy.url
                )
            artwork._json = None
    assert kept
    return kept


def healthy_archived(engine: Engine, slow: set[str]) -> int:
    return sum(1 for r in table(engine) if r.status == "archived" and r.url not in slow)


def test_the_host_cap_lets_other_hosts_past_a_busy_one() -> None:
    def due(url: str) -> Due:
        return Due("a", "result", 0, url, None, 0)  # type: ignore[arg-type]

    waiting = [due(f"https://slow.example/{n}.png") for n in range(6)] + [due("https://ok.example/1.png")]
    busy = {origin("https://slow.example/x.png"): 3}
    assert startable(waiting, busy, set(), cap=4) == [0, 6]  # one more of the slow host, then the other
    assert startable(waiting, {}, {"https://slow.example/0.png"}, cap=4) == [1, 2, 3, 4, 6]
    assert host_cap(8) == 4 and host_cap(1) == 1
    assert origin("https://CDN.example:8443/a.png") == "cdn.example:8443" != origin("https://cdn.example/a")


# ------------------------------------------------------------------ the operator's view


def test_the_progress_line_says_the_total_and_when_it_will_be_done() -> None:
    counts = ArchiveCounts(archived=90, gone=5, failed=5)
    line = archive_progress_line(ArchiveProgress(counts, 4, 50.0, 10.0, remaining=900, eta=450.0))
    assert "100 of 1,000 images" in line and "ETA 7m" in line
    assert "ETA ?" in archive_progress_line(ArchiveProgress(ArchiveCounts(), 0, 0.0, 10.0, remaining=5))


def test_a_run_reports_its_total_and_an_eta_as_it_goes(
    sqlite_url: str, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(30)
    settings = settings_for(w, sqlite_url, tmp_path / "images", archive_max_in_flight="2")
    app.run_once(settings)
    seen: list[ArchiveProgress] = []
    app.archive(settings, app.ArchiveOptions(on_progress=seen.append))
    images = len(referenced(w))
    assert seen and {p.total for p in seen} == {images}
    assert seen[-1].remaining == 0 and seen[-1].eta == 0.0
    assert all(p.eta is not None for p in seen)


def test_outcomes_are_written_in_batches_not_one_statement_an_image(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        job, "FLUSH_SECONDS", 3600.0
    )  # by count and before each look: no clock in the verdict
    w = world(40)
    settings = settings_for(w, db_url, tmp_path / "images")
    app.run_once(settings)
    updates: list[int] = []

    def seen(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        if statement.lstrip().upper().startswith("UPDATE ARCHIVED_FILES"):
            updates.append(len(parameters) if executemany else 1)

    # app.archive makes its own engine: listen on every engine of this class
    event.listen(Engine, "before_cursor_execute", seen)
    try:
        app.archive(settings)
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    images = len(referenced(w))
    assert sum(updates) >= images and len(updates) <= 6  # two statements a batch, few batches
    assert all(r.status == "archived" for r in table(engine))


def test_archive_against_a_database_that_does_not_exist_refuses_and_creates_nothing(tmp_path: Path) -> None:
    database = tmp_path / "missing" / "syncd.db"
    (tmp_path / "missing").mkdir()
    archive = tmp_path / "images"
    env = syncd_env("http://127.0.0.1:9", f"sqlite:///{database}", archive_dir=str(archive))
    result = run_cli(["archive"], env, cwd=tmp_path)
    assert result.returncode == 6, result.stderr
    assert "does not exist" in result.stderr
    assert list((tmp_path / "missing").iterdir()) == []  # no database, -wal, -shm or lock files
    assert not archive.exists()
