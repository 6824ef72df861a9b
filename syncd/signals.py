"""SIGTERM and SIGINT as a stop request, for `run-once` and the daemon alike.

The first signal asks the run in flight to stop: it commits the pages it has
written, records itself as ``interrupted`` and syncd exits (130 for
`run-once`, 0 for the daemon) within a fraction of a second, even while a
request hangs (the sync loop never blocks on the network). Later signals
change nothing: they are logged, and cannot kill syncd half-way through
recording its run. A stuck process still ends with SIGKILL, which loses
nothing either (the cursor commits with its rows).

A Python signal handler runs in the main thread between two bytecodes, which
may be inside ``stop.wait()`` or inside ``stop.set()``: holding the very lock
that ``Event.set()`` takes. A handler that set the event could then deadlock.
So the handler does nothing; the kernel wakes a watcher thread through
``signal.set_wakeup_fd``, and that thread sets the event and logs. From
interpreter shutdown on, the stop signals are ignored: the default action the
interpreter restores then would kill syncd with the signal's status.
"""

from __future__ import annotations

import atexit
import logging
import signal
import socket
import threading
from typing import Any

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# The wakeup socket pair in use: it must stay open as long as the handlers do.
_wakeup: list[socket.socket] = []


def _ignore_stop_signals() -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _noted(_signum: int, _frame: Any) -> None:
    """The Python-level handler: the watcher thread does the work (see above)."""


def install_stop_signals(stop: threading.Event, message: str) -> None:
    """Route SIGTERM/SIGINT to ``stop``; ``message`` is logged with the first one's name.

    Call from the main thread.
    """
    wake_reader, wake_writer = socket.socketpair()
    wake_writer.setblocking(False)

    def watch() -> None:
        # Ends when a later install closes this pair's writing end.
        while data := wake_reader.recv(64):
            for signum in data:
                if signum not in STOP_SIGNALS:
                    continue
                name = signal.Signals(signum).name
                if not stop.is_set():
                    # Logged before the stop is set: the main thread may exit
                    # as soon as it sees the stop, and this daemon thread with it.
                    log.warning(message, name)
                    stop.set()
                else:
                    log.warning("%s received: already stopping (the run in flight is being recorded)", name)
        wake_reader.close()

    threading.Thread(target=watch, name="syncd-signals", daemon=True).start()
    signal.set_wakeup_fd(wake_writer.fileno(), warn_on_full_buffer=False)
    while _wakeup:
        _wakeup.pop().close()
    _wakeup.append(wake_writer)
    for signum in STOP_SIGNALS:
        signal.signal(signum, _noted)
    atexit.unregister(_ignore_stop_signals)
    atexit.register(_ignore_stop_signals)
