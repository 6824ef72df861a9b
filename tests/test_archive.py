"""The image archive end to end: the fake serves images on a second origin,
`syncd run-once` stores the artworks, `syncd archive` keeps their images."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine, select, update

from syncd import db
from syncd.archive import rows
from syncd.errors import ArchiveStorageError
from syncd.fakeapi.images import ImageFaults, _share, expected_sha256, image_path
from tests.conftest import (
    World,
    metric,
    referenced_urls,
    run_cli,
    start_syncd,
    storage_runs,
    syncd_env,
    wait_for,
)

files = rows.files


def archive_env(w: World, database_url: str, archive: Path, **extra: str) -> dict[str, str]:
    return syncd_env(
        w.api.url,
        database_url,
        archive_dir=str(archive),
        archive_min_free_bytes="0",
        archive_max_requests_per_second="1000",
        **extra,
    )


def sync_and_archive(env: dict[str, str], cwd: Path, *args: str) -> Any:
    synced = run_cli(["run-once"], env, cwd)
    assert synced.returncode == 0, synced.stderr
    done = run_cli(["archive", *args], env, cwd)
    assert done.returncode == 0, done.stderr
    return done


def synced_and_archived(w: World, database_url: str, cwd: Path) -> tuple[Path, dict[str, str]]:
    """``w``'s artworks synced and their images archived into ``cwd``/images:
    the archive folder and the environment used."""
    archive = cwd / "images"
    env = archive_env(w, database_url, archive)
    sync_and_archive(env, cwd)
    return archive, env


def table(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(files).order_by(files.c.artwork_id, files.c.role, files.c.position)))


def test_every_image_is_archived_once_with_the_hash_of_the_bytes_served(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(80, image_faults=ImageFaults(gone=0.15))
    archive = tmp_path / "images"
    done = sync_and_archive(archive_env(w, db_url, archive), tmp_path)
    assert "archive run: success" in done.stderr + done.stdout or "syncd archive run: success" in done.stdout

    stored = table(engine)
    assert {r.url for r in stored} == referenced_urls(w)
    gone = {r.url for r in stored if r.status == "gone"}
    archived = [r for r in stored if r.status == "archived"]
    assert gone and archived and len(gone) + len(archived) == len(stored)
    for row in archived:
        assert row.sha256 == expected_sha256(row.url)
        assert hashlib.sha256((archive / row.path).read_bytes()).hexdigest() == row.sha256
        assert row.path.startswith(f"{row.sha256[:2]}/{row.sha256[2:4]}/{row.sha256}.")
        assert row.size_bytes == (archive / row.path).stat().st_size and row.content_type.startswith("image/")
        assert row.fetched_at is not None and row.next_attempt_at is None and row.attempts == 1
    for row in stored:
        if row.status == "gone":
            assert row.last_error == "404 Not Found" and row.next_attempt_at is None
    assert {r.role for r in stored} == {"result", "input"}
    assert w.images.stats.authorization_seen == 0
    assert not list((archive / "incoming").iterdir())

    # A second run downloads nothing: every image is archived or gone.
    requests = w.images.stats.requests
    again = run_cli(["archive"], archive_env(w, db_url, archive), tmp_path)
    assert again.returncode == 0, again.stderr
    assert w.images.stats.requests == requests
    assert table(engine) == stored


def test_transient_failures_fail_then_are_archived_on_a_later_attempt(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    # Each image answers 503 to its first three requests: one run's attempts.
    w = world(20, image_faults=ImageFaults(fail_first=3))
    env = archive_env(w, db_url, tmp_path / "images")
    sync_and_archive(env, tmp_path)
    first = table(engine)
    assert first and all(r.status == "failed" for r in first)
    assert all(r.attempts == 1 and r.next_attempt_at is not None for r in first)
    assert all("503 Service Unavailable (after 3 attempts)" in r.last_error for r in first)

    # Not due yet: a run now fetches nothing.
    requests = w.images.stats.requests
    assert run_cli(["archive"], env, tmp_path).returncode == 0
    assert w.images.stats.requests == requests

    with db.writer(engine).begin() as conn:  # as if the back-off had passed
        conn.execute(update(files).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert run_cli(["archive"], env, tmp_path).returncode == 0
    later = table(engine)
    assert all(r.status == "archived" and r.attempts == 2 and r.last_error is None for r in later)
    assert all(r.sha256 == expected_sha256(r.url) for r in later)


def test_bad_answers_fail_with_their_reason_and_redirects_are_followed(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(60, image_faults=ImageFaults(wrong_type=0.2, redirect=0.3, error_5xx=0.2))
    sync_and_archive(archive_env(w, db_url, tmp_path / "images", archive_max_file_bytes="200K"), tmp_path)
    stored = table(engine)
    reasons = {r.last_error for r in stored if r.status == "failed"}
    assert "the content type 'text/html; charset=utf-8' is not an image" in reasons or any(
        "is not an image" in (reason or "") for reason in reasons
    )
    assert any("larger than SYNCD_ARCHIVE_MAX_FILE_BYTES" in (reason or "") for reason in reasons)
    archived = [r for r in stored if r.status == "archived"]
    assert archived and all(
        r.sha256 == expected_sha256(r.url) and r.size_bytes <= 200 * 1024 for r in archived
    )
    # Some of those archived are answered 302 by the fake (its rule, by URL): redirects are followed.
    assert any(_share("redirect", image_path(r.url)) < 0.3 for r in archived)
    assert w.images.stats.authorization_seen == 0


def test_a_full_disk_stops_the_archive_with_one_line_and_loses_nothing(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(20)
    env = archive_env(w, db_url, tmp_path / "images")
    assert run_cli(["run-once"], env, tmp_path).returncode == 0
    env["SYNCD_ARCHIVE_MIN_FREE_BYTES"] = "1000T"  # no disk here has that much free
    full = run_cli(["archive"], env, tmp_path)
    assert full.returncode == 9, full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("syncd: error:")]
    assert len(errors) == 1 and "SYNCD_ARCHIVE_MIN_FREE_BYTES" in errors[0]
    assert w.images.stats.requests == 0
    assert {r.status for r in table(engine)} == {"pending"}

    # Room again: everything is archived.
    env["SYNCD_ARCHIVE_MIN_FREE_BYTES"] = "0"
    assert run_cli(["archive"], env, tmp_path).returncode == 0
    assert {r.status for r in table(engine)} == {"archived"}


def test_verify_finds_missing_and_corrupt_files_and_mends_what_is_still_available(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(30)
    archive, env = synced_and_archived(w, db_url, tmp_path)
    stored = [r for r in table(engine) if r.status == "archived" and r.role == "result"]
    missing, corrupt, lost = stored[0], stored[1], stored[2]
    (archive / missing.path).unlink()
    (archive / corrupt.path).write_bytes(b"\x89PNG\r\n\x1a\nnot what was served")
    (archive / lost.path).unlink()
    with w.api.api.lock:  # the API deleted its artwork meanwhile
        w.dataset.items = [a for a in w.dataset.items if a.id != lost.artwork_id]

    verified = run_cli(["archive", "--verify"], env, tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert "2 missing, 1 corrupt" in verified.stdout
    after = {(r.artwork_id, r.role, r.position): r for r in table(engine)}
    for mended in (missing, corrupt):
        row = after[(mended.artwork_id, mended.role, mended.position)]
        assert row.status == "archived" and row.sha256 == mended.sha256
        assert hashlib.sha256((archive / row.path).read_bytes()).hexdigest() == row.sha256
    assert after[(lost.artwork_id, lost.role, lost.position)].status == "gone"
    assert list((archive / "corrupt").iterdir())  # the corrupt file is kept aside, not deleted


def signal_mid_download(env: dict[str, str], archive: Path, cwd: Path, signum: int) -> tuple[int, str]:
    """Sync, start `syncd archive`, send ``signum`` while a download is under
    way: its exit code and stderr."""
    assert run_cli(["run-once"], env, cwd).returncode == 0
    process = start_syncd(["archive"], env, cwd)
    try:
        wait_for(lambda: any((archive / "incoming").glob("*.part")), 30, "a download under way")
        process.send_signal(signum)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate()
    return process.returncode, stderr


def test_sigkill_while_archiving_leaves_no_partial_file_and_the_next_run_resumes(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    # Big files that arrive slowly: the kill lands mid-body.
    w = world(12, image_faults=ImageFaults(size=400_000, dribble=0.002))
    archive = tmp_path / "images"
    env = archive_env(w, db_url, archive, archive_max_in_flight="4")
    signal_mid_download(env, archive, tmp_path, signal.SIGKILL)
    assert list((archive / "incoming").glob("*.part"))  # killed mid-body: the partial file is only there
    for path in archive.glob("??/??/*"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name.split(".")[0]
    w.images.update_faults({"dribble": 0.0})
    resumed = run_cli(["archive"], env, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    stored = table(engine)
    assert stored and all(
        r.status == "archived" and r.sha256 == expected_sha256(r.url, 400_000) for r in stored
    )
    assert not list((archive / "incoming").iterdir())


def test_status_shows_the_archive_and_its_lag_and_exits_8_past_the_limit(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(20)
    env = archive_env(w, db_url, tmp_path / "images")
    assert run_cli(["run-once"], env, tmp_path).returncode == 0
    # No archive run yet: the sync recorded the images, pending; days-old artworks are late.
    never = run_cli(["status", "--max-archive-lag", "3600"], env, tmp_path)
    assert never.returncode == 8 and " 0 archived, " in never.stdout and "ARCHIVE LAGGING" in never.stderr
    assert run_cli(["archive"], env, tmp_path).returncode == 0  # discovers; all archived
    with db.writer(engine).begin() as conn:  # one image back to pending: its artwork is old
        key = conn.execute(select(files.c.artwork_id, files.c.expires_at).limit(1)).one()
        conn.execute(
            update(files)
            .where(files.c.artwork_id == key.artwork_id)
            .values(status="pending", next_attempt_at=datetime.now(UTC) + timedelta(hours=1))
        )
    status = run_cli(["status", "--json"], env, tmp_path)
    report = orjson.loads(status.stdout)["archive"]
    age = (datetime.now(UTC) - (key.expires_at - timedelta(days=8))).total_seconds()
    assert report["lag_seconds"] == pytest.approx(age, abs=5)
    assert report["files"]["pending"] >= 1 and report["files"]["archived"] >= 1
    text = run_cli(["status"], env, tmp_path).stdout
    assert "image archive" in text and "archive lag" in text
    assert run_cli(["status", "--max-archive-lag", str(age + 60)], env, tmp_path).returncode == 0
    lagging = run_cli(["status", "--max-archive-lag", str(age - 60)], env, tmp_path)
    assert lagging.returncode == 8 and "ARCHIVE LAGGING" in lagging.stderr


def test_archive_without_a_folder_is_a_configuration_error(tmp_path: Path, sqlite_url: str) -> None:
    env = syncd_env("http://127.0.0.1:9", sqlite_url)
    result = run_cli(["archive"], env, tmp_path)
    assert result.returncode == 3 and "SYNCD_ARCHIVE_DIR: not set" in result.stderr
    assert not os.path.exists(tmp_path / "syncd.db")


# ------------------------------------------------------------------ the daemon


def archived_count(engine: Engine) -> int:
    return sum(1 for r in table(engine) if r.status == "archived")


def test_the_daemon_archives_new_images_after_each_sync_and_shows_it_in_metrics(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    from tests.conftest import daemon, free_port

    w = world(30)
    port = free_port()
    # The archive's own interval is long: new images are archived because a sync found them.
    env = archive_env(
        w, db_url, tmp_path / "images", interval="1", archive_interval="3600", metrics_port=str(port)
    )
    with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
        wait_for(lambda: archived_count(engine) == len(referenced_urls(w)), 30, "the first images archived")
        with w.api.api.lock:
            w.dataset.add(5, live=True)
        wait_for(lambda: archived_count(engine) == len(referenced_urls(w)), 30, "the new artworks' images")
        # The gauges are set as a run ends, after its last commit.
        total = float(len(referenced_urls(w)))
        wait_for(
            lambda: metric(port, 'syncd_archive_files_total{status="archived"}') == total, 10, "the gauges"
        )
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert f'syncd_archive_files_total{{status="archived"}} {float(len(referenced_urls(w)))}' in metrics
    assert "syncd_archive_lag_seconds 0.0" in metrics and "syncd_archive_bytes_total" in metrics
    assert w.images.stats.authorization_seen == 0
    assert all(r.sha256 == expected_sha256(r.url) for r in table(engine))


def test_a_full_disk_stops_the_daemons_archive_with_one_line_and_the_sync_goes_on(
    sqlite_url: str, world: Callable[..., World], tmp_path: Path
) -> None:
    from tests.conftest import count, daemon, free_port

    w = world(30)
    port = free_port()
    env = archive_env(
        w, sqlite_url, tmp_path / "images", interval="1", archive_interval="0.3", metrics_port=str(port)
    )
    env["SYNCD_ARCHIVE_MIN_FREE_BYTES"] = "1000T"
    engine = db.create_db_engine(sqlite_url)
    db.upgrade(engine)
    try:
        with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
            wait_for(
                lambda: count(engine) == len(w.dataset.valid()),
                30,
                "the backfill",
            )
            with w.api.api.lock:
                w.dataset.add(3, live=True)
            wait_for(lambda: count(engine) == len(w.dataset.valid()), 30, "the next sync")
            wait_for(lambda: storage_runs(port) >= 3, 20, "three archive ticks without room")
            # The images wait: the lag is the age of the oldest artwork (days: the fake's week).
            oldest = min(datetime.fromisoformat(a.value["createdAt"]) for a in w.dataset.valid())
            lag = metric(port, "syncd_archive_lag_seconds")
            assert lag == pytest.approx((datetime.now(UTC) - oldest).total_seconds(), abs=30)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        log = (tmp_path / "daemon.log").read_text()
        assert log.count("image archive stopped") == 1, log  # said once while it lasts
        assert "SYNCD_ARCHIVE_MIN_FREE_BYTES" in log
        assert w.images.stats.requests == 0
        assert {r.status for r in table(engine)} == {"pending"}
    finally:
        engine.dispose()


def test_under_a_backlog_the_image_deleted_soonest_is_saved_first(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(40)
    # One download at a time: the order of fetching is the order of recording.
    env = archive_env(w, db_url, tmp_path / "images", archive_max_in_flight="1")
    sync_and_archive(env, tmp_path)
    stored = sorted(table(engine), key=lambda r: (r.fetched_at, r.expires_at))
    assert all(r.status == "archived" for r in stored)
    deadlines = [r.expires_at for r in stored]
    assert deadlines == sorted(deadlines)


def test_sigterm_mid_download_exits_130_with_nothing_partial_under_a_final_name(
    sqlite_url: str, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(12, image_faults=ImageFaults(size=400_000, dribble=0.002))
    archive = tmp_path / "images"
    env = archive_env(w, sqlite_url, archive, archive_max_in_flight="2")
    code, stderr = signal_mid_download(env, archive, tmp_path, signal.SIGTERM)
    assert code == 130, stderr
    assert "SIGTERM received" in stderr
    for path in archive.glob("??/??/*"):  # nothing partial under a final name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name.split(".")[0]
    engine = db.create_db_engine(sqlite_url)
    try:
        assert {r.status for r in table(engine)} <= {"pending", "archived"}
    finally:
        engine.dispose()


def test_an_error_nobody_foresaw_fails_that_image_and_the_others_are_archived(
    sqlite_url: str, world: Callable[..., World], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd import app
    from syncd.archive.fetch import ImageFetcher
    from tests.conftest import make_settings

    w = world(10)
    settings = make_settings(
        w.api.url, sqlite_url, archive_dir=str(tmp_path / "images"), archive_min_free_bytes="0"
    )
    app.run_once(settings)
    cursed = sorted(referenced_urls(w))[0]
    follow = ImageFetcher._follow

    def surprise(self: ImageFetcher, url: str, *args: Any) -> Any:
        if url == cursed:
            raise KeyError("a library's surprise")
        return follow(self, url, *args)

    monkeypatch.setattr(ImageFetcher, "_follow", surprise)
    for _ in range(2):  # and again: it never stops a later run
        result = app.archive(settings).result
        assert result.outcome == "success"
    engine = db.create_db_engine(sqlite_url)
    try:
        stored = {r.url: r for r in table(engine)}
    finally:
        engine.dispose()
    assert stored[cursed].status == "failed"
    assert stored[cursed].last_error == "unexpected error while fetching (KeyError)"
    assert all(r.status == "archived" for url, r in stored.items() if url != cursed)


def test_an_image_two_artworks_name_is_fetched_once(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(30)
    with w.api.api.lock:  # an upscaling of a generated image names that image as its input
        upscaling = next(a for a in w.dataset.valid() if a.value["artworkType"] == "upscaling")
        generated = next(a for a in w.dataset.valid() if a.value.get("results") and a is not upscaling)
        shared = generated.value["results"][0]
        upscaling.value = {
            **upscaling.value,
            "parameters": {**upscaling.value["parameters"], "imageUrl": shared},
        }
        upscaling._json = None
    sync_and_archive(archive_env(w, db_url, tmp_path / "images"), tmp_path)
    same = [r for r in table(engine) if r.url == shared]
    assert {r.role for r in same} == {"result", "input"}
    assert all(r.status == "archived" for r in same) and len({r.path for r in same}) == 1
    assert w.images.stats.served[image_path(shared)] == 1


def test_a_folder_that_is_not_the_archive_is_refused_and_nothing_changes(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(20)
    archive, env = synced_and_archived(w, db_url, tmp_path)
    before = table(engine)
    archive.rename(tmp_path / "elsewhere")  # as if its disk were not mounted
    archive.mkdir()
    for args in (["archive"], ["archive", "--verify"]):
        refused = run_cli(args, env, tmp_path)
        assert refused.returncode == 9, refused.stderr
        assert "is not the archive the database knows" in refused.stderr and "mounted" in refused.stderr
    assert table(engine) == before and w.images.stats.requests == len(before)


def refusal_of(text: str) -> str:
    """The words saying why the archive folder is refused, from a run's output or check's line."""
    start = text.index("the folder ")
    return text[start : text.index("--accept-missing`", start)]


def unmounted(archive: Path, swap: str) -> None:
    """The disk of ``archive`` not mounted: its mount point empty, or gone."""
    archive.rename(archive.parent / "elsewhere")
    if swap == "empty folder":
        archive.mkdir()


@pytest.mark.parametrize("swap", ["empty folder", "no folder"])
def test_check_refuses_a_folder_the_run_refuses_in_the_same_words_with_exit_9(
    swap: str, db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(20)
    archive, env = synced_and_archived(w, db_url, tmp_path)
    archived = sum(r.status == "archived" for r in table(engine))
    unmounted(archive, swap)
    refused = run_cli(["archive"], env, tmp_path)
    checked = run_cli(["check"], env, tmp_path)
    assert refused.returncode == 9, refused.stderr
    line = next(x for x in checked.stdout.splitlines() if x.startswith("archive"))
    assert checked.returncode == 9 and " PROBLEM " in line, checked.stdout + checked.stderr
    assert refusal_of(line) == refusal_of(refused.stderr)
    assert f"yet {archived:,} images are archived" in line


def test_check_says_a_new_folder_and_a_marked_one_are_fine(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(20)
    env = archive_env(w, db_url, tmp_path / "images")
    assert run_cli(["run-once"], env, tmp_path).returncode == 0
    (tmp_path / "images").mkdir()
    new = run_cli(["check"], env, tmp_path)
    assert new.returncode == 0 and "writable, no marker yet" in new.stdout, new.stdout + new.stderr
    assert run_cli(["archive"], env, tmp_path).returncode == 0
    marked = run_cli(["check"], env, tmp_path)
    assert marked.returncode == 0 and "writable, its marker present" in marked.stdout, marked.stdout


@pytest.mark.parametrize("swap", ["empty folder", "no folder"])
def test_a_refused_folder_is_left_as_it_was_by_the_run_verify_and_the_daemon(
    swap: str, db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    """Every archive job judges the folder (marker vs database) before it
    creates anything there: no lock file, no incoming/, no folder."""
    from syncd import app
    from syncd.config import load_settings
    from syncd.scheduler import Daemon

    w = world(20)
    archive, env = synced_and_archived(w, db_url, tmp_path)
    before = table(engine)
    unmounted(archive, swap)
    runs = [run_cli(args, env, tmp_path) for args in (["archive"], ["archive", "--verify"])]
    settings = load_settings(env=env, system_config_path=tmp_path / "none.toml")
    with pytest.raises(ArchiveStorageError, match="is not the archive the database knows"):
        app.archive_with(settings, engine)  # the daemon's job
    Daemon(settings)._archive_tick(engine)
    assert [r.returncode for r in runs] == [9, 9], [r.stderr for r in runs]
    if swap == "empty folder":
        assert sorted(p.name for p in archive.iterdir()) == []
    else:
        assert not archive.exists()
    assert table(engine) == before and w.images.stats.requests == len(before)


def test_an_accepted_folder_is_still_one_archivers_at_a_time(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    """Judged before it is locked, the folder is still worked in under its
    lock: a job of another database holding it keeps this one out."""
    from syncd.archive.files import ContentStore

    w = world(20)
    archive, env = synced_and_archived(w, db_url, tmp_path)
    with engine.begin() as conn:  # due again: a run would fetch them
        conn.execute(update(files).values(status="pending", next_attempt_at=None))
    before = table(engine)
    with ContentStore(archive).lock():
        held = run_cli(["archive"], env, tmp_path)
    assert held.returncode == 7 and "another syncd is archiving into" in held.stderr, held.stderr
    assert table(engine) == before


def test_verify_changes_nothing_when_most_files_are_missing_unless_told_they_are_lost(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(20)
    archive, env = synced_and_archived(w, db_url, tmp_path)
    before = table(engine)
    for path in archive.glob("??/??/*"):
        path.unlink()
    refused = run_cli(["archive", "--verify"], env, tmp_path)
    assert refused.returncode == 9 and "Nothing was changed" in refused.stderr
    assert table(engine) == before
    mended = run_cli(["archive", "--verify", "--accept-missing"], env, tmp_path)
    assert mended.returncode == 0, mended.stderr
    after = table(engine)
    assert all(r.status == "archived" and r.sha256 == expected_sha256(r.url) for r in after)
    assert all((archive / r.path).exists() for r in after)
