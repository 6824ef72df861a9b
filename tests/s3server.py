"""An S3 protocol server for the tests: moto in server mode, on loopback.

``s3`` (a fixture) starts ``python -m moto.server`` on a free port of
127.0.0.1 once per test session (real HTTP, SigV4, conditional puts,
SHA-256 checksums), gives each test a bucket of its own, and points boto3 at
it through the variables every S3 tool reads (AWS_ENDPOINT_URL, AWS_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Nothing else is reached: the
instance metadata service is turned off and no profile file is read. When
the server cannot start (moto not installed, no port), the tests skip and
say why.

Against MinIO (or any S3 store) instead: SYNCD_TEST_S3_ENDPOINT=http://127.0.0.1:9000
with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY set; the tests then use it and
skip only what needs the request log (which only the moto server here keeps).

``FaultyS3`` stands between syncd and the server and answers some requests
itself (a 503 SlowDown, a full quota, refused credentials): faults no real
server makes on cue.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

EXTERNAL = "SYNCD_TEST_S3_ENDPOINT"
SECRET = "test-secret-key-never-shown"
_LOG_LINE = re.compile(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (\S+) HTTP/[0-9.]+(?:\x1b\[[0-9;]*m)*" (\d{3})')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    log: Path | None  # the server's request log (moto's), None for an external server
    process: subprocess.Popen[bytes] | None = None
    _client: Any = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """The variables that point an S3 client here, and nowhere else."""
        env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        }
        if self.log is not None:
            env.update(AWS_ACCESS_KEY_ID="AKIATESTSYNCD", AWS_SECRET_ACCESS_KEY=SECRET)
        return env

    def requests(self) -> list[tuple[str, str, int]] | None:
        """(method, path, status) of every request so far; None without a log."""
        if self.log is None:
            return None
        return [(m[1], m[2], int(m[3])) for m in _LOG_LINE.finditer(self.log.read_text(errors="replace"))]

    def client(self) -> Any:
        """The tests' own client of this server (made once: ~0.15 s of CPU each)."""
        import boto3
        from botocore.config import Config

        if self._client is not None:
            return self._client
        env = self.env()
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID")),
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY")),
            config=Config(s3={"addressing_style": "path"}),
        )
        return self._client

    def bucket(self) -> str:
        name = f"syncd-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def _start(tmp: Path) -> S3Server:
    external = os.environ.get(EXTERNAL)
    if external:
        return S3Server(external, None)
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.skip("moto[server] is not installed: pip install -e '.[dev]' (the S3 tests need it)")
    port = free_port()
    log = tmp / "moto-requests.log"
    with log.open("wb") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
    server = S3Server(f"http://127.0.0.1:{port}", log, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.skip(
                f"the moto S3 server did not start (exit {process.returncode}): {log.read_text()[-300:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.skip("the moto S3 server did not answer on loopback within 30 s")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = _start(tmp_path_factory.mktemp("s3"))
    yield server
    if server._client is not None:
        server._client.close()
    if server.process is not None:
        server.process.terminate()
        server.process.wait(timeout=10)


@dataclass
class S3:
    """One test's bucket on the server, boto3 pointed at it."""

    server: S3Server
    bucket: str
    prefix: str = "archive"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def env(self) -> dict[str, str]:
        return self.server.env()

    def keys(self) -> list[str]:
        found = self.server.client().list_objects_v2(Bucket=self.bucket).get("Contents", [])
        return sorted(str(o["Key"]) for o in found)

    def puts(self) -> Counter[tuple[str, int]]:
        """(key, status) of the PUTs of this bucket's objects, counted (moto only)."""
        requests = self.server.requests()
        assert requests is not None, "no request log: an external server"
        marker = f"/{self.bucket}/"
        return Counter(
            (path[len(marker) :].split("?")[0], status)
            for method, path, status in requests
            if method == "PUT" and path.startswith(marker)
        )


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    from syncd.archive.s3 import forget_clients

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    forget_clients()  # the process keeps its clients; a test starts with none
    yield S3(s3_server, s3_server.bucket())
    forget_clients()


# ------------------------------------------------------------------ faults on cue


@dataclass
class FaultyS3:
    """A loopback proxy before the S3 server: ``rule`` answers a request
    itself (status, error code) or lets it through (None)."""

    target: str
    rule: Callable[[str, str], tuple[int, str] | None] = lambda method, path: None
    seen: list[tuple[str, str, int]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FaultyS3:
        proxy = self
        host, port = self.target.removeprefix("http://").split(":")

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _read_chunked(self.rfile)
                fault = proxy.rule(self.command, self.path)
                if fault is not None:
                    status, code = fault
                    payload = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                        f"<Message>injected</Message></Error>"
                    ).encode()
                    proxy.seen.append((self.command, self.path, status))
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload) if self.command != "HEAD" else 0))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
                headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                proxy.seen.append((self.command, self.path, answer.status))
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in (
                        "transfer-encoding",
                        "content-length",
                        "connection",
                        "date",
                        "server",
                    ):
                        self.send_header(name, value)
                self.send_header(
                    "Content-Length",
                    str(len(data) if self.command != "HEAD" else answer.getheader("Content-Length") or 0),
                )
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _read_chunked(stream: Any) -> bytes:
    out = b""
    while True:
        size = int(stream.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            stream.readline()
            return out
        out += stream.read(size)
        stream.readline()
