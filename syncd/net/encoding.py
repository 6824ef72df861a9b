"""Pure: an answer's body, its Content-Encoding undone, within a bound.

syncd asks for ``Accept-Encoding: identity``. A server or proxy that
compresses anyway is taken at its word for one layer of ``gzip`` or
``deflate``, inflated a piece at a time so that the body never grows past its
cap (1,828 bytes of gzip of gzip inflate to 1 GiB; httpx inflates a whole
chunk in one call, before any cap can look). Stacked, unknown and unasked
encodings (``gzip, gzip``, ``br``, ``zstd``, ``compress``) are refused from
the header alone, before a byte of the body is read.
"""

from __future__ import annotations

import zlib

# What syncd undoes: one layer of these (identity is no encoding at all).
DECODED = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


class EncodingRefused(Exception):
    """A Content-Encoding syncd did not ask for and does not undo."""


class CorruptBody(Exception):
    """The bytes do not decode as their Content-Encoding says (or stop short)."""


class BodyTooLarge(Exception):
    """The body, decoded, is larger than its cap."""


def layers(content_encoding: str | None) -> list[str]:
    """The encodings applied, in order, without ``identity``."""
    if content_encoding is None:
        return []
    named = [part.strip().lower() for part in content_encoding.split(",")]
    return [name for name in named if name and name != "identity"]


class BoundedBody:
    """Collects one body, decoded, up to ``limit`` bytes.

    Over the limit: ``BodyTooLarge``, or, with ``truncate`` (an error's
    body, read for its message), the first ``limit`` bytes and ``full``.
    Raises EncodingRefused on construction for an encoding it does not undo.
    """

    def __init__(self, content_encoding: str | None, limit: int, *, truncate: bool = False) -> None:
        applied = layers(content_encoding)
        if len(applied) > 1 or (applied and applied[0] not in DECODED):
            raise EncodingRefused(
                f"Content-Encoding {content_encoding!r}: syncd asks for identity and undoes one "
                "layer of gzip or deflate at most; stacked or other encodings are refused"
            )
        self.encoding = applied[0] if applied else None
        self.limit = limit
        self.truncate = truncate
        self.full = False
        self.buffer = bytearray()
        self._inflater = zlib.decompressobj(DECODED[self.encoding]) if self.encoding else None
        self._deflate_started = False  # deflate: zlib-wrapped, or raw as some servers send it

    def feed(self, chunk: bytes) -> None:
        if self.full or not chunk:
            return
        if self._inflater is None:
            self._take(chunk)
            return
        try:
            self._inflate(chunk)
        except zlib.error as exc:
            raise CorruptBody(f"not valid {self.encoding} ({exc})") from None

    def finish(self) -> bytearray:
        """The body; raises CorruptBody when a compressed stream stopped short."""
        if self._inflater is not None and not self.full and not self._inflater.eof:
            raise CorruptBody(f"the {self.encoding} stream stops short")
        return self.buffer

    def _take(self, data: bytes) -> None:
        room = self.limit - len(self.buffer)
        if len(data) > room:
            if not self.truncate:
                raise BodyTooLarge(f"a body over {self.limit:,} bytes")
            self.buffer += data[:room]
            self.full = True
            return
        self.buffer += data

    def _inflate(self, data: bytes) -> None:
        assert self._inflater is not None
        if self.encoding == "deflate" and not self._deflate_started:
            self._deflate_started = True
            try:  # zlib-wrapped is what the standard says; probe one byte's worth
                zlib.decompressobj(zlib.MAX_WBITS).decompress(data[:2])
            except zlib.error:
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        while data and not self.full:
            # Never more than one byte past the cap out of any call: a bomb
            # stays in its compressed form, in ``unconsumed_tail``.
            out = self._inflater.decompress(data, self.limit - len(self.buffer) + 1)
            self._take(out)
            data = self._inflater.unconsumed_tail
            if self._inflater.eof:
                rest = self._inflater.unused_data
                if not rest or self.encoding == "deflate":
                    return
                # gzip allows several members one after another: each is inflated in turn.
                self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
                data = rest
