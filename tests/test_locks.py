"""The one-syncer locks: who holds them is said."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from syncd import locks
from syncd.errors import LockHeldError


def test_a_held_sqlite_lock_names_the_process_holding_it(tmp_path: Path) -> None:
    database = tmp_path / "syncd.db"
    with locks.hold_file_lock(database):
        with pytest.raises(LockHeldError, match=f"is held\\) by process {os.getpid()}$"):
            with locks.hold_file_lock(database):
                pass
    with locks.hold_file_lock(database):  # released: taken again
        assert locks.lock_path_of(database).read_text() == f"{os.getpid()}\n"
