"""Prometheus metrics for the daemon (served only when SYNCD_METRICS_PORT is set).

They move while a run goes: requests as each is answered (the client's
observer), pages and artworks after each written page or batch, and gauges
for the run in progress, the refresh backlog and the limiter's wait.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from syncd.state import Counts, RunSummary

ARTWORK_RESULTS = ("inserted", "updated", "unchanged", "rejected")
RUN_MODES = ("backfill", "incremental", "full", "refresh")


class Metrics:
    """The daemon's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "syncd_runs_total", "Sync runs by mode and outcome", ["mode", "outcome"], registry=self.registry
        )
        self.artworks = Counter(
            "syncd_artworks_synced_total", "Artworks handled, by result", ["result"], registry=self.registry
        )
        self.requests = Counter(
            "syncd_api_requests_total",
            "API requests by status code (or timeout/network)",
            ["code"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "syncd_rate_limited_total", "429 answers from the API", registry=self.registry
        )
        self.retry_wait_seconds = Counter(
            "syncd_retry_wait_seconds_total", "Seconds spent waiting before retries", registry=self.registry
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "Unix time of the last successful run",
            registry=self.registry,
        )
        self.rate_limited_until = Gauge(
            "syncd_rate_limited_until_timestamp_seconds",
            "Unix time until which the API asked for quiet (Retry-After); syncd sends nothing before",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "syncd_api_requests_in_flight",
            "API requests sent and not yet answered (during a run; 0 between runs)",
            registry=self.registry,
        )
        self.request_rate = Gauge(
            "syncd_api_request_rate",
            "The rate limiter's current pace, in requests per second (it probes up to "
            "SYNCD_MAX_REQUESTS_PER_SECOND and slows down on a 429)",
            registry=self.registry,
        )
        self.pages = Counter("syncd_pages_total", "List pages written", registry=self.registry)
        self.rejected_seen = Counter(
            "syncd_rejected_records_total",
            "Records quarantined by list runs: new (first seen, warned of once) or again (seen before)",
            ["kind"],
            registry=self.registry,
        )
        self.deletions_withheld = Counter(
            "syncd_deletions_withheld_total",
            "Complete scans whose missed artworks were not marked deleted, by why "
            "(incomplete: some answered by id; shrank: more gone than retention explains)",
            ["reason"],
            registry=self.registry,
        )
        self.run_in_progress = Gauge(
            "syncd_run_in_progress",
            "1 for the mode of the run going on now (0 for the others, and between runs)",
            ["mode"],
            registry=self.registry,
        )
        self.run_started = Gauge(
            "syncd_run_started_timestamp_seconds",
            "Unix time the run going on now started (0 between runs)",
            registry=self.registry,
        )
        self.run_pages = Gauge(
            "syncd_run_pages", "Pages the run going on now has written", registry=self.registry
        )
        self.refresh_backlog = Gauge(
            "syncd_refresh_backlog",
            "Stored artworks whose status is not terminal (re-checked by the refresh, each by its back-off)",
            registry=self.registry,
        )
        self.refresh_due = Gauge(
            "syncd_refresh_due",
            "Unfinished artworks whose re-check is due now (a steady backlog here: the refresh "
            "cannot keep up with its share of the request budget)",
            registry=self.registry,
        )
        self.limiter_wait = Gauge(
            "syncd_api_limiter_wait_seconds",
            "Seconds until the rate limiter lets the next request go (its pace, or a Retry-After)",
            registry=self.registry,
        )
        self.archive_lag = Gauge(
            "syncd_archive_lag_seconds",
            "Age of the oldest artwork with an image not yet archived (and still tried); the API "
            "deletes images 8 days (691200 s) after their artwork's creation",
            registry=self.registry,
        )
        self.archive_files = Gauge(
            "syncd_archive_files_total",
            "Images in archived_files, by status (pending, archived, gone, failed)",
            ["status"],
            registry=self.registry,
        )
        self.archive_bytes = Gauge(
            "syncd_archive_bytes_total",
            "Bytes of the images archived (as archived_files.size_bytes sums them)",
            registry=self.registry,
        )
        self.archive_runs = Counter(
            "syncd_archive_runs_total",
            "Archive runs by outcome (success, interrupted, storage, failed, crashed)",
            ["outcome"],
            registry=self.registry,
        )
        for mode in RUN_MODES:
            self.run_in_progress.labels(mode).set(0)
        self._lock = threading.Lock()
        self._run_counted: tuple[int, Counts] = (0, Counts())  # what of the current run is counted
        self.duration = Histogram(
            "syncd_run_duration_seconds",
            "Duration of sync runs",
            ["mode"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600),
            registry=self.registry,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 (an operator's choice)
        start_http_server(port, addr=addr, registry=self.registry)

    def run_started_now(self, started_at: float) -> None:
        self.run_started.set(started_at)
        self.run_pages.set(0)

    def record_progress(self, run_id: int, mode: str, counts: Counts) -> None:
        """A run's counts so far: the counters move by what is new since the last call."""
        for name in RUN_MODES:
            self.run_in_progress.labels(name).set(1 if name == mode else 0)
        self.run_pages.set(counts.pages)
        # Counted up to the most each field has reached in this run: a run that
        # rolled back pages (a rewind) and writes them again counts them once.
        with self._lock:
            counted_id, counted = self._run_counted
            if counted_id != run_id:
                counted = Counts()
            most = Counts(
                **{name: max(getattr(counts, name), getattr(counted, name)) for name in vars(counted)}
            )
            self._run_counted = (run_id, most)
        self.pages.inc(most.pages - counted.pages)
        for result in ARTWORK_RESULTS:
            self.artworks.labels(result).inc(getattr(most, result) - getattr(counted, result))

    def run_ended(self) -> None:
        for mode in RUN_MODES:
            self.run_in_progress.labels(mode).set(0)
        self.run_started.set(0)
        self.run_pages.set(0)
        self.in_flight.set(0)
        self.limiter_wait.set(0)

    def record_run(self, summary: RunSummary, finished_at: float) -> None:
        self.record_progress(summary.run_id, summary.mode, summary.counts)
        self.runs.labels(summary.mode, summary.outcome).inc()
        self.duration.labels(summary.mode).observe(summary.seconds)
        if summary.rejected_new:
            self.rejected_seen.labels("new").inc(summary.rejected_new)
        if summary.rejected_again:
            self.rejected_seen.labels("again").inc(summary.rejected_again)
        if summary.deletions_withheld is not None:
            self.deletions_withheld.labels(summary.deletions_withheld).inc()
        if summary.outcome == "success":
            self.last_success.set(finished_at)

    def record_failure(self, mode: str, outcome: str) -> None:
        self.runs.labels(mode, outcome).inc()

    def record_pace(self, request_rate: float, in_flight: int, limiter_wait: float) -> None:
        self.request_rate.set(request_rate)
        self.in_flight.set(in_flight)
        self.limiter_wait.set(limiter_wait)

    def record_archive(self, files: dict[str, int], bytes_archived: int, lag_seconds: float) -> None:
        for status, count in files.items():
            self.archive_files.labels(status).set(count)
        self.archive_bytes.set(bytes_archived)
        self.archive_lag.set(lag_seconds)

    # The client's RequestObserver: each answer as it comes.

    def answered(self, code: str) -> None:
        self.requests.labels(code).inc()

    def throttled(self) -> None:
        self.rate_limited.inc()

    def retry_wait(self, seconds: float) -> None:
        self.retry_wait_seconds.inc(seconds)
