"""One user for every command: root is refused in state another user owns
(the service's), and the documented way, as that user, works."""

from __future__ import annotations

import os
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncd import db
from syncd.app import run_once
from syncd.errors import InstallError
from syncd.fakeapi.server import FakeServer
from syncd.owners import foreign_state, sqlite_state
from tests.conftest import invoke_cli, make_settings

SERVICE_UID = SERVICE_GID = 65534  # nobody: a user other than root, on every Linux

as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the case is root meeting another user's files"
)


def service_folder(path: Path) -> Path:
    path.mkdir(mode=0o750)
    os.chown(path, SERVICE_UID, SERVICE_GID)
    return path


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


@as_root
def test_root_is_refused_in_the_services_archive_folder(
    tmp_path: Path, fake_api: Callable[..., FakeServer]
) -> None:
    images = service_folder(tmp_path / "images")
    server = fake_api(20, malformed_fraction=0)
    env = {
        "SYNCD_API_URL": server.url,
        "SYNCD_API_KEY": "test-key",
        "SYNCD_DATABASE_URL": f"sqlite:///{tmp_path / 'root.db'}",  # root's own: allowed
        "SYNCD_ARCHIVE_DIR": str(images / "archive"),  # would be created inside the service's folder
    }
    assert invoke_cli("run-once", env=env).returncode == 0
    result = invoke_cli("archive", env=env)
    assert result.returncode == 3 and "uid 65534" in (result.stdout + result.stderr), (
        result.stdout + result.stderr
    )
    assert list(images.iterdir()) == []


def run_as(uid: int, gid: int, work: Callable[[], object]) -> int:
    """``work`` in a child process that became ``uid`` (what `sudo -u` does),
    its exit status. In-process after a fork: the interpreter of this checkout
    may live where another user cannot read it (/root/.pyenv)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            work()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder other users can reach (pytest's is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="syncd-owners-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


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

    def read_migrations() -> None:
        with pytest.raises(InstallError) as refused:
            db.migrations_dir()
        assert refused.value.exit_code == 3
        assert f"{package.parent / 'migrations'} cannot be read (uid {SERVICE_UID})" in str(refused.value)

    assert run_as(SERVICE_UID, SERVICE_GID, read_migrations) == 0
    assert db.migrations_dir() == package.parent / "migrations"  # root reads them
