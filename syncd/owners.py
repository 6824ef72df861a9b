"""Whether root is about to create files in state that another user owns.

The service runs as a user of its own (deploy/syncd.service: a systemd
DynamicUser). A command run as root against that state (``syncd archive
--verify`` from a root timer, ``db upgrade`` with sudo) would leave root's
lock file, SQLite -wal/-shm files and image folders behind, which the service
then cannot write: it fails later, somewhere else. So root is refused where
another user owns the state, with one line saying how to run as that user.
Root's own state (every path owned by root) is root's business, and so is
a container that runs everything as root: ``SYNCD_ALLOW_ROOT=true``.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from pathlib import Path

HOW = 'docs/deploy.md, "One user for every command"'


def _nearest_existing(path: Path) -> Path:
    """``path``, or the closest folder above it that exists (where it would be
    created), with every link on the way followed: /var/lib/syncd is a link
    to /var/lib/private/syncd under a DynamicUser, and the owner that counts
    is the folder's."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.resolve()


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a systemd DynamicUser's uid while the service is stopped
        return f"#{uid}"


def foreign_state(paths: Iterable[Path], euid: int) -> str | None:
    """What is wrong when ``euid`` is root and one of ``paths`` (or where it
    would be created) belongs to another user; None when nothing is."""
    if euid != 0:
        return None  # another user cannot create files there anyway: the permission errors say so
    for path in paths:
        existing = _nearest_existing(path)
        owner = existing.stat().st_uid
        if owner != 0:
            name = user_name(owner)
            return (
                f"{existing} belongs to {name} (uid {owner}) and syncd runs as root: the files it would "
                f"create there (lock, SQLite -wal/-shm, image folders) would be root's, and {name} could "
                f"not write them; run the command as that user (sudo -u '{name}' syncd ..., or for the "
                f"service's DynamicUser systemd-run as in {HOW})"
            )
    return None


def foreign_file(path: Path, euid: int) -> str | None:
    """Why ``euid`` cannot open syncd's own file ``path`` (a lock file) that
    another user owns: whose it is and how to put it right; None when it is
    this user's, or is not there."""
    try:
        owner = path.lstat().st_uid
    except OSError:
        return None
    if owner == euid:
        return None
    theirs, mine = user_name(owner), user_name(euid)
    return (
        f"{path} belongs to {theirs} (uid {owner}), and this user ({mine}, uid {euid}) cannot open it: "
        f"a syncd run as {theirs} made it. Every command runs as one user ({HOW}): run this one as "
        f"{theirs}, or, if {mine} runs the service, give the file to it (chown {mine} {path}) or "
        "remove it while no syncd runs"
    )


def sqlite_state(database: Path) -> list[Path]:
    """Whose SQLite database it is: the file's owner once it exists (a root-owned
    file in another user's folder is root's), else its folder's."""
    return [database] if database.exists() else [database.absolute().parent]


def refuse_foreign_state(paths: Iterable[Path], *, allowed: bool = False) -> None:
    """Raise WrongUserError when root would create files in another user's
    state; ``allowed`` (SYNCD_ALLOW_ROOT) lets it."""
    from syncd.errors import WrongUserError

    problem = None if allowed else foreign_state(paths, os.geteuid())
    if problem is not None:
        raise WrongUserError(problem + "; SYNCD_ALLOW_ROOT=true allows it (a container that runs as root)")
