"""Pure: the API key in every form an echo can give it back, found and masked.

A server, a proxy or a bug that echoes a request hands the key back in
whatever form it travelled or was logged in. ``Redactor`` knows these forms,
all built from the key itself:

* as is, and JSON-escaped (``\\u0073`` for ``s``);
* percent-encoded, in upper- or lower-case hex, wholly or in part;
* base64 and base64url (``+/`` or ``-_``), padded or not, at any of the three
  alignments, so that the key is found inside a longer encoded text too
  (``base64("Bearer <key>")``, ``base64("user:<key>")``);
* hex, in any case.

Every place that masks the key (log lines, error messages, ``sync_runs``,
``status``, quarantined payloads) goes through ``redact``; every place that
refuses a value carrying it (records, image URLs) through ``contains``.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable
from urllib.parse import unquote

REDACTED = "[REDACTED]"
# A "secret" this short would garble every message it was masked in; real API
# keys are far longer.
MIN_SECRET_LENGTH = 6
# How many layers of percent-encoding ``contains`` peels off (%2573 is %73 is s).
PERCENT_LAYERS = 3
_BASE64URL = str.maketrans("+/", "-_")


def maskable(secrets: Iterable[str]) -> tuple[str, ...]:
    """The secrets long enough to look for (MIN_SECRET_LENGTH or more)."""
    return tuple(secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH)


def base64_cores(secret: bytes) -> set[str]:
    """The base64 characters that depend on ``secret``'s bytes alone, at each
    of the three alignments it can have inside a longer encoded text, in both
    alphabets. Padding never belongs to a core, so padded and unpadded
    encodings are both found."""
    cores: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + secret).decode()
        # Character i carries bits 6i..6i+5 of the encoded bytes: keep those
        # that lie wholly within the secret's bits (8*offset .. 8*(offset+n)).
        core = encoded[-(-8 * offset // 6) : 8 * (offset + len(secret)) // 6]
        cores.update((core, core.translate(_BASE64URL)))
    return cores


def _char_pattern(char: str) -> str:
    """``char`` as itself, percent-encoded (either case of hex) or JSON-escaped."""
    encoded = char.encode()

    def hex_digits(byte: int) -> str:
        return "".join(f"[{d}{d.lower()}]" if d.isalpha() else d for d in f"{byte:02X}")

    # %73, %2573 (encoded twice), ...: up to PERCENT_LAYERS deep, as ``contains`` peels.
    percent = f"%(?:25){{0,{PERCENT_LAYERS - 1}}}"
    options = [re.escape(char), "".join(f"{percent}{hex_digits(byte)}" for byte in encoded)]
    if len(encoded) == 1:
        options.append(rf"\\u00{hex_digits(encoded[0])}")
    return "(?:" + "|".join(options) + ")"


class Redactor:
    """Finds and masks ``secrets`` in every form listed in the module's docstring."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = maskable(secrets)
        forms: set[str] = set()
        hexes: set[str] = set()
        for secret in self.secrets:
            raw = secret.encode()
            forms.update((secret, json.dumps(secret)[1:-1]))
            forms.update(base64_cores(raw))
            hexes.add(raw.hex())
        # Literal forms, for the quick look: any case of hex is found in the
        # lower-cased text; percent-encoding is peeled off before looking.
        self._literals = tuple(sorted(forms, key=len, reverse=True))
        self._hexes = tuple(sorted(hexes, key=len, reverse=True))
        # For bytes (a record's JSON, once per record): hex in either case as
        # literals too, which spares lower-casing every record.
        self._literal_bytes = tuple(
            form.encode() for form in (*self._literals, *self._hexes, *(h.upper() for h in self._hexes))
        )
        # Every form, longest first, each character also percent-encoded or
        # JSON-escaped: what ``redact`` replaces.
        patterns = [f"(?i:{form})" for form in self._hexes]
        patterns += ["".join(map(_char_pattern, form)) for form in self._literals]
        self._pattern = re.compile("|".join(patterns)) if patterns else None

    def redact(self, text: str) -> str:
        """``text`` with every form of every secret replaced by [REDACTED]."""
        # The pattern is a long alternation tried at every position (~40 ms a
        # megabyte); ``contains`` rules out nearly every text far quicker.
        if self._pattern is None or not self.contains(text):
            return text
        return self._pattern.sub(REDACTED, text)

    def contains(self, text: str | bytes) -> bool:
        """Whether ``text`` carries a secret in any form (percent-encoding up to
        PERCENT_LAYERS deep included)."""
        if not self.secrets:
            return False
        if isinstance(text, bytes):
            for form in self._literal_bytes:
                if form in text:
                    return True
            if b"%" not in text and b"\\u" not in text:
                return False  # (hex in mixed case is looked for in text, not in a record)
            text = text.decode("utf-8", "replace")
        for _ in range(PERCENT_LAYERS + 1):
            if any(form in text for form in self._literals):
                return True
            lowered = text.lower()
            if any(form in lowered for form in self._hexes):
                return True
            if "\\u" in text and self._pattern is not None and self._pattern.search(text):
                return True
            if "%" not in text:
                return False
            decoded = unquote(text)
            if decoded == text:
                return False
            text = decoded
        return False


@functools.lru_cache(maxsize=16)
def redactor(secrets: tuple[str, ...]) -> Redactor:
    """The Redactor of ``secrets`` (built once: its pattern is compiled)."""
    return Redactor(secrets)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of every maskable secret replaced by [REDACTED]."""
    return redactor(tuple(secrets)).redact(text)


def contains(text: str | bytes, secrets: Iterable[str]) -> bool:
    """Whether ``text`` carries a maskable secret in any form."""
    return redactor(tuple(secrets)).contains(text)
