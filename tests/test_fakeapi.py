"""The fake API's data: what the tests and the benchmark rely on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import httpx

from syncd.fakeapi.data import HORIZON, Dataset
from syncd.fakeapi.server import FakeServer


def created_at(dataset: Dataset) -> list[datetime]:
    return [
        datetime.fromisoformat(a.value["createdAt"]) for a in dataset.valid() if isinstance(a.value, dict)
    ]


def test_a_large_account_still_ends_in_the_past() -> None:
    # As many records as fit 1-600 s apart in ten days, ten times over.
    dataset = Dataset(15_000, seed=9, start=HORIZON - timedelta(days=10), malformed_fraction=0)
    times = created_at(dataset)
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[-1] <= HORIZON  # syncd would reject dates ahead of its clock


def test_small_accounts_keep_their_gaps_and_are_reproducible() -> None:
    one, again = Dataset(500, seed=4), Dataset(500, seed=4)
    assert [a.value for a in one.items] == [a.value for a in again.items]
    gaps = [(b - a).total_seconds() for a, b in zip(created_at(one), created_at(one)[1:], strict=False)]
    assert max(gaps) > 300  # 1-600 s apart, as before large accounts shrank them


def test_stats_count_the_distinct_artworks_list_answers_carried_since_the_reset(
    fake_api: Callable[..., FakeServer],
) -> None:
    """The wire benchmark's refresh needs them: an artwork a list page carried
    is checked, and no GET for it is owed."""
    server = fake_api(250)
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer test-key"}) as client:
        for skip in (0, 0, 99):  # the first page twice, then one overlapping it by an artwork
            assert client.get("/v1/artworks", params={"skip": skip, "limit": 100}).status_code == 200
        artwork_id = client.get("/v1/artworks", params={"skip": 240, "limit": 1}).json()[0]["id"]
        assert client.get(f"/v1/artworks/{artwork_id}").status_code == 200  # by id: not listed
        stats = client.get("/_fake/stats").json()
        assert stats["list_requests"] == 4 and stats["artworks_listed"] == 200
        client.post("/_fake/reset-stats")
        assert client.get("/_fake/stats").json()["artworks_listed"] == 0
