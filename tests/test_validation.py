"""The validation helper process: same answers as in-process, and never a reason to fail."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from syncd import db, store
from syncd.api.body import parse_array
from syncd.fakeapi.data import Dataset
from syncd.fakeapi.server import FakeServer, Faults
from syncd.recordkeys import content_hash
from syncd.records import classify_page
from syncd.rows import PageResult
from syncd.sync import validation
from syncd.sync.validation import HelperMode, PageValidator
from tests.conftest import start_syncd, syncd_env, wait_for

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def hostile_body() -> bytes:
    """A page with valid, invalid, unknown-type, hostile and too-deep records."""
    dataset = Dataset(300, seed=5, malformed_fraction=0.05, unknown_fraction=0.05, hostile_fraction=0.05)
    values = [artwork.value for artwork in dataset.items]
    deep = b"[" * 2000 + b"]" * 2000  # beyond the JSON parser's depth limit
    return b"[" + b",".join([*map(orjson.dumps, values), deep, b'"not an object"']) + b"]"


def expected(body: bytes, stored: dict[str, str]) -> PageResult:
    return classify_page(parse_array(body), NOW, stored)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits for its parent to reap it.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_the_helper_gives_exactly_the_in_process_answer() -> None:
    body = hostile_body()
    items = parse_array(body)
    stored = {items[0]["id"]: content_hash(items[0]), items[1]["id"]: "an older content hash"}
    want = expected(body, stored)
    assert want.rows and want.rejected and want.unchanged_ids and want.unknown_types
    validator = PageValidator(HelperMode.ON)
    try:
        for _ in range(3):
            assert validator.validate(body, items, NOW, stored) == want
        assert validator.pages_in_helper == 3
    finally:
        validator.close()


def test_off_never_starts_a_helper_and_auto_needs_a_second_cpu_and_sqlite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = hostile_body()
    off = PageValidator(HelperMode.OFF)
    off.expect_long_run()
    assert not off.helper_running
    assert off.validate(body, parse_array(body), NOW, {}) == expected(body, {})

    monkeypatch.setattr(validation, "available_cpus", lambda: 1)
    auto = PageValidator(HelperMode.AUTO)
    auto.expect_long_run()
    assert not auto.helper_running

    monkeypatch.setattr(validation, "available_cpus", lambda: 2)
    beside_a_server = PageValidator(HelperMode.AUTO, database_in_process=False)
    beside_a_server.expect_long_run()
    assert not beside_a_server.helper_running  # PostgreSQL needs the second CPU

    auto = PageValidator(HelperMode.AUTO)
    assert not auto.helper_running  # short runs never pay for one
    auto.expect_long_run()
    try:
        assert auto.helper_running
        items = parse_array(body)
        # Pages are validated here until the helper has started, then there.
        wait_for(
            lambda: auto.validate(body, items, NOW, {}) == expected(body, {}) and auto.pages_in_helper > 0,
            30,
            "the helper to take pages",
        )
    finally:
        auto.close()


def test_a_helper_that_dies_is_replaced_by_validation_here(caplog: pytest.LogCaptureFixture) -> None:
    body = hostile_body()
    items = parse_array(body)
    validator = PageValidator(HelperMode.ON)
    try:
        assert validator.validate(body, items, NOW, {}) == expected(body, {})
        assert validator._helper is not None
        helper = validator._helper.process
        helper.kill()
        helper.wait()
        with caplog.at_level(logging.WARNING):
            assert validator.validate(body, items, NOW, {}) == expected(body, {})
        assert "validating in this process instead" in caplog.text
        assert not validator.helper_running
        validator.start_helper()  # it does not come back within the run
        assert not validator.helper_running
    finally:
        validator.close()


def test_the_helper_ignores_sigterm_and_ends_when_its_input_closes() -> None:
    body = hostile_body()
    items = parse_array(body)
    validator = PageValidator(HelperMode.ON)
    assert validator._helper is not None
    helper = validator._helper.process
    try:
        assert validator.validate(body, items, NOW, {}) == expected(body, {})
        helper.send_signal(signal.SIGTERM)  # systemd signals the whole cgroup
        assert validator.validate(body, items, NOW, {}) == expected(body, {})
        assert validator.pages_in_helper == 2
    finally:
        validator.close()
    assert helper.poll() == 0


def test_the_helper_ends_when_syncd_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, signal, sys
        from datetime import UTC, datetime
        from syncd.sync.validation import PageValidator
        validator = PageValidator("on")
        validator.validate(b"[]", [], datetime.now(UTC), {})
        print(validator._helper.process.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    parent = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    helper_pid = int(parent.stdout.split()[0])
    wait_for(lambda: not alive(helper_pid), 10, "the orphaned helper to exit")


def test_sigterm_to_the_whole_group_stops_syncd_and_its_helpers_cleanly(
    fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """As systemd stops a service: SIGTERM to every process of the group at once."""
    server = fake_api(3000, faults=Faults(slow=1.0, delay=0.03), malformed_fraction=0)
    database = tmp_path / "syncd.db"
    env = syncd_env(
        server.url, f"sqlite:///{database}", page_size="100", validation_process="on", writer_process="on"
    )
    # Its own process group, like a service's cgroup.
    process = start_syncd(["run-once"], env, tmp_path, new_session=True)

    def helper_pids() -> list[int]:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    wait_for(lambda: server.api.stats.list_requests >= 5 and len(helper_pids()) == 2, 60, "helpers at work")
    helpers = helper_pids()
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    wait_for(lambda: not any(alive(pid) for pid in helpers), 10, "the helpers to exit")
    engine = db.create_db_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as conn:
            run = conn.execute(select(store.runs_table)).one()
            stored = conn.execute(select(func.count()).select_from(store.artworks)).scalar_one()
    finally:
        engine.dispose()
    assert run.outcome == "interrupted" and run.inserted == stored > 0
