"""A hostile disk: files planted in the archive folder by anyone who can write there.

Whatever is planted (a link to a device, a FIFO, a shard folder that leads
out, a marker that is a dangling link, a hard link of other bytes at a content
address), the archive never reads without bound, never blocks, never writes,
moves or removes anything outside its folder, and one planted name fails the
image it stands for, never the run.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from syncd import app, db
from syncd.archive import rows, verify
from syncd.archive.files import ContentStore, NotPlaceable
from syncd.archive.plan import content_path, sniff_extension
from syncd.config import Settings
from syncd.errors import ArchiveStorageError, Interrupted
from syncd.fakeapi.images import image_bytes, image_path
from tests.conftest import World, make_settings

files = rows.files
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def settings_for(w: World, database_url: str, archive: Path, **extra: str) -> Settings:
    return make_settings(
        w.api.url,
        database_url,
        archive_dir=str(archive),
        archive_min_free_bytes="0",
        archive_max_requests_per_second="1000",
        **extra,
    )


def stored_rows(database_url: str) -> list[Any]:
    engine = db.create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(select(files).order_by(files.c.artwork_id, files.c.role, files.c.position))
            )
    finally:
        engine.dispose()


def address_of(url: str) -> str:
    """Where the archive puts the image the fake serves at ``url``."""
    body = image_bytes(image_path(url))
    extension = sniff_extension(body[:16])
    assert extension is not None
    return str(content_path(hashlib.sha256(body).hexdigest(), extension))


def finishes(work: Callable[[], Any], seconds: float = 60) -> Any:
    """Run ``work`` on a thread; fail (instead of hanging the suite) when it
    has not returned after ``seconds``: a guard, the verdict is what it returns."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "still running: it read without bound or blocked"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.fixture
def archived(
    sqlite_url: str, world: Callable[..., World], tmp_path: Path
) -> tuple[World, Settings, Path, list[Any]]:
    """A small archive, every image archived: the world, the settings, the folder, the rows."""
    w = world(12)
    archive = tmp_path / "images"
    settings = settings_for(w, sqlite_url, archive)
    app.run_once(settings)
    app.archive(settings)
    stored = [r for r in stored_rows(sqlite_url) if r.status == "archived"]
    assert stored
    return w, settings, archive, stored


# ------------------------------------------------------------------ verify


def test_verify_of_a_final_name_linked_to_a_device_ends_and_calls_it_corrupt(
    archived: tuple[World, Settings, Path, list[Any]],
) -> None:
    _, settings, archive, stored = archived
    victim = archive / stored[0].path
    victim.unlink()
    victim.symlink_to("/dev/zero")  # hashed forever before
    outcome = finishes(lambda: app.archive(settings, app.ArchiveOptions(verify=True)))
    assert outcome.verified.corrupt == [stored[0].path]
    assert not (archive / stored[0].path).is_symlink()  # fetched again, a plain file now
    assert (archive / stored[0].path).read_bytes() == image_bytes(image_path(stored[0].url))


def test_verify_of_a_fifo_at_a_final_name_does_not_block(
    archived: tuple[World, Settings, Path, list[Any]],
) -> None:
    _, settings, archive, stored = archived
    victim = archive / stored[0].path
    victim.unlink()
    os.mkfifo(victim)  # open() blocked forever before: no writer ever comes
    outcome = finishes(lambda: app.archive(settings, app.ArchiveOptions(verify=True)))
    assert outcome.verified.corrupt == [stored[0].path]
    assert (archive / stored[0].path).read_bytes() == image_bytes(image_path(stored[0].url))


def test_verify_reads_at_most_the_recorded_size_and_one_byte(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.prepare()
    with store.receive() as receiver:
        receiver.write(PNG)
        kept = receiver.finish()
    with (tmp_path / kept.path).open("ab") as grow:  # a gigabyte more, sparse
        grow.truncate(1 << 30)
    reads: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        reads.append(len(data))
        return data

    os_read = pytest.MonkeyPatch()
    os_read.setattr(os, "read", counting_read)
    try:
        assert verify.check(store, kept.path, kept.sha256, kept.size) == "corrupt"
    finally:
        os_read.undo()
    assert sum(reads) <= kept.size + 1


def test_verify_hears_a_stop_request_inside_one_large_file(tmp_path: Path) -> None:
    store = ContentStore(tmp_path, max_file_bytes=64 << 20)
    store.prepare()
    body = PNG + bytes(8 << 20)
    with store.receive() as receiver:
        receiver.write(body)
        kept = receiver.finish()

    class StopAfterFirstChunk:
        """A stop request that arrives while the file is being hashed."""

        calls = 0

        def is_set(self) -> bool:
            self.calls += 1
            return self.calls > 1

    stop = StopAfterFirstChunk()
    with pytest.raises(Interrupted):
        verify.check(store, kept.path, kept.sha256, kept.size, stop=stop)  # type: ignore[arg-type]
    assert stop.calls == 2  # asked before each chunk: it stopped at the second


def test_verify_never_moves_a_file_from_outside_through_a_linked_shard_folder(
    archived: tuple[World, Settings, Path, list[Any]], tmp_path: Path
) -> None:
    _, settings, archive, stored = archived
    shard = Path(stored[0].path).parts[0]
    outside = tmp_path / "outside"
    (archive / shard).rename(outside)  # the real shard is outside now, and the name a link to it
    (archive / shard).symlink_to(outside)
    theirs = outside / Path(stored[0].path).relative_to(shard)
    theirs.write_bytes(b"someone else's file, of other bytes")
    before = sorted(p.relative_to(outside) for p in outside.rglob("*"))

    outcome = finishes(lambda: app.archive(settings, app.ArchiveOptions(verify=True)))
    assert outcome.result.outcome == "success"
    assert theirs.read_bytes() == b"someone else's file, of other bytes"  # not moved, not read as ours
    assert sorted(p.relative_to(outside) for p in outside.rglob("*")) == before
    # The images under the link are not in the archive: each failed with the reason, the run went on.
    after = stored_rows(settings.database_url)
    linked = [r for r in after if r.status != "archived"]
    assert linked and all("symbolic link" in (r.last_error or "") for r in linked)
    assert all(Path(r.path or address_of(r.url)).parts[0] == shard for r in linked)
    assert any(r.status == "archived" for r in after)


# ------------------------------------------------------------------ the marker


def test_the_marker_is_never_written_through_a_dangling_link(
    sqlite_url: str, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(5)
    archive = tmp_path / "images"
    archive.mkdir()
    target = tmp_path / "outside" / "planted"
    target.parent.mkdir()
    (archive / ".syncd-archive").symlink_to(target)  # dangling: the write would create it
    settings = settings_for(w, sqlite_url, archive)
    app.run_once(settings)
    with pytest.raises(ArchiveStorageError, match=r"\.syncd-archive"):
        app.archive(settings)
    assert not target.exists()


# ------------------------------------------------------------------ writing


def test_a_hard_link_of_other_bytes_at_a_content_address_is_not_taken_for_the_image(
    sqlite_url: str, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(5)
    archive = tmp_path / "images"
    settings = settings_for(w, sqlite_url, archive)
    app.run_once(settings)
    url = sorted({r.url for r in stored_rows(sqlite_url)} or _urls(w))[0]
    address = archive / address_of(url)
    address.parent.mkdir(parents=True)
    outside = tmp_path / "outside-file"
    size = len(image_bytes(image_path(url)))
    outside.write_bytes(b"x" * size)  # other bytes, the same size
    os.link(outside, address)

    app.archive(settings)
    row = next(r for r in stored_rows(sqlite_url) if r.url == url)
    assert row.status == "archived"
    assert hashlib.sha256((archive / row.path).read_bytes()).hexdigest() == row.sha256
    assert outside.read_bytes() == b"x" * size  # replaced at the address, not written into


def _urls(w: World) -> set[str]:
    urls: set[str] = set()
    for artwork in w.dataset.valid():
        urls.update(artwork.value.get("results") or [])
    return urls


def test_one_planted_link_fails_that_image_with_the_reason_and_never_the_run(
    sqlite_url: str, world: Callable[..., World], tmp_path: Path
) -> None:
    w = world(20)
    archive = tmp_path / "images"
    settings = settings_for(w, sqlite_url, archive)
    app.run_once(settings)
    urls = sorted(_urls(w))
    shard = address_of(urls[0]).split("/")[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    archive.mkdir()
    (archive / shard).symlink_to(outside)  # a shard folder leading out

    result = app.archive(settings).result
    assert result.outcome == "success"
    assert list(outside.iterdir()) == []  # nothing written through the link
    stored = stored_rows(sqlite_url)
    linked = [r for r in stored if address_of(r.url).split("/")[0] == shard]
    assert linked and all(r.status == "failed" for r in linked)
    assert all("symbolic link" in r.last_error and r.next_attempt_at is not None for r in linked)
    assert all(r.status == "archived" for r in stored if r not in linked)

    (archive / shard).unlink()  # the operator removes it: the images are archived at a later run
    engine = db.create_db_engine(sqlite_url)
    try:
        with db.writer(engine).begin() as conn:
            conn.execute(
                files.update().where(files.c.status == "failed").values(next_attempt_at=files.c.discovered_at)
            )
    finally:
        engine.dispose()
    app.archive(settings)
    assert all(r.status == "archived" for r in stored_rows(sqlite_url))


def test_a_link_at_a_shard_folder_is_refused_for_that_file_alone(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    store = ContentStore(root)
    store.prepare()
    outside = tmp_path / "outside"
    outside.mkdir()
    sha = hashlib.sha256(PNG).hexdigest()
    (root / sha[:2]).symlink_to(outside)
    with store.receive() as receiver:
        receiver.write(PNG)
        with pytest.raises(NotPlaceable, match="symbolic link"):
            receiver.finish()
    assert list(outside.iterdir()) == []
    assert not list((root / "incoming").iterdir())  # the partial file removed
