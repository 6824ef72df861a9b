"""The ``syncd`` command line. Thin: parse, call, format, exit with a documented code.

Exit codes (also in the README):
  0 success - 1 internal error - 2 usage error - 3 configuration error -
  4 the API rejected the key (401/403) - 5 the API failed (retries exhausted,
  400, unusable answers) - 6 database error - 7 another syncd holds the lock -
  8 status --max-age: the last success is too old - 130 interrupted
"""

from __future__ import annotations

import errno
import functools
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import orjson

from syncd import __version__
from syncd.config import Settings, load_settings
from syncd.errors import ConfigError, ExitCode, SyncdError, listen_reason, one_line
from syncd.fakeapi.data import POISONS
from syncd.signals import install_stop_signals

if TYPE_CHECKING:
    from syncd.sync.engine import Progress

F = TypeVar("F", bound=Callable[..., Any])
STALE_EXIT = 8
log = logging.getLogger("syncd")


def _with_options(func: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def database_options(func: F) -> F:
    """The flags of every command that reads settings (they override env and TOML)."""
    return _with_options(
        func,
        [
            click.option(
                "--config",
                "config_path",
                type=click.Path(path_type=Path),
                help="TOML settings file (default: /etc/syncd/syncd.toml when it exists).",
            ),
            click.option(
                "--database-url",
                help="SQLAlchemy URL [env SYNCD_DATABASE_URL; default sqlite:///syncd.db].",
            ),
            click.option("--log-format", help="text or json [env SYNCD_LOG_FORMAT]."),
            click.option("--log-level", help="debug, info, warning or error [env SYNCD_LOG_LEVEL]."),
        ],
    )


def api_options(func: F) -> F:
    """The flags of the commands that call the API; the others would accept and ignore them."""
    return _with_options(
        func,
        [
            click.option("--api-url", help="API base URL, before /v1/artworks [env SYNCD_API_URL]."),
            click.option("--api-key-file", help="File holding the API key [env SYNCD_API_KEY_FILE]."),
            click.option(
                "--page-size", help="Records per list request, 1..500 [env SYNCD_PAGE_SIZE; default 500]."
            ),
        ],
    )


def _settings(kwargs: dict[str, Any]) -> Settings:
    """Pop the settings flags from ``kwargs`` and load settings; configure logging."""
    from syncd.config import SPECS_BY_NAME
    from syncd.log import setup_logging

    config_path = kwargs.pop("config_path", None)
    overrides = {name: kwargs.pop(name) for name in list(kwargs) if name in SPECS_BY_NAME}
    settings = load_settings(config_path=config_path, overrides=overrides)
    secrets = [settings.api_key.reveal()] if settings.api_key else []
    setup_logging(settings.log_level, settings.log_format, secrets)
    for warning in settings.warnings:
        log.warning("%s", warning)
    return settings


def handle_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SyncdError as exc:
            click.echo(f"syncd: error: {one_line(str(exc))}", err=True)
            sys.exit(int(exc.exit_code))

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="syncd")
def cli() -> None:
    """Keep a local SQL database in step with the Tengr.ai artworks API.

    Settings come from SYNCD_* environment variables, then a TOML file
    (--config, or /etc/syncd/syncd.toml), then flags. Start with `syncd demo`.

    \b
    Example:
      syncd demo                      # a fake API synced into syncd-demo.db
      SYNCD_API_URL=https://api.tengr.ai SYNCD_API_KEY_FILE=key syncd run-once
      syncd status --max-age 900
    """


# ---------------------------------------------------------------- run-once


@cli.command("run-once")
@database_options
@api_options
@click.option(
    "--full", is_flag=True, help="Read the whole list, refresh everything, mark artworks no longer listed."
)
@click.option("--no-migrate", is_flag=True, help="Fail instead of upgrading an older schema.")
@click.option("--no-refresh", is_flag=True, help="Skip re-fetching artworks whose status is not terminal.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal)."
)
@handle_errors
def run_once_command(
    full: bool, no_migrate: bool, no_refresh: bool, progress: bool | None, **kwargs: Any
) -> None:
    """Sync once and exit: a backfill the first time, incremental afterwards.

    \b
    Example:
      SYNCD_API_URL=https://api.tengr.ai SYNCD_API_KEY_FILE=key.txt syncd run-once
    """
    from syncd.app import run_once

    settings = _settings(kwargs)
    settings.require_api()
    stop = threading.Event()
    install_stop_signals(stop, "%s received: stopping after the page in flight")
    reporter = ProgressReporter(sys.stderr.isatty() if progress is None else progress)
    try:
        outcome = run_once(
            settings, full=full, migrate=not no_migrate, refresh=not no_refresh, stop=stop, on_page=reporter
        )
    finally:
        reporter.close()
    for summary in outcome.summaries:
        click.echo(_summary_screen(summary))


def _summary_screen(summary: Any) -> str:
    c = summary.counts
    rows = [
        ("pages", c.pages),
        ("requests", c.requests),
        ("inserted", c.inserted),
        ("updated", c.updated),
        ("unchanged", c.unchanged),
        ("rejected", c.rejected),
        ("unknown type", c.unknown_type),
        ("marked deleted", c.marked_deleted),
    ]
    head = f"syncd {summary.mode} run {summary.run_id}: {summary.outcome} in {summary.seconds:.1f}s"
    if summary.list_order:
        head += f" (list order: {summary.list_order})"
    return "\n".join([head] + [f"  {name:<15}{value:>10,}" for name, value in rows])


def progress_line(progress: Progress) -> str:
    """Where a run is, how fast it goes, and what paces it (the limiter's rate, requests in flight)."""
    seconds = max(progress.seconds, 1e-9)
    return (
        f"{progress.mode}: {progress.pages:,} pages ({progress.pages / seconds:,.1f}/s), "
        f"{progress.artworks:,} artworks ({progress.artworks / seconds:,.0f}/s), "
        f"{progress.requests:,} requests, rate {progress.request_rate:,.1f}/s, {progress.in_flight} in flight"
    )


class ProgressReporter:
    """A one-line progress bar on a terminal; a log line every 10 s otherwise.

    On a terminal, log records go through it too: the bar is cleared before
    a record is written and drawn again after it, so that a warning never
    lands at the end of the bar's line.
    """

    def __init__(self, tty: bool, render: Callable[[Any], str] | None = None) -> None:
        self.tty = tty
        self._render = render or progress_line
        self._last_log = time.monotonic()
        self._line = ""  # the bar as last drawn
        self._redrawn = False  # drawn again under a log line since its last update
        self._lock = threading.Lock()
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []
        if tty:
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                    self._handlers.append((handler, handler.stream))
                    handler.setStream(_AroundTheBar(self, handler.stream))

    def __call__(self, progress: Any) -> None:
        text = self._render(progress)
        if self.tty:
            with self._lock:
                self._line, self._redrawn = text, False
                sys.stderr.write("\r\033[K" + text)
                sys.stderr.flush()
        elif time.monotonic() - self._last_log >= 10:
            self._last_log = time.monotonic()
            log.info("progress: %s", text)

    def write_around(self, stream: Any, text: str) -> None:
        """Write ``text`` (log lines) on a line of its own, then the bar again."""
        with self._lock:
            if self._line:
                stream.write("\r\033[K")
            stream.write(text)
            if self._line and text.endswith("\n"):
                stream.write(self._line)
                self._redrawn = True
            stream.flush()

    def close(self) -> None:
        for handler, stream in self._handlers:
            handler.setStream(stream)
        with self._lock:
            if self._line:
                # The bar ends on a line of its own; one drawn again under a log
                # line (the run's summary) is stale: cleared.
                sys.stderr.write("\r\033[K" if self._redrawn else "\n")
                sys.stderr.flush()
            self._line = ""


class _AroundTheBar:
    """A log handler's stream that keeps the progress bar on its own line."""

    def __init__(self, reporter: ProgressReporter, stream: Any) -> None:
        self.reporter, self.stream = reporter, stream

    def write(self, text: str) -> int:
        self.reporter.write_around(self.stream, text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


# ---------------------------------------------------------------- archive


@cli.command("archive")
@database_options
@click.option("--archive-dir", help="The archive folder [env SYNCD_ARCHIVE_DIR; required].")
@click.option(
    "--verify", is_flag=True, help="Re-hash every archived file first; fetch missing or corrupt ones again."
)
@click.option("--retry-failed", is_flag=True, help="Try every failed image again now, its attempts reset.")
@click.option(
    "--accept-missing",
    is_flag=True,
    help="With --verify: go on when most files are missing (they are lost: fetch again what the API has).",
)
@click.option("--no-migrate", is_flag=True, help="Fail instead of upgrading an older schema.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal)."
)
@handle_errors
def archive_command(
    verify: bool,
    retry_failed: bool,
    accept_missing: bool,
    no_migrate: bool,
    progress: bool | None,
    **kwargs: Any,
) -> None:
    """Download the images of the synced artworks before the API deletes them.

    Every result image and every upscaling input image is kept once, by the
    sha256 of its bytes, under the archive folder; the archived_files table
    says where. Images whose artwork the API deletes soonest go first.

    \b
    Example:
      SYNCD_ARCHIVE_DIR=/var/lib/syncd/images syncd archive
      syncd archive --archive-dir ./images --verify
    """
    from syncd.app import archive

    settings = _settings(kwargs)
    settings.require_archive()
    stop = threading.Event()
    install_stop_signals(stop, "%s received: stopping the downloads in flight")
    reporter = ProgressReporter(sys.stderr.isatty() if progress is None else progress, archive_progress_line)
    try:
        outcome = archive(
            settings,
            verify=verify,
            accept_missing=accept_missing,
            retry_failed=retry_failed,
            migrate=not no_migrate,
            stop=stop,
            on_progress=reporter,
        )
    finally:
        reporter.close()
    if outcome.verified is not None:
        click.echo(f"syncd archive: {outcome.verified.line()}")
    result = outcome.result
    c = result.counts
    rows = [
        ("archived", c.archived),
        ("new files", c.new_files),
        ("bytes written", c.bytes_written),
        ("gone", c.gone),
        ("failed", c.failed),
        ("walked", c.walked),
    ]
    click.echo(
        "\n".join(
            [f"syncd archive run: {result.outcome} in {result.seconds:.1f}s"]
            + [f"  {name:<15}{value:>14,}" for name, value in rows]
        )
    )
    if result.outcome == "interrupted":
        sys.exit(int(ExitCode.INTERRUPTED))


def archive_progress_line(progress: Any) -> str:
    from syncd.status import age_text

    c = progress.counts
    seconds = max(progress.seconds, 1e-9)
    eta = "ETA ?" if progress.eta is None else f"ETA {age_text(progress.eta)}"
    return (
        f"archive: {c.done:,} of {progress.total:,} images ({c.done / seconds:,.1f}/s, {eta}): "
        f"{c.archived:,} archived, {c.bytes_written / 1e6:,.1f} MB, {c.gone:,} gone, {c.failed:,} failed, "
        f"rate {progress.request_rate:,.1f}/s, {progress.in_flight} in flight"
    )


# ---------------------------------------------------------------- daemon


@cli.command("daemon")
@database_options
@api_options
@click.option("--interval", help="Seconds between incremental syncs [env SYNCD_INTERVAL; default 300].")
@click.option(
    "--full-sync-interval",
    help="Seconds between full reconciliations [env SYNCD_FULL_SYNC_INTERVAL; default 86400].",
)
@handle_errors
def daemon_command(**kwargs: Any) -> None:
    """Run the sync service in the foreground (for systemd, see docs/deploy.md).

    Syncs at once, then every interval; refreshes unfinished artworks; runs a
    full reconciliation on its slower schedule; with SYNCD_ARCHIVE_DIR set,
    archives the images on a thread of its own. SIGTERM stops it gracefully.

    \b
    Example:
      SYNCD_API_URL=https://api.tengr.ai SYNCD_API_KEY_FILE=key syncd daemon --interval 300
    """
    from syncd.scheduler import Daemon

    settings = _settings(kwargs)
    stop = threading.Event()
    install_stop_signals(stop, "%s received: stopping")
    sys.exit(Daemon(settings, stop).run())


# ---------------------------------------------------------------- db


@cli.group("db")
def db_group() -> None:
    """Schema migrations (Alembic): print the revision, or upgrade by hand.

    run-once and daemon migrate by themselves; upgrade by hand to choose
    the moment (a long migration on a big database, before a restart).

    \b
    Example:
      syncd db current --database-url postgresql://syncd@db/syncd
      syncd db upgrade --database-url postgresql://syncd@db/syncd
    """


@db_group.command("upgrade")
@database_options
@handle_errors
def db_upgrade(**kwargs: Any) -> None:
    """Bring the database schema to the latest revision.

    \b
    Example:
      syncd db upgrade --database-url postgresql://syncd@db/syncd
    """
    from syncd import db
    from syncd.app import open_engine

    settings = _settings(kwargs)
    with open_engine(settings) as engine, db.sync_lock(engine):
        version = db.ensure_schema(engine, migrate=True)
    click.echo(f"schema at revision {version.current} (latest)")


@db_group.command("current")
@database_options
@handle_errors
def db_current(**kwargs: Any) -> None:
    """Print the database's schema revision and whether it is the latest.

    \b
    Example:
      syncd db current
    """
    from syncd import db
    from syncd.app import open_engine

    settings = _settings(kwargs)
    with open_engine(settings, write=False) as engine:
        version = db.schema_version(engine)
    if version.current is None:
        click.echo(f"empty (no schema; latest is {version.head}: run `syncd db upgrade`)")
    elif not version.known:
        click.echo(f"{version.current} (unknown to this syncd {__version__}: written by a newer syncd)")
    elif version.up_to_date:
        click.echo(f"{version.current} (latest)")
    else:
        click.echo(f"{version.current} (behind the latest {version.head}: run `syncd db upgrade`)")


# ---------------------------------------------------------------- status


@cli.command("status")
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--max-age",
    type=float,
    help="Exit 8 when the last successful run finished longer ago than this many seconds.",
)
@click.option(
    "--max-archive-lag",
    type=float,
    help="Exit 8 when an image not yet archived belongs to an artwork older than this many seconds.",
)
@handle_errors
def status_command(
    as_json: bool, max_age: float | None, max_archive_lag: float | None, **kwargs: Any
) -> None:
    """Show the last runs, the sync state per stream, the image archive and the row counts.

    \b
    Example (a monitoring check):
      syncd status --max-age 900 || echo "syncd data is stale"
      syncd status --max-archive-lag 172800 || echo "images are 2 days from being archived"
    """
    from syncd import status
    from syncd.app import open_engine

    settings = _settings(kwargs)
    with open_engine(settings, write=False) as engine:
        report = status.collect(
            engine, archive_on=settings.archive_dir is not None or max_archive_lag is not None
        )
    stale = False
    if max_age is not None:
        success = report.get("last_success")
        age = success["age_seconds"] if success else None
        stale = age is None or age > max_age
        report["stale"] = stale
    lagging = False
    if max_archive_lag is not None:
        lag = (report.get("archive") or {}).get("lag_seconds", 0.0)
        lagging = lag > max_archive_lag
        report["archive_lagging"] = lagging
    click.echo(
        orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else status.render(report)
    )
    if stale and not as_json:
        click.echo(f"STALE: no successful run in the last {max_age:g} seconds", err=True)
    if lagging and not as_json:
        click.echo(
            f"ARCHIVE LAGGING: an image not yet archived belongs to an artwork "
            f"{status.age_text(report['archive']['lag_seconds'])} old (limit {status.age_text(max_archive_lag)}; "
            "the API deletes images 8 days after creation)",
            err=True,
        )
    if stale or lagging:
        sys.exit(STALE_EXIT)


# ---------------------------------------------------------------- mock-api


@cli.command("mock-api")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--count", default=1000, show_default=True, type=int, help="Artworks to start with.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same data.")
@click.option("--api-key", default="demo-key", show_default=True, help="The Bearer key it accepts.")
@click.option("--forbidden-key", multiple=True, help="A key answered with 403.")
@click.option(
    "--order",
    type=click.Choice(["newest_first", "oldest_first", "random"]),
    default="newest_first",
    show_default=True,
)
@click.option(
    "--unknown-fraction",
    default=0.01,
    show_default=True,
    type=float,
    help="Share of artworks of a type syncd does not know.",
)
@click.option(
    "--malformed-fraction", default=0.005, show_default=True, type=float, help="Share of malformed records."
)
@click.option(
    "--pending-fraction",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of artworks still processing.",
)
@click.option(
    "--hostile-fraction",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of hostile records (huge, deeply nested, odd dates, reused ids).",
)
@click.option(
    "--poison",
    "poisons",
    multiple=True,
    type=click.Choice(POISONS),
    help="Serve one artwork as this kind of hostile record (repeatable).",
)
@click.option(
    "--content-encoding", default="", help="This Content-Encoding on 200 answers (body left plain)."
)
@click.option("--bom", is_flag=True, help="A UTF-8 byte-order mark before every 200 body.")
@click.option("--retry-after", default="", help="Every 429's Retry-After header, verbatim (e.g. inf).")
@click.option("--dribble", default=0.0, type=float, help="Seconds between the bytes of every 200 body.")
@click.option("--echo-key", is_flag=True, help="Answers repeat the key they were sent.")
@click.option(
    "--message-suffix", default="", help="Appended to every error message (e.g. a forged log line)."
)
@click.option(
    "--rate-limit",
    default=0.0,
    show_default=True,
    type=float,
    help="Server-side limit: requests/s (token bucket, burst of one second) before 429 with Retry-After (0: none).",
)
@click.option(
    "--latency-ms",
    default=0.0,
    show_default=True,
    type=float,
    help="Milliseconds before every API answer, as from a remote server (requests served concurrently).",
)
@click.option(
    "--rate-limit-headers", is_flag=True, help="Send RateLimit-Limit/-Remaining/-Reset/-Policy headers."
)
@click.option(
    "--rate-limit-blocks",
    is_flag=True,
    help="After a 429, refuse every request until its Retry-After elapses (a penalty box).",
)
@click.option(
    "--error-rate", default=0.0, show_default=True, type=float, help="Share of 500/502/503/504 answers."
)
@click.option(
    "--truncate-rate", default=0.0, show_default=True, type=float, help="Share of bodies cut short."
)
@click.option(
    "--non-json-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of 200 answers with an HTML body.",
)
@click.option(
    "--reset-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of connections closed without answer.",
)
@click.option(
    "--slow-rate", default=0.0, show_default=True, type=float, help="Share of answers delayed by --delay."
)
@click.option(
    "--delay", default=0.0, show_default=True, type=float, help="Seconds of delay for slow answers."
)
@click.option(
    "--add-per-request",
    default=0,
    show_default=True,
    type=int,
    help="Artworks created before each list request.",
)
@click.option(
    "--finish-after",
    default=0.0,
    show_default=True,
    type=float,
    help="Seconds after which a pending artwork created while serving finishes (0: never).",
)
@click.option(
    "--delete-oldest-per-request",
    default=0,
    show_default=True,
    type=int,
    help="Oldest artworks deleted before each list request.",
)
@click.option(
    "--recent-days",
    default=0.0,
    show_default=True,
    type=float,
    help="Spread createdAt over the last N days up to now (0: from 2024 on, 1-600 s apart).",
)
@click.option(
    "--retention-seconds",
    default=0.0,
    show_default=True,
    type=float,
    help="Delete artworks (and their images) this long after creation, as the API does after 8 days (0: never).",
)
@click.option(
    "--images-port",
    default=None,
    type=int,
    help="Serve the artworks' images on a second origin at this port (0 picks a free one); default: none.",
)
@click.option(
    "--image-latency-ms",
    default=0.0,
    show_default=True,
    type=float,
    help="Milliseconds before every image answer.",
)
@click.option(
    "--image-error-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of image requests answered 5xx.",
)
@click.option(
    "--image-gone-fraction",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of image URLs answered 404 every time, as if expired.",
)
@click.option(
    "--image-wrong-type-fraction",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of image URLs answered 200 with an HTML page.",
)
@click.option(
    "--image-redirect-fraction",
    default=0.0,
    show_default=True,
    type=float,
    help="Share of image URLs answered 302 to another path of the image origin.",
)
@click.option(
    "--image-size", default=0, show_default=True, type=int, help="Every image this many bytes (0: 2-256 KiB)."
)
@click.option(
    "--image-rate-limit",
    default=0.0,
    show_default=True,
    type=float,
    help="Image requests/s (token bucket, burst of one second) before 429 (0: none).",
)
@handle_errors
def mock_api_command(
    host: str,
    port: int,
    count: int,
    seed: int,
    api_key: str,
    forbidden_key: tuple[str, ...],
    order: str,
    unknown_fraction: float,
    malformed_fraction: float,
    pending_fraction: float,
    hostile_fraction: float,
    poisons: tuple[str, ...],
    recent_days: float,
    retention_seconds: float,
    images_port: int | None,
    **faults: Any,
) -> None:
    """Serve a fake Tengr.ai v1 API (with fault injection) until interrupted.

    With --images-port, the artworks' images (results, upscaling inputs) are
    served on a second origin, which the artworks' URLs name.

    \b
    Example:
      syncd mock-api --port 8080 --count 5000 --rate-limit 20 --error-rate 0.1
      syncd mock-api --poison surrogate --poison nul --content-encoding gzip --echo-key
      syncd mock-api --count 40000 --latency-ms 400 --rate-limit 10   # a remote, rate-limited API
      syncd mock-api --images-port 8081 --recent-days 8 --retention-seconds 600 --image-error-rate 0.05
      SYNCD_API_URL=http://127.0.0.1:8080 SYNCD_API_KEY=demo-key syncd run-once
    """
    from datetime import UTC, datetime, timedelta

    from syncd.fakeapi.data import EPOCH, HORIZON, Dataset
    from syncd.fakeapi.images import ImageFaults, ImageServer
    from syncd.fakeapi.server import FakeApi, FakeServer, Faults

    image_faults = ImageFaults(
        latency=faults.pop("image_latency_ms") / 1000,
        error_5xx=faults.pop("image_error_rate"),
        gone=faults.pop("image_gone_fraction"),
        wrong_type=faults.pop("image_wrong_type_fraction"),
        redirect=faults.pop("image_redirect_fraction"),
        size=faults.pop("image_size"),
        rate_limit=faults.pop("image_rate_limit"),
    )
    images = None
    if images_port is not None:
        # Bound before the dataset is made: the artworks' URLs name its port.
        try:
            images = ImageServer(host, images_port, image_faults, seed=seed)
        except OSError as exc:
            port_at_fault = exc.errno in (errno.EADDRINUSE, errno.EACCES)
            hint = (
                "choose another --images-port (0 picks a free one)"
                if port_at_fault
                else "choose another --host"
            )
            raise ConfigError(
                f"mock-api --host {host} --images-port {images_port}: "
                f"{listen_reason(exc, host, images_port)}; {hint}"
            ) from None
    now = datetime.now(UTC)
    dataset = Dataset(
        count,
        seed,
        unknown_fraction=unknown_fraction,
        malformed_fraction=malformed_fraction,
        pending_fraction=pending_fraction,
        hostile_fraction=hostile_fraction,
        image_origin=images.url if images is not None else None,
        start=now - timedelta(days=recent_days) if recent_days > 0 else EPOCH,
        end=now if recent_days > 0 else HORIZON,
    )
    fault_config = Faults(
        rate_limit=faults["rate_limit"],
        error_5xx=faults["error_rate"],
        truncated=faults["truncate_rate"],
        non_json=faults["non_json_rate"],
        reset=faults["reset_rate"],
        slow=faults["slow_rate"],
        delay=faults["delay"],
        add_per_request=faults["add_per_request"],
        finish_after=faults["finish_after"],
        delete_oldest_per_request=faults["delete_oldest_per_request"],
        order=order,
        content_encoding=faults["content_encoding"],
        bom=faults["bom"],
        retry_after=faults["retry_after"],
        dribble=faults["dribble"],
        echo_key=faults["echo_key"],
        message_suffix=faults["message_suffix"],
        latency=faults["latency_ms"] / 1000,
        rate_limit_headers=faults["rate_limit_headers"],
        rate_limit_blocks=faults["rate_limit_blocks"],
        retention=retention_seconds,
    )
    if poisons:
        dataset.poison(list(poisons), api_key)
    api = FakeApi(dataset, api_key=api_key, forbidden_keys=forbidden_key, faults=fault_config, seed=seed)
    try:
        server = FakeServer(api, host, port)
    except OSError as exc:
        if images is not None:
            images.server_close()
        port_at_fault = exc.errno in (errno.EADDRINUSE, errno.EACCES)
        hint = "choose another --port (0 picks a free one)" if port_at_fault else "choose another --host"
        raise ConfigError(
            f"mock-api --host {host} --port {port}: {listen_reason(exc, host, port)}; {hint}"
        ) from None
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    click.echo(
        f"fake Tengr.ai API on {server.url} with {count} artworks ({order}); key {api_key!r}", err=True
    )
    if images is not None:
        images.attach(api).start()
        click.echo(f"fake images on {images.url}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if images is not None:
            images.stop()


# ---------------------------------------------------------------- demo


DEMO_QUERY = """
SELECT artwork_type, status, COUNT(*) AS artworks
FROM artworks
GROUP BY artwork_type, status
ORDER BY artworks DESC
LIMIT 8
""".strip()


ARCHIVE_QUERY = """
SELECT role, status, COUNT(*) AS images, COALESCE(SUM(size_bytes), 0) AS bytes
FROM archived_files
GROUP BY role, status
ORDER BY role, status
""".strip()
DEMO_IMAGE_BYTES = 4096  # per image: the demo's archive stays small (~40 MB for 5,000 artworks)


@cli.command("demo")
@click.option("--count", default=5000, show_default=True, type=int, help="Artworks in the fake API.")
@click.option("--database-url", default="sqlite:///syncd-demo.db", show_default=True)
@click.option(
    "--archive-dir",
    default="syncd-demo-images",
    show_default=True,
    help="Where the demo archives the artworks' images ('' to skip the archive).",
)
@handle_errors
def demo_command(count: int, database_url: str, archive_dir: str) -> None:
    """Start the fake API (and its image host) in-process, sync it into SQLite,
    archive the images, and query the result.

    \b
    Example:
      syncd demo && sqlite3 syncd-demo.db 'SELECT COUNT(*) FROM artworks'
    """
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    from syncd.app import archive, open_engine, run_once
    from syncd.fakeapi.data import Dataset
    from syncd.fakeapi.images import ImageFaults, ImageServer
    from syncd.fakeapi.server import FakeApi, FakeServer

    # A week of artworks up to the start of today: the API keeps 8 days, and
    # the same data all day, so that a second demo's sync is incremental.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    images = ImageServer(faults=ImageFaults(size=DEMO_IMAGE_BYTES))
    dataset = Dataset(count, seed=42, start=today - timedelta(days=7), end=today, image_origin=images.url)
    server = FakeServer(FakeApi(dataset)).start()
    images.attach(server.api).start()
    try:
        env = {
            "SYNCD_API_URL": server.url,
            "SYNCD_API_KEY": "demo-key",
            "SYNCD_DATABASE_URL": database_url,
            "SYNCD_MAX_REQUESTS_PER_SECOND": "1000",
            "SYNCD_ARCHIVE_DIR": archive_dir,
            "SYNCD_ARCHIVE_MAX_REQUESTS_PER_SECOND": "1000",
            "SYNCD_ARCHIVE_MIN_FREE_BYTES": "0",
        }
        settings = load_settings(env=env, system_config_path=Path("/nonexistent"))
        from syncd.log import setup_logging

        setup_logging("warning", "text")
        click.echo(f"fake API with {count} artworks on {server.url}; syncing into {database_url}")
        for summary in run_once(settings).summaries:
            click.echo(_summary_screen(summary))
        if archive_dir:
            click.echo(f"\narchiving their images from {images.url} into {archive_dir}/")
            click.echo(archive(settings).result.line())
        with open_engine(settings) as engine, engine.connect() as conn:
            rows = conn.execute(text(DEMO_QUERY)).all()
            archived = conn.execute(text(ARCHIVE_QUERY)).all() if archive_dir else []
    finally:
        server.stop()
        images.stop()
    click.echo(
        "\nAn analyst's query:\n\n" + "\n".join("    " + line for line in DEMO_QUERY.splitlines()) + "\n"
    )
    click.echo(f"    {'artwork_type':<20}{'status':<10}{'artworks':>9}")
    for artwork_type, status, artworks in rows:
        click.echo(f"    {artwork_type:<20}{status:<10}{artworks:>9}")
    if archive_dir:
        click.echo(
            "\nThe image archive:\n\n"
            + "\n".join("    " + line for line in ARCHIVE_QUERY.splitlines())
            + "\n"
        )
        click.echo(f"    {'role':<10}{'status':<10}{'images':>8}{'bytes':>14}")
        for role, status, count_, size in archived:
            click.echo(f"    {role:<10}{status:<10}{count_:>8}{size:>14,}")
    click.echo(
        "\nRun it again: the second sync is incremental and costs one request; no image is fetched twice."
    )


def main() -> None:
    try:
        cli.main(prog_name="syncd")
    except SyncdError as exc:  # raised outside a command (should not happen)
        click.echo(f"syncd: error: {one_line(str(exc))}", err=True)
        sys.exit(int(exc.exit_code))


if __name__ == "__main__":
    main()
