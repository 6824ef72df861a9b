"""The fake image origin and the dataset options the image archive's tests use."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from syncd.fakeapi.data import Dataset, FakeArtwork
from syncd.fakeapi.images import (
    CONTENT_TYPES,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    ImageFaults,
    ImageServer,
    expected_sha256,
    image_bytes,
    image_path,
)
from syncd.fakeapi.server import FakeApi, FakeServer, Faults

# sha256 of the JSON of Dataset(50, seed=3), one record a line, computed before
# image origins existed: without one, the data must not change by a byte.
DATASET_50_SEED_3 = "6c762969e131c637580fe2398685451578136b8b1360a2d846058609e2aecb94"

Serve = Callable[..., tuple[FakeServer, ImageServer]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Factory: serve(count, seed=..., faults=Faults(), image_faults=ImageFaults(), **dataset_options)."""
    running: list[tuple[FakeServer, ImageServer]] = []

    def start(
        count: int = 40,
        *,
        seed: int = 1,
        faults: Faults | None = None,
        image_faults: ImageFaults | None = None,
        **dataset_options: Any,
    ) -> tuple[FakeServer, ImageServer]:
        images = ImageServer(faults=image_faults)
        dataset = Dataset(count, seed, image_origin=images.url, **dataset_options)
        api = FakeApi(dataset, api_key="test-key", faults=faults, seed=seed)
        pair = FakeServer(api).start(), images.attach(api).start()
        running.append(pair)
        return pair

    yield start
    for api_server, images in running:
        images.stop()
        api_server.stop()


def image_urls(artworks: list[FakeArtwork]) -> list[str]:
    """Every URL the archive downloads: results, and the inputs of upscalings."""
    urls: list[str] = []
    for artwork in artworks:
        value = artwork.value
        if not isinstance(value, dict):
            continue
        results = value.get("results")
        if isinstance(results, list):
            urls.extend(u for u in results if isinstance(u, str))
        if value.get("artworkType") == "upscaling" and isinstance(value.get("parameters"), dict):
            urls.append(value["parameters"]["imageUrl"])
    return urls


# ---------------------------------------------------------------- pure


def test_image_bytes_are_deterministic_files_of_their_extension() -> None:
    magic = {".png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ".jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"}
    for extension in (".png", ".jpg", ".webp"):
        path = f"/artworks/abc/0{extension}"
        data = image_bytes(path)
        assert data == image_bytes(path)
        assert MIN_IMAGE_SIZE <= len(data) <= MAX_IMAGE_SIZE
        if extension == ".webp":
            assert data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8 "
            assert int.from_bytes(data[4:8], "little") == len(data) - 8
        else:
            assert data.startswith(magic[extension])
        assert len(image_bytes(path, 5_000_000)) == 5_000_000
    assert image_bytes("/uploads/1.png") != image_bytes("/uploads/2.png")
    assert {len(image_bytes(f"/uploads/{n}.webp")) for n in range(20)} != {MIN_IMAGE_SIZE}
    url = "http://127.0.0.1:1/uploads/7.png"
    assert image_path(url) == "/uploads/7.png"
    assert expected_sha256(url, 3000) == hashlib.sha256(image_bytes("/uploads/7.png", 3000)).hexdigest()


def test_without_an_image_origin_the_data_is_byte_identical() -> None:
    dataset = Dataset(50, seed=3)
    assert hashlib.sha256(b"\n".join(a.json() for a in dataset.items)).hexdigest() == DATASET_50_SEED_3


def test_an_image_origin_changes_only_the_image_urls() -> None:
    plain, served = Dataset(300, seed=5), Dataset(300, seed=5, image_origin="http://127.0.0.1:9/")
    assert [a.id for a in plain.items] == [a.id for a in served.items]
    urls = image_urls(served.items)
    assert urls and all(u.startswith("http://127.0.0.1:9/") for u in urls)
    assert {image_path(u).rsplit(".", 1)[1] for u in urls} == {"webp", "png", "jpg"}
    assert any("/uploads/" in u for u in urls)
    # Pending artworks finish with URLs of the same origin.
    pending = Dataset(30, seed=5, pending_fraction=1.0, image_origin="http://127.0.0.1:9")
    assert pending.finish_pending() == 30
    assert all(u.startswith("http://127.0.0.1:9/") for a in pending.items for u in a.value["results"])


def test_a_recent_account_lies_between_start_and_end() -> None:
    end = datetime(2026, 3, 1, 12, tzinfo=UTC)
    start = end - timedelta(days=7)
    dataset = Dataset(500, seed=2, start=start, end=end, malformed_fraction=0)
    times = [datetime.fromisoformat(a.value["createdAt"]) for a in dataset.items]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert start < times[0] < start + timedelta(days=1)
    assert end - timedelta(days=1) < times[-1] <= end
    crowded = Dataset(5000, seed=2, start=end - timedelta(seconds=60), end=end, malformed_fraction=0)
    times = [datetime.fromisoformat(a.value["createdAt"]) for a in crowded.items]
    assert len(set(times)) == len(times) and times[-1] <= end


def test_lookups_follow_additions_and_deletions() -> None:
    dataset = Dataset(100, seed=1)
    oldest = dataset.items[0]
    assert oldest.id is not None
    assert dataset.find(oldest.id) is oldest and dataset.find_index(oldest.index) is oldest
    dataset.delete_oldest(1)
    assert dataset.find(oldest.id) is None and dataset.find_index(oldest.index) is None
    (added,) = dataset.add(1, live=True)
    assert added.id is not None and dataset.find(added.id) is added
    dataset.items.remove(added)  # tests edit the list directly, too
    assert dataset.find(added.id) is None


def test_retention_spreads_the_historical_artworks_over_one_window() -> None:
    dataset = Dataset(100, seed=1)
    historical = list(dataset.items)
    t0 = 1_000_000.0
    assert dataset.expire(t0, 100.0) == []
    assert dataset.expire(t0 + 10.0, 100.0) == historical[:10]  # oldest first, 1 s apart
    assert dataset.expire(t0 + 10.5, 100.0) == []
    (live,) = dataset.add(1, live=True)
    assert live.created_wall is not None
    assert dataset.expire(t0 + 100.0, 100.0) == historical[10:]
    assert dataset.items == [live]
    assert dataset.expire(live.created_wall + 99.0, 100.0) == []
    assert dataset.expire(live.created_wall + 100.0, 100.0) == [live]
    assert dataset.expire(t0, 0.0) == []  # 0: off


def test_api_retention_expires_before_answering(serve: Serve) -> None:
    api_server, _ = serve(30, faults=Faults(retention=3600.0))
    dataset = api_server.api.dataset
    dataset.retention_started = time.time() - 1800  # half a window ago: half are gone
    with httpx.Client(base_url=api_server.url, headers={"Authorization": "Bearer test-key"}) as client:
        listed = client.get("/v1/artworks", params={"limit": 100}).json()
        assert 13 <= len(listed) <= 15
        assert len(dataset.items) == len(listed)
        dataset.retention_started = time.time() - 3600
        newest = listed[0]["id"]
        assert client.get(f"/v1/artworks/{newest}").status_code == 404


# ---------------------------------------------------------------- served


def test_images_are_served_while_their_artwork_lives(serve: Serve) -> None:
    api_server, images = serve(60)
    dataset = api_server.api.dataset
    urls = image_urls(dataset.items)
    assert any("/uploads/" in u for u in urls)
    with httpx.Client() as client:
        for url in urls:
            answer = client.get(url)
            assert answer.status_code == 200, url
            assert answer.headers["content-type"] == CONTENT_TYPES["." + url.rsplit(".", 1)[1]]
            assert hashlib.sha256(answer.content).hexdigest() == expected_sha256(url)
        unknown = images.url + "/artworks/00000000-0000-4000-8000-000000000000/0.webp"
        assert client.get(unknown).status_code == 404
        first = next(a for a in dataset.items if a.value.get("results"))
        assert client.get(f"{images.url}/artworks/{first.id}/9.webp").status_code == 404
        with api_server.api.lock:
            gone = dataset.delete_oldest(20)
        for url in image_urls(gone):
            assert client.get(url).status_code == 404
    stats = images.stats
    assert stats.served[image_path(urls[-1])] == 1
    assert stats.by_status[200] == len(urls) and stats.authorization_seen == 0
    assert stats.bytes_sent >= sum(len(image_bytes(image_path(u))) for u in urls)


def test_expired_artworks_lose_their_images(serve: Serve) -> None:
    api_server, _ = serve(20, faults=Faults(retention=3600.0))
    dataset = api_server.api.dataset
    urls = image_urls(dataset.items[:1]) + image_urls(dataset.items[-1:])
    dataset.retention_started = time.time() - 3600 * 0.99  # all but the newest are due
    with httpx.Client() as client:
        assert client.get(urls[0]).status_code == 404
        assert client.get(urls[-1]).status_code == 200
    assert len(dataset.items) == 1


def test_per_url_faults_pick_the_same_urls_every_time(serve: Serve) -> None:
    faults = ImageFaults(gone=0.3, wrong_type=0.3, redirect=0.3, size=4096)
    api_server, images = serve(60, image_faults=faults)
    urls = image_urls(api_server.api.dataset.items)
    with httpx.Client() as client:
        first = [client.get(u) for u in urls]
        again = [client.get(u) for u in urls]
        assert [a.status_code for a in first] == [a.status_code for a in again]
        statuses = {a.status_code for a in first}
        assert statuses == {200, 302, 404}
        html = [a for a in first if a.headers.get("content-type") == "text/html"]
        assert html and all(a.status_code == 200 and b"<html>" in a.content for a in html)
        for url, answer in zip(urls, first, strict=True):
            if answer.status_code == 302:
                assert answer.headers["location"] == "/r" + image_path(url)
                followed = client.get(url, follow_redirects=True)
                assert followed.status_code == 200
                assert hashlib.sha256(followed.content).hexdigest() == expected_sha256(url, 4096)
            elif answer.status_code == 200 and answer not in html:
                assert len(answer.content) == 4096
    assert images.stats.by_status[404] == 2 * sum(a.status_code == 404 for a in first)


def test_transient_failures_then_the_image(serve: Serve) -> None:
    api_server, images = serve(10, image_faults=ImageFaults(fail_first=2))
    url = image_urls(api_server.api.dataset.items)[0]
    with httpx.Client() as client:
        assert [client.get(url).status_code for _ in range(4)] == [503, 503, 200, 200]
        images.update_faults({"fail_first": 1})  # counts start again
        assert [client.get(url).status_code for _ in range(2)] == [503, 200]


def test_rate_limit_and_cross_host_redirect(serve: Serve) -> None:
    api_server, images = serve(10, image_faults=ImageFaults(rate_limit=0.5))
    url = image_urls(api_server.api.dataset.items)[0]
    with httpx.Client() as client:
        assert client.get(url).status_code == 200  # the burst
        limited = client.get(url)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        images.update_faults({"rate_limit": 0, "redirect_to": "http://elsewhere.example"})
        moved = client.get(url)
        assert moved.status_code == 302
        assert moved.headers["location"] == "http://elsewhere.example" + image_path(url)


def test_a_request_with_credentials_is_counted(serve: Serve) -> None:
    api_server, images = serve(10)
    url = image_urls(api_server.api.dataset.items)[0]
    with httpx.Client() as client:
        client.get(url)
        client.get(url, headers={"Authorization": "Bearer test-key"})
        client.get(url, headers={"Cookie": "session=1"})
        stats = client.get(images.url + "/_fake/stats").json()
        assert stats["authorization_seen"] == 2 and stats["requests"] == 3
        assert client.post(images.url + "/_fake/faults", json={"gone": 1.0}).json()["gone"] == 1.0
        assert client.get(url).status_code == 404
        assert client.post(images.url + "/_fake/faults", json={"nonsense": 1}).status_code == 400
        client.post(images.url + "/_fake/reset-stats")
        assert client.get(images.url + "/_fake/stats").json()["requests"] == 0


def test_truncated_and_reset_answers(serve: Serve) -> None:
    api_server, images = serve(10, image_faults=ImageFaults(truncated=1.0, size=10_000))
    url = image_urls(api_server.api.dataset.items)[0]
    with httpx.Client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(url)
        images.update_faults({"truncated": 0.0, "reset": 1.0})
        with pytest.raises(httpx.TransportError):
            client.get(url)
    assert images.stats.served[image_path(url)] == 0
    assert images.stats.bytes_sent == 5_000
