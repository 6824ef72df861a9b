"""Where syncd may connect: every notation of an address, judged the same."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from syncd.locations import Kind, host_address, is_loopback, kind_of, refusal

# Every way a URL can spell the metadata service (and the link-local range) a resolver accepts.
METADATA_SPELLINGS = [
    "169.254.169.254",
    "169.254.169.254.",  # a trailing dot
    "2852039166",  # one decimal number
    "0xa9fea9fe",  # hexadecimal
    "0xA9.0xFE.0xA9.0xFE",
    "0251.0376.0251.0376",  # octal
    "169.254.43518",  # the last part fills the rest
    "169.16689662",
    "[::ffff:169.254.169.254]",  # IPv4-mapped
    "[::ffff:a9fe:a9fe]",
    "[::169.254.169.254]",  # IPv4-compatible
    "[64:ff9b::a9fe:a9fe]",  # NAT64
    "[2002:a9fe:a9fe::1]",  # 6to4
    "100.100.100.200",  # Alibaba Cloud
    "[fd00:ec2::254]",  # AWS over IPv6
    "169.254.170.2",  # AWS ECS
    "192.0.0.192",  # Oracle Cloud
]


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_a_metadata_service_is_refused_in_every_notation(host: str) -> None:
    address = host_address(host)
    assert address is not None and kind_of(address) is Kind.METADATA
    for allow_private in (True, False):
        reason = refusal(host, allow_private=allow_private)
        assert reason is not None and "metadata" in reason


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("169.254.1.1", Kind.LINK_LOCAL),
        ("0xa9fe0101", Kind.LINK_LOCAL),
        ("[fe80::1]", Kind.LINK_LOCAL),
        ("[fe80::1%25eth0]", Kind.LINK_LOCAL),  # with a zone, as a URL writes it
        ("[::ffff:169.254.1.1]", Kind.LINK_LOCAL),
        ("0.0.0.0", Kind.UNSPECIFIED),
        ("0", Kind.UNSPECIFIED),
        ("0.1.2.3", Kind.UNSPECIFIED),
        ("[::]", Kind.UNSPECIFIED),
        ("224.0.0.1", Kind.MULTICAST),
        ("[ff02::1]", Kind.MULTICAST),
        ("240.0.0.1", Kind.RESERVED),
        ("255.255.255.255", Kind.RESERVED),
    ],
)
def test_addresses_no_image_host_has_are_refused_always(host: str, kind: Kind) -> None:
    address = host_address(host)
    assert address is not None and kind_of(address) is kind
    assert refusal(host, allow_private=True) is not None
    assert refusal(host, allow_private=False) is not None


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", Kind.LOOPBACK),
        ("0x7f.1", Kind.LOOPBACK),
        ("2130706433", Kind.LOOPBACK),
        ("[::1]", Kind.LOOPBACK),
        ("[::ffff:127.0.0.1]", Kind.LOOPBACK),
        ("10.1.2.3", Kind.PRIVATE),
        ("172.16.0.9", Kind.PRIVATE),
        ("192.168.1.1", Kind.PRIVATE),
        ("100.64.0.1", Kind.PRIVATE),
        ("[fd12:3456::1]", Kind.PRIVATE),
        ("[::ffff:10.0.0.1]", Kind.PRIVATE),
    ],
)
def test_private_and_loopback_hosts_are_allowed_unless_the_operator_refuses_them(
    host: str, kind: Kind
) -> None:
    address = host_address(host)
    assert address is not None and kind_of(address) is kind
    assert refusal(host, allow_private=True) is None
    reason = refusal(host, allow_private=False)
    assert reason is not None and "SYNCD_ARCHIVE_ALLOW_PRIVATE" in reason


@pytest.mark.parametrize("host", ["8.8.8.8", "93.184.216.34", "[2606:4700::1111]", "[::ffff:8.8.8.8]"])
def test_public_addresses_are_allowed(host: str) -> None:
    address = host_address(host)
    assert address is not None and kind_of(address) is Kind.PUBLIC
    assert refusal(host, allow_private=False) is None


@pytest.mark.parametrize(
    "text",
    ["0x", "0x0", "1", "1.2", "1.2.3", "0x7f.1", "0177.0.0.1", "08.1.1.1", "09", "1.2.3.256", "1.256.3",
     "4294967295", "4294967296", "0xffffffff", "0x100000000", "1.2.3.4 ", "1.2.3.4 x", "1..2", "00",
     "01.02.03.04", "1.2.65535", "1.2.65536", "000000000000000001", "0x00000000000001", "1.2.3.4.5"],
)  # fmt: skip
def test_ipv4_notations_are_read_as_the_c_library_reads_them(text: str) -> None:
    """The resolver reads a numeric host with inet_aton: what it connects to
    is what syncd judges."""
    try:
        expected: ipaddress.IPv4Address | None = ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        expected = None
    assert host_address(text) == expected


@pytest.mark.parametrize("host", ["cdn.example", "1.2.3.4.5", "256.1.1.1", "08.1.1.1", "[zz::1]", ""])
def test_a_name_is_no_address_and_is_judged_once_resolved(host: str) -> None:
    assert host_address(host) is None
    assert refusal(host, allow_private=True) is None


def test_localhost_by_name_is_refused_when_private_hosts_are() -> None:
    assert refusal("localhost", allow_private=True) is None
    assert refusal("LOCALHOST.", allow_private=False) is not None
    assert refusal("img.localhost", allow_private=False) is not None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("2130706433", False),
    ],
)
def test_the_api_urls_loopback_rule_is_unchanged(host: str, loopback: bool) -> None:
    # The clear-text warning's rule reads the usual notation only, as it did.
    assert is_loopback(host) is loopback
