"""Dev mode keys (SPEC §5 "Dev mode"): a local RSA key that signs tokens for development.

The server publishes ``DevKeys.jwks()`` at ``/dev/jwks.json`` and points the ordinary
``JwksCache`` at it, so dev tokens go through the same verification as Auth0 tokens.
The key lives in a PEM file (mode 0600) so the server and ``callroom token`` share it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

log = structlog.get_logger(__name__)

DEV_ISSUER = "callroom-dev"
DEV_AUDIENCE = "callroom"
DEV_ALGORITHM = "RS256"
_KEY_BITS = 2048


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class DevKeys:
    """An RSA 2048 private key with its public JWKS and a token minter."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private_key = private_key
        numbers = private_key.public_key().public_numbers()
        self._public_jwk = {
            "e": _b64url_uint(numbers.e),
            "kty": "RSA",
            "n": _b64url_uint(numbers.n),
        }
        # RFC 7638 thumbprint: SHA-256 of the required members, sorted, no whitespace.
        canonical = json.dumps(self._public_jwk, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode("ascii")).digest()
        self.kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    @classmethod
    def generate(cls) -> DevKeys:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS))

    @classmethod
    def load_or_create(cls, path: Path) -> DevKeys:
        """Load the PEM key at ``path``, or create it (mode 0600) when it does not exist.

        Creation is atomic: the key is written to a private temporary file and linked into
        place, so two processes starting together end up sharing one key.
        """
        try:
            return cls.load(path)
        except FileNotFoundError:
            pass
        keys = cls.generate()
        pem = keys._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            os.link(tmp, path)  # fails if another process created the key meanwhile
        except FileExistsError:
            return cls.load(path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("dev signing key created", path=str(path), kid=keys.kid)
        return keys

    @classmethod
    def load(cls, path: Path) -> DevKeys:
        """The PEM key at ``path``; ``FileNotFoundError`` when there is none."""
        data = path.read_bytes()
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("dev signing key is readable by others", path=str(path), mode=oct(mode))
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not an unencrypted PEM private key") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path}: the dev key must be an RSA key")
        return cls(key)

    def jwks(self) -> dict[str, Any]:
        """The public JWK set served at ``/dev/jwks.json``."""
        return {"keys": [{**self._public_jwk, "kid": self.kid, "alg": DEV_ALGORITHM, "use": "sig"}]}

    def mint(
        self,
        sub: str,
        name: str | None = None,
        roles: list[str] | None = None,
        ttl_seconds: int = 3600,
        *,
        issuer: str = DEV_ISSUER,
        audience: str = DEV_AUDIENCE,
        name_claim: str = "name",
        roles_claim: str = "roles",
        now: float | None = None,
    ) -> str:
        """A signed RS256 token with ``iat``/``nbf``/``exp`` and the ``kid`` header."""
        if not sub:
            raise ValueError("sub must not be empty")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": issuer,
            "aud": audience,
            "sub": sub,
            "iat": issued,
            "nbf": issued,
            "exp": issued + ttl_seconds,
        }
        if name is not None:
            claims[name_claim] = name
        if roles is not None:
            claims[roles_claim] = list(roles)
        return jwt.encode(
            claims, self._private_key, algorithm=DEV_ALGORITHM, headers={"kid": self.kid}
        )
