"""Token verification: a JWT in, an ``Identity`` out, or an ``AuthError`` with a reason.

SPEC §5: keys from the JWKS, ``exp``/``iss``/``aud``/``sub`` required, ``nbf`` and ``iat``
in the future refused, leeway ``AUTH_LEEWAY_SECONDS``; ``none`` and HMAC always refused.
SPEC §2: the identity and the token roles come from the verified claims only.

Decisions:

- The time claims (``exp``, ``nbf``, ``iat``) are checked here against the injectable
  ``clock`` instead of PyJWT's wall clock, so connect, ``refresh_token`` and the token
  cache all judge time the same way. PyJWT checks the signature, ``iss``, ``aud`` and the
  presence of the required claims.
- A JWKS key is bound to one algorithm (its ``alg``, or the one implied by its type):
  a token whose ``alg`` differs is refused (``bad_algorithm``, RFC 8725 §3.1).
- Verified tokens are cached (by SHA-256 of the token, FIFO-bounded) until their ``exp``;
  a hit still checks ``exp`` against the clock. The cache is dropped when the JWKS loses
  or changes a key.
- ``str(AuthError)`` is one fixed message per reason: it never echoes the token or any
  part of it (SPEC §1).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, Literal, get_args

import jwt
from jwt.types import Options

from callroom.auth.dev import DEV_AUDIENCE, DEV_ISSUER
from callroom.auth.jwks import JwksCache
from callroom.config import Settings
from callroom.errors import StoreUnavailable
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

_DECODE_OPTIONS: Final[Options] = {
    "require": ["exp", "iss", "aud", "sub"],
    # Time claims are checked by _check_times with the verifier's clock.
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
}
_MISSING_CLAIM_REASONS: Final[dict[str, AuthFailureReason]] = {
    "sub": "no_sub",
    "iss": "bad_issuer",
    "aud": "bad_audience",
}
# Most specific first: InvalidSignatureError is a DecodeError.
_EXCEPTION_REASONS: Final[tuple[tuple[type[jwt.PyJWTError], AuthFailureReason], ...]] = (
    (jwt.InvalidSignatureError, "bad_signature"),
    (jwt.InvalidAlgorithmError, "bad_algorithm"),
    (jwt.InvalidIssuerError, "bad_issuer"),
    (jwt.InvalidAudienceError, "bad_audience"),
    (jwt.exceptions.InvalidSubjectError, "no_sub"),
    (jwt.ExpiredSignatureError, "expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid"),
    (jwt.DecodeError, "malformed"),
)
_HOST_ROLES: Final = frozenset({"host", "moderator"})


class AuthError(Exception):
    """A refused token; ``reason`` is one of ``AUTH_FAILURE_REASONS``.

    The message is fixed per reason and never contains the token (SPEC §1).
    """

    def __init__(self, reason: AuthFailureReason) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason: AuthFailureReason = reason
        self.message = _MESSAGES[reason]


def _reason_for(exc: jwt.PyJWTError) -> AuthFailureReason:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return _MISSING_CLAIM_REASONS.get(exc.claim, "bad_claims")
    for exc_type, reason in _EXCEPTION_REASONS:
        if isinstance(exc, exc_type):
            return reason
    return "bad_claims"  # e.g. a non-string jti


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
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed") from None
        alg = header.get("alg")
        # SPEC §5: only the configured algorithms; "none" and HMAC never (this also
        # stops HS256 tokens "signed" with the RSA public key as the HMAC secret).
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthError("bad_algorithm")
        key = await self._jwks.get_key(header.get("kid"))
        if key is None:
            raise AuthError("unknown_key" if self._jwks.ready else "keys_unavailable")
        if key.algorithm_name != alg:
            raise AuthError("bad_algorithm")  # a key is used with its own algorithm only
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self._issuer,
                audience=self._audience,
                options=_DECODE_OPTIONS,
            )
        except jwt.PyJWTError as exc:
            raise AuthError(_reason_for(exc)) from None
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
