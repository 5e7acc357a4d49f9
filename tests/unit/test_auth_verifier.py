"""TokenVerifier: real tokens, a real JWKS over HTTP on 127.0.0.1 (SPEC §1, §2, §5)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from callroom.auth.jwks import JwksCache
from callroom.auth.verifier import AUTH_FAILURE_REASONS, AuthError, TokenVerifier
from callroom.config import Settings
from callroom.errors import StoreUnavailable

ISSUER = "https://tenant.example.com/"
AUDIENCE = "https://api.callroom.test"
NOW = 1_700_000_000.0
RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
FOREIGN = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
DROP = object()  # claim value meaning "leave this claim out"


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, alg: str = "RS256") -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "auth0|alice",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 3600,
        "name": "Alice",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not DROP}


def token(key: Any = RSA_A, kid: str | None = "key-a", alg: str = "RS256", **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(signature)}"


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class JwksServer:
    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = [rsa_jwk(RSA_A, "key-a")]
        self.status = 200
        self.requests = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.status != 200:
            return web.Response(status=self.status)
        return web.json_response({"keys": self.keys})


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    jwks = JwksServer()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    jwks.url = f"http://127.0.0.1:{runner.addresses[0][1]}/.well-known/jwks.json"
    yield jwks
    await runner.cleanup()


@pytest.fixture
def mono() -> FakeClock:
    return FakeClock(500.0)


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
async def cache(server: JwksServer, mono: FakeClock) -> AsyncIterator[JwksCache]:
    jwks = JwksCache(server.url, clock=mono, http_timeout=2)
    yield jwks
    await jwks.close()


def make_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "AUTH_ISSUER": ISSUER,
        "AUTH0_AUDIENCE": AUDIENCE,
        "AUTH_JWKS_URL": url,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture
async def verifier(server: JwksServer, cache: JwksCache, wall: FakeClock) -> TokenVerifier:
    await cache.start()
    return TokenVerifier(make_settings(server.url), cache, clock=wall)


async def reason(verifier: TokenVerifier, value: str | None) -> str:
    with pytest.raises(AuthError) as caught:
        await verifier.verify(value)
    return caught.value.reason


# -- valid tokens --------------------------------------------------------------------------


@pytest.mark.parametrize("aud", [AUDIENCE, [AUDIENCE], ["other", AUDIENCE]])
async def test_valid_token_gives_identity_from_claims(verifier: TokenVerifier, aud: Any) -> None:
    identity = await verifier.verify(token(aud=aud))
    assert identity.client_id == "auth0|alice"
    assert identity.display_name == "Alice"
    assert not identity.is_admin
    assert not identity.is_token_host
    assert identity.expires_at == NOW + 3600
    assert isinstance(identity.expires_at, float)


async def test_token_without_iat_and_nbf_is_valid(verifier: TokenVerifier) -> None:
    identity = await verifier.verify(token(iat=DROP, nbf=DROP))
    assert identity.client_id == "auth0|alice"


async def test_token_without_kid_uses_the_only_key(verifier: TokenVerifier) -> None:
    identity = await verifier.verify(token(kid=None))
    assert identity.client_id == "auth0|alice"


async def test_token_without_kid_is_refused_when_the_set_has_several_keys(
    server: JwksServer, cache: JwksCache, wall: FakeClock
) -> None:
    server.keys = [rsa_jwk(RSA_A, "key-a"), rsa_jwk(RSA_B, "key-b")]
    await cache.start()
    verifier = TokenVerifier(make_settings(server.url), cache, clock=wall)
    assert await reason(verifier, token(kid=None)) == "unknown_key"


async def test_es256_token_when_configured(
    server: JwksServer, cache: JwksCache, wall: FakeClock
) -> None:
    ec_jwk: dict[str, Any] = ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True)
    server.keys = [rsa_jwk(RSA_A, "key-a"), {**ec_jwk, "kid": "ec", "alg": "ES256"}]
    await cache.start()
    settings = make_settings(server.url, AUTH_ALGORITHMS="RS256,ES256")
    verifier = TokenVerifier(settings, cache, clock=wall)
    identity = await verifier.verify(token(key=EC_KEY, kid="ec", alg="ES256"))
    assert identity.client_id == "auth0|alice"
    rs_only = TokenVerifier(make_settings(server.url), cache, clock=wall)
    assert await reason(rs_only, token(key=EC_KEY, kid="ec", alg="ES256")) == "bad_algorithm"


# -- refused tokens -------------------------------------------------------------------------


def hs256_with_public_key() -> str:
    """The classic attack: HS256 'signed' with the RSA public key PEM as HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT", "kid": "key-a"}
    secret = RSA_A.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    unsigned = forge(header, claims()).rsplit(".", 1)[0]
    signature = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{b64(signature)}"


def tampered() -> str:
    header, _, signature = token().split(".")
    payload = b64(json.dumps(claims(sub="auth0|mallory", roles=["admin"])).encode())
    return f"{header}.{payload}.{signature}"


BAD_TOKENS: list[tuple[str, str]] = [
    ("missing", ""),
    ("expired", token(exp=int(NOW) - 31)),
    ("expired", token(exp=int(NOW) - 30)),
    ("not_yet_valid", token(nbf=int(NOW) + 31)),
    ("not_yet_valid", token(iat=int(NOW) + 31)),
    ("bad_issuer", token(iss="https://evil.example.com/")),
    ("bad_issuer", token(iss=DROP)),
    ("bad_issuer", token(iss="")),
    ("bad_audience", token(aud="someone-else")),
    ("bad_audience", token(aud=["a", "b"])),
    ("bad_audience", token(aud=DROP)),
    ("no_sub", token(sub=DROP)),
    ("no_sub", token(sub="")),
    ("no_sub", token(sub="   ")),
    ("no_sub", token(sub=12345)),
    ("bad_claims", token(sub="x" * 129)),
    ("bad_claims", token(sub="alice\nadmin")),
    ("bad_claims", token(exp=DROP)),
    ("bad_claims", token(exp="tomorrow")),
    ("bad_claims", token(exp=True)),
    ("bad_claims", token(exp=float("inf"))),
    ("bad_claims", token(exp=10**400)),
    ("bad_claims", token(iat=-(10**400))),
    ("bad_claims", token(nbf="now")),
    ("bad_claims", token(iat=None)),
    ("bad_claims", token(jti=7)),
    ("bad_algorithm", forge({"alg": "none", "kid": "key-a"}, claims())),
    ("bad_algorithm", forge({"alg": "None", "kid": "key-a"}, claims())),
    ("bad_algorithm", forge({"kid": "key-a"}, claims())),
    ("bad_algorithm", hs256_with_public_key()),
    ("bad_algorithm", token(alg="RS512")),
    ("bad_algorithm", token(alg="PS256")),
    ("unknown_key", token(kid="key-zzz")),
    ("bad_signature", token(key=FOREIGN)),
    ("bad_signature", tampered()),
    ("malformed", "garbage"),
    ("malformed", "a.b.c"),
    ("malformed", "...."),
    ("malformed", "eyJhbGciOiJSUzI1NiJ9"),
    ("malformed", "é.é.é"),
    ("malformed", "a" * 20_000),
    ("malformed", f"{b64(b'[1]')}.{b64(b'{}')}.sig"),
    ("malformed", forge({"alg": "RS256", "kid": 7}, claims())),
    ("malformed", token().rsplit(".", 1)[0] + ".!!!"),
    ("malformed", jwt.api_jws.encode(b"not json", RSA_A, "RS256", headers={"kid": "key-a"})),
]


@pytest.mark.parametrize(
    ("expected", "bad"), BAD_TOKENS, ids=[f"{n}-{why}" for n, (why, _) in enumerate(BAD_TOKENS)]
)
async def test_bad_token_is_refused_with_its_reason(
    verifier: TokenVerifier, expected: str, bad: str
) -> None:
    with pytest.raises(AuthError) as caught:
        await verifier.verify(bad)
    error = caught.value
    assert error.reason == expected
    assert error.reason in AUTH_FAILURE_REASONS
    # SPEC §1: a token never appears in an error message, whole or in parts.
    text = f"{error} {error!r} {error.message}"
    for part in bad.split("."):
        if len(part) > 3:
            assert part not in text
    # ... nor in a chained PyJWT exception that a traceback would print.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


async def test_a_plain_token_is_parsed_without_the_stdlib_json(
    verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """orjson reads a token's header and claims (a sixth of the JSON cost per join); the
    stdlib only reads what orjson refuses (the BAD_TOKENS with Infinity and 10**400)."""

    def unused(*_args: Any) -> Any:
        raise AssertionError("stdlib json used")

    monkeypatch.setattr("callroom.auth.verifier.json.loads", unused)
    identity = await verifier.verify(token())
    assert identity.client_id == "auth0|alice"


async def test_none_token_is_missing(verifier: TokenVerifier) -> None:
    assert await reason(verifier, None) == "missing"


async def test_leeway_accepts_small_clock_skew_both_ways(verifier: TokenVerifier) -> None:
    # SPEC §5: AUTH_LEEWAY_SECONDS (30) applies to exp, nbf and iat.
    assert await verifier.verify(token(exp=int(NOW) - 29))
    assert await verifier.verify(token(nbf=int(NOW) + 29, iat=int(NOW) + 29))


async def test_leeway_is_configurable(
    server: JwksServer, cache: JwksCache, wall: FakeClock
) -> None:
    await cache.start()
    strict = TokenVerifier(make_settings(server.url, AUTH_LEEWAY_SECONDS=0), cache, clock=wall)
    assert await reason(strict, token(exp=int(NOW))) == "expired"
    assert await reason(strict, token(nbf=int(NOW) + 1)) == "not_yet_valid"
    assert await strict.verify(token(exp=int(NOW) + 1))


async def test_key_bound_to_its_algorithm(
    server: JwksServer, cache: JwksCache, wall: FakeClock
) -> None:
    server.keys = [rsa_jwk(RSA_A, "key-a"), rsa_jwk(RSA_B, "key-b", alg="RS512")]
    await cache.start()
    settings = make_settings(server.url, AUTH_ALGORITHMS="RS256,RS512")
    verifier = TokenVerifier(settings, cache, clock=wall)
    assert await verifier.verify(token(key=RSA_B, kid="key-b", alg="RS512"))
    # An allowed algorithm, but not the one the key is published for.
    assert await reason(verifier, token(key=RSA_A, kid="key-a", alg="RS512")) == "bad_algorithm"


async def test_hmac_refused_even_if_configuration_lets_it_through(
    server: JwksServer, cache: JwksCache, wall: FakeClock
) -> None:
    await cache.start()
    settings = make_settings(server.url).model_copy(
        update={"AUTH_ALGORITHMS": ("RS256", "HS256", "none")}
    )
    verifier = TokenVerifier(settings, cache, clock=wall)
    assert await reason(verifier, hs256_with_public_key()) == "bad_algorithm"
    assert await reason(verifier, forge({"alg": "none"}, claims())) == "bad_algorithm"
    assert await verifier.verify(token())


def test_verifier_needs_issuer_and_audience() -> None:
    settings = Settings.model_construct(AUTH_ISSUER=None, AUTH0_DOMAIN=None, DEV_MODE=False)
    with pytest.raises(ValueError, match="issuer and an audience"):
        TokenVerifier(settings, JwksCache("http://127.0.0.1:9/jwks.json"))


# -- keys: availability, rotation, refetch limit -------------------------------------------------


async def test_provider_down_at_start_then_back(
    server: JwksServer, cache: JwksCache, wall: FakeClock
) -> None:
    server.status = 500
    await cache.start()
    verifier = TokenVerifier(make_settings(server.url), cache, clock=wall)
    assert not verifier.ready
    with pytest.raises(StoreUnavailable) as caught:
        await verifier.check()
    assert caught.value.part == "token keys"
    assert await reason(verifier, token()) == "keys_unavailable"
    server.status = 200
    assert await cache.refresh()  # what the background refresh does
    assert verifier.ready
    await verifier.check()
    assert (await verifier.verify(token())).client_id == "auth0|alice"


async def test_provider_down_later_cached_keys_keep_working(
    server: JwksServer, verifier: TokenVerifier, cache: JwksCache
) -> None:
    server.status = 500
    assert not await cache.refresh()
    identity = await verifier.verify(token(sub="auth0|bob"))  # not in the token cache
    assert identity.client_id == "auth0|bob"
    assert verifier.ready
    assert await reason(verifier, token(kid="key-new")) == "unknown_key"


async def test_rotation_new_kid_accepted_after_one_refetch(
    server: JwksServer, verifier: TokenVerifier
) -> None:
    assert server.requests == 1
    server.keys = [rsa_jwk(RSA_A, "key-a"), rsa_jwk(RSA_B, "key-b")]
    identity = await verifier.verify(token(key=RSA_B, kid="key-b"))
    assert identity.client_id == "auth0|alice"
    assert server.requests == 2
    assert await verifier.verify(token(key=RSA_B, kid="key-b", sub="auth0|carol"))
    assert server.requests == 2


async def test_unknown_kid_refetch_limited_to_once_per_30_seconds(
    server: JwksServer, verifier: TokenVerifier, mono: FakeClock
) -> None:
    assert await reason(verifier, token(kid="key-c")) == "unknown_key"
    assert server.requests == 2
    mono.now += 29
    server.keys = [rsa_jwk(RSA_A, "key-a"), rsa_jwk(RSA_B, "key-d")]
    assert await reason(verifier, token(key=RSA_B, kid="key-d")) == "unknown_key"
    assert server.requests == 2  # no refetch within 30 s
    mono.now += 1
    assert await verifier.verify(token(key=RSA_B, kid="key-d"))
    assert server.requests == 3


# -- identity mapping (SPEC §2) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "is_admin", "is_host"),
    [
        ({"roles": ["admin"]}, True, True),
        ({"roles": "admin"}, True, True),
        ({"roles": ["host"]}, False, True),
        ({"roles": "moderator"}, False, True),
        ({"roles": ["viewer", 3, {"r": "admin"}, "host"]}, False, True),
        ({"roles": ["Admin", "super admin"]}, False, False),
        ({"roles": 42}, False, False),
        ({"roles": {"admin": True}}, False, False),
        ({"permissions": ["rooms:admin"]}, True, True),
        ({"permissions": ["rooms:host", "read:rooms"]}, False, True),
        ({"permissions": "rooms:host"}, False, True),
        ({"permissions": ["admin"]}, False, False),
        ({"https://x/roles": ["admin"]}, False, False),
        ({}, False, False),
    ],
)
async def test_roles_and_permissions(
    verifier: TokenVerifier, extra: dict[str, Any], is_admin: bool, is_host: bool
) -> None:
    identity = await verifier.verify(token(**extra))
    assert (identity.is_admin, identity.is_token_host) == (is_admin, is_host)


async def test_custom_name_and_roles_claims(
    server: JwksServer, cache: JwksCache, wall: FakeClock
) -> None:
    await cache.start()
    settings = make_settings(
        server.url, AUTH_NAME_CLAIM="nickname", AUTH_ROLES_CLAIM="https://callroom.test/roles"
    )
    verifier = TokenVerifier(settings, cache, clock=wall)
    namespaced: dict[str, Any] = {"https://callroom.test/roles": ["moderator"]}
    identity = await verifier.verify(token(nickname="Ally", **namespaced))
    assert identity.display_name == "Ally"
    assert identity.is_token_host
    plain = await verifier.verify(token(sub="auth0|dan", roles=["admin"]))
    assert plain.display_name == "auth0|dan"  # "name" is not the configured claim
    assert not plain.is_admin


@pytest.mark.parametrize(
    ("name", "sub", "expected"),
    [
        ("  Alice Liddell \t", "auth0|alice", "Alice Liddell"),
        ("B" * 100, "auth0|alice", "B" * 64),
        ("  " + "C" * 63 + "   D", "auth0|alice", "C" * 63),
        ("   ", "auth0|alice", "auth0|alice"),
        (DROP, "auth0|alice", "auth0|alice"),
        (None, "auth0|alice", "auth0|alice"),
        (["Alice"], "auth0|alice", "auth0|alice"),
        (DROP, "s" * 100, "s" * 64),
    ],
)
async def test_display_name_trimmed_with_fallback_to_sub(
    verifier: TokenVerifier, name: Any, sub: str, expected: str
) -> None:
    identity = await verifier.verify(token(name=name, sub=sub))
    assert identity.display_name == expected
    assert identity.client_id == sub  # never cut


# -- token cache ----------------------------------------------------------------------------


async def test_cache_hit_returns_the_same_identity_and_still_checks_exp(
    verifier: TokenVerifier, wall: FakeClock
) -> None:
    value = token(exp=int(NOW) + 60)
    first = await verifier.verify(value)
    assert await verifier.verify(value) is first  # served from the cache
    wall.now = NOW + 60 + 29  # within leeway
    assert await verifier.verify(value) is first
    wall.now = NOW + 60 + 30
    assert await reason(verifier, value) == "expired"
    assert await reason(verifier, value) == "expired"


async def test_cache_is_bounded_and_evicts_the_oldest(
    server: JwksServer, cache: JwksCache, wall: FakeClock
) -> None:
    await cache.start()
    verifier = TokenVerifier(make_settings(server.url), cache, clock=wall, cache_size=2)
    tokens = [token(sub=f"user-{n}") for n in range(3)]
    first = [await verifier.verify(value) for value in tokens]
    assert await verifier.verify(tokens[2]) is first[2]
    assert await verifier.verify(tokens[1]) is first[1]
    again = await verifier.verify(tokens[0])  # evicted: verified afresh
    assert again is not first[0]
    assert again == first[0]


async def test_cache_dropped_when_a_key_is_withdrawn(
    server: JwksServer, verifier: TokenVerifier, cache: JwksCache
) -> None:
    value = token()
    assert await verifier.verify(value)
    server.keys = [rsa_jwk(RSA_B, "key-b")]
    assert await cache.refresh()
    assert await reason(verifier, value) == "unknown_key"


async def test_failures_are_not_cached(
    server: JwksServer, verifier: TokenVerifier, mono: FakeClock
) -> None:
    value = token(key=RSA_B, kid="key-b")
    assert await reason(verifier, value) == "unknown_key"
    server.keys = [rsa_jwk(RSA_A, "key-a"), rsa_jwk(RSA_B, "key-b")]
    mono.now += 30
    assert await verifier.verify(value)


# -- refresh_token (SPEC §5) ----------------------------------------------------------------------


async def test_verify_for_refresh_requires_the_same_sub(verifier: TokenVerifier) -> None:
    identity = await verifier.verify_for_refresh(token(exp=int(NOW) + 7200), "auth0|alice")
    assert identity.expires_at == NOW + 7200
    with pytest.raises(AuthError) as caught:
        await verifier.verify_for_refresh(token(sub="auth0|mallory"), "auth0|alice")
    assert caught.value.reason == "bad_claims"
    with pytest.raises(AuthError) as expired:
        await verifier.verify_for_refresh(token(exp=int(NOW) - 100), "auth0|alice")
    assert expired.value.reason == "expired"


def test_reasons_are_the_fixed_metric_label_set() -> None:
    assert set(AUTH_FAILURE_REASONS) == {
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
    }
    for name in AUTH_FAILURE_REASONS:
        assert str(AuthError(name))


async def test_lone_surrogates_never_reach_an_identity(verifier: TokenVerifier) -> None:
    """A name with an escaped lone surrogate is cleaned; such a sub is refused."""
    identity = await verifier.verify(token(name="Al\ud800ice"))
    assert identity.display_name == "Al\ufffdice"
    assert identity.display_name.encode()  # encodable: every room_state stays strict JSON
    with pytest.raises(AuthError) as info:
        await verifier.verify(token(sub="bad\udc00sub"))
    assert info.value.reason == "bad_claims"
