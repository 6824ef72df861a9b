"""Stop signals: never a deadlock, never a half-recorded run, and quick even while a request hangs."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from syncd import store
from syncd.fakeapi.server import FakeServer
from tests.conftest import start_syncd, syncd_env, wait_for

# The main thread spends its time inside stop.wait(), holding the event's lock
# about half of it: a handler that called stop.set() itself deadlocked there in
# about one run in ten. A signal during interpreter shutdown used to kill the
# process with the signal's status.
CHILD = textwrap.dedent(
    """
    import logging, sys, threading, time
    from syncd.signals import install_stop_signals
    if "--slow-log" in sys.argv:
        # A log handler slower than the main thread's exit: the stop's line
        # must be written before the stop lets the main thread go.
        logging.getLogger("syncd.signals").addFilter(lambda record: time.sleep(0.3) or True)
    stop = threading.Event()
    install_stop_signals(stop, "%s received")
    print("ready", flush=True)
    while not stop.wait(0.000001):
        pass
    print("stopped", flush=True)
    """
)


def start_children(count: int, *flags: str) -> list[subprocess.Popen[str]]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(count)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    return children


def outcomes(children: list[subprocess.Popen[str]], timeout: float = 20) -> list[tuple[int | None, str]]:
    deadline = time.monotonic() + timeout
    results = []
    for child in children:
        try:
            out, err = child.communicate(timeout=max(0.1, deadline - time.monotonic()))
            results.append((child.returncode, out + err))
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            results.append((None, "hung"))
    return results


def test_a_stop_signal_during_stop_wait_stops_and_is_logged() -> None:
    children = start_children(24)
    for child in children:
        child.send_signal(signal.SIGTERM)
    results = outcomes(children)
    assert all(code == 0 and "stopped" in text and "SIGTERM received" in text for code, text in results), [
        r for r in results if r[0] != 0
    ]


def test_the_stop_is_logged_before_the_main_thread_may_exit() -> None:
    children = start_children(2, "--slow-log")
    for child in children:
        child.send_signal(signal.SIGTERM)
    results = outcomes(children)
    assert all(code == 0 and "SIGTERM received" in text for code, text in results), results


@pytest.mark.parametrize("signals", [2, 5])
def test_any_number_of_quick_signals_stops_in_order(signals: int) -> None:
    children = start_children(8)
    for child in children:
        for _ in range(signals):
            child.send_signal(signal.SIGINT)
    results = outcomes(children)
    assert all(code == 0 and "stopped" in text for code, text in results), results


def stored_and_run(engine: Engine) -> tuple[int, str, int]:
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(store.artworks)).scalar_one()
        run = conn.execute(select(store.runs_table).order_by(store.runs_table.c.id.desc())).first()
    assert run is not None
    return stored, run.outcome, run.inserted


@pytest.mark.parametrize(("command", "signals", "code"), [("run-once", 1, 130), ("daemon", 3, 0)])
def test_signals_while_a_request_hangs_stop_it_at_once_and_record_interrupted(
    db_url: str,
    engine: Engine,
    fake_api: Callable[..., FakeServer],
    tmp_path: Path,
    command: str,
    signals: int,
    code: int,
) -> None:
    server = fake_api(2000, malformed_fraction=0)
    env = syncd_env(server.url, db_url, page_size="100", interval="60", read_timeout="300")

    # From the fifth page on, the API answers nothing (however fast the run
    # goes): the requests after it hang until the test releases them.
    def hang_after(number: int) -> None:
        if number == 5:
            server.api.hold()

    server.api.before_list = hang_after
    process = start_syncd([command], env, tmp_path)
    try:
        wait_for(lambda: server.api.held > 0, 60, "a request to hang")
        for _ in range(signals):
            process.send_signal(signal.SIGTERM if command == "daemon" else signal.SIGINT)
            time.sleep(0.05)
        # Waiting for the hanging request would take until the API gives up
        # holding it (fakeapi.server.HOLD_LIMIT, 120 s; the read timeout is 300 s):
        # the process must be gone long before, the request still unanswered.
        _, stderr = process.communicate(timeout=60)
        still_hanging = server.api.held
    finally:
        server.api.release()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, stderr
    assert still_hanging > 0, "the request did not hang until syncd stopped: the test proves nothing"
    assert "Traceback" not in stderr
    stored, outcome, inserted = stored_and_run(engine)
    assert outcome == "interrupted" and inserted == stored > 0
