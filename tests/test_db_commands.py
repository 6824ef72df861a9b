"""`syncd db reset-state`: the cursors forgotten, every row kept, the next run a backfill."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, func, select

from syncd import store
from syncd.app import run_once
from syncd.fakeapi.server import FakeServer
from tests.conftest import invoke_cli, make_settings


def artworks(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(store.artworks)).scalar_one())


def test_reset_state_asks_for_yes_then_forgets_the_cursors_and_keeps_the_rows(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer]
) -> None:
    server = fake_api(250, malformed_fraction=0)
    settings = make_settings(server.url, db_url, page_size="100")
    run_once(settings)
    stored = artworks(engine)
    env = {"SYNCD_DATABASE_URL": db_url}
    asked = invoke_cli("db", "reset-state", env=env)
    assert asked.returncode == 2 and "--yes" in (asked.stdout + asked.stderr)
    with engine.connect() as conn:
        assert store.load_state(conn, "artworks").phase == "idle"  # nothing forgotten yet
    done = invoke_cli("db", "reset-state", "--yes", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the next run is a backfill" in (done.stdout + done.stderr)
    assert artworks(engine) == stored
    summary = run_once(settings).summaries[0]
    assert summary.mode == "backfill" and summary.counts.inserted == 0
    assert summary.counts.unchanged == stored
