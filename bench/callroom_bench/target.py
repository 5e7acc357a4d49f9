"""Which server the bench drives, how to reach it and how to sign its tokens."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from callroom.auth.dev import DEV_AUDIENCE, DEV_ISSUER, DevKeys
from callroom_bench.client import Protocol, room_url

DEV_KEY_FILE = Path(".callroom-dev-key.pem")
TOKEN_TTL_SECONDS = 3 * 3600


class BenchError(Exception):
    """A run cannot start or cannot go on; the message says what to do."""


class Minter:
    """Mints one RS256 token per bench user with the dev key or a given private key.

    The dev server (``callroom serve --dev``) reads its key from ``.callroom-dev-key.pem``
    in its working directory; an external server needs its key file and its issuer and
    audience (the kid is the RFC 7638 thumbprint of the key, as the server's JWKS must
    publish it).
    """

    def __init__(
        self, key_file: Path, issuer: str = DEV_ISSUER, audience: str = DEV_AUDIENCE
    ) -> None:
        if not key_file.is_file():
            raise BenchError(
                f"no signing key at {key_file}: run the bench where `callroom serve --dev` "
                "runs, or pass --key-file (with --issuer/--audience for a non-dev server)"
            )
        self._keys = DevKeys.load_or_create(key_file)
        self._issuer = issuer
        self._audience = audience

    def token(self, sub: str) -> str:
        return self._keys.mint(
            sub,
            name=sub,
            ttl_seconds=TOKEN_TTL_SECONDS,
            issuer=self._issuer,
            audience=self._audience,
        )


@dataclass(frozen=True)
class Target:
    """Base URLs (members are spread over them round-robin), wire protocol, server PIDs,
    and the PIDs of the Redis processes when the bench started them."""

    name: str
    urls: tuple[str, ...]
    protocol: Protocol
    minter: Minter | None = None
    server_pids: tuple[int, ...] = field(default=())
    redis_pids: tuple[int, ...] = field(default=())

    def url(self, room: str, member: int, client_id: str) -> str:
        """The URL for member ``member`` of ``room``; its node is ``member % len(urls)``."""
        base = self.urls[member % len(self.urls)]
        token = None if self.minter is None else self.minter.token(client_id)
        return room_url(self.protocol, base, room, client_id, token)
