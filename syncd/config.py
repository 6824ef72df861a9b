"""Settings: environment, then an optional TOML file, then CLI flags (last wins).

Every setting is declared once in ``SPECS``; its environment variable is
``SYNCD_<NAME>`` and its TOML key is ``<name>``. A bad value fails here, before
any request, with one line naming the setting, where it came from and what is
wrong. The API key is wrapped in ``Secret`` so it cannot leak through a repr.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from syncd import locations
from syncd.errors import ConfigError
from syncd.locations import is_loopback

SYSTEM_CONFIG_PATH = Path("/etc/syncd/syncd.toml")
# SYNCD_* variables of syncd's own tests and benchmark, not settings.
DEVELOPER_VARIABLES = ("test_", "bench_", "require_postgres")
DEFAULT_DATABASE_URL = "sqlite:///syncd.db"


class Secret:
    """A string that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _parse_int(low: int | None, high: int | None) -> Callable[[object], int]:
    def parse(raw: object) -> int:
        if isinstance(raw, bool):
            raise ValueError("expected an integer")
        try:
            value = int(str(raw).strip()) if not isinstance(raw, int) else raw
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"from {low} to {high}" if high is not None else f">= {low}"
            raise ValueError(f"must be an integer {bounds}, got {value}")
        return value

    return parse


def _parse_float(low: float, *, inclusive: bool) -> Callable[[object], float]:
    def parse(raw: object) -> float:
        if isinstance(raw, bool):
            raise ValueError("expected a number")
        try:
            value = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite number, got {raw!r}")
        if value < low or (not inclusive and value == low):
            relation = ">=" if inclusive else ">"
            raise ValueError(f"must be a number {relation} {low:g}, got {value:g}")
        return value

    return parse


def _parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower() if isinstance(raw, str | int) else None
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"expected true or false (or 1/0, yes/no), got {raw!r}")


def _parse_str(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {raw!r}")
    return raw


def _parse_api_url(raw: object) -> str:
    text = _parse_str(raw).strip()
    parts = urlsplit(text)
    # Messages quote the URL without whatever stands before an "@" (credentials).
    shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    try:
        locations.http_url(text)
    except locations.NotAnHttpUrl as exc:
        if exc.problem == "credentials":
            raise ValueError(
                "must not contain credentials (user:password@): the API takes the key as a Bearer "
                "token from SYNCD_API_KEY or SYNCD_API_KEY_FILE"
            ) from None
        if exc.problem == "port":
            raise ValueError(f"has an invalid port: {shown!r}") from None
        raise ValueError(f"expected an http(s) URL such as https://api.tengr.ai, got {shown!r}") from None
    if parts.query or parts.fragment:
        raise ValueError("must not contain a query string or fragment")
    return text.rstrip("/")


def _parse_api_key(raw: object) -> Secret:
    """The key, if it can be sent as an HTTP header value; the message never shows it."""
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    text = raw.strip()
    if not text.isascii():
        raise ValueError("contains a character that is not ASCII, which no HTTP header can carry")
    if any(not 0x21 <= ord(c) <= 0x7E for c in text):
        raise ValueError(
            "contains whitespace or a control character (a line break? a key file of two lines?)"
        )
    return Secret(text)


def _parse_database_url(raw: object) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = _parse_str(raw).strip()
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError(
            "expected a SQLAlchemy URL such as sqlite:///syncd.db or postgresql://user@host/db"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.drivername not in ("sqlite", "sqlite+pysqlite") or url.host:
            raise ValueError(
                "SQLite URLs are sqlite:///relative/path.db, sqlite:////absolute/path.db "
                f"or sqlite:// (in memory), got {text!r}"
            )
        return text
    if backend not in ("postgresql", "postgres"):  # postgres://: Heroku, Docker and libpq style
        raise ValueError(f"only sqlite and postgresql are supported, got {backend!r}")
    if url.drivername not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError(f"syncd uses psycopg 3: write postgresql://..., not {url.drivername}://...")
    if importlib.util.find_spec("psycopg") is None:
        raise ValueError(
            "PostgreSQL needs the postgres extra: pip install 'syncd[postgres]' (in a clone: pip install '.[postgres]')"
        )
    return text


def _parse_choice(*choices: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        value = _parse_str(raw).strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _parse_optional_dir(raw: object) -> Path | None:
    text = _parse_str(raw).strip()
    if not text:
        return None
    if "\x00" in text:
        raise ValueError("contains a NUL character")
    return Path(text).expanduser()


def _parse_archive_url(raw: object) -> locations.BucketUrl | None:
    text = _parse_str(raw).strip()
    return locations.bucket_url(text) if text else None


def _parse_bytes(low: int) -> Callable[[object], int]:
    def parse(raw: object) -> int:
        value = _byte_count(raw)
        if value < low:
            raise ValueError(f"must be at least {low:,} bytes, got {raw!r}")
        return value

    return parse


def _byte_count(raw: object) -> int:
    """A byte count: an integer, or one with a K/M/G/T suffix (binary: 1K = 1024)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return _parse_int(0, None)(raw)
    text = _parse_str(raw).strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    scale = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"expected a byte count such as 1073741824, 512M or 1G, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"must be a byte count >= 0, got {raw!r}")
    if value * scale >= 1 << 62:
        raise ValueError(f"is too large a byte count (at most about 4 EiB), got {raw!r}")
    return int(value * scale)


def _parse_optional_port(raw: object) -> int | None:
    if raw in ("", None, 0, "0"):
        return None
    return _parse_int(1, 65535)(raw)


@dataclass(frozen=True)
class Spec:
    name: str
    parse: Callable[[object], Any]
    default: Any
    help: str

    @property
    def env(self) -> str:
        return f"SYNCD_{self.name.upper()}"


SPECS: tuple[Spec, ...] = (
    Spec("api_url", _parse_api_url, None, "API base URL, the part before /v1/artworks"),
    Spec("api_key", _parse_api_key, None, "API key (Bearer)"),
    Spec("api_key_file", lambda raw: Path(_parse_str(raw)), None, "file holding the API key"),
    Spec("database_url", _parse_database_url, DEFAULT_DATABASE_URL, "SQLAlchemy database URL"),
    Spec("page_size", _parse_int(1, 500), 500, "records per list request (limit), 1..500"),
    Spec(
        "max_requests_per_second",
        _parse_float(0, inclusive=False),
        5.0,
        "client-side request rate ceiling",
    ),
    Spec(
        "max_in_flight",
        _parse_int(1, 64),
        8,
        "most requests in flight at once (fewer when the rate and the API's latency need fewer)",
    ),
    Spec("connect_timeout", _parse_float(0, inclusive=False), 10.0, "seconds to connect"),
    Spec("read_timeout", _parse_float(0, inclusive=False), 30.0, "seconds to wait for data"),
    Spec("max_attempts", _parse_int(1, None), 8, "attempts per request before giving up"),
    Spec(
        "max_retry_wait",
        _parse_float(0, inclusive=True),
        900.0,
        "total seconds one request may spend waiting between attempts",
    ),
    Spec("interval", _parse_float(0, inclusive=False), 300.0, "daemon: seconds between syncs"),
    Spec(
        "refresh_interval",
        _parse_float(0, inclusive=False),
        10.0,
        "daemon: seconds between looks for unfinished artworks due a re-check",
    ),
    Spec(
        "full_sync_interval",
        _parse_float(0, inclusive=False),
        86400.0,
        "daemon: seconds between full reconciliations",
    ),
    Spec("log_format", _parse_choice("text", "json"), "text", "log format: text or json"),
    Spec(
        "log_level",
        _parse_choice("debug", "info", "warning", "error"),
        "info",
        "log level",
    ),
    Spec("metrics_port", _parse_optional_port, None, "Prometheus metrics port (off when unset)"),
    Spec(
        "archive_dir",
        _parse_optional_dir,
        None,
        "image archive: the folder of the content-addressed store (off when unset)",
    ),
    Spec(
        "archive_url",
        _parse_archive_url,
        None,
        "image archive: s3://BUCKET/PREFIX, an object store instead of the folder (AWS_* variables)",
    ),
    Spec(
        "archive_max_requests_per_second",
        _parse_float(0, inclusive=False),
        10.0,
        "image archive: request rate ceiling towards the image hosts (not the API's budget)",
    ),
    Spec(
        "archive_max_in_flight",
        _parse_int(1, 64),
        8,
        "image archive: most image downloads at once",
    ),
    Spec(
        "archive_max_file_bytes",
        _parse_bytes(1024),
        64 << 20,
        "image archive: a larger image is not kept (failed, with the reason)",
    ),
    Spec(
        "archive_min_free_bytes",
        _parse_bytes(0),
        1 << 30,
        "image archive: free space the archive never goes below (the job stops there)",
    ),
    Spec(
        "archive_interval",
        _parse_float(0, inclusive=False),
        60.0,
        "daemon: seconds between looks for images to archive (also after every sync)",
    ),
    Spec(
        "archive_allow_private",
        _parse_bool,
        True,
        "image archive: fetch from private and loopback hosts (false refuses 10/8, 127/8, ::1, ...)",
    ),
    Spec(
        "allow_root",
        _parse_bool,
        False,
        "let a command run as root write in state another user owns (a container that runs as root); "
        "false refuses it, naming the owner",
    ),
    Spec(
        "require_https",
        _parse_bool,
        False,
        "refuse a plain http:// API URL to a host that is not loopback (the key would cross in clear)",
    ),
)
SPECS_BY_NAME = {spec.name: spec for spec in SPECS}
# Settings that existed once: still accepted, with a warning, so that an
# upgrade never stops a service over a line in its configuration.
RETIRED = {
    "validation_process": "helper processes were removed: syncd is one process",
    "writer_process": "helper processes were removed: syncd is one process",
}


def _unknown_setting(name: str, where: str, spelled: Callable[[str], str]) -> str:
    """The warning for a setting syncd does not know, with the closest it does."""
    if name in RETIRED:
        return f"{where}: {spelled(name)} is no longer used ({RETIRED[name]}); ignored"
    close = difflib.get_close_matches(name, SPECS_BY_NAME, n=1, cutoff=0.6)
    hint = f" (did you mean {spelled(close[0])}?)" if close else ""
    return f"{where}: {spelled(name)} is not a syncd setting{hint}; ignored"


@dataclass(frozen=True)
class Settings:
    api_url: str | None = None
    api_key: Secret | None = None
    api_key_file: Path | None = None
    database_url: str = DEFAULT_DATABASE_URL
    page_size: int = 500
    max_requests_per_second: float = 5.0
    max_in_flight: int = 8
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_attempts: int = 8
    max_retry_wait: float = 900.0
    interval: float = 300.0
    refresh_interval: float = 10.0
    full_sync_interval: float = 86400.0
    log_format: str = "text"
    log_level: str = "info"
    metrics_port: int | None = None
    archive_dir: Path | None = None
    archive_url: locations.BucketUrl | None = None
    archive_max_requests_per_second: float = 10.0
    archive_max_in_flight: int = 8
    archive_max_file_bytes: int = 64 << 20
    archive_min_free_bytes: int = 1 << 30
    archive_interval: float = 60.0
    archive_allow_private: bool = True
    allow_root: bool = False
    require_https: bool = False
    # Where each setting came from, for messages ("SYNCD_API_KEY", "--page-size", ...).
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    # What was ignored (unknown or retired settings), for the caller to log.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def source_of(self, name: str) -> str:
        return self.sources.get(name, "default")

    def told_by(self, name: str) -> str:
        """Where a setting came from, as words for a message ("set in the environment")."""
        source = self.source_of(name)
        if source == "default":
            return "the default"
        if source == SPECS_BY_NAME[name].env:
            return "set in the environment"
        return f"set by {source}"

    def require_api(self) -> tuple[str, Secret]:
        """The URL and key needed to sync; a ConfigError naming what is missing."""
        if self.api_url is None:
            raise ConfigError(
                "SYNCD_API_URL: not set; syncing needs the API base URL "
                "(environment, api_url in the config file, or --api-url)"
            )
        if self.api_key is None or not self.api_key.reveal():
            raise ConfigError(
                "SYNCD_API_KEY: not set; syncing needs an API key (SYNCD_API_KEY, "
                "SYNCD_API_KEY_FILE, or $CREDENTIALS_DIRECTORY/api_key)"
            )
        if self.require_https and self.cleartext_warning() is not None:
            raise ConfigError(
                f"SYNCD_API_URL: {self.api_url} ({self.told_by('api_url')}) is plain http:// to a host "
                f"that is not loopback, and SYNCD_REQUIRE_HTTPS ({self.told_by('require_https')}) "
                "forbids sending the API key in clear text: use https://"
            )
        return self.api_url, self.api_key

    @property
    def archive_on(self) -> bool:
        """The image archive is configured (a folder or an object store)."""
        return self.archive_dir is not None or self.archive_url is not None

    def require_archive(self) -> Path | locations.BucketUrl:
        """Where the archive is (its folder, or its bucket); a ConfigError when
        the archive is off."""
        if self.archive_url is not None:
            return self.archive_url
        if self.archive_dir is None:
            raise ConfigError(
                "SYNCD_ARCHIVE_DIR: not set; the image archive needs a folder to keep the images in "
                "(environment, archive_dir in the config file, or --archive-dir), or an object store "
                "(SYNCD_ARCHIVE_URL=s3://BUCKET/PREFIX)"
            )
        return self.archive_dir

    def cleartext_warning(self) -> str | None:
        """The warning for an API key sent unencrypted over a network; None when it is not."""
        if self.api_url is None:
            return None
        parts = urlsplit(self.api_url)
        if parts.scheme != "http" or is_loopback(parts.hostname or ""):
            return None
        return (
            f"SYNCD_API_URL: {self.api_url} ({self.told_by('api_url')}) is plain http:// to a host that "
            "is not loopback: the API key is sent in clear text; use https:// "
            "(SYNCD_REQUIRE_HTTPS=true makes this an error)"
        )

    def describe_key_source(self) -> str:
        return self.source_of("api_key")

    def describe_sources(self) -> str:
        """Where the settings came from, in a few words: "3 from the environment,
        2 from /etc/syncd/syncd.toml, 1 from a flag; the rest defaults"."""
        places: dict[str, int] = {}
        for name, origin in self.sources.items():
            if origin.startswith("--"):
                place = "a flag"
            elif " in " in origin and name in SPECS_BY_NAME:
                place = origin.split(" in ", 1)[1]
            elif origin == f"SYNCD_{name.upper()}":
                place = "the environment"
            else:
                continue  # the key's file: told in the api line
            places[place] = places.get(place, 0) + 1
        told = ", ".join(f"{count} from {place}" for place, count in places.items())
        described = f"{told}; the rest defaults" if told else "all defaults"
        if self.warnings:
            count = len(self.warnings)
            described += f" ({count} warning{'s' if count > 1 else ''} on stderr)"
        return described


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except PermissionError:
        raise ConfigError(f"config file {path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read: {exc.strerror}") from None
    return data


def _read_key_file(path: Path, origin: str) -> Secret:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"{origin}: key file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"{origin}: key file {path} is not readable (permission denied)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{origin}: key file {path} cannot be read ({type(exc).__name__})") from None
    if not text:
        raise ConfigError(f"{origin}: key file {path} is empty")
    try:
        return _parse_api_key(text)
    except ValueError as exc:
        raise ConfigError(f"{origin}: the key in {path} {exc}") from None


def _differs(name: str, from_env: object, from_file: object) -> bool:
    """Whether two sources give ``name`` different values (one that cannot be
    parsed differs: the file's value is judged, and the environment's ignored)."""
    spec = SPECS_BY_NAME[name]
    try:
        return bool(spec.parse(from_env) != spec.parse(from_file))
    except ValueError:
        return True


def _unused_key_sources(
    values: Mapping[str, Any], sources: Mapping[str, str], env: Mapping[str, str]
) -> list[str]:
    """The API key's sources that another one shadows: SYNCD_API_KEY (or
    api_key) wins over SYNCD_API_KEY_FILE, which wins over systemd's
    credential. A leftover of the first would make a key rotation done in the
    second change nothing, silently."""
    credential = env.get("CREDENTIALS_DIRECTORY")
    candidates = [sources[name] for name in ("api_key", "api_key_file") if name in values]
    if credential and (Path(credential) / "api_key").exists():
        candidates.append("$CREDENTIALS_DIRECTORY/api_key")
    if len(candidates) < 2:
        return []
    return [
        f"the API key comes from {candidates[0]}; {', '.join(candidates[1:])} "
        f"{'is' if len(candidates) == 2 else 'are'} set too and not read: remove what is not meant"
    ]


def load_settings(
    env: Mapping[str, str] | None = None,
    config_path: Path | None = None,
    overrides: Mapping[str, object] | None = None,
    *,
    system_config_path: Path = SYSTEM_CONFIG_PATH,
) -> Settings:
    """Merge defaults < environment < TOML file < CLI flags and validate everything.

    ``config_path`` is an explicit ``--config``; without it the system file is
    read when it exists. ``overrides`` maps setting names to flag values
    (``None`` means "flag not given").
    """
    env = os.environ if env is None else env
    raw: dict[str, tuple[object, str]] = {}
    warnings: list[str] = []

    for spec in SPECS:
        if spec.env in env and env[spec.env] != "":
            raw[spec.name] = (env[spec.env], spec.env)
    for variable in sorted(env):
        name = variable.removeprefix("SYNCD_").lower()
        if (
            variable.startswith("SYNCD_")
            and name not in SPECS_BY_NAME
            and not name.startswith(DEVELOPER_VARIABLES)
        ):
            warnings.append(_unknown_setting(name, "environment", lambda n: f"SYNCD_{n.upper()}"))

    path = config_path
    if path is None and system_config_path.exists():
        path = system_config_path
    if path is not None:
        data = read_toml(path)
        for key, value in data.items():
            if key not in SPECS_BY_NAME:
                warnings.append(_unknown_setting(key, f"config file {path}", repr))
                continue
            from_env = raw.get(key)
            if from_env is not None and _differs(key, from_env[0], value):
                warnings.append(
                    f"{from_env[1]} is set in the environment, but {key} in {path} overrides it "
                    "(a config file wins over the environment): remove one of them"
                )
            raw[key] = (value, f"{key} in {path}")

    for name, value in (overrides or {}).items():
        if value is not None:
            raw[name] = (value, "--" + name.replace("_", "-"))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, (value, origin) in raw.items():
        try:
            values[name] = SPECS_BY_NAME[name].parse(value)
        except ValueError as exc:
            raise ConfigError(f"{origin}: {exc}") from None
        sources[name] = origin

    warnings.extend(_unused_key_sources(values, sources, env))
    if "api_key" not in values:
        key_file: Path | None = values.get("api_key_file")
        if key_file is not None:
            values["api_key"] = _read_key_file(key_file, sources["api_key_file"])
            sources["api_key"] = f"{sources['api_key_file']} ({key_file})"
        elif env.get("CREDENTIALS_DIRECTORY"):
            cred = Path(env["CREDENTIALS_DIRECTORY"]) / "api_key"
            if cred.exists():
                values["api_key"] = _read_key_file(cred, "$CREDENTIALS_DIRECTORY/api_key")
                sources["api_key"] = "$CREDENTIALS_DIRECTORY/api_key"

    if values.get("archive_dir") is not None and values.get("archive_url") is not None:
        raise ConfigError(
            f"SYNCD_ARCHIVE_URL ({sources['archive_url']}) and SYNCD_ARCHIVE_DIR ({sources['archive_dir']}) "
            "are both set: the archive is one folder or one object store; set one of them"
        )
    return Settings(**values, sources=sources, warnings=tuple(warnings))
