"""The archive's store seam: what the job, verify, status and ``syncd check``
ask of wherever the files are kept, and the content addressing both kinds share.

    ArchiveStore    the protocol: a folder (syncd.archive.files.ContentStore,
                    SYNCD_ARCHIVE_DIR) or an S3-compatible bucket
                    (syncd.archive.s3.ObjectStore, SYNCD_ARCHIVE_URL)
    Receiver        one download on its way in: bytes in, hashed as they come;
                    ``finish`` places it under its content address, never
                    a partial file or object under a final name
    Digest          the rules both receivers follow: the size bound, the
                    sha256, the first bytes that say what the file is, and so
                    the name ``ab/cd/<sha256>.<ext>`` (syncd.archive.plan)

A store's ``id`` is written beside each archived file (archived_files.store,
with ``path`` the name inside it), so that a server reading the database
knows where each file is: ``s3://BUCKET/PREFIX`` for a bucket, shared by
every server that names it; ``file://HOST/PATH`` for a folder, one server's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from syncd.archive.plan import SNIFF_BYTES, content_path, sniff_extension
from syncd.wording import size as size_text

OK, MISSING, CORRUPT = "ok", "missing", "corrupt"  # what verify finds of a file
# What archived_files.path may say (anything else is never touched in a store).
PATH = re.compile(r"([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64}\.(?:png|jpg|gif|webp|avif))")
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}
MEDIA_TYPES[".avif"] = "image/avif"


class NotStored(Exception):
    """The store refused this one object (its checksum did not match what it
    received, it is larger than a put takes): this image fails with the
    reason and is tried again at a later run; the run goes on."""


class StoreBusy(Exception):
    """The store asked syncd to slow down past its retries (S3's 503 SlowDown):
    this image waits for a later run, the run goes on."""


class NotAnImage(Exception):
    """The body does not start like any known image."""


class TooLarge(Exception):
    """The body is larger than SYNCD_ARCHIVE_MAX_FILE_BYTES."""


class NotPlaceable(Exception):
    """Something stands where this image belongs (a link planted in the
    folder): the image fails with this reason, the run goes on."""


@dataclass(frozen=True)
class Stored:
    sha256: str
    size: int
    path: str  # the content address inside the store, with "/" separators
    new: bool  # False: the store had these bytes already


# Called once a download's bytes are hashed, before they are placed: (path,
# sha256, size). A shared store's job records there which object the image
# is about to be, so that a server taking over after a crash finds it.
Claim = Callable[[str, str, int], None]


class StopRequest(Protocol):
    def is_set(self) -> bool: ...


class Receiver(Protocol):
    @property
    def size(self) -> int: ...

    def write(self, chunk: bytes) -> None: ...

    def finish(self, claim: Claim | None = None) -> Stored: ...


class ArchiveStore(Protocol):
    max_file_bytes: int
    # Another server may write the same archive (a bucket): downloads claim
    # their object in the database before placing it (Claim).
    shared: bool

    @property
    def id(self) -> str:
        """Where the files are, as archived_files.store records it."""
        ...

    def describe(self) -> str:
        """The store in a few words, for status, check and messages (no secret)."""
        ...

    def prepare(self) -> None:
        """Make ready, or one ArchiveStorageError saying why it cannot be used."""
        ...

    def lock(self) -> AbstractContextManager[None]:
        """What this store needs held by the one job writing it (beside the
        database's archive lock)."""
        ...

    def close(self) -> None: ...

    def check_room(self, expected: int = 0) -> None:
        """ArchiveStorageError when ``expected`` more bytes cannot be taken."""
        ...

    def receive(self) -> AbstractContextManager[Receiver]: ...

    def marked(self) -> bool:
        """The store carries syncd's marker (it is an archive, not an empty place).
        Creates nothing: asked before the store is prepared (syncd.archive.judge)."""
        ...

    def mark(self) -> None: ...

    def holds(self, path: str, sha256: str, size: int | None) -> bool:
        """The file is there, with these bytes as far as a cheap look tells."""
        ...

    def check(
        self, path: str, sha256: str, size: int | None, stop: StopRequest | None = None, *, deep: bool = False
    ) -> str:
        """OK, MISSING or CORRUPT; ``deep``: the bytes are read and hashed again."""
        ...

    def set_aside(self, path: str) -> bool:
        """Move a corrupt file away from its content address (kept for
        inspection); False when nothing was moved."""
        ...


class Digest:
    """A download's bytes as they come: bounded, hashed, their first bytes kept."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        self._head = b""

    def add(self, chunk: bytes) -> None:
        """Count ``chunk`` in; TooLarge past the bound (before it is kept)."""
        if self.size + len(chunk) > self.max_bytes:
            raise TooLarge(f"larger than SYNCD_ARCHIVE_MAX_FILE_BYTES ({size_text(self.max_bytes)})")
        if len(self._head) < SNIFF_BYTES:
            self._head += chunk[: SNIFF_BYTES - len(self._head)]
        self._hash.update(chunk)
        self.size += len(chunk)

    def sha256(self) -> str:
        return self._hash.hexdigest()

    def raw_sha256(self) -> bytes:
        return self._hash.digest()

    def path(self) -> str:
        """The content address of the bytes seen: ``ab/cd/<sha256>.<ext>``;
        NotAnImage when they start like no known image."""
        extension = sniff_extension(self._head)
        if extension is None:
            raise NotAnImage(f"the body is not an image (it starts with {self._head[:8]!r})")
        return str(content_path(self.sha256(), extension))
