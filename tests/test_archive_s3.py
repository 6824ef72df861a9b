"""The archive in an S3-compatible bucket, against a real S3 protocol server
on loopback (moto in server mode; tests/s3server.py says how to use MinIO)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from syncd.archive import rows, verify
from syncd.archive.s3 import ObjectStore
from syncd.archive.store import CORRUPT, MISSING, OK, NotAnImage, StoreBusy
from syncd.errors import ArchiveStorageError
from syncd.locations import bucket_url
from tests.conftest import World, count, daemon, run_cli, storage_runs, syncd_env, wait_for
from tests.s3server import S3, SECRET, FaultyS3, free_port

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
files = rows.files


def put(store: ObjectStore, body: bytes) -> Any:
    with store.receive() as upload:
        for start in range(0, len(body), 1000):
            upload.write(body[start : start + 1000])
        return upload.finish()


def test_an_image_is_put_once_under_its_content_address_with_its_checksum(s3: S3) -> None:
    store = ObjectStore(bucket_url(s3.url))
    store.prepare()
    first = put(store, PNG)
    digest = hashlib.sha256(PNG).hexdigest()
    assert first.sha256 == digest and first.new and first.size == len(PNG)
    assert first.path == f"{digest[:2]}/{digest[2:4]}/{digest}.png"
    again = put(store, PNG)  # the same bytes: If-None-Match refuses a second write
    assert not again.new and again.path == first.path
    assert s3.keys() == [f"archive/{first.path}"]
    head = s3.server.client().head_object(
        Bucket=s3.bucket, Key=f"archive/{first.path}", ChecksumMode="ENABLED"
    )
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(PNG).digest()).decode()
    assert head["ContentType"] == "image/png"
    if s3.server.requests() is not None:
        assert s3.puts()[(f"archive/{first.path}", 200)] == 1
        assert s3.puts()[(f"archive/{first.path}", 412)] == 1
    with store.receive() as upload:
        upload.write(b"<html>not an image</html>")
        with pytest.raises(NotAnImage):
            upload.finish()
    assert len(s3.keys()) == 1  # nothing is put for what is no image


def test_verify_looks_at_each_object_and_deep_reads_it_again(s3: S3) -> None:
    store = ObjectStore(bucket_url(s3.url))
    kept = put(store, PNG)
    assert store.check(kept.path, kept.sha256, kept.size) == OK
    assert store.check(kept.path, kept.sha256, kept.size, deep=True) == OK
    assert verify.check(store, kept.path, kept.sha256, kept.size) == OK
    assert store.check("00/00/" + "0" * 64 + ".png", kept.sha256, kept.size) == MISSING
    assert store.check("../../etc/passwd", kept.sha256, kept.size) == MISSING  # never asked for
    # Other bytes under its name (of its size), without a checksum: only a deep look sees it.
    client = s3.server.client()
    client.put_object(Bucket=s3.bucket, Key=f"archive/{kept.path}", Body=PNG[:-1] + b"\x00")
    assert store.check(kept.path, kept.sha256, kept.size) == OK
    assert store.check(kept.path, kept.sha256, kept.size, deep=True) == CORRUPT
    # With a checksum that is not its name's: a HEAD sees it.
    other = PNG[:-1] + b"\x01"
    client.put_object(
        Bucket=s3.bucket,
        Key=f"archive/{kept.path}",
        Body=other,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=base64.b64encode(hashlib.sha256(other).digest()).decode(),
    )
    assert store.check(kept.path, kept.sha256, kept.size) == CORRUPT
    assert store.set_aside(kept.path)
    assert store.check(kept.path, kept.sha256, kept.size) == MISSING
    assert [k for k in s3.keys() if k.startswith("archive/corrupt/")]


def test_the_marker_says_the_prefix_is_the_archive(s3: S3) -> None:
    store = ObjectStore(bucket_url(s3.url))
    assert not store.marked()
    store.mark()
    store.mark()  # already there: fine
    assert store.marked() and "archive/.syncd-archive" in s3.keys()


# ------------------------------------------------------------------ failures: one line each


def faulty(
    s3: S3, monkeypatch: pytest.MonkeyPatch, rule: Callable[[str, str], tuple[int, str] | None]
) -> FaultyS3:
    if s3.server.log is None:
        pytest.skip("faults are injected before the moto server only")
    proxy = FaultyS3(s3.server.endpoint, rule).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    return proxy


def prepare_and_mark(store: ObjectStore) -> None:
    store.prepare()  # a HEAD: its answer has no body, only its status
    store.mark()  # a PUT: its answer says the code


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        (lambda m, p: (403, "InvalidAccessKeyId"), "refused the credentials (HTTP 403)"),
        (
            lambda m, p: (403, "AccessDenied") if m == "PUT" else None,
            "refused the credentials (AccessDenied, HTTP 403)",
        ),
        (
            lambda m, p: (403, "SignatureDoesNotMatch") if m == "PUT" else None,
            "refused the credentials (SignatureDoesNotMatch",
        ),
        (lambda m, p: (404, "NoSuchBucket") if m == "PUT" else None, "does not exist"),
    ],
    ids=["head-refused", "denied", "wrong-secret", "no-bucket"],
)
def test_a_store_that_cannot_be_used_is_one_line_naming_no_credential(
    s3: S3, monkeypatch: pytest.MonkeyPatch, rule: Any, words: str
) -> None:
    proxy = faulty(s3, monkeypatch, rule)
    try:
        with pytest.raises(
            ArchiveStorageError, match=words.replace("(", r"\(").replace(")", r"\)")
        ) as caught:
            prepare_and_mark(ObjectStore(bucket_url(s3.url)))
    finally:
        proxy.stop()
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message and "AKIATESTSYNCD" not in message
    assert caught.value.exit_code == 9


def test_an_unreachable_store_and_a_missing_bucket_are_said_at_once(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ArchiveStorageError, match="does not exist"):
        ObjectStore(bucket_url(f"s3://syncd-no-such-bucket-{free_port()}/p")).prepare()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    with pytest.raises(ArchiveStorageError, match="cannot be reached"):
        ObjectStore(bucket_url(s3.url)).prepare()


@pytest.mark.parametrize("code", [(403, "QuotaExceeded"), (507, "XMinioStorageFull")], ids=lambda c: c[1])
def test_a_full_store_stops_the_put_with_one_line(
    s3: S3, monkeypatch: pytest.MonkeyPatch, code: tuple[int, str]
) -> None:
    proxy = faulty(s3, monkeypatch, lambda m, p: code if m == "PUT" else None)
    try:
        with pytest.raises(ArchiveStorageError, match="is full"):
            put(ObjectStore(bucket_url(s3.url)), PNG)
    finally:
        proxy.stop()
    assert s3.keys() == []


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        ((400, "BadDigest"), "NotStored", "did not arrive as hashed"),
        ((400, "EntityTooLarge"), "NotStored", "larger than the object store takes"),
        ((501, "NotImplemented"), "ArchiveStorageError", "does not support what syncd needs"),
    ],
    ids=["bad-digest", "too-large", "no-conditional-put"],
)
def test_what_one_object_or_the_store_cannot_take_is_told_apart(
    s3: S3, monkeypatch: pytest.MonkeyPatch, fault: tuple[int, str], error: str, words: str
) -> None:
    """One object refused: that image fails (a later run); a store that cannot
    do a conditional put with a checksum: the run stops, exit 9."""
    from syncd.archive import store as seam

    expected = {"NotStored": seam.NotStored, "ArchiveStorageError": ArchiveStorageError}[error]
    proxy = faulty(s3, monkeypatch, lambda m, p: fault if m == "PUT" else None)
    try:
        with pytest.raises(expected, match=words):
            put(ObjectStore(bucket_url(s3.url)), PNG)
    finally:
        proxy.stop()


def test_slow_down_is_retried_with_back_off_then_left_for_a_later_run(
    s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    answered = {"n": 0}

    def twice(method: str, path: str) -> tuple[int, str] | None:
        if method == "PUT":
            answered["n"] += 1
            if answered["n"] <= 2:
                return (503, "SlowDown")
        return None

    proxy = faulty(s3, monkeypatch, twice)
    try:
        kept = put(ObjectStore(bucket_url(s3.url)), PNG)
        assert kept.new and answered["n"] == 3  # two 503s, then the put
        proxy.rule = lambda m, p: (503, "SlowDown") if m == "PUT" else None
        with pytest.raises(StoreBusy, match="asked to slow down"):
            put(ObjectStore(bucket_url(s3.url), attempts=2), PNG + b"x")
    finally:
        proxy.stop()


# ------------------------------------------------------------------ end to end


def s3_env(w: World, database_url: str, s3: S3, **extra: str) -> dict[str, str]:
    env = syncd_env(
        w.api.url,
        database_url,
        archive_url=s3.url,
        archive_max_requests_per_second="1000",
        **extra,
    )
    env.update(s3.env())
    return env


def test_syncd_archives_into_the_bucket_and_verify_mends_it(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path, s3: S3
) -> None:
    w = world(40)
    env = s3_env(w, db_url, s3)
    assert run_cli(["run-once"], env, tmp_path).returncode == 0
    done = run_cli(["archive"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    with engine.connect() as conn:
        archived = conn.execute(
            select(files.c.url, files.c.sha256, files.c.path, files.c.store).where(
                files.c.status == "archived"
            )
        ).all()
    assert archived and {r.store for r in archived} == {s3.url}
    keys = set(s3.keys())
    assert {f"archive/{r.path}" for r in archived} | {"archive/.syncd-archive"} == keys
    assert not list(tmp_path.glob("**/*.part"))

    status = run_cli(["status"], env, tmp_path)
    assert f"archive store     {s3.url} (configured)" in status.stdout, status.stdout
    assert SECRET not in status.stdout + status.stderr + done.stdout + done.stderr

    checked = run_cli(["check"], env, tmp_path)
    assert "answers, the credentials taken, its marker present" in checked.stdout, checked.stdout

    lost = archived[0]
    s3.server.client().delete_object(Bucket=s3.bucket, Key=f"archive/{lost.path}")
    mended = run_cli(["archive", "--verify", "--deep"], env, tmp_path)
    assert mended.returncode == 0, mended.stderr
    assert "1 missing" in mended.stdout and f"archive/{lost.path}" in s3.keys()


def test_a_prefix_without_the_marker_is_refused_by_the_run_and_by_check_in_the_same_words(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path, s3: S3
) -> None:
    """The bucket's marker gone while the database says images are archived
    there (another bucket or prefix under the same name): as a folder's,
    refused by the run and by check, exit 9, and nothing is put there."""
    w = world(10)
    env = s3_env(w, db_url, s3)
    assert run_cli(["run-once"], env, tmp_path).returncode == 0
    assert run_cli(["archive"], env, tmp_path).returncode == 0
    s3.server.client().delete_object(Bucket=s3.bucket, Key="archive/.syncd-archive")
    kept = s3.keys()
    refused = run_cli(["archive", "--verify"], env, tmp_path)
    checked = run_cli(["check"], env, tmp_path)
    assert refused.returncode == 9 and "is not the archive the database knows" in refused.stderr, (
        refused.stderr
    )
    line = next(x for x in checked.stdout.splitlines() if x.startswith("archive"))
    assert checked.returncode == 9 and " PROBLEM " in line, checked.stdout + checked.stderr
    said = line[line.index("the bucket ") :]
    assert said in refused.stderr, (said, refused.stderr)
    assert s3.keys() == kept


def test_a_missing_bucket_stops_the_archive_with_exit_9_and_marks_nothing(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path, s3: S3
) -> None:
    w = world(10)
    env = s3_env(w, db_url, s3)
    env["SYNCD_ARCHIVE_URL"] = "s3://syncd-no-such-bucket-here/p"
    assert run_cli(["run-once"], env, tmp_path).returncode == 0
    done = run_cli(["archive"], env, tmp_path)
    assert done.returncode == 9, done.stderr
    assert "the bucket syncd-no-such-bucket-here does not exist" in done.stderr
    with engine.connect() as conn:
        assert conn.execute(select(files.c.status).where(files.c.status != "pending")).first() is None


def test_an_object_put_before_a_crash_is_found_by_its_claim_and_not_fetched_again(
    db_url: str, engine: Engine, world: Callable[..., World], tmp_path: Path, s3: S3
) -> None:
    """A server hashed an image, claimed its key in the row, put the object and
    died before recording it: the next run (this server's or the standby's)
    looks at the key and records the image, without a request to its host.
    A claim whose object never arrived is fetched as usual."""
    from syncd import app
    from syncd.fakeapi.images import expected_sha256, image_bytes, image_path
    from tests.conftest import make_settings

    w = world(6)
    settings = make_settings(w.api.url, db_url, archive_url=s3.url, archive_max_requests_per_second="1000")
    app.run_once(settings)
    with engine.connect() as conn:
        pending = conn.execute(select(files.c.url).order_by(files.c.url)).scalars().all()
    put_one, lost_one = pending[0], pending[1]
    store = ObjectStore(bucket_url(s3.url))
    kept = put(store, image_bytes(image_path(put_one)))
    assert kept.sha256 == expected_sha256(put_one)
    with engine.begin() as conn:
        for url, path in ((put_one, kept.path), (lost_one, "00/00/" + "0" * 64 + ".png")):
            rows.claim(conn, url, s3.url, path, kept.sha256, kept.size, "image/png")
    before = dict(w.images._url_requests)
    result = app.archive(settings).result
    assert result.outcome == "success"
    after = w.images._url_requests
    assert after[image_path(put_one)] == before.get(image_path(put_one), 0)  # found by its claim
    assert after[image_path(lost_one)] == before.get(image_path(lost_one), 0) + 1  # its object never came
    with engine.connect() as conn:
        states = {
            r.url: r for r in conn.execute(select(files.c.url, files.c.status, files.c.path, files.c.store))
        }
    assert states[put_one].status == "archived" and states[put_one].path == kept.path
    assert states[lost_one].status == "archived" and states[lost_one].store == s3.url
    assert all(r.status == "archived" for r in states.values())


def test_the_store_is_described_without_credentials(s3: S3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://keyid:hunter2secret@minio.example:9000/")
    described = ObjectStore(bucket_url(s3.url)).describe()
    assert described == f"the bucket {s3.url} at https://minio.example:9000"


def test_a_store_that_refuses_stops_the_daemons_archive_with_one_line_and_the_sync_goes_on(
    sqlite_url: str, world: Callable[..., World], tmp_path: Path, s3: S3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused credentials (403 to every request): the daemon says it once, marks
    nothing and fetches nothing; its syncs go on. Mended, the images come."""
    import signal

    from syncd import db

    refused = {"on": True}
    proxy = faulty(s3, monkeypatch, lambda m, p: (403, "InvalidAccessKeyId") if refused["on"] else None)
    w = world(20)
    port = free_port()
    env = s3_env(w, sqlite_url, s3, interval="1", archive_interval="0.3", metrics_port=str(port))
    env["AWS_ENDPOINT_URL"] = proxy.endpoint
    engine = db.create_db_engine(sqlite_url)
    db.upgrade(engine)
    try:
        with daemon(env, tmp_path, tmp_path / "daemon.log") as process:
            wait_for(lambda: count(engine) == len(w.dataset.valid()), 30, "the backfill")
            with w.api.api.lock:
                w.dataset.add(3, live=True)
            wait_for(lambda: count(engine) == len(w.dataset.valid()), 30, "the next sync")
            wait_for(lambda: storage_runs(port) >= 3, 20, "three archive ticks refused")
            assert w.images.stats.requests == 0
            with engine.connect() as conn:
                assert set(conn.execute(select(files.c.status)).scalars()) == {"pending"}
            refused["on"] = False

            def all_archived() -> bool:
                with engine.connect() as conn:
                    return set(conn.execute(select(files.c.status)).scalars()) == {"archived"}

            wait_for(all_archived, 30, "the images once the store takes them")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
        log = (tmp_path / "daemon.log").read_text()
        assert log.count("refused the credentials") == 1, log  # said once while it lasts
        assert "image archive working again" in log
        assert SECRET not in log and "AKIATESTSYNCD" not in log
    finally:
        proxy.stop()
        engine.dispose()


def test_check_tries_the_bucket(sqlite_url: str, world: Callable[..., World], tmp_path: Path, s3: S3) -> None:
    w = world(3)
    env = s3_env(w, sqlite_url, s3)
    env["SYNCD_ARCHIVE_URL"] = "s3://syncd-no-such-bucket-at-all/p"
    checked = run_cli(["check"], env, tmp_path)
    assert checked.returncode == 9, checked.stdout
    line = next(x for x in checked.stdout.splitlines() if x.startswith("archive"))
    assert "PROBLEM" in line and "the bucket syncd-no-such-bucket-at-all does not exist" in line
