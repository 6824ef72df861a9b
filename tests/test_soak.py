"""Soak: the daemon over hundreds of ticks in one process keeps flat memory, files and threads.

Marked slow: not in the default suite (`pytest`), run by `bash scripts/test.sh` and CI.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from syncd import store
from syncd.fakeapi.server import FakeServer, Faults
from tests.conftest import run_syncd, start_syncd, syncd_env, wait_for

TICKS = 500
WARM = 50
SUCCESS = re.compile(r"run \d+ incremental success")


@dataclass(frozen=True)
class Sample:
    ticks: int
    peak_rss_kib: int
    rss_kib: int
    fds: int
    threads: int


def sample(pid: int, ticks: int) -> Sample:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return Sample(
        ticks,
        int(status["VmHWM"].split()[0]),
        int(status["VmRSS"].split()[0]),
        len(os.listdir(f"/proc/{pid}/fd")),
        int(status["Threads"]),
    )


@pytest.mark.slow
def test_500_daemon_ticks_keep_memory_files_and_threads_flat(
    db_url: str, engine: Engine, fake_api: Callable[..., FakeServer], tmp_path: Path
) -> None:
    # Two new artworks before every list request: every tick writes something.
    server = fake_api(300, faults=Faults(add_per_request=2), malformed_fraction=0.01)
    env = syncd_env(server.url, db_url, page_size="50", interval="0.02", log_level="info")
    process = start_syncd(["daemon"], env, tmp_path)
    lines: list[str] = []
    successes = 0

    def read_log() -> None:
        nonlocal successes
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            successes += bool(SUCCESS.search(line))

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()

    def ticks() -> int:
        assert process.poll() is None, "".join(lines[-20:])
        return successes

    samples: dict[str, Sample] = {}
    try:
        for name, target in (("warm", WARM), ("half", TICKS // 2), ("end", TICKS)):
            wait_for(lambda target=target: ticks() >= target, 600, f"{target} ticks")  # type: ignore[misc]
            # A sample lands anywhere in a tick (a connection open or not, a request
            # thread running or not): the fewest over a second is the steady state,
            # and a leak raises that too.
            taken = []
            for _ in range(20):
                taken.append(sample(process.pid, ticks()))
                time.sleep(0.05)
            samples[name] = Sample(
                taken[-1].ticks,
                taken[-1].peak_rss_kib,
                taken[-1].rss_kib,
                min(t.fds for t in taken),
                min(t.threads for t in taken),
            )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
    warm, half, end = samples["warm"], samples["half"], samples["end"]
    report = f"after {warm.ticks} ticks: {warm}; after {half.ticks}: {half}; after {end.ticks}: {end}"
    print(report)
    assert end.peak_rss_kib < 1.10 * warm.peak_rss_kib, report
    # One more fd now and then (seen: 9 at tick 271, 10 at tick 519; cause not
    # found yet, noted on issue 14); a leak per tick would be hundreds.
    assert end.fds <= warm.fds + 2, report
    assert end.threads <= half.threads and end.threads <= warm.threads, report
    # Every artwork the fake listed is stored once, after one more run: the stop
    # may find a page answered (the fake counts it listed) and not yet written.
    server.api.faults.add_per_request = 0
    assert run_syncd(["run-once"], env, cwd=tmp_path).returncode == 0
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(store.artworks)).scalar_one()
    served = {i for i in server.api.served if server.api.dataset.ever[i].malformed is None}
    assert stored == len(served) and stored > 300 + TICKS
