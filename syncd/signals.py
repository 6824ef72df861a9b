"""SIGTERM and SIGINT as a stop request: the first stops in order, a second at once.

A Python signal handler runs in the main thread between two bytecodes, which
may be inside ``stop.wait()`` or inside a first handler's ``stop.set()``:
holding the very lock that ``Event.set()`` takes. A handler that sets the
event can then deadlock (two quick Ctrl-Cs did: syncd hung until SIGKILL). So
the handler takes no lock and does no I/O; the kernel wakes a watcher thread
through ``signal.set_wakeup_fd``, and that thread sets the event and logs.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any, NoReturn

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The wakeup socket pair in use: it must stay open as long as the handlers do.
_wakeup: list[socket.socket] = []


def install_stop_signals(stop: threading.Event, message: str, *, second: Callable[[int], NoReturn]) -> None:
    """Route SIGTERM/SIGINT to ``stop``; call ``second`` (in the handler) on a second one.

    ``message`` is logged once, with the signal's name, when the first arrives.
    Call from the main thread.
    """
    received: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        received.append(signum)  # atomic, lock-free
        if len(received) > 1:
            second(signum)

    wake_reader, wake_writer = socket.socketpair()
    wake_writer.setblocking(False)

    def watch() -> None:
        # Ends when a later install closes this pair's writing end.
        while data := wake_reader.recv(64):
            for signum in data:
                if signum in STOP_SIGNALS and not stop.is_set():
                    stop.set()
                    log.warning(message, signal.Signals(signum).name)
        wake_reader.close()

    threading.Thread(target=watch, name="syncd-signals", daemon=True).start()
    signal.set_wakeup_fd(wake_writer.fileno(), warn_on_full_buffer=False)
    while _wakeup:
        _wakeup.pop().close()
    _wakeup.append(wake_writer)
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
