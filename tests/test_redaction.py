"""The API key in every form an echo can give it back: found, masked, never missed."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.fakeapi.server import encoded_forms
from syncd.redaction import REDACTED, Redactor, base64_cores, contains, redact

KEY = "sk-live-7f3a9c2e1b8d4f60a5e2"


def forms_of(key: str) -> dict[str, str]:
    raw, bearer = key.encode(), f"Bearer {key}".encode()
    return {
        "plain": key,
        "json escapes": "".join(f"\\u{ord(c):04x}" for c in key),
        "percent, upper hex": "".join(f"%{b:02X}" for b in raw),
        "percent, lower hex": "".join(f"%{b:02x}" for b in raw),
        "percent, some characters": quote(key, safe="").replace("7", "%37"),
        "percent, twice": "".join(f"%25{b:02X}" for b in raw),
        "base64": base64.b64encode(raw).decode(),
        "base64 without padding": base64.b64encode(raw).decode().rstrip("="),
        "base64 of Bearer": base64.b64encode(bearer).decode(),
        "base64url of Bearer, no padding": base64.urlsafe_b64encode(bearer).decode().rstrip("="),
        "base64 of user:key": base64.b64encode(b"user:" + raw).decode(),
        "base64, percent-encoded": quote(base64.b64encode(b"x" + raw).decode(), safe=""),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
    }


@pytest.mark.parametrize(("name", "form"), list(forms_of(KEY).items()))
def test_every_form_of_the_key_is_found_and_masked(name: str, form: str) -> None:
    message = f'401 Unauthorized: {{"auth": "{form}", "path": "/v1/artworks"}}'
    assert contains(message, [KEY]) and contains(message.encode(), [KEY])
    masked = redact(message, [KEY])
    assert REDACTED in masked
    assert not contains(masked, [KEY]), masked  # nothing of it left that still says the key
    assert masked.startswith("401 Unauthorized") and masked.endswith('"path": "/v1/artworks"}')


def test_the_fake_apis_echoes_are_all_masked() -> None:
    for form in encoded_forms(KEY):
        assert redact(f"echo: {form}.", [KEY]).count(REDACTED) == 1, form


def test_text_without_the_key_is_left_alone() -> None:
    text = "GET /v1/artworks?skip=0&limit=100 5xx; %41%42 c2stbGl2 736b2d sk-live-other-key-entirely"
    assert not contains(text, [KEY]) and redact(text, [KEY]) == text
    assert redact(text, []) == text and not contains(text, [])
    assert redact("a short secret", ["short"]) == "a short secret"  # below the length worth masking


def test_a_json_escaped_key_with_quotes_in_it_is_found() -> None:
    key = 'sk-"quoted"\\key'
    assert contains(json.dumps({"prompt": f"the key is {key}"}), [key])


@given(
    key=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~+/=",
        min_size=12,
        max_size=64,
    )
)
def test_property_base64_of_any_text_holding_the_key_is_found(key: str) -> None:
    redactor = Redactor([key])
    for prefix in (b"", b"a", b"ab", b"Bearer ", b"user:"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(prefix + key.encode() + b"!tail").decode()
            assert redactor.contains(encoded), (prefix, encoded)
            assert not redactor.contains(redactor.redact(encoded))


def test_base64_cores_do_not_depend_on_what_surrounds_the_key() -> None:
    cores = base64_cores(KEY.encode())
    for before in (b"", b"x", b"xy", b"xyz"):
        for after in (b"", b"!", b"!!"):
            encoded = base64.b64encode(before + KEY.encode() + after).decode()
            assert any(core in encoded for core in cores)


def encoded_char(char: str, form: int) -> str:
    """``char`` as one of the forms ``redact`` masks, chosen by ``form`` (0 to 7)."""
    if form == 0:
        return char
    if form == 1:
        return f"\\u{ord(char):04x}"
    extra_layers, lower = divmod(form - 2, 2)  # %73, %2573, %252573; either case of hex
    digits = f"{ord(char):02x}" if lower else f"{ord(char):02X}"
    return "%" + "25" * extra_layers + digits


@given(
    forms=st.lists(st.integers(min_value=0, max_value=7), min_size=len(KEY), max_size=len(KEY)),
    before=st.text(max_size=20),
    after=st.text(max_size=20),
)
def test_property_the_key_with_each_character_in_any_form_is_found_and_masked(
    forms: list[int], before: str, after: str
) -> None:
    # ``redact`` looks only where ``contains`` finds the key: every mix of forms
    # it masks must be one that ``contains`` finds.
    text = before + "".join(encoded_char(char, form) for char, form in zip(KEY, forms, strict=True)) + after
    assert contains(text, [KEY]), text
    masked = redact(text, [KEY])
    assert REDACTED in masked and not contains(masked, [KEY]), masked
