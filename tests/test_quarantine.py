"""A record quarantined is warned of once: later runs that see it again count it, quietly."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from syncd.app import run_once
from syncd.fakeapi.data import Dataset
from syncd.fakeapi.server import FakeServer
from syncd.metrics import Metrics
from tests.conftest import make_settings


def test_new_rejections_are_warned_of_and_old_ones_only_counted(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], caplog: pytest.LogCaptureFixture
) -> None:
    """ "N records failed validation" came on every incremental run for records
    quarantined long before (13 warnings in 2.5 minutes of daemon)."""
    server = fake_api(300, malformed_fraction=0, unknown_fraction=0)
    for artwork, kind in zip(
        server.api.dataset.items[-3:], ("bad_uuid", "bad_created_at", "not_an_object"), strict=True
    ):
        Dataset._break(artwork, kind)  # on the newest page: every incremental run reads them
    settings = make_settings(server.url, db_url, page_size="100")
    metrics = Metrics()
    caplog.set_level(logging.WARNING, logger="syncd.sync.engine")
    for run in range(3):
        caplog.clear()
        summary = run_once(settings).summaries[0]
        metrics.record_run(summary, 0.0)
        warnings = [r.getMessage() for r in caplog.records if "failed validation" in r.getMessage()]
        if run == 0:
            assert summary.rejected_new == 3 and warnings == [
                f"run {summary.run_id}: 3 new records failed validation and are in rejected_records"
            ]
        else:
            assert summary.mode == "incremental" and summary.counts.rejected == 3
            assert summary.rejected_new == 0 and summary.rejected_again == 3 and warnings == []
    assert metrics.registry.get_sample_value("syncd_rejected_records_total", {"kind": "new"}) == 3
    assert metrics.registry.get_sample_value("syncd_rejected_records_total", {"kind": "again"}) == 6
