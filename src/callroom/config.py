"""Settings from the environment and ``.env`` (SPEC §6).

Every variable of SPEC §6 is a field here. A bad value raises ``ConfigError`` naming the
variable; the CLI turns it into exit code 2 and one line on stderr.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from callroom.errors import ConfigError
from callroom.server.proxies import parse_networks

CommaList = Annotated[tuple[str, ...], NoDecode]

# SPEC §5: "none" and every HMAC algorithm are always refused.
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# DATABASE_URL=memory:// keeps chat in memory only (lost on restart): for tests and for
# measuring what the durable store costs (docs/performance.md). Never the default.
MEMORY_DATABASE = "memory://"
# The schemes ``callroom.chat.engine.async_url`` maps to its async drivers.
_DATABASE_SCHEMES = frozenset(
    {"sqlite", "sqlite+aiosqlite", "postgresql", "postgres", "postgresql+asyncpg"}
)
_ORIGIN_RE = re.compile(r"^(https?)://[^/\s:]+(:\d{1,5})?$")
# No braces (they would change the keys' Redis Cluster hash tags), no spaces.
_REDIS_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """All configuration; field names are the environment variable names (SPEC §6)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=True,
        env_ignore_empty=True,
        frozen=True,
    )

    # Tokens (SPEC §5)
    AUTH0_DOMAIN: str | None = None
    AUTH0_AUDIENCE: str | None = None
    AUTH_ISSUER: str | None = None
    AUTH_JWKS_URL: str | None = None
    AUTH_ALGORITHMS: CommaList = ("RS256",)
    AUTH_LEEWAY_SECONDS: int = Field(30, ge=0, le=3600)
    AUTH_NAME_CLAIM: str = Field("name", min_length=1)
    AUTH_ROLES_CLAIM: str = Field("roles", min_length=1)
    JWKS_REFRESH_SECONDS: int = Field(600, ge=10)

    # HTTP
    ALLOWED_ORIGINS: CommaList = ("http://localhost:3000",)
    HOST: str = "0.0.0.0"
    PORT: int = Field(8080, ge=0, le=65535)
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    LOG_FORMAT: Literal["json", "console"] = "json"
    # SPEC §9: peers whose X-Forwarded-For / Forwarded headers are believed (CIDR list).
    TRUSTED_PROXIES: CommaList = ()

    # Storage
    DATABASE_URL: str = "sqlite:///./callroom.db"
    REDIS_URL: str | None = None
    REDIS_PREFIX: str = "callroom"  # SPEC §9: starts every key and channel
    CHAT_HISTORY_LIMIT: int = Field(100, ge=1, le=100_000)
    CHAT_RETENTION_DAYS: int | None = Field(None, ge=1)

    # Limits (SPEC §6)
    CHAT_MAX_LENGTH: int = Field(1000, ge=1, le=100_000)
    MAX_MESSAGE_BYTES: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    MAX_SDP_BYTES: int = Field(32768, ge=1, le=16 * 1024 * 1024)
    MAX_ROOM_SIZE: int = Field(100, ge=1, le=100_000)
    MAX_CONNECTIONS: int = Field(10000, ge=1)
    MAX_CONNECTIONS_PER_IP: int = Field(50, ge=1)
    RATE_LIMIT_PER_SECOND: float = Field(20, gt=0)
    RATE_LIMIT_BURST: int = Field(40, ge=1)
    RECONNECT_GRACE_SECONDS: float = Field(15, ge=0)
    HEARTBEAT_INTERVAL_SECONDS: float = Field(20, gt=0)
    # SPEC §9: a connection's request must be complete within this (server/guard.py).
    HANDSHAKE_TIMEOUT_SECONDS: float = Field(10, gt=0, le=3600)
    MAX_SCREENSHARES: int = Field(1, ge=1)
    LOBBY_ENABLED: bool = True
    SHUTDOWN_GRACE_SECONDS: float = Field(10, ge=0)

    # ICE servers (SPEC §4)
    STUN_URLS: CommaList = ()
    TURN_URLS: CommaList = ()
    TURN_SECRET: str | None = None
    TURN_TTL_SECONDS: int = Field(86400, ge=60)

    # Dev mode (SPEC §5): set by ``callroom serve --dev``, not by the environment.
    DEV_MODE: bool = False

    _split_lists = field_validator(
        "AUTH_ALGORITHMS",
        "ALLOWED_ORIGINS",
        "STUN_URLS",
        "TURN_URLS",
        "TRUSTED_PROXIES",
        mode="before",
    )(_split)

    @field_validator("AUTH_ALGORITHMS")
    @classmethod
    def _check_algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one algorithm")
        for alg in value:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"{alg!r} is never allowed (no 'none', no HMAC)")
            if alg not in SUPPORTED_ALGORITHMS:
                allowed = ", ".join(sorted(SUPPORTED_ALGORITHMS))
                raise ValueError(f"{alg!r} is not supported (use {allowed})")
        return value

    @field_validator("ALLOWED_ORIGINS")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not _ORIGIN_RE.match(origin):
                raise ValueError(f"{origin!r} is not an origin like https://host[:port]")
        return tuple(origin.lower() for origin in value)

    @field_validator("TRUSTED_PROXIES")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_networks(value)  # ValueError names the bad entry
        return value

    @field_validator("REDIS_PREFIX")
    @classmethod
    def _check_redis_prefix(cls, value: str) -> str:
        if not _REDIS_PREFIX_RE.match(value):
            raise ValueError("must be 1-64 characters of A-Z a-z 0-9 _ . : -")
        return value

    @field_validator("DATABASE_URL")
    @classmethod
    def _check_database(cls, value: str) -> str:
        scheme, separator, _ = value.partition("://")
        if value != MEMORY_DATABASE and (not separator or scheme not in _DATABASE_SCHEMES):
            raise ValueError("must be a sqlite:/// path, a postgresql:// URL or memory://")
        return value

    @field_validator("REDIS_URL")
    @classmethod
    def _check_redis(cls, value: str | None) -> str | None:
        schemes = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
        if value and not value.startswith(schemes):
            raise ValueError(
                "must be a redis://, rediss:// or unix:// URL, or redis+cluster:// "
                "(rediss+cluster://) naming a node of a Redis Cluster"
            )
        return value or None

    @model_validator(mode="after")
    def _check_auth(self) -> Settings:
        if self.DEV_MODE:
            return self
        if not self.issuer:
            raise ValueError("AUTH_ISSUER: no issuer configured: set AUTH0_DOMAIN or AUTH_ISSUER")
        if not self.jwks_url:
            raise ValueError("AUTH_JWKS_URL: no JWKS URL: set AUTH0_DOMAIN or AUTH_JWKS_URL")
        if not self.AUTH0_AUDIENCE:
            raise ValueError("AUTH0_AUDIENCE: required to verify tokens")
        return self

    # Derived values (SPEC §5: Auth0 convenience)
    @property
    def issuer(self) -> str | None:
        if self.AUTH_ISSUER:
            return self.AUTH_ISSUER
        if self.AUTH0_DOMAIN:
            return f"https://{self.AUTH0_DOMAIN}/"
        return None

    @property
    def jwks_url(self) -> str | None:
        if self.AUTH_JWKS_URL:
            return self.AUTH_JWKS_URL
        if self.AUTH0_DOMAIN:
            return f"https://{self.AUTH0_DOMAIN}/.well-known/jwks.json"
        return None

    @property
    def audience(self) -> str | None:
        return self.AUTH0_AUDIENCE


def load_settings(env_file: str | None = ".env", **overrides: Any) -> Settings:
    """Build settings from the environment, ``env_file`` and explicit overrides (CLI flags).

    Raises ``ConfigError`` naming the first bad variable.
    """
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error.get("loc") or ()
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if loc:
            variable = str(loc[0])
        else:
            # A model-level check: the message starts with the variable it is about.
            variable, _, message = message.partition(": ")
        raise ConfigError(variable, message) from None


# -- `callroom config` -----------------------------------------------------------------

SECRET_SETTINGS = frozenset({"TURN_SECRET"})
URL_SETTINGS = frozenset({"DATABASE_URL", "REDIS_URL"})
MASK = "***"
_PASSWORD_QUERY_RE = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` query value) replaced by ``***``."""
    netloc = urlsplit(url).netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        url = url.replace(netloc, f"{userinfo.partition(':')[0]}:{MASK}@{hostport}", 1)
    return _PASSWORD_QUERY_RE.sub(rf"\g<1>{MASK}", url)


def effective_settings(settings: Settings) -> list[tuple[str, str]]:
    """Every variable with the value the server uses, secrets masked (``callroom config``).

    ``AUTH_ISSUER`` and ``AUTH_JWKS_URL`` show the values derived from ``AUTH0_DOMAIN``
    when they are not set themselves.
    """
    derived: dict[str, Any] = {"AUTH_ISSUER": settings.issuer, "AUTH_JWKS_URL": settings.jwks_url}
    lines: list[tuple[str, str]] = []
    for name in Settings.model_fields:
        if name == "DEV_MODE":
            continue  # a flag of `callroom serve`, not a variable
        value = derived[name] if name in derived else getattr(settings, name)
        if value is None:
            text = ""
        elif isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, tuple):
            text = ",".join(value)
        else:
            text = str(value)
        if text and name in SECRET_SETTINGS:
            text = MASK
        elif text and name in URL_SETTINGS:
            text = mask_url(text)
        lines.append((name, text))
    return lines
