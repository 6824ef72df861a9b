"""The archive in an S3-compatible bucket (SYNCD_ARCHIVE_URL=s3://BUCKET/PREFIX).

    PREFIX/ab/cd/abcd...ef.webp   an image, named by the sha256 of its bytes
    PREFIX/.syncd-archive         says this prefix is the archive
    PREFIX/corrupt/<name>.<rand>  objects verify found corrupt, set aside

Endpoint, region and credentials come the way every S3 tool takes them
(boto3's chain: AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3, AWS_REGION or
AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an
instance or task role), never from syncd's settings, and never appear in a
message: what the store said is reduced to its error code.

A download is streamed to an unnamed temporary file (TMPDIR; removed by the
kernel whatever ends the process) while it is hashed; only then is it put,
in one request, under its content address, with its SHA-256 as the
object's checksum (the store checks the bytes it received against it) and
``If-None-Match: *``: two servers racing on one image write it once, and
bytes the bucket holds already are not written again (412: "new" is
false). No partial object ever stands under a final key: a put that does
not complete leaves nothing.

What goes wrong is one line (ArchiveStorageError, exit 9; the run stops,
nothing is marked, the sync goes on): the store cannot be reached, the
credentials are missing or refused, the bucket does not exist, the store is
full (a quota). A 503 SlowDown is retried by botocore's adaptive mode, which
also slows every later request of the process (as an image host's 429 slows
its pace); past its attempts the image waits for a later run (StoreBusy).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from syncd.archive.store import (
    CORRUPT,
    MEDIA_TYPES,
    MISSING,
    OK,
    PATH,
    Claim,
    Digest,
    NotStored,
    StopRequest,
    StoreBusy,
    Stored,
)
from syncd.errors import ArchiveStorageError, ConfigError, Interrupted
from syncd.locations import BucketUrl
from syncd.wording import size as size_text

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

MARKER = ".syncd-archive"
CORRUPT_PREFIX = "corrupt"
HASH_CHUNK = 1 << 20
ATTEMPTS = 6  # botocore's, per request (adaptive mode: throttling slows the client too)
_CODE = re.compile(r"[A-Za-z0-9.]{1,64}")

DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidSecurity",
}
FULL = {
    "QuotaExceeded",  # Ceph RGW
    "XMinioStorageFull",
    "XMinioAdminBucketQuotaExceeded",
    "StorageFull",
    "InsufficientStorage",
    "ServiceQuotaExceeded",
}
THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
# This object only: its bytes did not arrive as hashed, or it is too large for one put.
REFUSED_OBJECT = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch"}
TOO_LARGE = {"EntityTooLarge"}
UNSUPPORTED = {"NotImplemented"}
EXISTS = {"PreconditionFailed"}  # If-None-Match: * and the key is there
CONFLICT = {"ConditionalRequestConflict", "OperationAborted"}  # another put of the key under way


def endpoint_of(env: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    env = os.environ if env is None else env
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None


def shown(endpoint: str) -> str:
    """An endpoint as messages show it: scheme, host and port, never a user:secret@."""
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an endpoint that is not a URL)"
    return f"{parts.scheme}://{host}{port}"


# Clients kept for the process (a daemon's archive runs every minute and after
# every sync; making a client costs ~0.25 s of CPU): by what they were made from.
_CLIENTS: dict[tuple[object, ...], S3Client] = {}
_CLIENTS_LOCK = threading.Lock()
MAX_CLIENTS = 4
_CHAIN = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


def forget_clients() -> None:
    """Close the clients kept (tests: each its own server and throttling state)."""
    with _CLIENTS_LOCK:
        for client in _CLIENTS.values():
            client.close()
        _CLIENTS.clear()


def make_client(*, max_connections: int = 16, attempts: int = ATTEMPTS) -> S3Client:
    """The process's S3 client for these settings and this environment (made
    once; boto3 clients are thread-safe and refresh a role's credentials)."""
    key = (max_connections, attempts, *(os.environ.get(name) for name in _CHAIN))
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            if len(_CLIENTS) >= MAX_CLIENTS:
                _CLIENTS.pop(next(iter(_CLIENTS))).close()
            client = _CLIENTS[key] = _new_client(max_connections=max_connections, attempts=attempts)
        return client


def _new_client(
    *,
    max_connections: int = 16,
    connect_timeout: float = 10.0,
    read_timeout: float = 30.0,
    attempts: int = ATTEMPTS,
) -> S3Client:
    """An S3 client as every S3 tool makes one (boto3's chain of settings)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:  # pragma: no cover - the s3 extra is installed in development
        raise ConfigError(
            "SYNCD_ARCHIVE_URL: the object store needs boto3: pip install 'syncd[s3]'"
        ) from None
    endpoint = endpoint_of()
    config = Config(
        retries={"mode": "adaptive", "max_attempts": attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_connections,
        # The checksum is syncd's own (the SHA-256 it hashed); no other is added,
        # which stores that take no CRC32 (older MinIO, Ceph) would refuse.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # An endpoint of one's own (MinIO, Ceph, a test server) is addressed by path.
        s3={"addressing_style": "path" if endpoint else "auto"},
        user_agent_extra="syncd-archive",
    )
    session = boto3.session.Session(region_name=os.environ.get("AWS_REGION") or None)
    return session.client("s3", config=config)


def _code(exc: BaseException) -> tuple[str, int]:
    """A ClientError's code and HTTP status, the code reduced to safe characters."""
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return (code if _CODE.fullmatch(code) else "unknown"), status


class ObjectStore:
    """The archive in a bucket (syncd.archive.store.ArchiveStore)."""

    shared = True  # every server naming the bucket writes it: downloads claim their object first

    def __init__(
        self,
        where: BucketUrl,
        *,
        max_file_bytes: int = 64 << 20,
        client: S3Client | None = None,
        temp_dir: Path | None = None,
        max_connections: int = 16,
        attempts: int = ATTEMPTS,
    ) -> None:
        self.where = where
        self.attempts = attempts
        self.max_file_bytes = max_file_bytes
        self.temp_dir = temp_dir
        self.endpoint = endpoint_of()
        self._client = client
        self._max_connections = max_connections
        self._client_lock = threading.Lock()

    @property
    def id(self) -> str:
        return str(self.where)

    def describe(self) -> str:
        at = f" at {shown(self.endpoint)}" if self.endpoint else ""
        return f"the bucket {self.where}{at}"

    @property
    def client(self) -> S3Client:
        with self._client_lock:
            if self._client is None:
                self._client = make_client(max_connections=self._max_connections, attempts=self.attempts)
            return self._client

    def key(self, path: str) -> str:
        return self.where.key(path)

    # ------------------------------------------------------------ setup

    def prepare(self) -> None:
        """The bucket answers, with these credentials: one HEAD. (ConfigError
        first when boto3 is not installed.)"""
        client = self.client
        try:
            client.head_bucket(Bucket=self.where.bucket)
        except Exception as exc:
            raise self.storage_error(exc, "looking at the bucket", bucket_level=True) from None

    def lock(self) -> AbstractContextManager[None]:
        # The database's archive lock (syncd.locks) keeps a second job out of
        # the one database; a second database writing the same bucket is safe
        # too (content-addressed, conditional puts).
        return nullcontext()

    def close(self) -> None:
        """Forget the client (the process keeps it for the next run: make_client)."""
        with self._client_lock:
            self._client = None

    def check_room(self, expected: int = 0) -> None:
        """The temporary folder can take the next download (the bucket's room
        is known only when a put is refused)."""
        folder = self.temp_dir or Path(tempfile.gettempdir())
        try:
            info = os.statvfs(folder)
        except OSError as exc:
            raise ArchiveStorageError(f"cannot read the free space of {folder} ({exc.strerror})") from None
        if info.f_bavail * info.f_frsize < expected:
            raise ArchiveStorageError(
                f"the temporary folder {folder} (TMPDIR) has {size_text(info.f_bavail * info.f_frsize)} "
                f"free and the next image is {size_text(expected)}: archiving stopped until there is room"
            )

    @contextmanager
    def receive(self) -> Iterator[Upload]:
        upload = Upload(self)
        try:
            yield upload
        finally:
            upload.discard()

    def marked(self) -> bool:
        """Whether the prefix carries the marker. A HEAD on a missing bucket is a
        404 as for a missing object: when there is no marker, the bucket is
        looked at too (its own error, not "unmarked")."""
        if self._head(MARKER) is not None:
            return True
        self.prepare()
        return False

    def mark(self) -> None:
        self._put(MARKER, b"syncd's image archive: see archived_files.store and .path\n", None, "text/plain")

    # ------------------------------------------------------------ reading (verify)

    def _head(self, name: str, *, checksum: bool = False) -> dict[str, Any] | None:
        """The object's headers; None when there is none."""
        try:
            if checksum:
                answer = self.client.head_object(
                    Bucket=self.where.bucket, Key=self.key(name), ChecksumMode="ENABLED"
                )
            else:
                answer = self.client.head_object(Bucket=self.where.bucket, Key=self.key(name))
        except Exception as exc:
            code, status = _code(exc)
            if status == 404 or code in ("NoSuchKey", "NotFound", "404"):
                return None
            raise self.storage_error(exc, "looking at an object") from None
        return dict(answer)

    def holds(self, path: str, sha256: str, size: int | None) -> bool:
        return self.check(path, sha256, size) == OK

    def check(
        self, path: str, sha256: str, size: int | None, stop: StopRequest | None = None, *, deep: bool = False
    ) -> str:
        """HEAD: there, of its size, with the SHA-256 checksum of its name when
        the store keeps one; ``deep``: read in full and hashed again."""
        if PATH.fullmatch(path) is None:
            return MISSING
        head = self._head(path, checksum=True)
        if head is None:
            return MISSING
        if size is not None and int(head.get("ContentLength", -1)) != size:
            return CORRUPT
        kept = head.get("ChecksumSHA256")
        if kept and "-" not in kept and kept != _b64(bytes.fromhex(sha256)):
            return CORRUPT
        if not deep:
            return OK
        return self._rehash(path, sha256, size, stop)

    def _rehash(self, path: str, sha256: str, size: int | None, stop: StopRequest | None) -> str:
        limit = (self.max_file_bytes if size is None else size) + 1
        try:
            answer = self.client.get_object(Bucket=self.where.bucket, Key=self.key(path))
        except Exception as exc:
            code, status = _code(exc)
            if status == 404 or code == "NoSuchKey":
                return MISSING
            raise self.storage_error(exc, "reading an object") from None
        body = answer["Body"]
        digest, read = hashlib.sha256(), 0
        try:
            while read < limit:
                if stop is not None and stop.is_set():
                    raise Interrupted("stopped by a signal while verifying; nothing was changed")
                chunk = body.read(min(HASH_CHUNK, limit - read))
                if not chunk:
                    break
                digest.update(chunk)
                read += len(chunk)
        except Interrupted:
            raise
        except Exception as exc:
            raise self.storage_error(exc, "reading an object") from None
        finally:
            body.close()
        if size is not None and read != size:
            return CORRUPT
        return OK if digest.hexdigest() == sha256 else CORRUPT

    def set_aside(self, path: str) -> bool:
        """Copy a corrupt object under corrupt/, then delete it from its address."""
        found = PATH.fullmatch(path)
        if found is None:
            return False
        aside = self.key(f"{CORRUPT_PREFIX}/{found[3]}.{uuid.uuid4().hex[:8]}")
        try:
            self.client.copy_object(
                Bucket=self.where.bucket,
                Key=aside,
                CopySource={"Bucket": self.where.bucket, "Key": self.key(path)},
            )
            self.client.delete_object(Bucket=self.where.bucket, Key=self.key(path))
        except Exception as exc:
            code, status = _code(exc)
            if status == 404 or code == "NoSuchKey":
                return False
            raise self.storage_error(exc, "setting a corrupt object aside") from None
        return True

    # ------------------------------------------------------------ writing

    def _put(self, name: str, body: bytes | IO[bytes], sha256: bytes | None, content_type: str) -> bool:
        """Put ``body`` at ``name`` unless an object is there; False when one was."""
        extra: dict[str, Any] = {}
        if sha256 is not None:
            extra = {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": _b64(sha256)}
        for attempt in range(3):
            if attempt and not isinstance(body, bytes):
                body.seek(0)
            try:
                self.client.put_object(
                    Bucket=self.where.bucket,
                    Key=self.key(name),
                    Body=body,
                    ContentType=content_type,
                    IfNoneMatch="*",
                    **extra,
                )
                return True
            except Exception as exc:
                code, status = _code(exc)
                if code in EXISTS or status == 412:
                    return False
                if code in CONFLICT or status == 409:
                    time.sleep(0.2 * (attempt + 1))  # another server's put of the same bytes: see how it ends
                    continue
                if code in REFUSED_OBJECT:
                    raise NotStored(
                        f"the object store refused the bytes ({code}: they did not arrive as hashed): "
                        "tried again at a later run"
                    ) from None
                if code in TOO_LARGE:
                    raise NotStored(f"larger than the object store takes in one put ({code})") from None
                if code in THROTTLED or status == 503:
                    raise StoreBusy(
                        f"the object store asked to slow down ({code or status}) past {self.attempts} "
                        "attempts: tried again at a later run"
                    ) from None
                raise self.storage_error(exc, "putting an object") from None
        if self._head(name) is not None:
            return False  # the other put ended: written once, by it
        raise StoreBusy("another put of the same object stayed under way: tried again at a later run")

    def storage_error(
        self, exc: BaseException, doing: str, *, bucket_level: bool = False
    ) -> ArchiveStorageError:
        """What went wrong, in one line that names no credential."""
        from botocore import exceptions as boto

        where = self.describe()
        tail = "archiving stopped, nothing was marked (the images are fetched once it is mended)"
        if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
            return ArchiveStorageError(
                f"no credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                f"AWS_PROFILE, or give the server a role; {tail}"
            )
        if isinstance(
            exc,
            boto.EndpointConnectionError
            | boto.ConnectTimeoutError
            | boto.ReadTimeoutError
            | boto.ConnectionClosedError
            | boto.ProxyConnectionError
            | boto.SSLError,
        ):
            return ArchiveStorageError(f"{where} cannot be reached ({type(exc).__name__}); {tail}")
        code, status = _code(exc)
        said = f"HTTP {status}" if code in (str(status), "unknown") else f"{code}, HTTP {status}"
        if code in DENIED or (status == 403 and code not in FULL):
            return ArchiveStorageError(f"{where} refused the credentials ({said}); {tail}")
        if code == "NoSuchBucket" or (bucket_level and status == 404):
            return ArchiveStorageError(f"the bucket {self.where.bucket} does not exist ({where}); {tail}")
        if code in FULL or status == 507:
            return ArchiveStorageError(f"{where} is full ({said}: a quota or its disks); {tail}")
        if code in UNSUPPORTED or status == 501:
            return ArchiveStorageError(
                f"{where} does not support what syncd needs ({said}): a conditional put "
                f"(If-None-Match: *) with a SHA-256 checksum; {tail}"
            )
        if isinstance(exc, boto.BotoCoreError) or status == 0:
            return ArchiveStorageError(f"{where}: {doing} failed ({type(exc).__name__}); {tail}")
        return ArchiveStorageError(f"{where}: {doing} was answered {said}; {tail}")


class Upload:
    """One download: into an unnamed temporary file as it is hashed, then put
    under its content address (syncd.archive.store.Receiver)."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self._digest = Digest(store.max_file_bytes)
        self._file: IO[bytes] | None = None

    @property
    def size(self) -> int:
        return self._digest.size

    def write(self, chunk: bytes) -> None:
        self._digest.add(chunk)
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(dir=self._store.temp_dir)
            self._file.write(chunk)
        except OSError as exc:
            raise ArchiveStorageError(
                f"cannot write a download to the temporary folder ({exc.strerror}): archiving stopped "
                "until there is room (TMPDIR)"
            ) from None

    def finish(self, claim: Claim | None = None) -> Stored:
        path = self._digest.path()
        sha256 = self._digest.sha256()
        assert self._file is not None  # an image's first bytes came
        if claim is not None:
            claim(path, sha256, self.size)
        self._file.flush()
        self._file.seek(0)
        media = MEDIA_TYPES[path[path.rindex(".") :]]
        new = self._store._put(path, self._file, self._digest.raw_sha256(), media)
        return Stored(sha256, self.size, path, new=new)

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
