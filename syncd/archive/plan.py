"""Pure: the archive's decisions, apart from any I/O.

- Order: the image whose artwork the API deletes soonest first (earliest
  deadline first), so that under a backlog what would vanish first is saved
  first. An image already past its deadline is most likely gone: it waits
  behind every image still alive, the most recently expired first.
- Retries: a failed image is tried again at a later run after a back-off
  that doubles from RETRY_BASE up to RETRY_CAP; after MAX_ATTEMPTS runs it is
  left failed (``next_attempt_at`` empty) until ``syncd archive --retry-failed``.
- Hosts: at most HOST_SHARE of the download slots go to one host (its
  origin: name and port), so that a slow or hostile host slows only itself.
- What a file is: its bytes, not its name or its Content-Type header. The
  extension comes from the file's first bytes (a known image signature);
  a body that is no known image is not kept.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import PurePosixPath
from urllib.parse import urlsplit

# The API deletes an artwork and its images this long after its creation
# (API v2.2.0, "Defaults, Retention, and a Doc Refresh").
RETENTION = timedelta(days=8)
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=6)
MAX_ATTEMPTS = 12  # runs; with the back-off above, more than two days of trying


class FileStatus(StrEnum):
    PENDING = "pending"  # not yet fetched (or to be fetched again)
    ARCHIVED = "archived"  # in the archive folder, under its sha256
    GONE = "gone"  # the host said 404/410: deleted, nothing to keep
    FAILED = "failed"  # the last try failed (last_error); tried again at next_attempt_at


class Role(StrEnum):
    RESULT = "result"  # artwork_results.url
    INPUT = "input"  # upscaling_parameters.image_url


@dataclass(frozen=True)
class Due:
    """An image due a fetch, as the archive job sees it."""

    artwork_id: str
    role: str
    position: int
    url: str
    expires_at: datetime
    attempts: int


def fetch_order(due: list[Due], now: datetime) -> list[Due]:
    """Alive images by deadline (soonest first), then expired ones (latest first)."""
    alive = sorted((d for d in due if d.expires_at > now), key=lambda d: (d.expires_at, d.artwork_id))
    expired = sorted(
        (d for d in due if d.expires_at <= now), key=lambda d: (d.expires_at, d.artwork_id), reverse=True
    )
    return alive + expired


HOST_SHARE = 0.5  # of the download slots, at most, for one host


def host_cap(max_in_flight: int) -> int:
    """Downloads one host may hold at once: half the slots, at least one."""
    return max(1, int(max_in_flight * HOST_SHARE))


@functools.lru_cache(maxsize=4096)
def origin(url: str) -> str:
    """The host a URL's download counts against (name and port)."""
    try:
        parts = urlsplit(url)
        return f"{(parts.hostname or '').lower()}:{parts.port or ''}"
    except ValueError:
        return url  # a URL the fetcher refuses: it counts against itself


def startable(
    waiting: list[Due], busy_hosts: dict[str, int], busy_urls: set[str], cap: int, limit: int | None = None
) -> list[int]:
    """Pure: which of ``waiting`` (in fetch order) may start now, by index, in
    order, at most ``limit``: a host at ``cap`` downloads waits, as does a URL
    being fetched (once archived, its other rows are too); the rest go ahead
    of them."""
    hosts = dict(busy_hosts)
    urls = set(busy_urls)
    chosen: list[int] = []
    for index, item in enumerate(waiting):
        if limit is not None and len(chosen) >= limit:
            break
        host = origin(item.url)
        if hosts.get(host, 0) >= cap or item.url in urls:
            continue
        hosts[host] = hosts.get(host, 0) + 1
        urls.add(item.url)
        chosen.append(index)
    return chosen


def eta_seconds(remaining: int, done: int, seconds: float) -> float | None:
    """Seconds to do ``remaining`` images at the pace held so far (``done`` in
    ``seconds``); None before there is a pace."""
    if done <= 0 or seconds <= 0:
        return None
    return remaining * seconds / done


def retry_at(attempts: int, now: datetime) -> datetime | None:
    """When a file that failed its ``attempts``-th run is tried again; None: no more."""
    if attempts >= MAX_ATTEMPTS:
        return None
    delay: timedelta = min(RETRY_CAP, RETRY_BASE * (2 ** min(max(attempts - 1, 0), 20)))
    return now + delay


def expires_at(created_at: datetime) -> datetime:
    return created_at + RETENTION


def lag_seconds(oldest_waiting_expiry: datetime | None, now: datetime) -> float:
    """The archive's lag: the age of the oldest artwork with an image not yet
    archived (and still being tried); 0 when none waits."""
    if oldest_waiting_expiry is None:
        return 0.0
    return max(0.0, (now - (oldest_waiting_expiry - RETENTION)).total_seconds())


# ------------------------------------------------------------------ what a file is

# (signature at offset 0, extension); WebP and AVIF are checked apart (their
# signatures do not start at byte 0).
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
)
SNIFF_BYTES = 16
# At most 99 characters: archived_files.content_type is varchar(100).
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,48}/[a-z0-9][a-z0-9!#$&^_.+-]{0,48}")


def sniff_extension(head: bytes) -> str | None:
    """The extension for a file starting with ``head``; None: no known image."""
    for signature, extension in _SIGNATURES:
        if head.startswith(signature):
            return extension
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return ".avif"
    return None


def media_type(header: str | None) -> str | None:
    """The Content-Type's media type, lowercased and without parameters; None
    when absent or not a well-formed type (a header is hostile until read)."""
    if not header:
        return None
    value = header.split(";", 1)[0].strip().lower()
    return value if _MEDIA_TYPE.fullmatch(value) else None


def content_path(sha256: str, extension: str) -> PurePosixPath:
    """Where a file lives in the archive: ``ab/cd/abcd...<ext>``, from its hash only."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256) or extension not in {
        ".png",
        ".jpg",
        ".gif",
        ".webp",
        ".avif",
    }:
        raise ValueError("not a sha256 hex digest and a known image extension")
    return PurePosixPath(sha256[:2], sha256[2:4], sha256 + extension)


class Verdict(StrEnum):
    GONE = "gone"  # 404/410: the host deleted it
    RETRY = "retry"  # worth trying again soon (5xx, 429, 408, network)
    FAILED = "failed"  # the answer will not change by itself soon (other 4xx): a later run
    REFUSED = "refused"  # syncd will never fetch it (not http(s), the key in it, ...): given up


def verdict_for_status(status: int) -> Verdict:
    if status in (404, 410):
        return Verdict.GONE
    if status >= 500 or status in (408, 425, 429):
        return Verdict.RETRY
    return Verdict.FAILED
