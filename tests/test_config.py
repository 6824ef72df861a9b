"""Settings: sources and precedence, and one clear line for every bad value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from syncd.config import DEFAULT_DATABASE_URL, Secret, is_loopback, load_settings
from syncd.errors import ConfigError

NO_SYSTEM_FILE = Path("/nonexistent/syncd.toml")


def load(env: dict[str, str] | None = None, config: Path | None = None, **overrides: object):  # type: ignore[no-untyped-def]
    return load_settings(
        env=env or {}, config_path=config, overrides=overrides, system_config_path=NO_SYSTEM_FILE
    )


def test_defaults() -> None:
    settings = load()
    assert settings.database_url == DEFAULT_DATABASE_URL and settings.page_size == 500
    assert settings.api_url is None and settings.api_key is None


def test_env_then_toml_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text('page_size = 200\napi_url = "https://toml.example"\n')
    env = {"SYNCD_PAGE_SIZE": "100", "SYNCD_API_URL": "https://env.example", "SYNCD_INTERVAL": "60"}
    settings = load(env, config, page_size="50")
    assert settings.page_size == 50 and settings.source_of("page_size") == "--page-size"
    assert settings.api_url == "https://toml.example" and settings.source_of("api_url").startswith(
        "api_url in "
    )
    assert settings.interval == 60 and settings.source_of("interval") == "SYNCD_INTERVAL"


def test_a_setting_the_file_overrides_from_the_environment_is_a_warning(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text('database_url = "sqlite:////srv/t.db"\npage_size = 100\ninterval = 300\n')
    env = {
        "SYNCD_DATABASE_URL": "sqlite:////srv/scratch.db",  # differs: the run would write elsewhere
        "SYNCD_PAGE_SIZE": "100",  # the same value: nothing to say
        "SYNCD_INTERVAL": "5m",  # a bad value the file hides: said too
    }
    settings = load(env, config)
    assert settings.database_url == "sqlite:////srv/t.db"
    assert settings.warnings == tuple(
        f"{variable} is set in the environment, but {key} in {config} overrides it "
        "(a config file wins over the environment): remove one of them"
        for variable, key in (("SYNCD_DATABASE_URL", "database_url"), ("SYNCD_INTERVAL", "interval"))
    )
    assert settings.describe_sources() == f"3 from {config}; the rest defaults (2 warnings on stderr)"
    assert load({**env, "SYNCD_INTERVAL": "60"}).warnings == ()  # without the file, nothing is overridden


def key_sources(tmp_path: Path, in_file: str, in_credentials: str) -> tuple[Path, Path]:
    """A key file, and a systemd credentials directory holding ``api_key``."""
    key_file = tmp_path / "key"
    key_file.write_text(in_file)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "api_key").write_text(in_credentials)
    return key_file, credentials


def test_an_api_key_source_another_shadows_is_a_warning(tmp_path: Path) -> None:
    key_file, credentials = key_sources(tmp_path, "sk-from-the-file-123456\n", "sk-from-systemd-123456\n")
    env = {"SYNCD_API_KEY": "sk-left-over-123456", "SYNCD_API_KEY_FILE": str(key_file)}
    settings = load({**env, "CREDENTIALS_DIRECTORY": str(credentials)})
    assert settings.api_key is not None and settings.api_key.reveal() == "sk-left-over-123456"
    assert settings.warnings == (
        "the API key comes from SYNCD_API_KEY; SYNCD_API_KEY_FILE, $CREDENTIALS_DIRECTORY/api_key "
        "are set too and not read: remove what is not meant",
    )
    shadowed = load({"SYNCD_API_KEY_FILE": str(key_file), "CREDENTIALS_DIRECTORY": str(credentials)})
    assert shadowed.api_key is not None and shadowed.api_key.reveal() == "sk-from-the-file-123456"
    assert shadowed.warnings == (
        "the API key comes from SYNCD_API_KEY_FILE; $CREDENTIALS_DIRECTORY/api_key is set too and not read: "
        "remove what is not meant",
    )
    assert load({"CREDENTIALS_DIRECTORY": str(credentials)}).warnings == ()
    assert all("sk-" not in warning for warning in settings.warnings + shadowed.warnings)


def test_system_file_is_read_when_present_and_no_config_given(tmp_path: Path) -> None:
    system = tmp_path / "system.toml"
    system.write_text("page_size = 7\n")
    assert load_settings(env={}, system_config_path=system).page_size == 7


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SYNCD_PAGE_SIZE": "0"}, "SYNCD_PAGE_SIZE: must be an integer from 1 to 500, got 0"),
        ({"SYNCD_PAGE_SIZE": "501"}, "SYNCD_PAGE_SIZE: must be an integer from 1 to 500, got 501"),
        ({"SYNCD_PAGE_SIZE": "ten"}, "SYNCD_PAGE_SIZE: expected an integer, got 'ten'"),
        ({"SYNCD_API_URL": "api.tengr.ai"}, "SYNCD_API_URL: expected an http(s) URL"),
        ({"SYNCD_API_URL": "ftp://x"}, "SYNCD_API_URL: expected an http(s) URL"),
        ({"SYNCD_API_URL": "http://h:99999"}, "SYNCD_API_URL: has an invalid port"),
        ({"SYNCD_DATABASE_URL": "nonsense"}, "SYNCD_DATABASE_URL: expected a SQLAlchemy URL"),
        ({"SYNCD_DATABASE_URL": "mysql://x/y"}, "SYNCD_DATABASE_URL: only sqlite and postgresql"),
        ({"SYNCD_DATABASE_URL": "sqlite://host/x.db"}, "SYNCD_DATABASE_URL: SQLite URLs are sqlite:///"),
        ({"SYNCD_MAX_REQUESTS_PER_SECOND": "0"}, "SYNCD_MAX_REQUESTS_PER_SECOND: must be a number > 0"),
        ({"SYNCD_LOG_FORMAT": "xml"}, "SYNCD_LOG_FORMAT: must be one of text, json"),
        (
            {"SYNCD_LOG_LEVEL": "loud"},
            "SYNCD_LOG_LEVEL: must be one of debug, info, warning, error, got 'loud'",
        ),
        (
            {"SYNCD_API_KEY_FILE": "/nonexistent/key"},
            "SYNCD_API_KEY_FILE: key file /nonexistent/key does not exist",
        ),
        (
            {"SYNCD_REQUIRE_HTTPS": "maybe"},
            "SYNCD_REQUIRE_HTTPS: expected true or false (or 1/0, yes/no), got 'maybe'",
        ),
    ],
)
def test_bad_values_name_the_setting_in_one_line(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(env)
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message


def test_toml_errors_name_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("pagesize = 3\n")
    assert load(config=config).warnings == (
        f"config file {config}: 'pagesize' is not a syncd setting (did you mean 'page_size'?); ignored",
    )
    config.write_text("page_size = [\n")
    with pytest.raises(ConfigError, match=r"c.toml: invalid TOML"):
        load(config=config)
    config.write_text("page_size = 0\n")
    with pytest.raises(ConfigError, match=r"page_size in .*c.toml: must be an integer from 1 to 500"):
        load(config=config)
    with pytest.raises(ConfigError, match="not found"):
        load(config=tmp_path / "missing.toml")


def test_unreadable_and_empty_key_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load({"SYNCD_API_KEY_FILE": str(empty)})
    directory = tmp_path / "dir"
    directory.mkdir()
    with pytest.raises(ConfigError, match="cannot be read"):
        load({"SYNCD_API_KEY_FILE": str(directory)})


def test_key_sources_in_order(tmp_path: Path) -> None:
    key_file, creds = key_sources(tmp_path, "from-file\n", "from-credentials")
    settings = load({"CREDENTIALS_DIRECTORY": str(creds)})
    assert (
        settings.api_key == Secret("from-credentials")
        and settings.describe_key_source() == "$CREDENTIALS_DIRECTORY/api_key"
    )
    settings = load({"CREDENTIALS_DIRECTORY": str(creds), "SYNCD_API_KEY_FILE": str(key_file)})
    assert settings.api_key == Secret("from-file")
    settings = load({"SYNCD_API_KEY_FILE": str(key_file), "SYNCD_API_KEY": "from-env"})
    assert settings.api_key == Secret("from-env") and settings.describe_key_source() == "SYNCD_API_KEY"


def test_secret_never_shows_itself() -> None:
    settings = load({"SYNCD_API_KEY": "sk-live-123"})
    assert "sk-live-123" not in repr(settings) and "sk-live-123" not in str(settings.api_key)


def test_require_api_names_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="SYNCD_API_URL: not set"):
        load().require_api()
    with pytest.raises(ConfigError, match="SYNCD_API_KEY: not set"):
        load({"SYNCD_API_URL": "https://x"}).require_api()


def test_postgres_urls_need_psycopg_3(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="syncd uses psycopg 3: write postgresql://"):
        load({"SYNCD_DATABASE_URL": "postgresql+psycopg2://u@h/db"})
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pip install 'syncd\[postgres\]'"):
        load({"SYNCD_DATABASE_URL": "postgresql://u@h/db"})


def test_unknown_and_retired_variables_are_warnings_not_errors() -> None:
    settings = load(
        {"SYNCD_PAGESIZE": "10", "SYNCD_VALIDATION_PROCESS": "on", "SYNCD_TEST_POSTGRES_URL": "x"}
    )
    assert settings.page_size == 500
    assert settings.warnings == (
        "environment: SYNCD_PAGESIZE is not a syncd setting (did you mean SYNCD_PAGE_SIZE?); ignored",
        "environment: SYNCD_VALIDATION_PROCESS is no longer used "
        "(helper processes were removed: syncd is one process); ignored",
    )


def test_postgres_scheme_is_postgresql() -> None:
    from syncd.db import normalise_url

    url = "postgres://syncd@db.internal:5432/syncd"
    assert load({"SYNCD_DATABASE_URL": url}).database_url == url
    assert normalise_url(url) == "postgresql+psycopg://syncd@db.internal:5432/syncd"


def test_messages_say_where_a_setting_came_from(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("interval = 60\n")
    settings = load({"SYNCD_PAGE_SIZE": "9"}, config, log_level="debug")
    assert settings.told_by("page_size") == "set in the environment"
    assert settings.told_by("interval") == f"set by interval in {config}"
    assert settings.told_by("log_level") == "set by --log-level"
    assert settings.told_by("database_url") == "the default"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), (" Yes ", True), ("1", True), ("FALSE", False), ("no", False), ("0", False)],
)
def test_require_https_is_a_boolean(raw: str, expected: bool, tmp_path: Path) -> None:
    assert load({"SYNCD_REQUIRE_HTTPS": raw}).require_https is expected
    config = tmp_path / "c.toml"
    config.write_text(f"require_https = {str(expected).lower()}\n")
    assert load(config=config).require_https is expected
    config.write_text('require_https = "on"\n')
    with pytest.raises(ConfigError, match=r"require_https in .*c.toml: expected true or false"):
        load(config=config)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST.", True),
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("::2", False),
        ("localhost.example.com", False),
        ("api.tengr.ai", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("url", "cleartext"),
    [
        ("http://api.example.com", True),
        ("http://10.1.2.3:8080", True),
        ("https://api.example.com", False),
        ("http://127.0.0.1:8080", False),
        ("http://[::1]:8080", False),
        ("http://localhost", False),
    ],
)
def test_a_key_in_clear_over_a_network_is_a_warning_or_with_require_https_an_error(
    url: str, cleartext: bool
) -> None:
    env = {"SYNCD_API_URL": url, "SYNCD_API_KEY": "k"}
    warning = load(env).cleartext_warning()
    assert (warning is not None) is cleartext
    strict = load({**env, "SYNCD_REQUIRE_HTTPS": "true"})
    if not cleartext:
        assert strict.require_api() == (url, Secret("k"))
        return
    assert warning == (
        f"SYNCD_API_URL: {url} (set in the environment) is plain http:// to a host that is not loopback: "
        "the API key is sent in clear text; use https:// (SYNCD_REQUIRE_HTTPS=true makes this an error)"
    )
    load(env).require_api()  # a warning only, unless required
    with pytest.raises(ConfigError) as info:
        strict.require_api()
    assert str(info.value) == (
        f"SYNCD_API_URL: {url} (set in the environment) is plain http:// to a host that is not loopback, "
        "and SYNCD_REQUIRE_HTTPS (set in the environment) forbids sending the API key in clear text: "
        "use https://"
    )


def test_byte_counts_take_suffixes_and_say_what_is_wrong() -> None:
    from syncd.config import load_settings

    def settings(**env: str) -> Any:
        return load_settings(
            env={f"SYNCD_{k.upper()}": v for k, v in env.items()}, system_config_path=Path("/nonexistent")
        )

    assert settings(archive_max_file_bytes="64M").archive_max_file_bytes == 64 << 20
    assert settings(archive_min_free_bytes="1.5G").archive_min_free_bytes == 3 << 29
    assert settings(archive_min_free_bytes="0").archive_min_free_bytes == 0
    for value, words in (
        ("0", "at least 1,024 bytes"),
        ("lots", "byte count such as"),
        ("9" * 30 + "G", "too large"),
    ):
        with pytest.raises(ConfigError, match=words) as caught:
            settings(archive_max_file_bytes=value)
        assert str(caught.value).startswith("SYNCD_ARCHIVE_MAX_FILE_BYTES: ")


def test_private_image_hosts_are_allowed_unless_refused() -> None:
    def settings(**env: str) -> Any:
        return load_settings(
            env={f"SYNCD_{k.upper()}": v for k, v in env.items()}, system_config_path=Path("/nonexistent")
        )

    assert settings().archive_allow_private is True
    assert settings(archive_allow_private="false").archive_allow_private is False
    with pytest.raises(ConfigError, match="SYNCD_ARCHIVE_ALLOW_PRIVATE: expected true or false"):
        settings(archive_allow_private="sometimes")


def test_the_archive_in_an_object_store_is_a_bucket_url() -> None:
    def settings(**env: str) -> Any:
        return load_settings(
            env={f"SYNCD_{k.upper()}": v for k, v in env.items()}, system_config_path=Path("/nonexistent")
        )

    chosen = settings(archive_url="s3://syncd-images/tengr/images/")
    assert chosen.archive_on and chosen.archive_dir is None
    assert str(chosen.archive_url) == "s3://syncd-images/tengr/images"
    assert chosen.require_archive() == chosen.archive_url
    assert (
        chosen.archive_url is not None and chosen.archive_url.key("ab/cd/x.png") == "tengr/images/ab/cd/x.png"
    )
    bare = settings(archive_url="s3://syncd-images").archive_url
    assert bare is not None and bare.prefix == "" and bare.key("ab/cd/x.png") == "ab/cd/x.png"
    assert not settings().archive_on
    for value, words in (
        ("https://bucket/prefix", "the scheme must be s3"),
        ("s3://AB", "is not a bucket name"),
        ("s3://bucket/a/../b", "the prefix may hold only"),
        ("s3://bucket/p?x=1", "without a query"),
    ):
        with pytest.raises(ConfigError, match=words) as caught:
            settings(archive_url=value)
        assert str(caught.value).startswith("SYNCD_ARCHIVE_URL: ")


def test_credentials_in_the_bucket_url_are_refused_and_never_echoed() -> None:
    with pytest.raises(ConfigError, match="credentials do not belong in the URL") as caught:
        load_settings(
            env={"SYNCD_ARCHIVE_URL": "s3://AKIAEXAMPLE:hunter2secret@bucket/p"},
            system_config_path=Path("/nonexistent"),
        )
    assert "hunter2secret" not in str(caught.value) and "AKIAEXAMPLE" not in str(caught.value)


def test_the_archive_is_one_folder_or_one_object_store() -> None:
    with pytest.raises(ConfigError, match="are both set") as caught:
        load_settings(
            env={"SYNCD_ARCHIVE_URL": "s3://bucket/p", "SYNCD_ARCHIVE_DIR": "/tmp/images"},
            system_config_path=Path("/nonexistent"),
        )
    assert "SYNCD_ARCHIVE_DIR" in str(caught.value)
