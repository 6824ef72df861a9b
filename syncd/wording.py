"""Pure: how syncd says counts and sizes to a person ("1 image", "2 images", "3.1 GiB")."""

from __future__ import annotations


def plural(count: int | float, noun: str, many: str | None = None) -> str:
    """``count`` and ``noun``, in the plural unless the count is one: "1 image", "0 images"."""
    whole = isinstance(count, int) or count.is_integer()
    shown = f"{int(count):,}" if whole else f"{count:,.6g}"
    return f"{shown} {noun if count == 1 else (many or noun + 's')}"


def size(count: int) -> str:
    """A number of bytes in the largest binary unit it reaches: "812.3 GiB", "512 bytes"."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return plural(count, "byte")


def duration(seconds: float | None) -> str:
    """A span of time as a person reads it at a glance: "45s", "12m", "3h 20m", "2d 4h"; "?" unknown."""
    if seconds is None:
        return "?"
    whole = int(seconds)
    if whole < 120:
        return f"{whole}s"
    if whole < 7200:
        return f"{whole // 60}m"
    if whole < 172800:
        return f"{whole // 3600}h {whole % 3600 // 60}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"
