"""What every ``syncd`` command shares: its option groups, settings, error
handling (a SyncdError is one line and its exit code) and the run summary.

The commands themselves live where their subject does: ``syncd.cli`` (the
group and the operator's commands), ``syncd.demo``, ``syncd.fakeapi.cli``.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from syncd.config import Settings, load_settings
from syncd.errors import ExitCode, SyncdError, one_line
from syncd.redaction import redact

F = TypeVar("F", bound=Callable[..., Any])
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
                "--page-size",
                metavar="INTEGER",
                help="Records per list request, 1..500 [env SYNCD_PAGE_SIZE; default 500].",
            ),
        ],
    )


# The API key of the command's settings: the lines the CLI prints itself (an
# error, check's lines) are masked as the log's are (its filter), since an
# error may quote what a hostile answer sent back (a header echoing the key).
_secrets: list[str] = []


def shown(text: str) -> str:
    """``text`` as the CLI may print it: the API key masked in every form."""
    return redact(text, _secrets)


def command_settings(kwargs: dict[str, Any]) -> Settings:
    """Pop the settings flags from ``kwargs`` and load settings; configure logging."""
    from syncd.config import SPECS_BY_NAME
    from syncd.log import setup_logging

    config_path = kwargs.pop("config_path", None)
    overrides = {name: kwargs.pop(name) for name in list(kwargs) if name in SPECS_BY_NAME}
    settings = load_settings(config_path=config_path, overrides=overrides)
    secrets = [settings.api_key.reveal()] if settings.api_key else []
    _secrets[:] = secrets
    setup_logging(settings.log_level, settings.log_format, secrets)
    for warning in settings.warnings:
        log.warning("%s", warning)
    return settings


def past_moment(value: str | None, option: str) -> datetime | None:
    """An ISO-8601 date or date-time not in the future, in UTC (UTC when it
    names no offset); a usage error naming ``option`` otherwise."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected an ISO-8601 date or date-time such as 2026-12-01 or 2026-12-01T08:00:00Z, got {value!r}",
            param_hint=option,
        ) from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment > datetime.now(UTC):
        raise click.BadParameter(
            f"{value!r} is in the future: there is nothing to sync yet", param_hint=option
        )
    return moment


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's last flush would fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # no file descriptor behind stdout (a test's runner): nothing to flush there


def handle_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SyncdError as exc:
            click.echo(f"syncd: error: {shown(one_line(str(exc)))}", err=True)
            sys.exit(int(exc.exit_code))
        except BrokenPipeError:
            # The reader of the output went away (`syncd demo | head`): end as a
            # shell tool that SIGPIPE ends, not as a bug (click would say 1).
            _silence_stdout()
            sys.exit(int(ExitCode.OUTPUT_CLOSED))

    return wrapper  # type: ignore[return-value]


def summary_screen(summary: Any) -> str:
    """A run's outcome as the commands print it: a head line, then one count a line."""
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
