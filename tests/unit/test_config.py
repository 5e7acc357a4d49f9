"""Settings (SPEC §6): defaults, lists, refusals that name the variable, Auth0 defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from callroom.config import Settings, load_settings
from callroom.errors import ConfigError

AUTH = {
    "AUTH_ISSUER": "https://issuer/",
    "AUTH_JWKS_URL": "https://issuer/jwks",
    "AUTH0_AUDIENCE": "api",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_are_those_of_the_spec() -> None:
    settings = load_settings(None, **AUTH)
    assert settings.AUTH_ALGORITHMS == ("RS256",)
    assert settings.ALLOWED_ORIGINS == ("http://localhost:3000",)
    assert (settings.PORT, settings.LOG_FORMAT, settings.LOG_LEVEL) == (8080, "json", "INFO")
    assert settings.DATABASE_URL == "sqlite:///./callroom.db"
    assert settings.REDIS_URL is None
    assert (settings.MAX_ROOM_SIZE, settings.MAX_CONNECTIONS, settings.MAX_CONNECTIONS_PER_IP) == (
        100,
        10000,
        50,
    )
    assert (settings.RATE_LIMIT_PER_SECOND, settings.RATE_LIMIT_BURST) == (20, 40)
    assert (settings.RECONNECT_GRACE_SECONDS, settings.HEARTBEAT_INTERVAL_SECONDS) == (15, 20)
    assert (settings.CHAT_HISTORY_LIMIT, settings.CHAT_MAX_LENGTH) == (100, 1000)
    assert (settings.MAX_MESSAGE_BYTES, settings.MAX_SDP_BYTES) == (65536, 32768)
    assert (settings.MAX_SCREENSHARES, settings.LOBBY_ENABLED) == (1, True)
    assert (settings.SHUTDOWN_GRACE_SECONDS, settings.TURN_TTL_SECONDS) == (10, 86400)
    assert settings.CHAT_RETENTION_DAYS is None


def test_auth0_domain_gives_issuer_and_jwks_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH0_DOMAIN", "tenant.eu.auth0.com")
    monkeypatch.setenv("AUTH0_AUDIENCE", "https://api")
    settings = load_settings(None)
    assert settings.issuer == "https://tenant.eu.auth0.com/"
    assert settings.jwks_url == "https://tenant.eu.auth0.com/.well-known/jwks.json"
    assert settings.audience == "https://api"


def test_list_variables_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://A.example.com, http://localhost:3000")
    monkeypatch.setenv("AUTH_ALGORITHMS", "RS256,ES256")
    monkeypatch.setenv("STUN_URLS", "stun:a:3478,stun:b:3478")
    settings = load_settings(None, **AUTH)
    assert settings.ALLOWED_ORIGINS == ("https://a.example.com", "http://localhost:3000")
    assert settings.AUTH_ALGORITHMS == ("RS256", "ES256")
    assert settings.STUN_URLS == ("stun:a:3478", "stun:b:3478")


def test_env_file_is_read_and_empty_values_mean_unset(tmp_path: Path) -> None:
    env_file = tmp_path / "custom.env"
    env_file.write_text("PORT=9001\nREDIS_URL=\nCHAT_RETENTION_DAYS=\nLOBBY_ENABLED=false\n")
    settings = load_settings(str(env_file), **AUTH)
    assert settings.PORT == 9001
    assert settings.REDIS_URL is None
    assert settings.CHAT_RETENTION_DAYS is None
    assert settings.LOBBY_ENABLED is False


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("AUTH_ALGORITHMS", "none", "never allowed"),
        ("AUTH_ALGORITHMS", "RS256,HS256", "never allowed"),
        ("AUTH_ALGORITHMS", "XY999", "not supported"),
        ("AUTH_ALGORITHMS", ",", "at least one"),
        ("ALLOWED_ORIGINS", "example.com", "not an origin"),
        ("DATABASE_URL", "mysql://x", "sqlite"),
        ("REDIS_URL", "http://redis", "redis://"),
        ("PORT", "70000", "65535"),
        ("LOG_FORMAT", "xml", "json"),
        ("MAX_ROOM_SIZE", "0", "greater"),
        ("RATE_LIMIT_PER_SECOND", "-1", "greater"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, words: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings(None, **AUTH)
    assert info.value.variable == variable
    assert words in info.value.message
    assert str(info.value).startswith(f"{variable}: ")


@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("AUTH_ISSUER", "AUTH_ISSUER"),
        ("AUTH_JWKS_URL", "AUTH_JWKS_URL"),
        ("AUTH0_AUDIENCE", "AUTH0_AUDIENCE"),
    ],
)
def test_without_dev_mode_the_issuer_keys_and_audience_are_required(
    missing: str, variable: str
) -> None:
    values = {k: v for k, v in AUTH.items() if k != missing}
    with pytest.raises(ConfigError) as info:
        load_settings(None, **values)
    assert info.value.variable == variable


def test_dev_mode_needs_no_issuer() -> None:
    settings = load_settings(None, DEV_MODE=True)
    assert settings.issuer is None
    assert settings.jwks_url is None


def test_memory_database_is_accepted() -> None:
    assert load_settings(None, DATABASE_URL="memory://", **AUTH).DATABASE_URL == "memory://"


def test_star_origin_and_redis_urls_are_accepted() -> None:
    settings = load_settings(
        None, ALLOWED_ORIGINS="*", REDIS_URL="redis://127.0.0.1:6379/0", **AUTH
    )
    assert settings.ALLOWED_ORIGINS == ("*",)
    assert settings.REDIS_URL == "redis://127.0.0.1:6379/0"
