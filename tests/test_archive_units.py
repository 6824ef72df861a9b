"""The archive's pure decisions, its folder and its fetcher, alone (no database, no server)."""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from syncd.archive import verify
from syncd.archive.fetch import FetchFailure, FetchOptions, ImageFetcher
from syncd.archive.files import ContentStore, NotPlaceable
from syncd.archive.plan import (
    MAX_ATTEMPTS,
    RETRY_CAP,
    Due,
    Verdict,
    content_path,
    fetch_order,
    lag_seconds,
    media_type,
    retry_at,
    sniff_extension,
)
from syncd.errors import ArchiveStorageError, LockHeldError

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


def due(name: str, expires_in_hours: float) -> Due:
    return Due(name, "result", 0, f"https://img/{name}.png", NOW + timedelta(hours=expires_in_hours), 0)


# ------------------------------------------------------------------ plan


def test_the_image_deleted_soonest_goes_first_and_expired_ones_wait_behind() -> None:
    order = fetch_order([due("late", 100), due("dead-long", -50), due("soon", 1), due("dead-now", -1)], NOW)
    assert [d.artwork_id for d in order] == ["soon", "late", "dead-now", "dead-long"]


def test_retries_back_off_doubling_to_a_cap_then_stop() -> None:
    delays = [retry_at(n, NOW) for n in range(1, MAX_ATTEMPTS + 1)]
    assert delays[0] == NOW + timedelta(minutes=1) and delays[1] == NOW + timedelta(minutes=2)
    assert max(d for d in delays if d is not None) == NOW + RETRY_CAP
    assert delays[-1] is None


def test_lag_is_the_age_of_the_oldest_waiting_artwork() -> None:
    assert lag_seconds(None, NOW) == 0.0
    created = NOW - timedelta(days=3)
    assert lag_seconds(created + timedelta(days=8), NOW) == timedelta(days=3).total_seconds()


def test_a_file_is_what_its_bytes_say() -> None:
    assert sniff_extension(PNG[:16]) == ".png"
    assert sniff_extension(b"\xff\xd8\xff\xe0\x00\x10JFIF") == ".jpg"
    assert sniff_extension(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == ".webp"
    assert sniff_extension(b"<!DOCTYPE html>") is None
    assert media_type("Image/PNG; charset=x") == "image/png"
    assert media_type("image/png\r\nX-Evil: 1") is None and media_type(None) is None
    sha = hashlib.sha256(b"x").hexdigest()
    assert str(content_path(sha, ".png")) == f"{sha[:2]}/{sha[2:4]}/{sha}.png"
    with pytest.raises(ValueError):
        content_path("../../etc/passwd", ".png")


# ------------------------------------------------------------------ the folder


def test_a_file_appears_only_complete_and_identical_bytes_are_stored_once(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.prepare()
    with store.receive() as receiver:
        receiver.write(PNG[:100])
        assert not list(tmp_path.glob("??/??/*"))  # only in incoming/ so far
        receiver.write(PNG[100:])
        first = receiver.finish()
    with store.receive() as receiver:
        receiver.write(PNG)
        second = receiver.finish()
    assert first.new and not second.new and first.path == second.path
    assert (tmp_path / first.path).read_bytes() == PNG
    assert not list((tmp_path / "incoming").iterdir())
    assert verify.check(store, first.path, first.sha256, first.size) == "ok"
    (tmp_path / first.path).write_bytes(PNG + b"!")
    assert verify.check(store, first.path, first.sha256, first.size) == "corrupt"
    assert verify.check(store, "00/00/" + "0" * 64 + ".png", first.sha256, first.size) == "missing"
    assert verify.check(store, "../../etc/passwd", first.sha256, first.size) == "missing"  # never opened


def test_a_download_cut_off_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.prepare()

    def cut_off() -> None:
        with store.receive() as receiver:
            receiver.write(PNG)
            raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError):
        cut_off()
    assert not list((tmp_path / "incoming").iterdir()) and not list(tmp_path.glob("??/??/*"))


def test_a_full_disk_is_one_clear_error_and_removes_the_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ContentStore(tmp_path)
    store.prepare()

    class Full:
        """The partial file, on a disk that just filled up."""

        def __init__(self, real: object) -> None:
            self.real = real

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            self.real.close()  # type: ignore[attr-defined]

    def fill_the_disk() -> None:
        with store.receive() as receiver:
            receiver.write(PNG[:10])  # the file exists now
            receiver._handle = Full(receiver._handle)  # type: ignore[assignment]
            receiver.write(PNG[10:])

    with pytest.raises(ArchiveStorageError, match="is full"):
        fill_the_disk()
    assert not list((tmp_path / "incoming").iterdir())


def test_the_free_space_floor_stops_before_writing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path, min_free_bytes=1 << 62)
    with pytest.raises(ArchiveStorageError, match="SYNCD_ARCHIVE_MIN_FREE_BYTES"):
        store.check_room()


def test_one_job_per_folder_and_it_clears_what_a_dead_one_left(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    store.prepare()
    (tmp_path / "incoming" / "dead.part").write_bytes(b"half")
    with store.lock():
        assert not (tmp_path / "incoming" / "dead.part").exists()
        with pytest.raises(LockHeldError), ContentStore(tmp_path).lock():
            pass


# ------------------------------------------------------------------ the fetcher


class Body(httpx.SyncByteStream):
    """A body that arrives over the wire (a Response built with content= comes read already)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data


def answer_with(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:
    return httpx.Response(status, headers=headers, stream=Body(body))


class Clock:
    """Time that passes only when the fetcher sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def fetcher(
    tmp_path: Path,
    handler: httpx.MockTransport,
    clock: Clock | None = None,
    secrets: tuple[str, ...] = (),
    allow_private: bool = True,
) -> ImageFetcher:
    store = ContentStore(tmp_path, max_file_bytes=1 << 20)
    store.prepare()
    clock = clock or Clock()
    return ImageFetcher(
        store,
        FetchOptions(max_requests_per_second=1000, allow_private=allow_private),
        transport=handler,
        secrets=secrets,
        clock=lambda: clock.now,
        sleep=clock.sleep,
    )


def test_no_credential_ever_reaches_an_image_host_and_redirects_are_bounded(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        hops = int(request.url.params.get("hop", "0"))
        if hops < 3:
            return httpx.Response(
                302,
                headers={
                    "Location": f"https://other.example/x?hop={hops + 1}",
                    "Set-Cookie": "s=1; Domain=example",
                },
            )
        return answer_with(200, {"Content-Type": "image/png"}, PNG)

    got = fetcher(tmp_path, httpx.MockTransport(answer)).fetch("https://cdn.example/a.png")
    assert got.stored.sha256 == hashlib.sha256(PNG).hexdigest()
    assert len(seen) == 4
    assert all("authorization" not in r.headers and "cookie" not in r.headers for r in seen)


def test_too_many_redirects_and_https_to_http_are_refused(tmp_path: Path) -> None:
    loop = httpx.MockTransport(lambda r: httpx.Response(302, headers={"Location": "/again"}))
    with pytest.raises(FetchFailure, match="more than 5 redirects") as caught:
        fetcher(tmp_path, loop).fetch("https://cdn.example/a.png")
    assert caught.value.verdict is Verdict.FAILED
    down = httpx.MockTransport(
        lambda r: httpx.Response(301, headers={"Location": "http://cdn.example/a.png"})
    )
    with pytest.raises(FetchFailure, match="https to plain http"):
        fetcher(tmp_path, down).fetch("https://cdn.example/a.png")


@pytest.mark.parametrize(
    ("answer", "verdict", "reason"),
    [
        (httpx.Response(404), Verdict.GONE, "404 Not Found"),
        (httpx.Response(410), Verdict.GONE, "410 Gone"),
        (httpx.Response(503), Verdict.RETRY, "503 Service Unavailable (after 3 attempts)"),
        (httpx.Response(403), Verdict.FAILED, "403 Forbidden"),
        (
            answer_with(200, {"Content-Type": "text/html"}, b"<html>"),
            Verdict.FAILED,
            "not an image",
        ),
        (
            answer_with(200, {"Content-Type": "image/png"}, b"<html>"),
            Verdict.FAILED,
            "not an image",
        ),
        (
            httpx.Response(
                200, headers={"Content-Type": "image/png", "Content-Length": str(2 << 20)}, content=b""
            ),
            Verdict.FAILED,
            "larger than SYNCD_ARCHIVE_MAX_FILE_BYTES",
        ),
        (
            answer_with(200, {"Content-Type": "image/png"}, PNG * 400),
            Verdict.FAILED,
            "larger",
        ),
    ],
)
def test_what_each_answer_means(
    tmp_path: Path, answer: httpx.Response, verdict: Verdict, reason: str
) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return answer

    with pytest.raises(FetchFailure) as caught:
        fetcher(tmp_path, httpx.MockTransport(handler)).fetch("https://cdn.example/a.png")
    assert caught.value.verdict is verdict and reason in caught.value.reason
    assert len(calls) == (3 if verdict is Verdict.RETRY else 1)  # no retry storm on a 404
    assert not list((tmp_path / "incoming").iterdir())


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data",
        "http://2852039166/latest/meta-data",  # the same, as one number
        "http://0xa9fea9fe/latest/meta-data",
        "http://0251.0376.0251.0376/latest/meta-data",
        "http://169.254.43518/latest/meta-data",
        "http://[::ffff:169.254.169.254]/latest/meta-data",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
        "http://[fe80::1%25eth0]/a.png",
        "http://100.100.100.200/latest/meta-data",
        "http://[fd00:ec2::254]/latest/meta-data",
        "http://169.254.170.2/v2/credentials",
        "http://0.0.0.0:8080/a.png",
        "https://user:pw@cdn.example/a.png",
        "ftp://x/a.png",
        "not a url",
    ],
)
def test_urls_that_are_no_image_host_are_not_fetched(tmp_path: Path, url: str) -> None:
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))  # type: ignore[func-returns-value]
    with pytest.raises(FetchFailure) as caught:
        fetcher(tmp_path, transport).fetch(url)
    assert caught.value.verdict is Verdict.REFUSED and not sent


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.7/a.png", "http://127.0.0.1:8080/a.png", "http://[::1]/a.png", "http://localhost/a.png"],
)
def test_private_hosts_are_fetched_unless_the_operator_refuses_them(tmp_path: Path, url: str) -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return answer_with(200, {"Content-Type": "image/png"}, PNG)

    assert fetcher(tmp_path, httpx.MockTransport(answer)).fetch(url).stored.size == len(PNG)
    refusing = fetcher(tmp_path, httpx.MockTransport(answer), allow_private=False)
    with pytest.raises(FetchFailure, match="SYNCD_ARCHIVE_ALLOW_PRIVATE") as caught:
        refusing.fetch(url)
    assert caught.value.verdict is Verdict.REFUSED and len(sent) == 1


def test_a_429_is_waited_out_and_slows_the_pace(tmp_path: Path) -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "2"}),
            answer_with(200, {"Content-Type": "image/png"}, PNG),
        ]
    )
    clock = Clock()
    f = fetcher(tmp_path, httpx.MockTransport(lambda r: next(answers)), clock)
    host, other = f.host_pacer("https://cdn.example/a.png"), f.host_pacer("https://other.example/b.png")
    rate = host.limiter.rate
    assert f.fetch("https://cdn.example/a.png").stored.size == len(PNG)
    assert host.limiter.rate < rate  # that host's pace slowed...
    assert other.limiter.rate == rate and f.pacer.limiter.rate == rate  # ...and no other's
    assert clock.slept >= 2.0  # the second request went after the Retry-After


def test_a_declared_type_always_fits_its_column() -> None:
    longest = "image/" + "x" * 200
    assert media_type(longest) is None
    fits = "a" * 49 + "/" + "b" * 49
    assert media_type(fits) == fits and len(fits) < 100


@pytest.mark.parametrize(
    "url",
    [
        "http://a..b/x.png",  # an IDNA error inside httpx
        "http://xn--/x.png",
        "http://cdn.example/a\tb.png",
        "http://" + "x" * 70 + ".example/a.png",  # a DNS label over 63 characters
        "http://☃.example/" + "a" * 70_000,
    ],
)
def test_a_url_httpx_refuses_fails_that_image_and_nothing_else(tmp_path: Path, url: str) -> None:
    # The real transport: these fail as httpx encodes the host, before any connection.
    store = ContentStore(tmp_path)
    store.prepare()
    with pytest.raises(FetchFailure) as caught:
        ImageFetcher(store, FetchOptions(max_requests_per_second=1000)).fetch(url)
    assert caught.value.verdict is Verdict.REFUSED


@pytest.mark.parametrize("location", ["javascript:alert(1)", "http://xn--/x"])
def test_a_redirect_httpx_refuses_fails_that_image(tmp_path: Path, location: str) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(302, headers={"Location": location}))
    with pytest.raises(FetchFailure) as caught:
        fetcher(tmp_path, transport).fetch("https://cdn.example/a.png")
    assert caught.value.verdict is Verdict.REFUSED


def test_a_compressed_body_is_refused_never_inflated(tmp_path: Path) -> None:
    import gzip

    bomb = gzip.compress(bytes(64 << 20))  # 64 MiB of zeros in ~64 KiB
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer_with(200, {"Content-Type": "image/png", "Content-Encoding": "gzip, gzip"}, bomb)

    with pytest.raises(FetchFailure, match="compressed body"):
        fetcher(tmp_path, httpx.MockTransport(answer)).fetch("https://cdn.example/a.png")
    assert seen[0].headers["Accept-Encoding"] == "identity"


def test_a_url_that_carries_the_key_is_not_fetched_however_it_is_encoded(tmp_path: Path) -> None:
    sent: list[httpx.Request] = []
    transport = httpx.MockTransport(
        lambda r: sent.append(r) or answer_with(200, {"Content-Type": "image/png"}, PNG)
    )  # type: ignore[func-returns-value]
    from syncd.fakeapi.server import encoded_forms

    f = fetcher(tmp_path, transport, secrets=("demo-key-123",))
    urls = [f"https://cdn.example/a.png?k={form}" for form in encoded_forms("demo-key-123")]
    urls += [
        "https://cdn.example/a.png?k=demo%2Dkey%2D123",
        "https://cdn.example/a.png?k=demo%252Dkey%252D123",
    ]
    for url in urls:
        with pytest.raises(FetchFailure, match="carries the API key"):
            f.fetch(url)
    assert not sent


@pytest.mark.parametrize("allow_private", [True, False])
def test_a_host_that_resolves_to_the_metadata_service_is_not_talked_to(allow_private: bool) -> None:
    from syncd.archive.fetch import ForbiddenAddress, peer_check
    from syncd.net.deadline import _Backend

    def guarded(backend: object) -> _Backend:
        return _Backend(backend, peer_check(allow_private=allow_private))  # type: ignore[arg-type]

    class Stream:
        closed = False

        def __init__(self, peer: str) -> None:
            self.peer = peer

        def get_extra_info(self, info: str) -> object:
            return (self.peer, 80) if info == "server_addr" else None

        def close(self) -> None:
            self.closed = True

    class Backend:
        def __init__(self, peer: str) -> None:
            self.stream = Stream(peer)

        def connect_tcp(self, *args: object) -> Stream:
            return self.stream

    refused = ["169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254", "224.0.0.1", "100.100.100.200"]
    private = ["10.0.0.1", "127.0.0.1", "::1"]
    for peer in refused + ([] if allow_private else private):
        backend = Backend(peer)
        with pytest.raises(ForbiddenAddress):
            guarded(backend).connect_tcp("cdn.example", 80)  # type: ignore[arg-type]
        assert backend.stream.closed
    for peer in ["93.184.216.34", *(private if allow_private else [])]:
        assert guarded(Backend(peer)).connect_tcp("cdn.example", 80)  # type: ignore[arg-type]


def test_links_planted_inside_the_folder_are_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "user-data.part").write_bytes(b"not syncd's")
    root = tmp_path / "archive"
    store = ContentStore(root)
    store.prepare()
    (root / "incoming").rmdir()
    (root / "incoming").symlink_to(outside)
    with pytest.raises(ArchiveStorageError, match="symbolic link"), store.lock():
        pass
    assert (outside / "user-data.part").exists()  # not cleared through the link

    (root / "incoming").unlink()
    store.prepare()
    sha = hashlib.sha256(PNG).hexdigest()
    (root / sha[:2]).symlink_to(outside)  # a shard folder leading out

    with store.receive() as receiver:
        receiver.write(PNG)
        with pytest.raises(NotPlaceable, match="symbolic link"):  # that image fails, not the run
            receiver.finish()
    assert list(outside.iterdir()) == [outside / "user-data.part"]

    (root / sha[:2]).unlink()
    victim = outside / "victim"
    victim.write_bytes(b"x" * len(PNG))  # as large as the image: "already there" must not fool it
    (root / sha[:2] / sha[2:4]).mkdir(parents=True)
    (root / sha[:2] / sha[2:4] / f"{sha}.png").symlink_to(victim)
    with store.receive() as receiver:
        receiver.write(PNG)
        stored = receiver.finish()
    assert stored.new and not (root / stored.path).is_symlink()
    assert (root / stored.path).read_bytes() == PNG and victim.read_bytes() == b"x" * len(PNG)


def test_the_daemon_says_a_lasting_archive_problem_once_though_its_numbers_move(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from syncd.config import Settings
    from syncd.scheduler import Daemon

    daemon = Daemon(Settings())
    with caplog.at_level("ERROR", logger="syncd.daemon"):
        for free in ("77.1 GiB", "77.2 GiB", "1,024 bytes"):
            daemon._archive_trouble(f"image archive stopped: the folder has {free} free")
        daemon._archive_trouble("image archive stopped: the folder is not the archive")
    assert [r.getMessage() for r in caplog.records] == [
        "image archive stopped: the folder has 77.1 GiB free",
        "image archive stopped: the folder is not the archive",
    ]


def test_a_lock_file_that_is_a_link_is_refused_not_followed(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "archive")
    store.prepare()
    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / "archive" / ".lock").symlink_to(target)
    with pytest.raises(ArchiveStorageError, match="symbolic link"), store.lock():
        pass
    assert target.read_text() == "keep me"
