"""Pure: turn a list response body into its elements.

A body that is not JSON, is cut short, or is JSON but not an array raises
``BrokenBody`` (the client retries it). One rule keeps a single hostile element
from failing a page forever: when the parser refuses the body only because an
element is nested too deeply, the top-level array is split by hand and each
element parsed on its own; an element that still cannot be parsed becomes an
``Unparseable`` value, which validation quarantines with its text.
"""

from __future__ import annotations

from typing import Any

import orjson

from syncd.records import Unparseable


class BrokenBody(Exception):
    """The body is not a complete JSON array."""


def parse_array(content: bytes) -> list[Any]:
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        if not any(word in str(exc).lower() for word in ("recursion", "depth")):
            raise BrokenBody("not valid JSON (cut short, or not JSON at all)") from None
        return [_parse_element(raw) for raw in split_top_level_array(content)]
    if not isinstance(value, list):
        raise BrokenBody(f"JSON {type(value).__name__}, not an array")
    return value


def _parse_element(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Unparseable(raw.decode("utf-8", "replace"), str(exc).split(":")[0])


def split_top_level_array(content: bytes) -> list[bytes]:
    """The raw bytes of each element of a top-level JSON array.

    Tracks only strings and bracket depth, so it never recurses however deep
    the elements are. Raises BrokenBody when the array is not closed.
    """
    text = content.strip()
    if not text.startswith(b"[") or not text.endswith(b"]"):
        raise BrokenBody("not a JSON array")
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
                raise BrokenBody("unbalanced brackets")
        elif byte == 0x2C and depth == 0:
            elements.append(text[start:index])
            start = index + 1
    if in_string or depth != 0:
        raise BrokenBody("the array is not closed (cut short?)")
    last = text[start:-1]
    if last.strip():
        elements.append(last)
    return [element.strip() for element in elements]
