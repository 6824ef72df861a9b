"""Shared fixtures: databases on both dialects, the fake API, settings, the CLI.

PostgreSQL cases use the server named by SYNCD_TEST_POSTGRES_URL (for example
postgresql://postgres@127.0.0.1:5432/test); each test gets a database of its
own, created fresh and dropped afterwards. Without the variable they skip;
.ci/run sets it and fails when any of them skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from syncd import db
from syncd.config import Settings, load_settings
from syncd.fakeapi.data import Dataset
from syncd.fakeapi.images import ImageFaults, ImageServer
from syncd.fakeapi.server import FakeApi, FakeServer, Faults

PG_ENV = "SYNCD_TEST_POSTGRES_URL"
REPO = Path(__file__).resolve().parent.parent


def _pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        return None
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test."""
    admin_url = _pg_admin_url()
    if admin_url is None:
        if os.environ.get("SYNCD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{PG_ENV} is not set but SYNCD_REQUIRE_POSTGRES=1")
        pytest.skip(f"{PG_ENV} is not set")
    name = f"syncd_test_{uuid.uuid4().hex[:12]}"
    # No pool: a test may restart the server, and teardown must still connect.
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'syncd.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a migrated, empty database (both dialects)."""
    eng = db.create_db_engine(db_url)
    db.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def fake_api() -> Iterator[Callable[..., FakeServer]]:
    """Factory: fake_api(count, seed=..., faults=Faults(...), **dataset_options)."""
    servers: list[FakeServer] = []

    def start(
        count: int = 100,
        *,
        seed: int = 1,
        faults: Faults | None = None,
        api_key: str = "test-key",
        forbidden_keys: tuple[str, ...] = (),
        **dataset_options: Any,
    ) -> FakeServer:
        dataset = Dataset(count, seed, **dataset_options)
        server = FakeServer(
            FakeApi(dataset, api_key=api_key, forbidden_keys=forbidden_keys, faults=faults, seed=seed)
        ).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass
class World:
    api: FakeServer
    images: ImageServer

    @property
    def dataset(self) -> Dataset:
        return self.api.api.dataset


@pytest.fixture
def world() -> Iterator[Callable[..., World]]:
    """Factory: a fake API whose artworks are recent, and its image origin."""
    started: list[World] = []

    def start(
        count: int = 60,
        *,
        seed: int = 5,
        image_faults: ImageFaults | None = None,
        faults: Faults | None = None,
        days: float = 7,
        **dataset_options: Any,
    ) -> World:
        """``days``: the artworks are spread over that many days up to a minute ago."""
        images = ImageServer(faults=image_faults)
        now = datetime.now(UTC)
        dataset = Dataset(
            count,
            seed,
            start=now - timedelta(days=days),
            end=now - timedelta(minutes=1),
            image_origin=images.url,
            **dataset_options,
        )
        api = FakeServer(FakeApi(dataset, api_key="test-key", faults=faults, seed=seed))
        images.attach(api.api).start()
        found = World(api.start(), images)
        started.append(found)
        return found

    yield start
    for w in started:
        w.api.stop()
        w.images.stop()


def make_settings(api_url: str, database_url: str, **extra: str) -> Settings:
    env = {
        "SYNCD_API_URL": api_url,
        "SYNCD_API_KEY": "test-key",
        "SYNCD_DATABASE_URL": database_url,
        "SYNCD_MAX_REQUESTS_PER_SECOND": "1000",
        **{f"SYNCD_{k.upper()}": v for k, v in extra.items()},
    }
    return load_settings(env=env, system_config_path=Path("/nonexistent/syncd.toml"))


def syncd_env(api_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """Environment for a real `syncd` process (no SYNCD_* leaks in from the caller)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update(
        SYNCD_API_URL=api_url,
        SYNCD_API_KEY="test-key",
        SYNCD_DATABASE_URL=database_url,
        SYNCD_MAX_REQUESTS_PER_SECOND="1000",
    )
    env.update({f"SYNCD_{k.upper()}": v for k, v in extra.items()})
    return env


def run_syncd(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# Runs syncd's CLI and, at exit, writes the process's peak resident memory
# (VmHWM: the high-water mark of its own address space) to the file named by
# the first argument. Not ru_maxrss: that keeps the forked test process's size
# across the exec, so a child of a large pytest worker looks large.
_MEASURED_SYNCD = """
import atexit, runpy, sys
peak_file = sys.argv.pop(1)
def report():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(peak_file, "w") as out:
        out.write(peak)
atexit.register(report)
sys.argv[0] = "syncd"
runpy.run_module("syncd", run_name="__main__", alter_sys=True)
"""


def run_syncd_measured(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the real CLI in a child process; also its peak resident memory, in bytes."""
    peak_file = cwd / f"peak-rss-{uuid.uuid4().hex}.txt"
    result = subprocess.run(
        [sys.executable, "-c", _MEASURED_SYNCD, str(peak_file), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    peak_kib = int(peak_file.read_text())
    peak_file.unlink()
    return result, peak_kib * 1024


def start_syncd(
    args: list[str], env: dict[str, str], cwd: Path, *, new_session: bool = False
) -> subprocess.Popen[str]:
    """The real CLI in the background; stderr is kept for the test to read."""
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def backdate_checks(engine: Engine, hours: float = 24) -> None:
    """As if every stored artwork had last been answered ``hours`` ago: the
    unfinished ones are then due a re-check (their back-off is at most 6 h)."""
    from datetime import timedelta

    from sqlalchemy import select, update

    from syncd import store

    with db.writer(engine).begin() as conn:
        seen = conn.execute(select(store.artworks.c.id, store.artworks.c.last_seen_at)).all()
        for artwork_id, last_seen_at in seen:
            conn.execute(
                update(store.artworks)
                .where(store.artworks.c.id == artwork_id)
                .values(last_seen_at=last_seen_at - timedelta(hours=hours))
            )


# The S3 protocol server of the archive's object-store tests (moto, on loopback).
from tests.s3server import s3, s3_server  # noqa: E402, F401
