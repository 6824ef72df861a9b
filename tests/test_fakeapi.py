"""The fake API's data: what the tests and the benchmark rely on."""

from __future__ import annotations

from datetime import datetime, timedelta

from syncd.fakeapi.data import HORIZON, Dataset


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
