"""The archive folder: content-addressed, files appear only complete.

    <dir>/ab/cd/abcd...ef.webp   a file, named by the sha256 of its bytes
    <dir>/incoming/              downloads in progress (same file system)
    <dir>/corrupt/               files verify found corrupt, set aside
    <dir>/.lock                  held by the one archive job working here
    <dir>/.syncd-archive         says this folder is the archive (see MARKER)

A download is written to ``incoming/``, fsynced, then renamed to its final
name and the folder fsynced: a crash (even SIGKILL) never leaves a partial
file under a final name, and what is left in ``incoming/`` is removed by
the next job (which holds the lock). Identical content is stored once.

Before each download, and as it is written, the free space must stay above
SYNCD_ARCHIVE_MIN_FREE_BYTES; a full disk or the floor raises
ArchiveStorageError, with the partial file removed.

The disk is untrusted too: anyone who can write in the folder can plant
names there. The folder itself may be a symbolic link (to another disk);
inside it syncd works only through descriptors of its own directories (each
name opened relative to its parent's descriptor, with O_NOFOLLOW), never
through a path that could cross a link:

- a shard folder (``ab/``, ``ab/cd/``) that is a link or no folder: the image
  that belongs there is not placed (NotPlaceable: that image fails with the
  reason, the run goes on), and verify counts its files corrupt, moving
  nothing and reading nothing there;
- a file's name: a download replaces whatever is there (a link, a FIFO, a
  hard link of other bytes), never writes into it or trusts it; verify
  (syncd.archive.verify) opens it with O_NOFOLLOW | O_NONBLOCK, requires a
  regular file and reads at most its recorded size and one byte more;
- ``incoming/``, ``corrupt/`` or the marker that is not what syncd made: the
  folder is refused (ArchiveStorageError) or, for ``corrupt/``, nothing is set
  aside. The marker is created with O_CREAT | O_EXCL | O_NOFOLLOW.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import stat
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from syncd.archive.store import (
    CORRUPT as CORRUPT_FILE,
)
from syncd.archive.store import (
    MISSING,
    OK,
    PATH,
    Claim,
    Digest,
    NotAnImage,
    NotPlaceable,
    StopRequest,
    Stored,
    TooLarge,
)
from syncd.errors import ArchiveStorageError, Interrupted
from syncd.locks import lock_file
from syncd.wording import size as _size

__all__ = ["ContentStore", "NotAnImage", "NotPlaceable", "Planted", "Receiver", "Stored", "TooLarge"]

INCOMING = "incoming"
CORRUPT = "corrupt"
LOCK_NAME = ".lock"
# Written when a folder becomes an archive: a folder without it, while the
# database says images are archived, is an unmounted disk or another
# server's folder, not an empty archive.
MARKER = ".syncd-archive"
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Planted(Exception):
    """A directory of the archive is a link or not a directory."""


def open_dir(parent: int, name: str, *, create: bool) -> int:
    """A directory of the archive by its name in ``parent`` (a descriptor),
    never through a link; Planted when the name is a link or no directory."""
    if create:
        with suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent)
    try:
        return os.open(name, _DIRECTORY, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise Planted(name) from None
        raise


HASH_CHUNK = 1 << 20


class ContentStore:
    """The archive in a folder of this server (syncd.archive.store.ArchiveStore)."""

    shared = False  # one server's: the folder's lock file keeps a second job out

    def __init__(self, root: Path, *, min_free_bytes: int = 0, max_file_bytes: int = 64 << 20) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        self.max_file_bytes = max_file_bytes
        self._fds_lock = threading.Lock()
        self._root_fd: int | None = None
        self._incoming_fd: int | None = None

    @property
    def id(self) -> str:
        """``file://HOST/PATH``: this server's folder (another server's is another store)."""
        return f"file://{socket.gethostname()}{self.root.absolute()}"

    def describe(self) -> str:
        return f"the folder {self.root}"

    # ------------------------------------------------------------ setup

    def prepare(self) -> None:
        """Create the folder (and incoming/); one clear error when it cannot be used."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)  # the folder itself may be a link
        except OSError as exc:
            raise self._storage_error(exc, "cannot create the archive folder") from None
        with self._fds_lock:
            self._close()
            self._incoming_locked()  # created, and refused when planted
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
            with self._fds_lock:
                self._close()  # descriptors of the folder as it is now, not as it was
            try:
                self._clear_incoming()
                yield
            finally:
                self.close()

    def close(self) -> None:
        """Release the folder's descriptors (a later use opens them again)."""
        with self._fds_lock:
            self._close()

    def _close(self) -> None:
        for fd in (self._incoming_fd, self._root_fd):
            if fd is not None:
                os.close(fd)
        self._root_fd = self._incoming_fd = None

    def _root_locked(self) -> int:
        if self._root_fd is None:
            try:
                self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError as exc:
                raise self._storage_error(exc, "cannot open the archive folder") from None
        return self._root_fd

    def _incoming_locked(self) -> int:
        if self._incoming_fd is None:
            try:
                self._incoming_fd = open_dir(self._root_locked(), INCOMING, create=True)
            except Planted:
                raise ArchiveStorageError(
                    f"{self.root / INCOMING} is a symbolic link or not a folder; syncd does not "
                    "follow it: remove it (syncd creates its own folders)"
                ) from None
            except OSError as exc:
                raise self._storage_error(exc, "cannot create the archive folder's incoming/") from None
        return self._incoming_fd

    def incoming(self) -> int:
        """A descriptor of incoming/ of one's own (the caller closes it)."""
        with self._fds_lock:
            return os.dup(self._incoming_locked())

    def root_fd(self) -> int:
        """A descriptor of the folder of one's own (the caller closes it)."""
        with self._fds_lock:
            return os.dup(self._root_locked())

    def marked(self) -> bool:
        """Whether the folder carries the marker; False when there is no folder
        (an unmounted disk's mount point may be gone too). Creates nothing."""
        try:
            root = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except NotADirectoryError:
            raise ArchiveStorageError(f"the archive folder {self.root} is not a folder") from None
        except OSError as exc:
            raise self._storage_error(exc, "cannot open the archive folder") from None
        try:
            info = os.stat(MARKER, dir_fd=root, follow_symlinks=False)
        except FileNotFoundError:
            return False
        finally:
            os.close(root)
        return stat.S_ISREG(info.st_mode)

    def mark(self) -> None:
        """Create the marker: a new plain file, never through a name already there."""
        root = self.root_fd()
        try:
            fd = os.open(
                MARKER,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=root,
            )
        except FileExistsError:
            if self.marked():
                return
            raise ArchiveStorageError(
                f"{self.root / MARKER} is a symbolic link or a special file, not syncd's marker; "
                "syncd does not write through it: remove it"
            ) from None
        except OSError as exc:
            raise self._storage_error(exc, "cannot write to the archive folder") from None
        finally:
            os.close(root)
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"syncd's image archive: see archived_files.path\n")

    def _clear_incoming(self) -> None:
        incoming = self.incoming()
        try:
            with os.scandir(incoming) as entries:
                leftovers = [
                    e.name for e in entries if e.name.endswith(".part") and e.is_file(follow_symlinks=False)
                ]
            for name in leftovers:
                with suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=incoming)
        finally:
            os.close(incoming)

    def shard(self, names: tuple[str, ...], *, create: bool) -> int:
        """The descriptor of ``ab/cd`` (the caller closes it); Planted when a
        link or something else than a folder stands on the way."""
        fd = self.root_fd()
        try:
            for name in names:
                inner = open_dir(fd, name, create=create)
                os.close(fd)
                fd = inner
        except BaseException:
            os.close(fd)
            raise
        return fd

    # ------------------------------------------------------------ reading (verify)

    def holds(self, path: str, sha256: str, size: int | None) -> bool:
        return self.check(path, sha256, size) == OK

    def check(
        self, path: str, sha256: str, size: int | None, stop: StopRequest | None = None, *, deep: bool = True
    ) -> str:
        """OK, MISSING or CORRUPT (not a plain file of the archive's own, or its
        bytes no longer hash to its name): always read and hashed (a local
        read is cheap; ``deep`` changes nothing here). Reads at most ``size`` + 1
        bytes; Interrupted when ``stop`` is set between two chunks."""
        found = PATH.fullmatch(path)
        if found is None:
            return MISSING  # not a name syncd gives: nothing there is touched
        try:
            shard = self.shard((found[1], found[2]), create=False)
        except FileNotFoundError:
            return MISSING
        except (Planted, OSError):
            return CORRUPT_FILE
        try:
            try:
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                fd = os.open(found[3], flags, dir_fd=shard)
            except FileNotFoundError:
                return MISSING
            except OSError:  # a link (ELOOP), or not readable
                return CORRUPT_FILE
        finally:
            os.close(shard)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return CORRUPT_FILE  # a FIFO, a device: never read
            limit = (self.max_file_bytes if size is None else size) + 1
            digest, read = hashlib.sha256(), 0
            while read < limit:
                if stop is not None and stop.is_set():
                    raise Interrupted("stopped by a signal while verifying; nothing was changed")
                chunk = os.read(fd, min(HASH_CHUNK, limit - read))
                if not chunk:
                    break
                digest.update(chunk)
                read += len(chunk)
        finally:
            os.close(fd)
        if size is not None and read != size:
            return CORRUPT_FILE
        return OK if digest.hexdigest() == sha256 else CORRUPT_FILE

    def set_aside(self, path: str) -> bool:
        """Move a corrupt file out of its content address into corrupt/ (kept for
        inspection), through the folder's own descriptors. False: nothing moved
        (a planted link on the way: the name is replaced when fetched again)."""
        found = PATH.fullmatch(path)
        if found is None:
            return False
        try:
            shard = self.shard((found[1], found[2]), create=False)
        except (Planted, OSError):
            return False
        try:
            root = self.root_fd()
            try:
                aside = open_dir(root, CORRUPT, create=True)
            finally:
                os.close(root)
            try:
                os.rename(found[3], f"{found[3]}.{uuid.uuid4().hex[:8]}", src_dir_fd=shard, dst_dir_fd=aside)
            finally:
                os.close(aside)
        except (Planted, OSError):
            return False
        finally:
            os.close(shard)
        return True

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

    def not_placeable(self, names: tuple[str, ...], what: str) -> NotPlaceable:
        return NotPlaceable(
            f"{'/'.join(names)} in the archive folder {self.root} is {what}: syncd does not follow "
            "it, so this image cannot be placed; remove it (syncd makes its own folders)"
        )


class Receiver:
    """One download's partial file in incoming/: bytes in, hashed as they come."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        self._name = f"{uuid.uuid4().hex}.part"
        self._incoming: int | None = None  # our own descriptor of incoming/
        self._handle: BinaryIO | None = None
        self._placed = False
        self._digest = Digest(store.max_file_bytes)
        self._since_check = 0

    @property
    def size(self) -> int:
        return self._digest.size

    def write(self, chunk: bytes) -> None:
        store = self._store
        self._digest.add(chunk)
        try:
            if self._handle is None:
                self._incoming = store.incoming()
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                self._handle = os.fdopen(os.open(self._name, flags, 0o644, dir_fd=self._incoming), "wb")
            self._handle.write(chunk)
        except OSError as exc:
            raise store._storage_error(exc, "cannot write to the archive folder") from None
        self._since_check += len(chunk)
        if self._since_check >= 8 << 20:  # a large file may eat the floor as it arrives
            self._since_check = 0
            store.check_room()

    def finish(self, claim: Claim | None = None) -> Stored:
        """fsync, then rename into place, replacing whatever stands at the name."""
        store = self._store
        relative = self._digest.path()
        sha256 = self._digest.sha256()
        shard_name, sub_name, name = relative.split("/")
        folders = (shard_name, sub_name)
        assert self._handle is not None  # an image's first bytes came
        assert self._incoming is not None
        if claim is not None:
            claim(relative, sha256, self.size)
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
            shard = store.shard(folders, create=True)
        except Planted:
            raise store.not_placeable(folders, "a symbolic link or no folder") from None
        except OSError as exc:
            raise store._storage_error(exc, "cannot put a file in the archive folder") from None
        try:
            try:
                there = os.stat(name, dir_fd=shard, follow_symlinks=False)
            except FileNotFoundError:
                there = None
            # Replaced, never trusted: a name already there may be a link, a FIFO
            # or a hard link of other bytes of the same size. rename() replaces
            # the name itself, never what it points at.
            os.replace(self._name, name, src_dir_fd=self._incoming, dst_dir_fd=shard)
            self._placed = True
            os.fsync(shard)
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise store.not_placeable((*folders, name), "a folder, not a file") from None
            raise store._storage_error(exc, "cannot put a file in the archive folder") from None
        finally:
            os.close(shard)
        new = there is None or not stat.S_ISREG(there.st_mode)
        return Stored(sha256, self.size, relative, new=new)

    def discard(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._incoming is not None:
            if not self._placed:
                with suppress(FileNotFoundError):
                    os.unlink(self._name, dir_fd=self._incoming)
            os.close(self._incoming)
            self._incoming = None
