"""Stop signals: never a deadlock, whatever the main thread is doing when they arrive."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

# The main thread spends its time inside stop.wait(), holding the event's lock
# about half of it: a handler that called stop.set() itself deadlocked there in
# about one run in ten.
CHILD = textwrap.dedent(
    """
    import os, sys, threading
    from syncd.signals import install_stop_signals
    stop = threading.Event()
    install_stop_signals(stop, "%s received", second=lambda signum: os._exit(130))
    print("ready", flush=True)
    while not stop.wait(0.000001):
        pass
    print("stopped", flush=True)
    """
)


def start_children(count: int) -> list[subprocess.Popen[str]]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
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


def test_two_quick_signals_never_hang() -> None:
    children = start_children(4)
    for child in children:
        child.send_signal(signal.SIGINT)
        child.send_signal(signal.SIGINT)
    # Either the first was handled before the second arrived (exit 0) or not.
    assert all(code in (0, 130) for code, _ in outcomes(children))
