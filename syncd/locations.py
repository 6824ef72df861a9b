"""Pure: what a location is, and where syncd may connect.

The one place that judges URLs and hosts: those syncd did not choose (image
URLs from the API, the addresses their names resolve to) and its own API URL
(its form; ``is_loopback``, for the clear-text warning).

    http_url(text)             an http(s) URL with a host, no credentials and a
                               valid port, split; else NotAnHttpUrl (why)

    is_loopback(host)          the host names this machine as written: localhost,
                               127.0.0.0/8, ::1 (the API URL's rule)
    host_address(host)         the IP address a host literal denotes, in any
                               notation a resolver takes: 169.254.169.254,
                               2852039166, 0xa9fea9fe, 0251.0376.0251.0376,
                               169.254.43518, [::ffff:a9fe:a9fe], [fe80::1%25eth0]
    kind_of(address)           what the address is (Kind), the IPv4 address an
                               IPv6 one carries judged too (mapped, compatible,
                               NAT64, 6to4, Teredo)
    refusal(host, allow_private)  why an image host is refused, or None

    bucket_url(text)           ``s3://BUCKET/PREFIX`` (the archive in an object
                               store), split; else ValueError (why)

Refused always: the cloud metadata services (169.254.169.254, 169.254.170.2,
100.100.100.200, fd00:ec2::254, 192.0.0.192), link-local, unspecified,
multicast, reserved and broadcast addresses: no image lives there. Loopback
and private addresses (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)
only when ``allow_private`` is false (a corporate CDN may be private, and
syncd's fake image host lives on loopback).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Kind(StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    LOOPBACK = "loopback"
    METADATA = "a cloud metadata service"
    LINK_LOCAL = "link-local"
    UNSPECIFIED = "unspecified"
    MULTICAST = "multicast"
    RESERVED = "reserved"


ALWAYS_REFUSED = frozenset({Kind.METADATA, Kind.LINK_LOCAL, Kind.UNSPECIFIED, Kind.MULTICAST, Kind.RESERVED})
PRIVATE_KINDS = frozenset({Kind.PRIVATE, Kind.LOOPBACK})

METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (older instances)
        "fd00:ec2::254",  # AWS, over IPv6
    )
)
_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fec0::/10")
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


class NotAnHttpUrl(ValueError):
    """Not a URL syncd talks to; ``problem`` says why: "form" (not an http(s)
    URL with a host, or not a URL at all), "credentials" (user@host) or "port"."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def http_url(text: str) -> SplitResult:
    """``text`` split, when it is an http(s) URL with a host name, no credentials
    and a valid port (the rules the API URL and every image URL share)."""
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except (ValueError, UnicodeError):
        raise NotAnHttpUrl("form") from None
    if parts.scheme not in ("http", "https") or not host:
        raise NotAnHttpUrl("form")
    if "@" in parts.netloc:
        raise NotAnHttpUrl("credentials")
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise NotAnHttpUrl("port") from None
    return parts


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine by itself (localhost, 127.0.0.0/8, ::1):
    a request to it never crosses a network. Literal addresses in their usual
    notation only (the API URL's rule, unchanged)."""
    host = host.rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _part(text: str) -> int:
    if text[:2].lower() == "0x":
        return int(text[2:] or "0", 16)
    return int(text, 8) if text.startswith("0") else int(text)


def _ipv4_any_notation(text: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address as inet_aton reads it: 1 to 4 parts, each decimal,
    octal (leading 0) or hexadecimal (0x); the last part fills the rest."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_IPV4_PART.fullmatch(p) for p in parts):
        return None
    values = [_part(p) for p in parts]
    *leading, last = values
    if any(v > 0xFF for v in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    number = last
    for place, value in enumerate(leading):
        number |= value << (8 * (3 - place))
    return ipaddress.IPv4Address(number)


def host_address(host: str) -> IPAddress | None:
    """The address a URL's host denotes when it is a literal, in any notation
    a resolver accepts; None for a name (judged once resolved)."""
    words = host.split()  # inet_aton stops at white space: "1.2.3.4 x" is 1.2.3.4
    text = (words[0] if words else "").rstrip(".").lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]  # an IPv6 zone ("%25eth0" in a URL)
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _ipv4_any_notation(text)


def _embedded(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, bool] | None:
    """The IPv4 address an IPv6 one carries, and whether the IPv6 address is
    merely another spelling of it (mapped, compatible, NAT64) rather than a
    tunnel towards it (6to4, Teredo)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, True
    number = int(address)
    if any(address in net for net in _NAT64) or (number >> 32 == 0 and number > 1):
        return ipaddress.IPv4Address(number & 0xFFFFFFFF), True  # NAT64, or compatible ::a.b.c.d
    if address.sixtofour is not None:
        return address.sixtofour, False
    if address.teredo is not None:
        return address.teredo[1], False
    return None


def kind_of(address: IPAddress) -> Kind:
    """What ``address`` is. An IPv6 address that spells an IPv4 one is what
    that one is; one that tunnels to an IPv4 one is the worse of the two."""
    if isinstance(address, ipaddress.IPv6Address) and address not in METADATA:
        carried = _embedded(address)
        if carried is not None:
            inner, same = carried
            kind = _kind(inner)
            if same or kind is not Kind.PUBLIC:
                return kind
    return _kind(address)


def _kind(address: IPAddress) -> Kind:
    if address in METADATA:
        return Kind.METADATA
    if address.is_link_local:
        return Kind.LINK_LOCAL
    if address.is_unspecified or (isinstance(address, ipaddress.IPv4Address) and address.packed[0] == 0):
        return Kind.UNSPECIFIED  # 0.0.0.0/8: "this host", which reaches loopback
    if address.is_multicast:
        return Kind.MULTICAST
    if address.is_loopback:
        return Kind.LOOPBACK
    if address.is_reserved or address == ipaddress.IPv4Address("255.255.255.255"):
        return Kind.RESERVED
    if any(address in net for net in _PRIVATE if net.version == address.version):
        return Kind.PRIVATE
    return Kind.PUBLIC


def refusal(host: str, *, allow_private: bool) -> str | None:
    """Why an image host (a URL's host, or the address it resolved to) is
    refused; None when syncd may connect (a name: judged once resolved)."""
    address = host_address(host)
    if address is None:
        name = host.strip().rstrip(".").lower()
        if not allow_private and (name == "localhost" or name.endswith(".localhost")):
            return f"the host {name} is loopback, and SYNCD_ARCHIVE_ALLOW_PRIVATE is false"
        return None
    kind = kind_of(address)
    if kind in ALWAYS_REFUSED:
        return f"the address {address} is {kind}, where no image host is"
    if kind in PRIVATE_KINDS and not allow_private:
        return f"the address {address} is {kind}, and SYNCD_ARCHIVE_ALLOW_PRIVATE is false"
    return None


# ------------------------------------------------------------------ the archive's object store

# S3's rules for a bucket name (the general purpose ones): 3 to 63 lowercase
# letters, digits, dots and hyphens, a letter or digit at each end.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True)
class BucketUrl:
    """Where the archive's objects are: a bucket and a key prefix ("" for none)."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, relative: str) -> str:
        """The object key of a path inside the archive (``ab/cd/<sha256>.png``)."""
        return f"{self.prefix}/{relative}" if self.prefix else relative


def bucket_url(text: str) -> BucketUrl:
    """``s3://BUCKET`` or ``s3://BUCKET/PREFIX``: the bucket by its name alone
    (endpoint, region and credentials come the way every S3 tool takes them,
    never in this URL); the prefix made of plain path segments."""
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() != "s3":
        raise ValueError("expected s3://BUCKET/PREFIX (the scheme must be s3)")
    if "@" in rest.split("/", 1)[0]:
        # Never echoed: what stands before the @ may be a key.
        raise ValueError(
            "credentials do not belong in the URL; give them as AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, a profile or an instance role"
        )
    if "?" in rest or "#" in rest:
        raise ValueError("expected s3://BUCKET/PREFIX, without a query or a fragment")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"{bucket[:70]!r} is not a bucket name (3 to 63 lowercase letters, digits, dots and hyphens)"
        )
    parts = [part for part in prefix.split("/") if part]
    if any(not _PREFIX_PART.fullmatch(part) or part in (".", "..") for part in parts):
        raise ValueError(
            "the prefix may hold only letters, digits, '.', '_' and '-' between its slashes "
            "(no '.' or '..' segment)"
        )
    return BucketUrl(bucket, "/".join(parts))
