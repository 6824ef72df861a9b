"""One user for every command: root is refused in state another user owns
(the service's), and the documented way, as that user, works."""

from __future__ import annotations

import ctypes
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from syncd import db
from syncd.app import run_once
from syncd.errors import InstallError
from syncd.fakeapi.server import FakeServer
from syncd.owners import foreign_state, sqlite_state
from tests.conftest import (
    SERVICE_GID,
    SERVICE_UID,
    as_root,
    become,
    clean_env,
    cli_as,
    cli_in_child,
    invoke_cli,
    make_settings,
    run_as,
    run_syncd,
    service_folder,
)


def test_only_root_in_another_users_state_is_a_problem(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    owner = mine.stat().st_uid
    assert foreign_state([mine / "syncd.db"], euid=owner if owner else 1000) is None
    if owner == 0:  # root in root's own state
        assert foreign_state([mine / "syncd.db", mine / "images" / "new"], euid=0) is None


@as_root
def test_a_database_file_of_roots_in_another_users_folder_is_roots(tmp_path: Path) -> None:
    folder = service_folder(tmp_path / "shared")
    database = folder / "root.db"
    database.touch()  # root's
    assert foreign_state(sqlite_state(database), euid=0) is None
    os.chown(database, SERVICE_UID, SERVICE_GID)
    assert "uid 65534" in (foreign_state(sqlite_state(database), euid=0) or "")


@as_root
def test_root_is_refused_in_the_services_database_folder_and_creates_nothing(
    tmp_path: Path, fake_api: Callable[..., FakeServer]
) -> None:
    state = service_folder(tmp_path / "state")
    server = fake_api(20)
    env = {
        "SYNCD_API_URL": server.url,
        "SYNCD_API_KEY": "test-key",
        "SYNCD_DATABASE_URL": f"sqlite:///{state / 'syncd.db'}",
    }
    for command in (["run-once"], ["db", "upgrade"]):
        result = invoke_cli(*command, env=env)
        assert result.returncode == 3, (command, (result.stdout + result.stderr))
        line = (result.stdout + result.stderr).strip()
        assert "\n" not in line and "uid 65534" in line and "sudo -u" in line, line
    assert list(state.iterdir()) == []  # no lock, no -wal, no database of root's
    assert server.api.list_log == []
    # Through a link, as /var/lib/syncd under a DynamicUser: the folder's owner counts.
    link = tmp_path / "link"
    link.symlink_to(state)
    linked = invoke_cli("run-once", env={**env, "SYNCD_DATABASE_URL": f"sqlite:///{link / 'syncd.db'}"})
    assert linked.returncode == 3 and "uid 65534" in (linked.stdout + linked.stderr), (
        linked.stdout + linked.stderr
    )
    # syncd check creates nothing: root may run it.
    checked = invoke_cli("check", env=env)
    assert "belongs to" not in (checked.stdout + checked.stderr), checked.stdout + checked.stderr
    assert list(state.iterdir()) == []
    # A container that runs as root says so.
    allowed = invoke_cli("run-once", env={**env, "SYNCD_ALLOW_ROOT": "true"})
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def root_database_and(tmp_path: Path, server: FakeServer, *, archive: Path) -> dict[str, str]:
    """Settings with a database of root's own (allowed) and the archive at ``archive``."""
    return {
        "SYNCD_API_URL": server.url,
        "SYNCD_API_KEY": "test-key",
        "SYNCD_DATABASE_URL": f"sqlite:///{tmp_path / 'root.db'}",
        "SYNCD_ARCHIVE_DIR": str(archive),
    }


@as_root
def test_root_is_refused_in_the_services_archive_folder(
    tmp_path: Path, fake_api: Callable[..., FakeServer]
) -> None:
    images = service_folder(tmp_path / "images")
    server = fake_api(20, malformed_fraction=0)
    # The archive would be created inside the service's folder.
    env = root_database_and(tmp_path, server, archive=images / "archive")
    assert invoke_cli("run-once", env=env).returncode == 0
    result = invoke_cli("archive", env=env)
    assert result.returncode == 3 and "uid 65534" in (result.stdout + result.stderr), (
        result.stdout + result.stderr
    )
    assert list(images.iterdir()) == []


@as_root
def test_the_documented_way_runs_as_the_owner_and_leaves_only_its_files(
    tmp_path: Path, open_tmp: Path, fake_api: Callable[..., FakeServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = service_folder(open_tmp / "state")
    server = fake_api(50, malformed_fraction=0)
    # Everything a run imports, imported before the child gives up root; the
    # migrations, which a run reads, where the service's user can read them
    # (an installed wheel's are; a checkout may lie in a folder of root's alone).
    run_once(make_settings(server.url, f"sqlite:///{tmp_path / 'warm.db'}"))
    readable = open_tmp / "migrations"
    shutil.copytree(db.migrations_dir(), readable, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(db, "migrations_dir", lambda: readable)
    settings = make_settings(server.url, f"sqlite:///{state / 'syncd.db'}")
    assert run_as(SERVICE_UID, SERVICE_GID, lambda: run_once(settings)) == 0
    created = list(state.iterdir())
    assert any(path.name == "syncd.db" for path in created)
    assert all(path.lstat().st_uid == SERVICE_UID for path in created), [
        (path.name, path.lstat().st_uid) for path in created
    ]
    # And the service's user goes on where it left off: its files are its own.
    server.api.dataset.add(5)
    assert run_as(SERVICE_UID, SERVICE_GID, lambda: run_once(settings)) == 0


@as_root
def test_migrations_another_user_cannot_read_are_a_clear_error(
    open_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout in root's own folder, run by the service's user: one line
    # that says what and where, exit code 3, not a traceback from Alembic.
    package = open_tmp / "checkout" / "syncd"
    shutil.copytree(
        db.migrations_dir(), package.parent / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    package.mkdir()
    (package.parent / "migrations").chmod(0o700)
    monkeypatch.setattr(db, "PACKAGE_DIR", package)

    find_migrations = db.migrations_dir  # run_as gives its child a readable copy of them instead

    def read_migrations() -> None:
        with pytest.raises(InstallError) as refused:
            find_migrations()
        assert refused.value.exit_code == 3
        assert f"{package.parent / 'migrations'} cannot be read (uid {SERVICE_UID})" in str(refused.value)

    assert run_as(SERVICE_UID, SERVICE_GID, read_migrations) == 0
    assert db.migrations_dir() == package.parent / "migrations"  # root reads them


def services_database(state: Path, server: FakeServer) -> dict[str, str]:
    """A synced database of the service's user in ``state`` (root syncs it, as
    a container allowed to would, and gives the files away), and the settings
    that name it."""
    env = {
        "SYNCD_API_URL": server.url,
        "SYNCD_API_KEY": "test-key",
        "SYNCD_DATABASE_URL": f"sqlite:///{state / 'syncd.db'}",
    }
    made = invoke_cli("run-once", env={**env, "SYNCD_ALLOW_ROOT": "true"})
    assert made.returncode == 0, made.stdout + made.stderr
    for path in state.iterdir():
        if path.name.endswith(".lock"):
            path.unlink()  # as if the service's user had made the database
        else:
            os.chown(path, SERVICE_UID, SERVICE_GID)
    return env


def owned(folder: Path) -> dict[str, tuple[int, int]]:
    """What is in ``folder``: each name, its owner and its size."""
    return {path.name: (path.lstat().st_uid, path.lstat().st_size) for path in folder.iterdir()}


@as_root
def test_root_is_refused_by_every_command_that_writes_and_the_service_goes_on(
    open_tmp: Path, fake_api: Callable[..., FakeServer]
) -> None:
    # The operator's case: `db reset-state --yes` as root left root's lock
    # file in the service's folder, and the service could not start again.
    state = service_folder(open_tmp / "state", 0o755)
    server = fake_api(20, malformed_fraction=0)
    env = services_database(state, server)
    before = owned(state)
    archived = {**env, "SYNCD_ARCHIVE_DIR": str(state / "images")}
    for command in (
        ["db", "reset-state", "--yes"],
        ["db", "reset-state"],
        ["db", "upgrade"],
        ["run-once"],
        ["run-once", "--full"],
        ["archive"],
        ["archive", "--verify"],
    ):
        result = invoke_cli(*command, env=archived if command[0] == "archive" else env)
        line = (result.stdout + result.stderr).strip()
        assert result.returncode == 3, (command, line)
        assert "\n" not in line and "uid 65534" in line and "One user for every command" in line, line
        assert owned(state) == before, command  # nothing created, nothing written
    # The daemon in a process of its own: should it start, it ends at the timeout.
    daemon = run_syncd(["daemon"], clean_env(archived), timeout=20)
    assert daemon.returncode == 3 and "uid 65534" in daemon.stderr, daemon.stdout + daemon.stderr
    assert owned(state) == before
    # The service's user, as the documented way runs it, goes on.
    reset = cli_as(SERVICE_UID, SERVICE_GID, "db", "reset-state", "--yes", env=env)
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert "forgot the" in reset.stdout
    assert all(uid == SERVICE_UID for uid, _ in owned(state).values()), owned(state)


@as_root
def test_root_is_refused_in_the_services_archive_folder_by_the_daemon_at_start(
    tmp_path: Path, fake_api: Callable[..., FakeServer]
) -> None:
    # Its own database is root's business; the archive folder is the service's.
    images = service_folder(tmp_path / "images")
    server = fake_api(20, malformed_fraction=0)
    env = root_database_and(tmp_path, server, archive=images)
    result = run_syncd(["daemon"], clean_env(env), timeout=20)  # should it start, it ends here
    assert result.returncode == 3 and "uid 65534" in result.stderr, result.stdout + result.stderr
    assert list(images.iterdir()) == []
    assert not (tmp_path / "root.db").exists()  # refused before the database is touched
    assert server.api.list_log == []


@as_root
def test_a_lock_file_another_user_owns_is_named_with_its_owner_and_the_fix(open_tmp: Path) -> None:
    # What was left of the operator's case: root's lock file in the service's
    # folder. The service's user is told whose it is and what to do.
    state = service_folder(open_tmp / "state", 0o755)
    env = {"SYNCD_DATABASE_URL": f"sqlite:///{state / 'syncd.db'}"}
    made = invoke_cli("db", "upgrade", env={**env, "SYNCD_ALLOW_ROOT": "true"})
    assert made.returncode == 0, made.stdout + made.stderr
    os.chown(state / "syncd.db", SERVICE_UID, SERVICE_GID)
    lock = state / "syncd.db.lock"
    assert lock.stat().st_uid == 0  # root's, as reset-state left it
    result = cli_as(SERVICE_UID, SERVICE_GID, "db", "reset-state", "--yes", env=env)
    line = (result.stdout + result.stderr).strip()
    assert result.returncode == 6, line
    assert "\n" not in line, line
    assert f"{lock} belongs to root (uid 0)" in line, line
    assert f"chown {SERVICE_UID}" in line or "chown nobody" in line, line
    assert "remove it" in line, line


# ---------------------------------------------------------------- readers

PROBE = (
    "INSERT INTO sync_runs (stream, mode, outcome, started_at, finished_at, pages, requests, inserted, "
    "updated, unchanged, rejected, unknown_type, marked_deleted, error, syncd_version) VALUES ('artworks', "
    "'incremental', 'failed', '2026-12-01 00:00:00.000000', '2026-12-01 00:00:01.000000', 0, 0, 0, 0, 0, "
    "0, 0, 0, 'written by the probe {}', '0')"
)


@contextmanager
def writer_holding(database: Path, uid: int, number: int, *, crash: bool = False) -> Iterator[None]:
    """A process of ``uid`` that wrote probe ``number`` into ``database``
    and holds it open (a running service: the write is in its -wal); with
    ``crash``, one that died so (its -wal and -shm left behind)."""
    ready, done = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            become(uid, uid)
            conn = sqlite3.connect(database, isolation_level=None)
            conn.execute(PROBE.format(number))
            os.write(ready[1], b"1")
            if not crash:
                os.read(done[0], 1)
                conn.close()
        finally:
            os._exit(0)
    try:
        assert os.read(ready[0], 1) == b"1", "the writer did not write"
        yield
    finally:
        os.write(done[1], b"1")
        os.waitpid(pid, 0)
        for fd in (*ready, *done):
            os.close(fd)


def read_everything(env: dict[str, str], run: Callable[..., subprocess.CompletedProcess[str]]) -> str:
    """What `status`, `status --json` and `db current` say, each of them having succeeded."""
    said = []
    for command in (["status"], ["status", "--json"], ["db", "current"]):
        result = run(*command, env=env)
        assert result.returncode == 0, (command, result.stdout + result.stderr)
        said.append(result.stdout)
    return "\n".join(said)


@as_root
def test_a_reader_needs_no_writable_folder_and_creates_nothing(open_tmp: Path) -> None:
    # The operator's case: root's database (644) in root's folder (755), read
    # by another user; the documentation says anyone who can read it may.
    state = open_tmp / "state"
    state.mkdir(mode=0o755)
    database = state / "syncd.db"
    env = {"SYNCD_DATABASE_URL": f"sqlite:///{database}"}
    assert invoke_cli("db", "upgrade", env=env).returncode == 0
    (state / "syncd.db.lock").unlink()

    def as_service(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return cli_as(SERVICE_UID, SERVICE_GID, *args, env=env)

    # Stopped: the database is wholly in its file, and there is no -wal.
    before = owned(state)
    assert f"{db.HEAD_REVISION} (latest)" in read_everything(env, as_service)
    assert owned(state) == before
    # Running: the last write is in the writer's -wal, which the reader reads.
    with writer_holding(database, 0, 1):
        during = owned(state)
        assert "-wal" in "".join(during)
        assert "written by the probe 1" in read_everything(env, as_service)
        assert owned(state) == during
    # Died: its -wal and -shm are left; the reader reads them without writing.
    with writer_holding(database, 0, 2, crash=True):
        pass
    left = owned(state)
    assert "written by the probe 2" in read_everything(env, as_service)
    assert owned(state) == left
    # check says what this user could not do as the service (write), and creates nothing either.
    checked = as_service("check", env=env)
    database_line = next(line for line in checked.stdout.splitlines() if line.startswith("database"))
    assert database_line.startswith("database  PROBLEM"), checked.stdout + checked.stderr
    assert f"connected, schema revision {db.HEAD_REVISION} (current); but the directory" in database_line
    assert "not writable by this user (uid 65534)" in database_line
    assert owned(state) == left
    # A -wal without its -shm (deleted by hand): reading it would need a -shm
    # of this user's beside root's database. Said so; nothing is created.
    (state / "syncd.db-shm").unlink()
    missing = as_service("status", env=env)
    assert missing.returncode == 6, missing.stdout + missing.stderr
    assert f"the database's {state / 'syncd.db-wal'} has no -shm file beside it" in missing.stderr
    assert "run the command as uid 0" in missing.stderr
    assert "syncd.db-shm" not in owned(state)
    assert "written by the probe 2" in read_everything(env, invoke_cli)  # its owner reads it


@as_root
def test_root_reads_the_services_database_and_leaves_nothing_of_its_own(
    open_tmp: Path, fake_api: Callable[..., FakeServer]
) -> None:
    state = service_folder(open_tmp / "state", 0o755)
    server = fake_api(20, malformed_fraction=0)
    env = services_database(state, server)
    database = state / "syncd.db"

    def as_root_(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return invoke_cli(*args, env=env)

    before = owned(state)
    read_everything(env, as_root_)
    assert invoke_cli("check", env=env).returncode == 0
    assert owned(state) == before  # no -wal, no -shm of root's, not even for a while
    with writer_holding(database, SERVICE_UID, 3):
        during = owned(state)
        assert "written by the probe 3" in read_everything(env, as_root_)
        assert owned(state) == during
        assert all(uid == SERVICE_UID for uid, _ in owned(state).values())
    # And the service goes on with its files.
    assert cli_as(SERVICE_UID, SERVICE_GID, "db", "reset-state", "--yes", env=env).returncode == 0


def read_only_view(source: Path, view: Path) -> Callable[[], None]:
    """In a child: a mount namespace of its own, where ``view`` is ``source``
    mounted read-only (as ProtectSystem=strict shows a path not in ReadWritePaths=)."""

    def setup() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
            raise OSError(ctypes.get_errno(), "unshare")
        for command in (
            ["mount", "--make-rprivate", "/"],
            ["mount", "--bind", str(source), str(view)],
            ["mount", "-o", "remount,ro,bind", str(view)],
        ):
            subprocess.run(command, check=True, capture_output=True)

    return setup


@as_root
def test_root_reads_a_database_on_a_read_only_file_system(open_tmp: Path) -> None:
    source, view = open_tmp / "state", open_tmp / "view"
    source.mkdir()
    view.mkdir()
    env = {"SYNCD_DATABASE_URL": f"sqlite:///{source / 'syncd.db'}"}
    assert invoke_cli("db", "upgrade", env=env).returncode == 0
    (source / "syncd.db.lock").unlink()
    probe = cli_in_child("db", "current", env=env, setup=read_only_view(source, view))
    if "unshare" in probe.stderr or "mount" in probe.stderr:
        pytest.skip(f"cannot mount here: {probe.stderr.strip().splitlines()[-1]}")
    before = owned(source)
    on_view = {"SYNCD_DATABASE_URL": f"sqlite:///{view / 'syncd.db'}"}

    def in_the_view(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return cli_in_child(*args, env=env, setup=read_only_view(source, view))

    assert f"{db.HEAD_REVISION} (latest)" in read_everything(on_view, in_the_view)
    # A writer there is told why it cannot.
    upgrade = in_the_view("db", "upgrade", env=on_view)
    assert upgrade.returncode == 6 and "read-only file system" in upgrade.stderr, upgrade.stderr
    assert owned(source) == before
