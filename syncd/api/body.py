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

from typing import Any

import orjson

from syncd.records import Unparseable

UTF8_BOM = b"\xef\xbb\xbf"


class BrokenBody(Exception):
    """The body is not one complete JSON value of the expected kind."""


def parse_array(content: bytes) -> list[Any]:
    content = content.removeprefix(UTF8_BOM)
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        # Not valid JSON as a whole: one hostile element, or a broken body.
        return [_parse_element(raw) for raw in split_top_level_array(content)]
    if not isinstance(value, list):
        raise BrokenBody(f"JSON {type(value).__name__}, not an array")
    return value


def parse_object(content: bytes) -> Any:
    """One artwork's body: its JSON value, or ``Unparseable`` when it is one
    complete JSON object that the parser refuses (validation quarantines it)."""
    content = content.removeprefix(UTF8_BOM)
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        text = content.strip()
        if (
            not text.startswith(b"{")
            or not text.endswith(b"}")
            or len(split_top_level_array(b"[" + text + b"]")) != 1
        ):
            raise BrokenBody("not valid JSON (cut short, or not JSON at all)") from None
        return _parse_element(text)


def _parse_element(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Unparseable(raw.decode("utf-8", "replace"), str(exc).split(":")[0])


def split_top_level_array(content: bytes) -> list[bytes]:
    """The raw bytes of each element of a top-level JSON array.

    Tracks only strings and bracket depth, so it never recurses however deep
    the elements are. Raises BrokenBody when the body is not one closed array.
    """
    text = content.strip()
    if not text.startswith(b"[") or not text.endswith(b"]"):
        raise BrokenBody("not valid JSON (cut short, or not JSON at all)")
    elements: list[bytes] = []
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
    return [element.strip() for element in elements]
