"""Token verification: a JWT in, an ``Identity`` out, or an ``AuthError`` with a reason.

SPEC §5: keys from the JWKS, ``exp``/``iss``/``aud``/``sub`` required, ``nbf`` and ``iat``
in the future refused, leeway ``AUTH_LEEWAY_SECONDS``; ``none`` and HMAC always refused.
SPEC §2: the identity and the token roles come from the verified claims only.

Decisions:

- The compact JWS is parsed here, once (strict base64url, JSON objects); the signature
  is checked by the JWKS key's PyJWT algorithm object (``cryptography`` underneath).
  PyJWT's own ``decode`` validated every character in Python and parsed the header twice:
  a fifth of a join's CPU (docs/performance.md).
- The claims are checked here: ``exp``, ``iss``, ``aud``, ``sub`` present, ``iss`` equal to
  the issuer, ``aud`` a string or a list of strings holding the audience, ``jti`` a string
  if present; the time claims (``exp``, ``nbf``, ``iat``) against the injectable
  ``clock``, so connect, ``refresh_token`` and the token cache all judge time alike.
- A JWKS key is bound to one algorithm (its ``alg``, or the one implied by its type):
  a token whose ``alg`` differs is refused (``bad_algorithm``, RFC 8725 §3.1).
- Verified tokens are cached (by SHA-256 of the token, FIFO-bounded) until their ``exp``;
  a hit still checks ``exp`` against the clock. The cache is dropped when the JWKS loses
  or changes a key.
- ``str(AuthError)`` is one fixed message per reason: it never echoes the token or any
  part of it (SPEC §1).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, Literal, get_args

import orjson

from callroom.auth.dev import DEV_AUDIENCE, DEV_ISSUER
from callroom.auth.jwks import JwksCache
from callroom.config import Settings
from callroom.errors import CallroomError, StoreUnavailable
from callroom.room.model import Identity

AuthFailureReason = Literal[
    "missing",
    "malformed",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "bad_issuer",
    "bad_audience",
    "no_sub",
    "bad_algorithm",
    "unknown_key",
    "keys_unavailable",
    "bad_claims",
]
"""Label values of ``callroom_auth_failures_total{reason}`` (a fixed set, SPEC §4)."""

AUTH_FAILURE_REASONS: Final[tuple[AuthFailureReason, ...]] = get_args(AuthFailureReason)

_MESSAGES: Final[dict[AuthFailureReason, str]] = {
    "missing": "no token",
    "malformed": "the token is not a well-formed JWT",
    "bad_signature": "the token signature is not valid",
    "expired": "the token has expired",
    "not_yet_valid": "the token is not valid yet",
    "bad_issuer": "the token has the wrong issuer",
    "bad_audience": "the token has the wrong audience",
    "no_sub": "the token has no subject (sub)",
    "bad_algorithm": "the token's signing algorithm is not allowed",
    "unknown_key": "the token is signed with an unknown key",
    "keys_unavailable": "the token keys are not available yet, retry later",
    "bad_claims": "the token has invalid claims",
}

MAX_TOKEN_CHARS: Final = 16 * 1024
MAX_SUB_CHARS: Final = 128
MAX_DISPLAY_NAME_CHARS: Final = 64  # SPEC §2
DEFAULT_CACHE_SIZE: Final = 10_000

_REQUIRED_CLAIMS: Final = ("exp", "iss", "aud", "sub")
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]*(?:={1,2})?")  # base64url, optional padding
_MISSING_CLAIM_REASONS: Final[dict[str, AuthFailureReason]] = {
    "sub": "no_sub",
    "iss": "bad_issuer",
    "aud": "bad_audience",
}
_HOST_ROLES: Final = frozenset({"host", "moderator"})


class AuthError(CallroomError):
    """A refused token; ``reason`` is one of ``AUTH_FAILURE_REASONS``.

    Answered by the two mappers (``callroom.errors``): 401 ``unauthorized`` before the
    upgrade and on the API (SPEC §1, §4); ``invalid_payload`` for a ``refresh_token``.

    The message is fixed per reason and never contains the token (SPEC §1).
    """

    def __init__(self, reason: AuthFailureReason) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason: AuthFailureReason = reason
        self.message = _MESSAGES[reason]


def _b64decode(segment: str) -> bytes:
    """A base64url segment (RFC 7515 §2), refusing anything outside the alphabet."""
    stripped = segment.rstrip("=")
    if (
        not _SEGMENT.fullmatch(segment)
        or len(stripped) % 4 == 1
        or (stripped != segment and len(segment) % 4 != 0)
    ):
        raise AuthError("malformed")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        # orjson first (several times faster: docs/performance.md); what it refuses
        # but the stdlib reads (NaN, Infinity, huge numbers, lone surrogates) still goes
        # to the claim checks, which name the reason.
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(data)
        except ValueError:  # includes bad UTF-8
            raise AuthError("malformed") from None
    if not isinstance(value, dict):
        raise AuthError("malformed")
    return value


def _number(value: Any) -> float | None:
    """A NumericDate (RFC 7519 §2) as a finite float, or None (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        return None
    return number if math.isfinite(number) else None


def _strings(value: Any) -> frozenset[str]:
    """A role claim: one string or a list of strings; anything else counts as none."""
    if isinstance(value, str):
        return frozenset((value,))
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _is_utf8(text: str) -> bool:
    """False for a lone surrogate (an escaped ``\\ud800`` in the JSON): not encodable."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _display_name(value: Any, sub: str) -> str:
    """SPEC §2: the name claim trimmed to 64 characters, falling back to ``sub``.

    Lone surrogates become U+FFFD so every frame carrying the name stays strict JSON.
    """
    if isinstance(value, str):
        text: str = value if _is_utf8(value) else _SURROGATE.sub("\ufffd", value)
        name = text.strip()[:MAX_DISPLAY_NAME_CHARS].rstrip()
        if name:
            return name
    return sub[:MAX_DISPLAY_NAME_CHARS]


def _is_asymmetric(alg: str) -> bool:
    return alg.lower() != "none" and not alg.upper().startswith("HS")


class TokenVerifier:
    """Verifies JWTs against the JWKS and the settings of SPEC §5."""

    def __init__(
        self,
        settings: Settings,
        jwks: JwksCache,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        # Dev mode without an explicit issuer/audience verifies the dev tokens (SPEC §5).
        issuer = settings.issuer or (DEV_ISSUER if settings.DEV_MODE else None)
        audience = settings.audience or (DEV_AUDIENCE if settings.DEV_MODE else None)
        if issuer is None or audience is None:
            raise ValueError("TokenVerifier needs an issuer and an audience (SPEC §5)")
        self._issuer = issuer
        self._audience = audience
        # Settings already refuses these; refuse them here too, whatever the config says.
        self._algorithms = frozenset(a for a in settings.AUTH_ALGORITHMS if _is_asymmetric(a))
        self._leeway = float(settings.AUTH_LEEWAY_SECONDS)
        self._name_claim = settings.AUTH_NAME_CLAIM
        self._roles_claim = settings.AUTH_ROLES_CLAIM
        self._jwks = jwks
        self._clock = clock
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, Identity] = OrderedDict()
        self._cache_generation = jwks.generation

    @property
    def ready(self) -> bool:
        """True once the token keys were loaded (``/readyz``, SPEC §4)."""
        return self._jwks.ready

    async def check(self) -> None:
        """Raise ``StoreUnavailable("token keys")`` while no key was ever loaded."""
        if not self._jwks.ready:
            raise StoreUnavailable("token keys")

    async def verify(self, token: str | None) -> Identity:
        """The identity of a valid token; raises ``AuthError`` otherwise."""
        if not token:
            raise AuthError("missing")
        # A compact JWS is ASCII (base64url and dots); refuse huge inputs before parsing.
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise AuthError("malformed")
        now = self._clock()
        if self._jwks.generation != self._cache_generation:
            self._cache.clear()  # a key was withdrawn: re-verify everything
            self._cache_generation = self._jwks.generation
        cache_key = hashlib.sha256(token.encode("ascii")).digest()
        identity = self._cache.get(cache_key)
        if identity is not None:
            if identity.expires_at <= now - self._leeway:
                del self._cache[cache_key]
                raise AuthError("expired")
            return identity
        identity = await self._verify_uncached(token, now)
        self._cache[cache_key] = identity
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)  # evict the oldest entry, O(1)
        return identity

    async def verify_for_refresh(self, token: str | None, sub: str) -> Identity:
        """SPEC §5 ``refresh_token``: a valid token for the same ``sub``.

        Whether the new ``exp`` is later than the session's is the session's call.
        """
        identity = await self.verify(token)
        if identity.client_id != sub:
            raise AuthError("bad_claims")
        return identity

    async def _verify_uncached(self, token: str, now: float) -> Identity:
        # A compact JWS (RFC 7515 §7.1) parsed once, by hand: PyJWT's own parse checks
        # every character in Python and decodes the header twice, which was a fifth of a
        # join's CPU (docs/performance.md). The signature check is PyJWT's key object's.
        parts = token.split(".")
        if len(parts) != 3:
            raise AuthError("malformed")
        header_b64, payload_b64, signature_b64 = parts
        header = _json_object(_b64decode(header_b64))
        alg = header.get("alg")
        # SPEC §5: only the configured algorithms; "none" and HMAC never (this also
        # stops HS256 tokens "signed" with the RSA public key as the HMAC secret).
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthError("bad_algorithm")
        kid = header.get("kid")
        if (kid is not None and not isinstance(kid, str)) or "crit" in header:
            raise AuthError("malformed")  # no critical extensions are understood here
        key = await self._jwks.get_key(kid)
        if key is None:
            raise AuthError("unknown_key" if self._jwks.ready else "keys_unavailable")
        if key.algorithm_name != alg:
            raise AuthError("bad_algorithm")  # a key is used with its own algorithm only
        signature = _b64decode(signature_b64)
        signing_input = f"{header_b64}.{payload_b64}".encode("ascii")
        if not key.Algorithm.verify(signing_input, key.key, signature):
            raise AuthError("bad_signature")
        claims = _json_object(_b64decode(payload_b64))
        self._check_claims(claims)
        expires_at = self._check_times(claims, now)
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.strip():
            raise AuthError("no_sub")
        if (
            len(sub) > MAX_SUB_CHARS
            or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in sub)
            or not _is_utf8(sub)
        ):
            raise AuthError("bad_claims")
        return self._identity(claims, sub, expires_at)

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """SPEC §5: ``exp``, ``iss``, ``aud``, ``sub`` required; issuer and audience match."""
        for name in _REQUIRED_CLAIMS:
            if name not in claims:
                raise AuthError(_MISSING_CLAIM_REASONS.get(name, "bad_claims"))
        if claims["iss"] != self._issuer:
            raise AuthError("bad_issuer")
        audience = claims["aud"]
        if isinstance(audience, str):
            audience = [audience]
        if (
            not isinstance(audience, list)
            or not all(isinstance(item, str) for item in audience)
            or self._audience not in audience
        ):
            raise AuthError("bad_audience")  # a string or a list of strings (RFC 7519)
        if "jti" in claims and not isinstance(claims["jti"], str):
            raise AuthError("bad_claims")

    def _check_times(self, claims: dict[str, Any], now: float) -> float:
        """SPEC §5: ``exp`` required, ``nbf``/``iat`` not in the future, with leeway."""
        exp = _number(claims["exp"])
        if exp is None:
            raise AuthError("bad_claims")
        if exp <= now - self._leeway:
            raise AuthError("expired")
        for name in ("nbf", "iat"):
            if name not in claims:
                continue
            value = _number(claims[name])
            if value is None:
                raise AuthError("bad_claims")
            if value > now + self._leeway:
                raise AuthError("not_yet_valid")
        return exp

    def _identity(self, claims: dict[str, Any], sub: str, expires_at: float) -> Identity:
        """SPEC §2: clientId = sub, display name, token roles and Auth0 permissions."""
        roles = _strings(claims.get(self._roles_claim))
        permissions = _strings(claims.get("permissions"))
        is_admin = "admin" in roles or "rooms:admin" in permissions
        is_token_host = is_admin or not roles.isdisjoint(_HOST_ROLES) or "rooms:host" in permissions
        return Identity(
            client_id=sub,
            display_name=_display_name(claims.get(self._name_claim), sub),
            is_admin=is_admin,
            is_token_host=is_token_host,
            expires_at=expires_at,
        )
