"""Settings precedence, validation and password masking (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer import ConfigError, Settings, load_settings, mask_url


def test_defaults() -> None:
    s = load_settings(env={})
    assert s.urls == ("amqp://guest:guest@127.0.0.1:5672/",)
    assert s.exchange == "streamer"


def test_precedence_file_env_arguments(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('exchange = "from-file"\nchannels = 2\nmax_pending = 7\n')
    env = {"STREAMER_CHANNELS": "3", "STREAMER_MAX_PENDING": "8"}
    s = load_settings(cfg, env=env, max_pending=9)
    assert (s.exchange, s.channels, s.max_pending) == ("from-file", 3, 9)
    s = load_settings(env={**env, "STREAMER_CONFIG": str(cfg)})
    assert (s.exchange, s.channels) == ("from-file", 3)


def test_a_callers_defaults_sit_below_the_file_env_and_arguments(tmp_path: Path) -> None:
    defaults = {"channels": 4, "max_pending": 5, "exchange": "from-defaults"}
    s = load_settings(env={}, defaults=defaults)
    assert (s.channels, s.max_pending, s.exchange) == (4, 5, "from-defaults")
    cfg = tmp_path / "s.toml"
    cfg.write_text("channels = 1\n")  # the library's own default, set explicitly: it stands
    s = load_settings(cfg, env={"STREAMER_MAX_PENDING": "8"}, defaults=defaults, exchange="arg")
    assert (s.channels, s.max_pending, s.exchange) == (1, 8, "arg")
    with pytest.raises(ConfigError, match=r"unknown setting chanels .*defaults"):
        load_settings(env={}, defaults={"chanels": 2})
    with pytest.raises(ConfigError, match="channels='two' from defaults"):
        load_settings(env={}, defaults={"channels": "two"})


def test_several_urls_from_env() -> None:
    s = load_settings(env={"STREAMER_URL": "amqp://a/, amqp://b/"})
    assert s.urls == ("amqp://a/", "amqp://b/")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"chanels": 2},
            "unknown setting chanels .*valid settings: app_id, ca_file, cert_file, channels",
        ),
        ({"channels": "two"}, "channels='two' from arguments: Expected `int`"),
        ({"channels": 0}, "channels must be at least 1"),
        ({"url": "http://host/"}, "not a broker URL"),
        ({"connect_timeout": -1}, "connect_timeout must be positive"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, **kwargs)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text("exchnage = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown setting exchnage in config file .*s\.toml"):
        load_settings(cfg, env={})


def test_unknown_env_variable() -> None:
    with pytest.raises(ConfigError, match="STREAMER_CHANELS"):
        load_settings(env={"STREAMER_CHANELS": "2"})


def test_bad_env_type_names_the_source() -> None:
    with pytest.raises(ConfigError, match="channels='x' from environment"):
        load_settings(env={"STREAMER_CHANNELS": "x"})


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("= = =")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, env={})


def test_password_never_shown() -> None:
    url = "amqp://user:hunter2@host:5672/vh"
    assert mask_url(url) == "amqp://user:***@host:5672/vh"
    s = Settings(url=(url, "amqps://u:p%40ss@other/"))
    assert "hunter2" not in repr(s) and "p%40ss" not in str(s)
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, url="amqp://user:hunter2@host:99999/")
    assert "hunter2" not in str(err.value)
    assert mask_url("amqp://host/") == "amqp://host/"


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.channels = 3  # type: ignore[misc]


def test_tables_of_other_components_can_be_skipped(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('exchange = "x"\n[qos]\nprefetch_count = 3\n')
    assert load_settings(cfg, env={}, sections=("qos",)).exchange == "x"
    with pytest.raises(ConfigError, match="unknown setting qos"):
        load_settings(cfg, env={})
