"""The origin rules of SPEC §1 and §9 as a pure function of a request and the settings.

The HTTP-level behaviour is in tests/integration/test_web_client.py; these cases cover
the parsing of ``Origin`` and ``Host`` (default ports, IPv6 literals, junk).
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from callroom.config import Settings
from callroom.server.handshake import origin_permitted


def settings(**values: Any) -> Settings:
    base: dict[str, Any] = {"DEV_MODE": True, "DATABASE_URL": "memory://"}
    base.update(values)
    return Settings(_env_file=None, **base)


def permitted(origin: str, host: str | None, config: Settings) -> bool:
    headers = {"Host": host} if host is not None else {}
    request = make_mocked_request("GET", "/ws/zoom/r", headers=headers)
    return origin_permitted(request, origin, config)


PRODUCTION_LIKE = {"ALLOWED_ORIGINS": "https://meet.example.com"}


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://meet.example.com", "meet.example.com"),  # default port on both sides
        ("http://meet.example.com:80", "meet.example.com"),
        ("https://meet.example.com", "meet.example.com"),  # behind a TLS proxy
        ("https://meet.example.com", "meet.example.com:443"),
        ("http://[::1]:8080", "[::1]:8080"),
        ("HTTP://Meet.Example.com:8080", "meet.example.com:8080"),
    ],
)
def test_the_servers_own_origin(origin: str, host: str) -> None:
    assert permitted(origin, host, settings(**PRODUCTION_LIKE))


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://meet.example.com:8080", "meet.example.com"),
        ("http://other.example.com", "meet.example.com"),
        ("http://meet.example.com", None),  # no Host: nothing to compare with
        ("http://[::1:8080", "[::1]:8080"),  # unclosed IPv6 literal
        ("http://[::1]:80x", "[::1]:80"),
        ("http://:8080", ":8080"),
        ("ftp://meet.example.com", "meet.example.com"),
        ("http://user@meet.example.com", "meet.example.com"),
        ("null", "meet.example.com"),
    ],
)
def test_not_the_servers_own_origin(origin: str, host: str | None) -> None:
    assert not permitted(origin, host, settings(**PRODUCTION_LIKE))


def test_listed_origins_and_the_wildcard() -> None:
    assert permitted("https://meet.example.com", "callroom.internal", settings(**PRODUCTION_LIKE))
    assert permitted("https://any.example.org", "callroom.internal", settings(ALLOWED_ORIGINS="*"))


def test_loopback_only_in_dev_mode_without_allowed_origins() -> None:
    assert permitted("http://localhost:5173", "127.0.0.1:8080", settings())
    assert permitted("https://127.0.0.1:1", "127.0.0.1:8080", settings())
    assert not permitted("http://localhost.example.com:5173", "127.0.0.1:8080", settings())
    explicit = settings(ALLOWED_ORIGINS="http://localhost:3000")
    assert not permitted("http://localhost:5173", "127.0.0.1:8080", explicit)
    production = Settings(
        _env_file=None,
        AUTH_ISSUER="https://issuer.example.com/",
        AUTH_JWKS_URL="https://issuer.example.com/jwks.json",
        AUTH0_AUDIENCE="callroom",
    )
    assert not permitted("http://localhost:5173", "127.0.0.1:8080", production)
