"""The ``syncd`` command line. Thin: parse, call, format, exit with a documented code.

Exit codes (also in the README):
  0 success - 1 internal error - 2 usage error - 3 configuration error -
  4 the API rejected the key (401/403) - 5 the API failed (retries exhausted,
  400, unusable answers) - 6 database error - 7 another syncd holds the lock -
  8 status --max-age: the last success is too old - 130 interrupted
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import click
import orjson

from syncd import SCHEMA_REVISION, __version__
from syncd.clitools import (
    api_options,
    command_settings,
    database_options,
    handle_errors,
    past_moment,
    shown,
    summary_screen,
)
from syncd.errors import ConfigError, ExitCode, SyncdError, one_line
from syncd.signals import install_stop_signals
from syncd.wording import duration, plural

if TYPE_CHECKING:
    from syncd.sync.runs import Progress

log = logging.getLogger("syncd")


class _Commands(click.Group):
    """The ``syncd`` group: the commands that need the fake API (``mock-api``,
    ``demo``) are imported only when one of them runs (or help lists them)."""

    LAZY: ClassVar[dict[str, str]] = {
        "demo": "syncd.demo:demo_command",
        "mock-api": "syncd.fakeapi.cli:mock_api_command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY:
            module, name = self.LAZY[cmd_name].split(":")
            command = getattr(importlib.import_module(module), name)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_Commands,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(
    __version__,
    prog_name="syncd",
    message=f"%(prog)s %(version)s (database schema revision {SCHEMA_REVISION})",
    help="Show syncd's version and the schema revision it expects, and exit.",
)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Keep a local SQL database in step with the Tengr.ai artworks API.

    Settings come from SYNCD_* environment variables, then a TOML file
    (--config, or /etc/syncd/syncd.toml), then flags. Start with `syncd demo`.

    \b
    Example:
      syncd demo                      # a fake API synced into syncd-demo.db
      SYNCD_API_URL=https://api.tengr.ai SYNCD_API_KEY_FILE=key syncd run-once
      syncd status --max-age 900
    """
    _help_without_a_command(ctx)


# ---------------------------------------------------------------- run-once


@cli.command("run-once")
@database_options
@api_options
@click.option(
    "--full", is_flag=True, help="Read the whole list, refresh everything, mark artworks no longer listed."
)
@click.option(
    "--since",
    metavar="DATE",
    callback=lambda ctx, param, value: past_moment(value, "--since"),
    help="Scan only for artworks created at or after DATE (ISO date or date-time; UTC unless it names "
    "an offset): older ones are neither stored nor marked deleted. In a newest-first list the scan "
    "stops there; later runs go on from the newest artwork it saw.",
)
@click.option("--no-migrate", is_flag=True, help="Fail instead of upgrading an older schema.")
@click.option("--no-refresh", is_flag=True, help="Skip re-fetching artworks whose status is not terminal.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal)."
)
@handle_errors
def run_once_command(
    full: bool,
    since: datetime | None,
    no_migrate: bool,
    no_refresh: bool,
    progress: bool | None,
    **kwargs: Any,
) -> None:
    """Sync once and exit: a backfill the first time, incremental afterwards.

    \b
    Example:
      SYNCD_API_URL=https://api.tengr.ai SYNCD_API_KEY_FILE=key.txt syncd run-once
      syncd run-once --since 2026-12-01   # start from where you are, not from the oldest artwork
    """
    if full and since is not None:
        raise click.UsageError("--full reads the whole list; --since only part of it: give one of them")
    from syncd.app import SyncOptions, run_once

    settings = command_settings(kwargs)
    settings.require_api()
    stop = threading.Event()
    install_stop_signals(stop, "%s received: stopping after the page in flight")
    reporter = ProgressReporter(sys.stderr.isatty() if progress is None else progress)
    try:
        outcome = run_once(
            settings,
            SyncOptions(full=full, refresh=not no_refresh, since=since, stop=stop, on_page=reporter),
            migrate=not no_migrate,
        )
    finally:
        reporter.close()
    for summary in outcome.summaries:
        click.echo(summary_screen(summary))


def progress_line(progress: Progress) -> str:
    """Where a run is, how fast it goes, and what paces it (the limiter's rate, requests in flight)."""
    seconds = max(progress.seconds, 1e-9)
    line = (
        f"{progress.mode}: {plural(progress.pages, 'page')} ({progress.pages / seconds:,.1f}/s), "
        f"{plural(progress.artworks, 'artwork')} ({progress.artworks / seconds:,.0f}/s), "
        f"{plural(progress.requests, 'request')}, rate {progress.request_rate:,.1f}/s, {progress.in_flight} in flight"
    )
    reach = progress.reach
    if reach is None or reach.reached is None:
        return line
    line += f"; created {reach.reached:%Y-%m-%d %H:%M}"
    share = reach.share()
    if share is None or reach.end is None:
        return line  # where the list ends is not known: no share, no ETA
    eta = "?" if share < 0.01 else duration(progress.seconds * (1 - share) / share)
    return line + f" of {reach.end:%Y-%m-%d %H:%M} expected ({share:.0%}, ETA {eta})"


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
@click.option("--archive-dir", help="The archive folder [env SYNCD_ARCHIVE_DIR; this or --archive-url].")
@click.option("--archive-url", help="The archive's bucket, s3://BUCKET/PREFIX [env SYNCD_ARCHIVE_URL].")
@click.option(
    "--verify", is_flag=True, help="Check every archived file first; fetch missing or corrupt ones again."
)
@click.option(
    "--deep",
    is_flag=True,
    help="With --verify on a bucket: read and hash every object again (a folder's files always are).",
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
    deep: bool,
    retry_failed: bool,
    accept_missing: bool,
    no_migrate: bool,
    progress: bool | None,
    **kwargs: Any,
) -> None:
    """Download the images of the synced artworks before the API deletes them.

    Every result image and every upscaling input image is kept once, by the
    sha256 of its bytes, under the archive folder or in the bucket of
    SYNCD_ARCHIVE_URL; the archived_files table says where. Images whose
    artwork the API deletes soonest go first.

    \b
    Example:
      SYNCD_ARCHIVE_DIR=/var/lib/syncd/images syncd archive
      syncd archive --archive-dir ./images --verify
      SYNCD_ARCHIVE_URL=s3://syncd-images/tengr syncd archive --verify --deep
    """
    from syncd.app import ArchiveOptions, archive

    settings = command_settings(kwargs)
    settings.require_archive()
    stop = threading.Event()
    install_stop_signals(stop, "%s received: stopping the downloads in flight")
    reporter = ProgressReporter(sys.stderr.isatty() if progress is None else progress, archive_progress_line)
    try:
        outcome = archive(
            settings,
            ArchiveOptions(
                verify=verify,
                deep=deep,
                accept_missing=accept_missing,
                retry_failed=retry_failed,
                stop=stop,
                on_progress=reporter,
            ),
            migrate=not no_migrate,
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

    c = progress.counts
    seconds = max(progress.seconds, 1e-9)
    eta = "ETA ?" if progress.eta is None else f"ETA {duration(progress.eta)}"
    return (
        f"archive: {c.done:,} of {plural(progress.total, 'image')} ({c.done / seconds:,.1f}/s, {eta}): "
        f"{c.archived:,} archived, {c.bytes_written / 1e6:,.1f} MB, {c.gone:,} gone, {c.failed:,} failed, "
        f"rate {progress.request_rate:,.1f}/s, {progress.in_flight} in flight"
    )


# ---------------------------------------------------------------- daemon


@cli.command("daemon")
@database_options
@api_options
@click.option(
    "--interval",
    metavar="FLOAT",
    help="Seconds between incremental syncs [env SYNCD_INTERVAL; default 300].",
)
@click.option(
    "--full-sync-interval",
    metavar="FLOAT",
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

    settings = command_settings(kwargs)
    stop = threading.Event()
    install_stop_signals(stop, "%s received: stopping")
    sys.exit(Daemon(settings, stop).run())


# ---------------------------------------------------------------- db


@cli.group("db", invoke_without_command=True)
@click.pass_context
def db_group(ctx: click.Context) -> None:
    """Schema migrations (Alembic): print the revision, or upgrade by hand.

    run-once and daemon migrate by themselves; upgrade by hand to choose
    the moment (a long migration on a big database, before a restart).

    \b
    Example:
      syncd db current --database-url postgresql://syncd@db/syncd
      syncd db upgrade --database-url postgresql://syncd@db/syncd
    """
    _help_without_a_command(ctx)


def _help_without_a_command(ctx: click.Context) -> None:
    """A group named alone lists its commands and succeeds (it is a question, not a mistake)."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)


@db_group.command("upgrade")
@database_options
@handle_errors
def db_upgrade(**kwargs: Any) -> None:
    """Bring the database schema to the latest revision.

    \b
    Example:
      syncd db upgrade --database-url postgresql://syncd@db/syncd
    """
    from syncd import db, locks
    from syncd.app import open_engine

    settings = command_settings(kwargs)
    with open_engine(settings) as engine, locks.sync_lock(engine):
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

    settings = command_settings(kwargs)
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


@db_group.command("reset-state")
@database_options
@click.option("--yes", is_flag=True, help="Forget the cursors (without it, only says what would happen).")
@handle_errors
def db_reset_state(yes: bool, **kwargs: Any) -> None:
    """Forget the sync cursors, keeping every row: the next run reads the whole
    list again, as a backfill (artworks stored unchanged are only touched).

    For starting over after a long stop or a change of account data: the
    artworks, their parameters and results, the quarantine, the runs and the
    image archive all stay. Takes the sync lock (no run may be going).

    \b
    Example:
      syncd db reset-state          # says what it would forget
      syncd db reset-state --yes
    """
    from syncd import db, locks, store
    from syncd.app import open_engine
    from syncd.state import STREAM

    settings = command_settings(kwargs)
    # A writer, even to say what it would do: as root in the service's state,
    # refused before anything (its lock file) is made there.
    with open_engine(settings, create=False) as engine:
        with engine.connect() as conn:
            state = store.load_state(conn, STREAM)
        told = (
            f"the {state.phase} cursor at offset {state.cursor_skip}, list order {state.list_order}, "
            f"the head and tail, the last complete scan ({state.last_full_sync_at or 'none'})"
        )
        if not yes:
            click.echo(f"would forget {told}; rows stay. Run again with --yes to do it.", err=True)
            sys.exit(int(ExitCode.USAGE))
        with locks.sync_lock(engine), db.writer(engine).begin() as conn:
            store.forget_state(conn, STREAM)
    click.echo(f"forgot {told}; the next run is a backfill (rows stay)")


# ---------------------------------------------------------------- check


@cli.command("check")
@database_options
@api_options
@click.option("--archive-dir", help="The archive folder [env SYNCD_ARCHIVE_DIR; optional].")
@click.option(
    "--archive-url", help="The archive's bucket, s3://BUCKET/PREFIX [env SYNCD_ARCHIVE_URL; optional]."
)
@handle_errors
def check_command(**kwargs: Any) -> None:
    """Try the configuration without syncing: settings, the API and its key,
    the database, the archive. One line each, ok or the problem.

    The API gets one request (GET /v1/artworks?limit=1); the database is
    connected to and its schema revision read; nothing is created or written.
    Exits with the code of the first problem (3 settings, 4 the key, 5 the
    API, 6 the database, 9 the archive), 0 when all is well.

    \b
    Example:
      syncd check --config /etc/syncd/syncd.toml
      sudo -u syncd syncd check   # as the service's user, with its settings
    """
    from syncd.check import Item, check

    try:
        settings = command_settings(kwargs)
    except ConfigError as exc:
        click.echo(Item("settings", problem=exc).line())
        sys.exit(int(exc.exit_code))
    click.echo(shown(Item("settings", detail=settings.describe_sources()).line()))
    report = check(settings)
    for item in report.items:
        click.echo(shown(item.line()))
    sys.exit(int(report.exit_code))


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

    settings = command_settings(kwargs)
    with open_engine(settings, write=False) as engine:
        report = status.collect(
            engine,
            archive_on=settings.archive_on,
            archive_store=str(settings.archive_url or settings.archive_dir or "") or None,
        )
    if max_archive_lag is not None and report.get("archive") is None:
        raise ConfigError(
            "--max-archive-lag: no image archive to measure (neither SYNCD_ARCHIVE_DIR nor SYNCD_ARCHIVE_URL "
            "is set, and this database was never archived); set it as the service has it, or drop the option"
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
    if stale and max_age is not None and not as_json:
        click.echo(f"STALE: no successful run in the last {plural(max_age, 'second')}", err=True)
    if lagging and not as_json:
        click.echo(
            f"ARCHIVE LAGGING: an image not yet archived belongs to an artwork "
            f"{duration(report['archive']['lag_seconds'])} old (limit {duration(max_archive_lag)}; "
            "the API deletes images 8 days after creation)",
            err=True,
        )
    if stale or lagging:
        sys.exit(int(ExitCode.STALE))


def main() -> None:
    try:
        cli.main(prog_name="syncd")
    except SyncdError as exc:  # raised outside a command (should not happen)
        click.echo(f"syncd: error: {shown(one_line(str(exc)))}", err=True)
        sys.exit(int(exc.exit_code))


if __name__ == "__main__":
    main()
