"""Helper processes: frames arrive whole, whatever interrupts the pipe writes."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime

import pytest

from syncd.api.body import parse_array
from syncd.sync.validation import HelperMode, PageValidator
from tests.test_validation import expected, hostile_body

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.timeout(120)
def test_helpers_finish_large_frames_through_stops_with_pythonunbuffered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop (SIGSTOP, a debugger) mid-write made a raw stdout write part of a
    frame; the frames went out of step and syncd waited forever."""
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    body = hostile_body()  # answers of a few hundred kilobytes
    items = parse_array(body)
    validator = PageValidator(HelperMode.ON)
    helper = validator._helper
    assert helper is not None
    stopping = True

    def stop_and_go() -> None:
        while stopping:
            os.kill(helper.process.pid, signal.SIGSTOP)
            os.kill(helper.process.pid, signal.SIGCONT)
            time.sleep(0.0005)

    storm = threading.Thread(target=stop_and_go, daemon=True)
    storm.start()
    try:
        for _ in range(10):
            assert validator.validate(body, items, NOW, {}) == expected(body, {})
    finally:
        stopping = False
        storm.join()
        validator.close()
