"""Prometheus metrics for the daemon (served only when SYNCD_METRICS_PORT is set)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from syncd.api.client import RequestStats
from syncd.state import RunSummary


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
        self.retry_wait = Counter(
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
        self.duration = Histogram(
            "syncd_run_duration_seconds",
            "Duration of sync runs",
            ["mode"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600),
            registry=self.registry,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 (an operator's choice)
        start_http_server(port, addr=addr, registry=self.registry)

    def record_run(self, summary: RunSummary, finished_at: float) -> None:
        self.runs.labels(summary.mode, summary.outcome).inc()
        self.duration.labels(summary.mode).observe(summary.seconds)
        for result in ("inserted", "updated", "unchanged", "rejected"):
            self.artworks.labels(result).inc(getattr(summary.counts, result))
        if summary.outcome == "success":
            self.last_success.set(finished_at)

    def record_failure(self, mode: str, outcome: str) -> None:
        self.runs.labels(mode, outcome).inc()

    def record_pace(self, request_rate: float, in_flight: int) -> None:
        self.request_rate.set(request_rate)
        self.in_flight.set(in_flight)

    def record_http(self, stats: RequestStats) -> None:
        for code, count in stats.by_status.items():
            self.requests.labels(code).inc(count)
        self.rate_limited.inc(stats.throttled)
        self.retry_wait.inc(stats.retry_wait_seconds)
