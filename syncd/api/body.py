"""Pure: turn a list response body into its elements.

A body that cannot be split into the elements of one JSON array (not JSON, an
HTML page, cut short, an object) raises ``BrokenBody``: the client retries it.
A body that *can* be split never fails as a whole because of one element: when
the fast parser refuses the body (an element nested too deeply, a lone
surrogate escape, a number beyond a double, ``NaN``...), the array is split by
hand and each element parsed on its own; an element that still cannot be
parsed becomes an ``Unparseable`` value, which validation quarantines with its
text. A UTF-8 byte-order mark before the array is skipped.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from syncd.records import Unparseable

UTF8_BOM = b"\xef\xbb\xbf"
# orjson reads an integer beyond 64 bits as a float, rounded; such an integer
# has at least 19 digits in a row. Mapping every digit to "0" lets a plain
# substring search (C speed, unlike a regular expression) look for them.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19


class BrokenBody(Exception):
    """The body is not one complete JSON value of the expected kind."""


def loads(content: bytes | bytearray) -> Any:
    """One JSON value, integers exactly whatever their size (``raw`` keeps
    what the API sent; orjson alone would round a 22-digit seed to a float).
    Raises orjson.JSONDecodeError when the text is not valid JSON."""
    value = orjson.loads(content)
    if _has_long_digit_run(content):
        # Rare (19 digits in a row, maybe inside a string): the standard
        # library reads the same text with exact integers; orjson accepted
        # it, so it is strict JSON (no NaN, no lone surrogate) either way.
        try:
            return json.loads(bytes(content))
        except (ValueError, RecursionError):
            return value
    return value


def _has_long_digit_run(content: bytes | bytearray, window: int = 1 << 20) -> bool:
    """Whether 19 digits stand in a row (a window at a time: no copy of a large body)."""
    overlap = len(_LONG_RUN) - 1
    for start in range(0, max(len(content), 1), window):
        if _LONG_RUN in content[max(0, start - overlap) : start + window].translate(_DIGITS_TO_ZERO):
            return True
    return False


def _without_bom(content: bytes | bytearray) -> bytes | bytearray:
    return content[len(UTF8_BOM) :] if content.startswith(UTF8_BOM) else content


def parse_array(content: bytes | bytearray) -> list[Any]:
    body = _without_bom(content)
    try:
        value = loads(body)
    except orjson.JSONDecodeError:
        # Not valid JSON as a whole: one hostile element, or a broken body.
        return [_parse_element(raw) for raw in split_top_level_array(body)]
    if not isinstance(value, list):
        raise BrokenBody(f"JSON {type(value).__name__}, not an array")
    return value


def parse_object(content: bytes | bytearray) -> Any:
    """One artwork's body: its JSON value, or ``Unparseable`` when it is one
    complete JSON object that the parser refuses (validation quarantines it)."""
    content = _without_bom(content)
    try:
        return loads(content)
    except orjson.JSONDecodeError:
        text = content.strip()
        if (
            not text.startswith(b"{")
            or not text.endswith(b"}")
            or len(split_top_level_array(b"[" + text + b"]")) != 1
        ):
            raise BrokenBody("not valid JSON (cut short, or not JSON at all)") from None
        return _parse_element(text)


def _parse_element(raw: bytes | bytearray) -> Any:
    try:
        return loads(raw)
    except orjson.JSONDecodeError as exc:
        return Unparseable(raw.decode("utf-8", "replace"), str(exc).split(":")[0])


def split_top_level_array(content: bytes | bytearray) -> list[bytes]:
    """The raw bytes of each element of a top-level JSON array.

    Tracks only strings and bracket depth, so it never recurses however deep
    the elements are. Raises BrokenBody when the body is not one closed array.
    """
    text = content.strip()
    if not text.startswith(b"[") or not text.endswith(b"]"):
        raise BrokenBody("not valid JSON (cut short, or not JSON at all)")
    elements: list[bytes | bytearray] = []
    depth = 0
    in_string = False
    escaped = False
    start = 1
    for index in range(1, len(text) - 1):
        byte = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
            continue
        if byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
        elif byte in (0x5D, 0x7D):
            depth -= 1
            if depth < 0:
                raise BrokenBody("not valid JSON (unbalanced brackets)")
        elif byte == 0x2C and depth == 0:
            elements.append(text[start:index])
            start = index + 1
    if in_string or depth != 0:
        raise BrokenBody("not valid JSON (the array is not closed: cut short?)")
    last = text[start:-1]
    if last.strip():
        elements.append(last)
    elif elements:  # "[1,]": a trailing comma is not an array's end
        raise BrokenBody("not valid JSON (an element is missing)")
    return [bytes(element.strip()) for element in elements]
