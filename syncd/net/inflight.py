"""Requests in flight: calls run on daemon threads, awaited by the sync loop.

The loop's own thread never blocks in a socket read: it waits on futures, a
fraction of a second at a time, so that a stop request ends a run within that
time even while a request hangs. The threads are daemon threads because the
standard library's executors are joined at interpreter exit, and a process
asked to stop must not wait there for a request's timeout.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class InFlight:
    """At most ``workers`` calls at once; more wait in order. ``close`` when done."""

    def __init__(self, workers: int = 1, *, name: str = "syncd-request") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._name = name
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._lock = threading.Lock()
        self._queued = 0  # jobs submitted and not yet taken by a thread
        self._idle = 0  # threads waiting for a job

    def submit(self, call: Callable[..., T], *args: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError("submit after close")
        future: Future[T] = Future()
        # A thread more only when the jobs waiting outnumber the free threads:
        # each thread that allocates gets a malloc arena of its own (RSS), and
        # unthrottled two are enough.
        with self._lock:
            self._queued += 1
            spawn = self._queued > self._idle and len(self._threads) < self._workers
        self._jobs.put((future, call, args))
        if spawn:
            thread = threading.Thread(
                target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return future

    def close(self) -> None:
        """Cancel what has not started; a call under way ends on its own (its result is dropped)."""
        self._closed = True
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
                with self._lock:
                    self._queued -= 1
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        with self._lock:
            self._idle += 1
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            future, call, args = job
            if not future.set_running_or_notify_cancel():
                with self._lock:
                    self._idle += 1
                continue
            failure: BaseException | None = None
            try:
                result: Any = call(*args)
            except BaseException as exc:  # handed to whoever awaits the future
                result, failure = None, exc
            with self._lock:
                self._idle += 1  # free before the caller hears of it: its next submit finds this thread
            if failure is None:
                future.set_result(result)
            else:
                future.set_exception(failure)
