"""Shared fixtures: databases on both dialects, the fake API, settings, the CLI.

PostgreSQL cases use the server named by SYNCD_TEST_POSTGRES_URL (for example
postgresql://postgres@127.0.0.1:5432/test); each test gets a database of its
own, created fresh and dropped afterwards. Without the variable they skip;
.ci/run sets it and fails when any of them skipped.
"""

from __future__ import annotations

import atexit
import email.utils
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from syncd import db, store
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


def _end_calls_left_under_way(before: set[threading.Thread]) -> None:
    """A run in this process may end with requests under way: syncd drops
    their results, closes their connections, and their threads end on their
    own. Wait for those threads (started since ``before``), so that none is
    still running into the next test. Nothing is left to the garbage
    collector: a connection it found unclosed would be a ResourceWarning,
    an error wherever it happened to surface."""
    left = [
        thread
        for thread in threading.enumerate()
        if thread not in before and thread.name.startswith(("syncd-request", "syncd-archive"))
    ]
    deadline = time.monotonic() + 60
    for thread in left:
        thread.join(max(0.0, deadline - time.monotonic()))


_request_pools = [0]  # request thread pools (syncd.net.inflight.InFlight) made in this process


@pytest.fixture(scope="session", autouse=True)
def _count_request_pools() -> Iterator[None]:
    from syncd.net.inflight import InFlight

    made = InFlight.__init__

    def counted(self: InFlight, *args: Any, **kwargs: Any) -> None:
        _request_pools[0] += 1
        made(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(InFlight, "__init__", counted)
        yield


@pytest.fixture(autouse=True)
def _calls_left_under_way() -> Iterator[None]:
    """After each test, what its in-process runs (``run_once``, ``archive``)
    left under way (see ``_end_calls_left_under_way``); nothing to do for a
    test whose runs used no request threads."""
    before, pools = set(threading.enumerate()), _request_pools[0]
    yield
    if _request_pools[0] != pools:
        _end_calls_left_under_way(before)


_OUTSIDE = "('pg_catalog', 'information_schema', 'pg_toast')"
# What a schema consists of, as one digest: a database whose digest is the
# freshly migrated one's holds nothing a test added but rows.
_SCHEMA_DIGEST = f"""
SELECT md5(coalesce(string_agg(item, '|' ORDER BY item), '')) FROM (
  SELECT 'n ' || nspname AS item FROM pg_namespace
   WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
  UNION ALL SELECT 'c ' || table_schema || '.' || table_name || '.' || column_name || ' ' || data_type
         || ' ' || is_nullable || ' ' || coalesce(column_default, '')
    FROM information_schema.columns WHERE table_schema NOT IN {_OUTSIDE}
  UNION ALL SELECT 'i ' || indexdef FROM pg_indexes WHERE schemaname NOT IN {_OUTSIDE}
  UNION ALL SELECT 'k ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(c.oid)
    FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE nspname NOT IN {_OUTSIDE}
  UNION ALL SELECT 'r ' || c.relkind::text || ' ' || c.oid::regclass::text
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE nspname NOT IN {_OUTSIDE}
  UNION ALL SELECT 't ' || tgname FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL SELECT 'p ' || p.oid::regprocedure::text
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE nspname NOT IN {_OUTSIDE}
) AS items
"""


@dataclass
class _Migrated:
    """A freshly migrated database as it was: its schema's digest and its rows."""

    digest: str
    rows: dict[str, list[dict[str, Any]]]


@dataclass
class _PostgresDatabases:
    """The PostgreSQL databases of this session (of this xdist worker) that no
    test holds now: empty ones, and ones at the newest migration holding only
    what the migrations wrote. Creating a database costs the server ~0.2 s of
    CPU (it copies template1) and migrating one ~0.1 s; putting a used one
    back as it was, a fraction of that. All are dropped when the session ends."""

    empty: list[str] = field(default_factory=list)
    migrated: list[str] = field(default_factory=list)
    fresh: _Migrated | None = None


@pytest.fixture(scope="session")
def _postgres_databases() -> Iterator[_PostgresDatabases]:
    databases = _PostgresDatabases()
    yield databases
    admin_url = _pg_admin_url()
    if admin_url is None:
        return
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            for name in conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE :prefix"),
                {"prefix": f"{_pg_prefix()}%"},
            ).scalars():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _pg_prefix() -> str:
    """Names of this process's test databases start with this."""
    return f"syncd_test_{os.getpid()}_"


def end_other_connections(conn: Connection) -> None:
    """Terminate every other connection to ``conn``'s PostgreSQL database (what
    a server restart or a failover does to its clients; other databases are
    left alone)."""
    conn.execute(
        text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )


@contextmanager
def _alone_on(url: str) -> Iterator[Connection]:
    """A connection to the database at ``url``, every other one ended, and its
    own settings reset."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            end_other_connections(conn)
            name = conn.execute(text("SELECT current_database()")).scalar_one()
            conn.execute(text(f'ALTER DATABASE "{name}" RESET ALL'))
            yield conn
    finally:
        engine.dispose()


def _empty_database(url: str) -> None:
    """Make a used test database as a new one is: no schema but an empty ``public``."""
    with _alone_on(url) as conn:
        schemas = conn.execute(
            text(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
            )
        ).scalars()
        for schema in list(schemas):
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        conn.execute(text("CREATE SCHEMA public"))


def _tables(conn: Connection) -> list[str]:
    return list(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())


def _remember_fresh(url: str) -> _Migrated:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = {
                table: [dict(row._mapping) for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
                for table in _tables(conn)
            }
            return _Migrated(conn.execute(text(_SCHEMA_DIGEST)).scalar_one(), rows)
    finally:
        engine.dispose()


def _back_to_fresh(url: str, fresh: _Migrated) -> bool:
    """Put a migrated database back as it was freshly migrated, when the test
    changed only rows (False, changing nothing, when it changed more)."""
    with _alone_on(url) as conn:
        if conn.execute(text(_SCHEMA_DIGEST)).scalar_one() != fresh.digest:
            return False
        tables = ", ".join(f'"{table}"' for table in _tables(conn))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        for table, rows in fresh.rows.items():
            if rows:
                names = ", ".join(f'"{column}"' for column in rows[0])
                values = ", ".join(f":{column}" for column in rows[0])
                conn.execute(text(f'INSERT INTO "{table}" ({names}) VALUES ({values})'), rows)
        return True


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest, _postgres_databases: _PostgresDatabases) -> Iterator[str]:
    """A PostgreSQL database for this test alone: an empty one, or for a test
    that asks for ``engine`` one at the newest migration with only what the
    migrations wrote. Each is one this worker's earlier tests used, put back,
    or else a new one."""
    admin_url = _pg_admin_url()
    if admin_url is None:
        if os.environ.get("SYNCD_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{PG_ENV} is not set but SYNCD_REQUIRE_POSTGRES=1")
        pytest.skip(f"{PG_ENV} is not set")
    pool = _postgres_databases
    migrated = "engine" in request.fixturenames
    url_of = lambda name: make_url(admin_url).set(database=name).render_as_string(hide_password=False)  # noqa: E731
    if migrated and pool.migrated:
        name = pool.migrated.pop()
    else:
        if pool.empty:
            name = pool.empty.pop()
        elif pool.migrated:
            name = pool.migrated.pop()
            _empty_database(url_of(name))
        else:
            name = f"{_pg_prefix()}{uuid.uuid4().hex[:8]}"
            # No pool: a test may restart the server, and teardown must still connect.
            admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
            finally:
                admin.dispose()
        if migrated:
            migrating = db.create_db_engine(url_of(name))
            try:
                db.upgrade(migrating)
            finally:
                migrating.dispose()
            if pool.fresh is None:
                pool.fresh = _remember_fresh(url_of(name))
    url = url_of(name)
    yield url
    if pool.fresh is not None and _back_to_fresh(url, pool.fresh):
        pool.migrated.append(name)
    else:
        _empty_database(url)
        pool.empty.append(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'syncd.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file at the newest migration, made once per session: ``engine``
    copies it (Alembic takes ~30 ms of CPU to migrate an empty file)."""
    path = tmp_path_factory.mktemp("migrated") / "syncd.db"
    template = db.create_db_engine(f"sqlite:///{path}")
    try:
        db.upgrade(template)
        with template.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        template.dispose()
    return path


@pytest.fixture
def engine(db_url: str, _migrated_sqlite: Path) -> Iterator[Engine]:
    """An engine on a migrated, empty database (both dialects)."""
    path = db.sqlite_path(db_url)
    if path is not None and not path.exists():
        shutil.copyfile(_migrated_sqlite, path)
    eng = db.create_db_engine(db_url)
    if not db.schema_version(eng).up_to_date:
        db.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def _api_servers() -> Iterator[list[FakeServer]]:
    """The fake API servers of this session (of this xdist worker): started once,
    each test given a fresh API (data, faults, counters) on them by ``fake_api``.
    Starting and stopping a server per test cost ~50 ms each time."""
    servers: list[FakeServer] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def fake_api(_api_servers: list[FakeServer]) -> Iterator[Callable[..., FakeServer]]:
    """Factory: fake_api(count, seed=..., faults=Faults(...), **dataset_options).

    A shared server answers with the API given here: nothing of an earlier
    test's (its data, faults, counters, held requests) is left."""
    used = 0

    def start(
        count: int = 100,
        *,
        seed: int = 1,
        faults: Faults | None = None,
        api_key: str = "test-key",
        forbidden_keys: tuple[str, ...] = (),
        **dataset_options: Any,
    ) -> FakeServer:
        nonlocal used
        dataset = Dataset(count, seed, **dataset_options)
        api = FakeApi(dataset, api_key=api_key, forbidden_keys=forbidden_keys, faults=faults, seed=seed)
        if used < len(_api_servers):
            server = _api_servers[used]
            server.api = api
        else:
            server = FakeServer(api).start()
            _api_servers.append(server)
        used += 1
        return server

    yield start
    for server in _api_servers[:used]:
        # What the test left going (held requests, a client it killed) is
        # answered before the next test's API takes the server over.
        server.api.before_list = None
        server.api.release()
        wait_for(lambda server=server: server.api.in_flight == 0, 30, "the fake API's requests to end")  # type: ignore[misc]


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


def referenced_urls(w: World) -> set[str]:
    """Every image URL the fake's valid artworks reference (results and upscaling inputs)."""
    urls: set[str] = set()
    for artwork in w.dataset.valid():
        value = artwork.value
        urls.update(value.get("results") or [])
        if value.get("artworkType") == "upscaling" and value["parameters"].get("imageUrl"):
            urls.add(value["parameters"]["imageUrl"])
    return urls


def metric(port: int, name: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def storage_runs(port: int) -> float:
    return metric(port, 'syncd_archive_runs_total{outcome="storage"}')


def make_settings(api_url: str, database_url: str, **extra: str) -> Settings:
    env = {
        "SYNCD_API_URL": api_url,
        "SYNCD_API_KEY": "test-key",
        "SYNCD_DATABASE_URL": database_url,
        "SYNCD_MAX_REQUESTS_PER_SECOND": "1000",
        **{f"SYNCD_{k.upper()}": v for k, v in extra.items()},
    }
    return load_settings(env=env, system_config_path=Path("/nonexistent/syncd.toml"))


def clean_env(settings: dict[str, str]) -> dict[str, str]:
    """This process's environment with exactly ``settings`` for syncd (no SYNCD_* leaks in)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}, **settings}


def syncd_env(api_url: str, database_url: str, **extra: str) -> dict[str, str]:
    """Environment for a real `syncd` process (no SYNCD_* leaks in from the caller)."""
    env = clean_env({})
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
    """Run the real CLI in a child process. Only for what needs one (signals, locks
    between processes, a real process's exit status, memory); else ``run_cli``."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


_LOGGERS_SET_BY_SYNCD = ("httpx", "httpcore", "alembic", "apscheduler")


def invoke_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``run_cli`` with exactly ``env``'s settings over this process's environment."""
    return run_cli(list(args), clean_env(env))


def run_cli(
    args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (click's CliRunner), answering as ``run_syncd`` does.

    For everything that needs no process of its own: it saves the ~1.7 s of
    imports a ``python -m syncd`` costs. The environment is exactly ``env``
    (as for a child process) and the working directory ``cwd`` while the
    command runs; afterwards the environment, directory, logging and the
    stop signals' handlers (which the commands install) are as they were.
    An exception the command lets out is a traceback on stderr and exit
    status 1, as from ``python -m syncd``. ``timeout`` is accepted for the
    callers' sake; pytest-timeout bounds an in-process run.
    """
    from click.testing import CliRunner

    from syncd import signals
    from syncd.cli import cli

    del timeout
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_levels = {name: logging.getLogger(name).level for name in _LOGGERS_SET_BY_SYNCD}
    saved_signals = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS}
    # A wakeup fd that an earlier command left set (one run by CliRunner directly)
    # is a socket the next command closes: not one to put back.
    left_by_syncd = {wakeup.fileno() for wakeup in signals._wakeup}
    saved_wakeup = signal.set_wakeup_fd(-1)
    if saved_wakeup in left_by_syncd:
        saved_wakeup = -1
    signal.set_wakeup_fd(saved_wakeup)
    try:
        os.environ.clear()
        os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        threads = set(threading.enumerate())
        result = CliRunner().invoke(cli, args, prog_name="syncd")
        _end_calls_left_under_way(threads)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        signal.set_wakeup_fd(saved_wakeup)
        for signum, handler in saved_signals.items():
            signal.signal(signum, handler)
        while signals._wakeup:  # ends the command's signal watcher thread
            signals._wakeup.pop().close()
        atexit.unregister(signals._ignore_stop_signals)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess(["syncd", *args], result.exit_code, result.stdout, stderr)


# ------------------------------------------------------------ another user

SERVICE_UID = SERVICE_GID = 65534  # nobody: "the service's user", a user other than root on every Linux

as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the case is root meeting another user's files"
)


def service_folder(path: Path, mode: int = 0o750) -> Path:
    """A folder of the service's user (as StateDirectory= makes one)."""
    path.mkdir(mode=mode)
    os.chown(path, SERVICE_UID, SERVICE_GID)
    return path


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder other users can reach (pytest's is root's alone)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="syncd-owners-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


_readable_copy: list[Path] = []


def readable_migrations() -> Path:
    """The migrations, copied once where every user can read them: a checkout
    may lie in a folder only root can enter (mktemp -d, /root), where an
    installed wheel's would be readable."""
    if not _readable_copy:
        folder = Path(tempfile.mkdtemp(prefix="syncd-migrations-"))
        folder.chmod(0o755)
        atexit.register(shutil.rmtree, folder, True)
        copy = folder / "migrations"
        shutil.copytree(db.migrations_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
        _readable_copy.append(copy)
    return _readable_copy[0]


def become(uid: int, gid: int) -> None:
    """This process gives up root for ``uid`` (what `sudo -u` does), in ``/``
    and with migrations it can read (see readable_migrations): the checkout,
    the working directory of the tests, may be root's alone."""
    migrations = readable_migrations()
    db.migrations_dir = lambda: migrations  # type: ignore[assignment]  # a forked child's own copy
    os.chdir("/")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def run_as(uid: int, gid: int, work: Callable[[], object]) -> int:
    """``work`` in a child process that became ``uid`` (what `sudo -u` does),
    its exit status. In-process after a fork: the interpreter of this checkout
    may live where another user cannot read it (/root/.pyenv), so what the
    child runs must have been imported before."""
    readable_migrations()  # copied here, once: not in each child
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            become(uid, gid)
            work()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# What a command run as another user imports, imported before it gives up
# root (see run_as): the CLI's commands import their modules when they run.
_CLI_MODULES = (
    "sqlite3",
    "syncd.app",
    "syncd.check",
    "syncd.status",
    "syncd.store",
    "syncd.archive.rows",
    "syncd.archive.judge",
    "syncd.archive.files",
    "syncd.archive.job",
    "syncd.archive.verify",
    "syncd.archive.fetch",
    "syncd.sync.runs",
    "syncd.scheduler",
    "syncd.state",
)


def cli_as(uid: int, gid: int, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``invoke_cli`` as ``uid`` (what `sudo -u` does)."""
    return cli_in_child(*args, env=env, setup=lambda: become(uid, gid))


def cli_in_child(
    *args: str, env: dict[str, str], setup: Callable[[], object]
) -> subprocess.CompletedProcess[str]:
    """``invoke_cli`` in a forked child after ``setup`` (giving up root, a
    mount namespace of its own): its exit status, stdout and stderr."""
    import importlib
    import json

    for module in _CLI_MODULES:
        importlib.import_module(module)
    readable_migrations()  # copied here, once: not in each child
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            setup()
            result = invoke_cli(*args, env=env)
            answer = [result.returncode, result.stdout, result.stderr]
        except BaseException:
            answer = [1, "", traceback.format_exc()]
        with os.fdopen(write, "w") as pipe:
            pipe.write(json.dumps(answer))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        returncode, stdout, stderr = json.loads(pipe.read() or '[1, "", "the child said nothing"]')
    os.waitpid(pid, 0)
    return subprocess.CompletedProcess(["syncd", *args], returncode, stdout, stderr)


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


@contextmanager
def released_when(
    server: FakeServer, condition: Callable[[], bool], *, from_list: int = 0, timeout: float = 60
) -> Iterator[None]:
    """The API holds every request (unanswered) until ``condition`` holds, then
    answers as usual: for a test that needs, say, two requests in flight at
    once whatever the machine's speed. ``from_list``: the holding starts once
    that list request (1 for the first) is answered, not at once. If the
    condition never holds, all is released after ``timeout`` seconds and the
    test's own assertions tell."""
    if from_list:

        def hold_after(number: int) -> None:
            if number == from_list:
                server.api.hold()

        server.api.before_list = hold_after
    else:
        server.api.hold()
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline and not condition():
            time.sleep(0.005)
        server.api.before_list = None
        server.api.release()

    watcher = threading.Thread(target=watch, name="released-when", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        server.api.before_list = None
        server.api.release()


# ---------------------------------------------------------------- the wire


@dataclass
class Exchange:
    """One API request as this process's HTTP client saw it."""

    path: str
    sent: float  # time.monotonic() when the client began the request
    sent_wall: float  # time.time() then
    answered: float | None = None  # time.monotonic() when the client had the answer's head
    status: int | None = None
    retry_after: str | None = None


class Wire:
    """The API requests of syncd runs in this process (``run_cli``, ``run_once``),
    timed where the client is: when it sent each, when it had each answer.

    A request is early when the client sent it after it had read a 429 and
    before that 429's Retry-After was over: judged from the client's side, so
    a busy machine, slow to read, makes no request early or late.
    """

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    def begin(self, path: str) -> Exchange:
        exchange = Exchange(path, time.monotonic(), time.time())
        with self._lock:
            self.exchanges.append(exchange)
        return exchange

    def api(self) -> list[Exchange]:
        with self._lock:
            return [e for e in self.exchanges if e.path.startswith("/v1/")]

    def statuses(self) -> list[int | None]:
        return [e.status for e in self.api()]

    def early(self) -> list[Exchange]:
        """The requests sent while a Retry-After the client had read was running."""
        exchanges = self.api()
        quiet: list[tuple[float, float | None, float | None]] = []  # (read at, until: monotonic, wall)
        for e in exchanges:
            if e.status != 429 or e.answered is None or e.retry_after is None:
                continue
            value = e.retry_after.strip()
            if value.isdigit():
                quiet.append((e.answered, e.answered + int(value), None))
            else:
                try:
                    moment = email.utils.parsedate_to_datetime(value)
                except (TypeError, ValueError):
                    continue  # not a Retry-After ("inf"): it promises nothing
                quiet.append((e.answered, None, moment.timestamp()))
        return [
            e
            for e in exchanges
            if any(
                read <= e.sent and (e.sent < until if until is not None else e.sent_wall < (wall or 0.0))
                for read, until, wall in quiet
            )
        ]


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    """Every request an httpx transport of this process sends, timed (see ``Wire``)."""
    import httpx

    seen = Wire()
    original = httpx.HTTPTransport.handle_request

    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        exchange = seen.begin(request.url.path)
        response = original(self, request)
        exchange.answered = time.monotonic()
        exchange.status = response.status_code
        exchange.retry_after = response.headers.get("Retry-After")
        return response

    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", handle_request)
    return seen


# ---------------------------------------------------------------- the daemon


@contextmanager
def daemon(env: dict[str, str], cwd: Path, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "syncd", "daemon", *args],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(store.artworks.c.id)).all())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- API records

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def txt2img(**changes: Any) -> dict[str, Any]:
    record = {
        "id": ID,
        "artworkType": "txt2img",
        "parameters": {
            "model": "tengrai-20231128-m-d",
            "promptMode": "seer",
            "prompt": "cat",
            "negativePrompt": "dog",
            "style": "default",
            "creativity": 3,
            "details": 4,
            "aspectRatio": "1:1",
            "width": 1216,
            "height": 1216,
            "nsfw": False,
        },
        "duration": 12.5,
        "results": ["https://cdn/a.webp", "https://cdn/b.webp"],
        "status": "done",
        "createdAt": "2024-07-29T15:51:28.071Z",
    }
    record.update(changes)
    return record


def upscaling(**changes: Any) -> dict[str, Any]:
    record = {
        "id": "0b3c2a55-4c1e-4d8a-9a6e-1f2e3d4c5b6a",
        "artworkType": "upscaling",
        "parameters": {"imageUrl": "https://uploads/x.png", "scaleFactor": 4},
        "duration": 3,
        "results": ["https://cdn/up.webp"],
        "status": "failed",
        "createdAt": "2025-01-02T03:04:05+02:00",
    }
    record.update(changes)
    return record


# The S3 protocol server of the archive's object-store tests (moto, on loopback).
from tests.s3server import s3, s3_server  # noqa: E402, F401
