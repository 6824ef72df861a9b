"""A body's Content-Encoding undone within its cap: bombs stay small, stacked and unknown encodings are refused."""

from __future__ import annotations

import gzip
import zlib

import pytest

from syncd.fakeapi.server import encoded_body
from syncd.net.encoding import BodyTooLarge, BoundedBody, CorruptBody, EncodingRefused, layers

PAGE = b'[{"id": "x"}]' * 1000


def feed(body: BoundedBody, data: bytes, chunk: int = 4096) -> bytearray:
    for start in range(0, len(data), chunk):
        body.feed(data[start : start + chunk])
        assert len(body.buffer) <= body.limit + 1  # never more than the cap, whatever a chunk holds
        if body.full:
            break
    return body.finish()


@pytest.mark.parametrize(
    "encoding", [None, "identity", "gzip", "x-gzip", "deflate", "GZIP", " gzip , identity"]
)
def test_one_layer_is_undone(encoding: str | None) -> None:
    data = PAGE
    if encoding and "gzip" in encoding.lower():
        data = gzip.compress(PAGE)
    elif encoding == "deflate":
        data = zlib.compress(PAGE)
    assert feed(BoundedBody(encoding, 1 << 20), data) == PAGE


def test_raw_deflate_as_some_servers_send_it_is_undone() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert feed(BoundedBody("deflate", 1 << 20), raw.compress(PAGE) + raw.flush()) == PAGE


def test_gzip_members_one_after_another_are_one_body() -> None:
    data = gzip.compress(PAGE[:5000]) + gzip.compress(PAGE[5000:])
    assert feed(BoundedBody("gzip", 1 << 20), data) == PAGE


@pytest.mark.parametrize(
    "encoding", ["gzip, gzip", "deflate, gzip", "br", "zstd", "compress", "gzip, br", "x-bomb"]
)
def test_stacked_and_unknown_encodings_are_refused_from_the_header_alone(encoding: str) -> None:
    with pytest.raises(EncodingRefused, match="syncd asks for identity"):
        BoundedBody(encoding, 1 << 20)


@pytest.mark.parametrize("bomb", ["bomb:gzip", "bomb:gzip, gzip"])
def test_a_bomb_is_cut_at_the_cap_and_never_inflated_whole(bomb: str) -> None:
    data, encoding = encoded_body(b"", bomb)
    if "," in encoding:  # what a client that undid one layer would be fed
        data, encoding = gzip.decompress(data), "gzip"
    limit = 1 << 20
    body = BoundedBody(encoding, limit)
    with pytest.raises(BodyTooLarge, match="over 1,048,576 bytes"):
        feed(body, data, chunk=len(data))  # one chunk holding the whole bomb
    assert len(body.buffer) <= limit + 1


def test_an_error_body_is_cut_at_its_cap_quietly() -> None:
    body = BoundedBody("gzip", 100, truncate=True)
    assert feed(body, gzip.compress(b"x" * 10_000)) == b"x" * 100 and body.full


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("gzip", b"plainly not gzip"),
        ("gzip", gzip.compress(PAGE, mtime=0)[:-30]),
        ("deflate", b"\x00\x01garbage"),
    ],
    ids=["not-gzip", "gzip-cut-short", "not-deflate"],
)
def test_bytes_that_are_not_what_their_header_says_are_corrupt(encoding: str, data: bytes) -> None:
    with pytest.raises(CorruptBody):
        feed(BoundedBody(encoding, 1 << 20), data)


def test_a_plain_body_over_the_cap_is_too_large() -> None:
    with pytest.raises(BodyTooLarge):
        feed(BoundedBody(None, 1000), b"x" * 1001)
    assert feed(BoundedBody(None, 1000), b"x" * 1000) == b"x" * 1000


def test_layers() -> None:
    assert layers(None) == [] and layers("identity") == [] and layers("") == []
    assert layers("gzip, identity, br") == ["gzip", "br"]
