"""Logging: plain lines for a terminal or the journal, JSON lines for shippers.

A redaction filter replaces the API key wherever it might appear in a record
(message, arguments, exception text). syncd never logs it on purpose; the
filter is a second line of defence, at every level. Text lines escape
control characters, so that nothing the API sends can forge a log line;
JSON lines are valid JSON whatever the message holds.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from syncd.errors import one_line
from syncd.redaction import maskable, redact


class RedactFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = maskable(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        message = redact(message, self.secrets)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        record.msg, record.args = message, None
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # One record, one line: messages may carry the API's words.
        text = f"{stamp} {record.levelname:<7} {record.name}: {one_line(record.getMessage())}"
        if record.exc_info or record.exc_text:
            trace = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
            # Indented and escaped: no line of a traceback can pass for a log line.
            text += "".join(f"\n  | {one_line(line)}" for line in trace.splitlines())
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info or record.exc_text:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        # orjson leaves U+0085, U+2028 and U+2029 raw; tools that split lines on
        # them (Python's splitlines, some log viewers) would see two records.
        return orjson.dumps(entry, default=str).decode().translate(_JSON_LINE_BREAKS)


_JSON_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def setup_logging(level: str = "info", fmt: str = "text", secrets: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter(secrets or []))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request at INFO; keep it for debug level only.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # The S3 client (the archive in a bucket) logs signed headers at debug: an
    # access key id and signatures. Its warnings are enough, at every level.
    for name in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    # Coalesced or skipped ticks are normal; syncd logs each run's outcome itself.
    logging.getLogger("apscheduler").setLevel(logging.ERROR if level != "debug" else logging.DEBUG)
