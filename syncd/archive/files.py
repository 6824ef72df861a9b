"""The archive folder: content-addressed, files appear only complete.

    <dir>/ab/cd/abcd...ef.webp   a file, named by the sha256 of its bytes
    <dir>/incoming/              downloads in progress (same file system)
    <dir>/.lock                  held by the one archive job working here
    <dir>/.syncd-archive         says this folder is the archive (see MARKER)

A download is written to ``incoming/``, fsynced, then renamed to its final
name and the folder fsynced: a crash (even SIGKILL) never leaves a partial
file under a final name, and what is left in ``incoming/`` is removed by
the next job (which holds the lock). Identical content is stored once: a
second download of the same bytes finds its name taken and is dropped.

Before each download, and as it is written, the free space must stay above
SYNCD_ARCHIVE_MIN_FREE_BYTES; a full disk or the floor raises
ArchiveStorageError, with the partial file removed.

The folder itself may be a symbolic link (to another disk); inside it syncd
follows none: a link planted at incoming/, at a shard folder or at a file's
name is refused or replaced, never written through, so nothing outside the
folder is written or removed.
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from syncd.archive.plan import SNIFF_BYTES, content_path, sniff_extension
from syncd.db import lock_file
from syncd.errors import ArchiveStorageError

INCOMING = "incoming"
LOCK_NAME = ".lock"
# Written when a folder becomes an archive: a folder without it, while the
# database says images are archived, is an unmounted disk or another
# server's folder, not an empty archive.
MARKER = ".syncd-archive"
HASH_CHUNK = 1 << 20


class NotAnImage(Exception):
    """The body does not start like any known image."""


class TooLarge(Exception):
    """The body is larger than SYNCD_ARCHIVE_MAX_FILE_BYTES."""


@dataclass(frozen=True)
class Stored:
    sha256: str
    size: int
    path: str  # relative to the archive folder, with "/" separators
    new: bool  # False: the same bytes were already archived


class ContentStore:
    def __init__(self, root: Path, *, min_free_bytes: int = 0, max_file_bytes: int = 64 << 20) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.max_file_bytes = max_file_bytes

    # ------------------------------------------------------------ setup

    def prepare(self) -> None:
        """Create the folder (and incoming/); one clear error when it cannot be used."""
        try:
            (self.root / INCOMING).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._storage_error(exc, "cannot create the archive folder") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise ArchiveStorageError(f"the archive folder {self.root} is not writable by this user")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """The one archive job working in this folder, or LockHeldError at once;
        then clear what a dead job left in incoming/."""
        path = self.root / LOCK_NAME
        with lock_file(
            path, f"another syncd is archiving into {self.root} (lock {path} is held)", ArchiveStorageError
        ):
            self._clear_incoming()
            yield

    def marked(self) -> bool:
        return (self.root / MARKER).is_file()

    def mark(self) -> None:
        try:
            (self.root / MARKER).write_text("syncd's image archive: see archived_files.path\n")
        except OSError as exc:
            raise self._storage_error(exc, "cannot write to the archive folder") from None

    def _clear_incoming(self) -> None:
        self.inside(self.root / INCOMING)
        for leftover in (self.root / INCOMING).iterdir():
            if leftover.name.endswith(".part") and leftover.is_file() and not leftover.is_symlink():
                leftover.unlink(missing_ok=True)

    def inside(self, folder: Path) -> None:
        """Refuse a folder of the archive that leads out of it (a symbolic link)."""
        root = os.path.realpath(self.root)
        if folder.is_symlink() or not os.path.realpath(folder).startswith(root + os.sep):
            raise ArchiveStorageError(
                f"{folder} is a symbolic link out of the archive folder; syncd does not follow it: "
                "remove it (syncd creates its own folders)"
            )

    # ------------------------------------------------------------ writing

    def check_room(self, expected: int = 0) -> None:
        """Raise ArchiveStorageError when ``expected`` more bytes would pass the floor."""
        try:
            info = os.statvfs(self.root)
        except OSError as exc:
            raise self._storage_error(exc, "cannot read the free space") from None
        free = info.f_bavail * info.f_frsize
        if free - expected < self.min_free_bytes:
            coming = f" and the next image is {_size(expected)}" if expected else ""
            raise ArchiveStorageError(
                f"the archive folder {self.root} has {_size(free)} free{coming}, below "
                f"SYNCD_ARCHIVE_MIN_FREE_BYTES ({_size(self.min_free_bytes)}): archiving stopped "
                "until there is room (pending images are fetched then)"
            )

    @contextmanager
    def receive(self) -> Iterator[Receiver]:
        """A file being downloaded; ``Receiver.finish`` puts it in place. Leaving
        the block otherwise removes the partial file."""
        receiver = Receiver(self)
        try:
            yield receiver
        finally:
            receiver.discard()

    def _storage_error(self, exc: OSError, doing: str) -> ArchiveStorageError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return ArchiveStorageError(
                f"the disk of the archive folder {self.root} is full ({exc.strerror}): archiving stopped "
                "until there is room (pending images are fetched then)"
            )
        return ArchiveStorageError(f"{doing}: {exc.strerror or type(exc).__name__} ({self.root})")

    # ------------------------------------------------------------ reading

    def verify(self, path: str, sha256: str) -> str:
        """``ok``, ``missing`` or ``corrupt`` (its bytes no longer hash to its name)."""
        full = self.root / path
        digest = hashlib.sha256()
        try:
            with full.open("rb") as handle:
                while chunk := handle.read(HASH_CHUNK):
                    digest.update(chunk)
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "corrupt"
        return "ok" if digest.hexdigest() == sha256 else "corrupt"

    def set_aside(self, path: str) -> None:
        """Move a corrupt file out of its content address (kept for inspection)."""
        full = self.root / path
        aside = self.root / "corrupt" / f"{full.name}.{uuid.uuid4().hex[:8]}"
        aside.parent.mkdir(exist_ok=True)
        self.inside(aside.parent)
        try:
            os.rename(full, aside)
        except FileNotFoundError:
            pass


class Receiver:
    """One download's partial file: bytes in, hash and size kept as they come."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        self._path = store.root / INCOMING / f"{uuid.uuid4().hex}.part"
        self._handle: BinaryIO | None = None
        self._hash = hashlib.sha256()
        self._head = b""
        self.size = 0
        self._since_check = 0

    def write(self, chunk: bytes) -> None:
        store = self._store
        if self.size + len(chunk) > store.max_file_bytes:
            raise TooLarge(f"larger than SYNCD_ARCHIVE_MAX_FILE_BYTES ({_size(store.max_file_bytes)})")
        if len(self._head) < SNIFF_BYTES:
            self._head += chunk[: SNIFF_BYTES - len(self._head)]
        try:
            if self._handle is None:
                self._handle = open(self._path, "xb")
            self._handle.write(chunk)
        except OSError as exc:
            raise store._storage_error(exc, "cannot write to the archive folder") from None
        self._hash.update(chunk)
        self.size += len(chunk)
        self._since_check += len(chunk)
        if self._since_check >= 8 << 20:  # a large file may eat the floor as it arrives
            self._since_check = 0
            store.check_room()

    def finish(self) -> Stored:
        """fsync, then rename into place (or drop, when the same bytes are there)."""
        store = self._store
        extension = sniff_extension(self._head)
        if extension is None:
            raise NotAnImage(f"the body is not an image (it starts with {self._head[:8]!r})")
        sha256 = self._hash.hexdigest()
        relative = content_path(sha256, extension)
        final = store.root / relative
        try:
            assert self._handle is not None  # a body that starts like an image was written
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
            for folder in (final.parent.parent, final.parent):  # ab/, then ab/cd/
                folder.mkdir(exist_ok=True)
                store.inside(folder)  # before anything is made in it
            # The same bytes already there (a plain file, not a link planted at its name).
            if not final.is_symlink() and final.is_file() and final.stat().st_size == self.size:
                return Stored(sha256, self.size, str(relative), new=False)
            os.replace(self._path, final)  # replaces a link itself, never its target
            _fsync_dir(final.parent)
        except OSError as exc:
            raise store._storage_error(exc, "cannot put a file in the archive folder") from None
        return Stored(sha256, self.size, str(relative), new=True)

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
