"""`syncd status` as a person reads it: what happened last, in the right words."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, update

from syncd import status, store
from syncd.app import run_once
from syncd.fakeapi.server import FakeServer
from tests.conftest import make_settings


def test_an_interruption_is_said_as_one_not_as_the_last_failure(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    server = fake_api(120, malformed_fraction=0)
    settings = make_settings(server.url, db_url, page_size="50")
    run_once(settings)
    run_once(settings)
    with engine.begin() as conn:  # the second run was stopped by a SIGTERM, say
        conn.execute(update(store.runs_table).where(store.runs_table.c.id == 2).values(outcome="interrupted"))
    report = status.collect(engine)
    assert report["last_failure"] is None and report["last_interruption"]["id"] == 2
    text = status.render(report)
    assert "last failure" not in text
    assert "interrupted   " in text and "run 2 incremental: stopped on request" in text
    run_once(settings)  # a success since: the interruption is history, not news
    assert "interrupted   " not in status.render(status.collect(engine))


def test_max_archive_lag_without_an_archive_is_a_configuration_error(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    import logging
    import os

    from click.testing import CliRunner

    from syncd.cli import cli

    server = fake_api(30, malformed_fraction=0)
    run_once(make_settings(server.url, db_url))  # synced without the archive
    clean = {name: None for name in os.environ if name.startswith("SYNCD_")}
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        result = CliRunner().invoke(
            cli, ["status", "--max-archive-lag", "3600"], env={**clean, "SYNCD_DATABASE_URL": db_url}
        )
    finally:
        root.handlers[:] = handlers
    assert result.exit_code == 3, result.output
    assert "--max-archive-lag" in result.output and "SYNCD_ARCHIVE_DIR" in result.output
    assert len(result.output.strip().splitlines()) == 1
