"""Dev mode keys (SPEC §5): mint with DevKeys, verify through JwksCache over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import RSAAlgorithm
from structlog.testing import capture_logs

from callroom.auth.dev import DEV_AUDIENCE, DEV_ISSUER, DevKeys
from callroom.auth.jwks import JwksCache
from callroom.auth.verifier import AuthError, TokenVerifier
from callroom.config import Settings


@pytest.fixture(scope="module")
def keys() -> DevKeys:
    return DevKeys.generate()


async def serve_dev_jwks(keys: DevKeys) -> tuple[web.AppRunner, str, list[int]]:
    """The server's /dev/jwks.json route, served on 127.0.0.1."""
    hits: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(1)
        return web.json_response(keys.jwks())

    app = web.Application()
    app.router.add_get("/dev/jwks.json", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/dev/jwks.json", hits


@pytest.fixture
async def dev_verifier(keys: DevKeys) -> AsyncIterator[tuple[TokenVerifier, list[int]]]:
    runner, url, hits = await serve_dev_jwks(keys)
    cache = JwksCache(url, http_timeout=2)
    await cache.start()
    settings = Settings(_env_file=None, DEV_MODE=True, AUTH_JWKS_URL=url)
    yield TokenVerifier(settings, cache), hits
    await cache.close()
    await runner.cleanup()


async def test_minted_token_verifies_through_the_jwks_over_http(
    keys: DevKeys, dev_verifier: tuple[TokenVerifier, list[int]]
) -> None:
    verifier, hits = dev_verifier
    token = keys.mint("dev-alice", name="Alice", roles=["host"], ttl_seconds=600)
    identity = await verifier.verify(token)
    assert identity.client_id == "dev-alice"
    assert identity.display_name == "Alice"
    assert identity.is_token_host
    assert not identity.is_admin
    assert abs(identity.expires_at - (time.time() + 600)) < 5
    assert len(hits) == 1
    admin = await verifier.verify(keys.mint("dev-root", roles=["admin"]))
    assert admin.is_admin
    assert admin.display_name == "dev-root"


async def test_token_of_another_dev_key_is_refused(
    dev_verifier: tuple[TokenVerifier, list[int]],
) -> None:
    verifier, _ = dev_verifier
    other = DevKeys.generate()
    with pytest.raises(AuthError) as caught:
        await verifier.verify(other.mint("dev-mallory"))
    assert caught.value.reason == "unknown_key"  # its kid is another thumbprint


async def test_dev_token_with_wrong_audience_is_refused(
    keys: DevKeys, dev_verifier: tuple[TokenVerifier, list[int]]
) -> None:
    verifier, _ = dev_verifier
    with pytest.raises(AuthError) as caught:
        await verifier.verify(keys.mint("dev-alice", audience="someone-else"))
    assert caught.value.reason == "bad_audience"


def test_mint_claims_and_header(keys: DevKeys) -> None:
    token = keys.mint(
        "u1",
        name="Bob",
        roles=["moderator"],
        ttl_seconds=120,
        issuer="iss-x",
        audience="aud-x",
        name_claim="nickname",
        roles_claim="https://x/roles",
        now=1_700_000_000,
    )
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == keys.kid
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {
        "iss": "iss-x",
        "aud": "aud-x",
        "sub": "u1",
        "iat": 1_700_000_000,
        "nbf": 1_700_000_000,
        "exp": 1_700_000_120,
        "nickname": "Bob",
        "https://x/roles": ["moderator"],
    }
    default = jwt.decode(keys.mint("u2"), options={"verify_signature": False})
    assert default["iss"] == DEV_ISSUER == "callroom-dev"
    assert default["aud"] == DEV_AUDIENCE == "callroom"
    assert default["exp"] - default["iat"] == 3600
    assert "name" not in default
    assert "roles" not in default


@pytest.mark.parametrize(("sub", "ttl"), [("", 60), ("u", 0), ("u", -5)])
def test_mint_refuses_bad_arguments(keys: DevKeys, sub: str, ttl: int) -> None:
    with pytest.raises(ValueError, match=r"sub|ttl"):
        keys.mint(sub, ttl_seconds=ttl)


def test_jwks_is_public_with_an_rfc7638_kid(keys: DevKeys) -> None:
    document = keys.jwks()
    (jwk,) = document["keys"]
    assert jwk["alg"] == "RS256"
    assert jwk["use"] == "sig"
    assert jwk["kty"] == "RSA"
    assert "d" not in jwk
    assert "p" not in jwk
    # Independent RFC 7638 thumbprint from PyJWT's JWK export.
    exported = RSAAlgorithm.to_jwk(RSAAlgorithm.from_jwk(json.dumps(jwk)), as_dict=True)
    required = {name: exported[name] for name in ("e", "kty", "n")}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":")).encode()
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    assert jwk["kid"] == keys.kid == expected
    assert (jwk["n"], jwk["e"]) == (exported["n"], exported["e"])


def test_load_or_create_writes_a_private_file_and_reuses_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "dev-key.pem"
    first = DevKeys.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    second = DevKeys.load_or_create(path)  # e.g. the `callroom token` CLI
    assert second.kid == first.kid
    assert path.read_bytes() == pem
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_token_minted_by_one_process_verifies_with_the_other(tmp_path: Path) -> None:
    path = tmp_path / "dev-key.pem"
    server = DevKeys.load_or_create(path)
    cli = DevKeys.load_or_create(path)
    token = cli.mint("u1")
    public = jwt.PyJWK(server.jwks()["keys"][0])
    claims = jwt.decode(token, public, algorithms=["RS256"], audience=DEV_AUDIENCE)
    assert claims["sub"] == "u1"


def test_concurrent_creation_keeps_the_first_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dev-key.pem"
    winner = DevKeys.generate()
    winner_pem = winner._private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    generate = DevKeys.generate

    def racing_generate() -> DevKeys:
        # Another process creates the file while this one generates its own key.
        path.write_bytes(winner_pem)
        path.chmod(0o600)
        return generate()

    monkeypatch.setattr(DevKeys, "generate", staticmethod(racing_generate))
    loaded = DevKeys.load_or_create(path)
    assert loaded.kid == winner.kid
    assert path.read_bytes() == winner_pem
    assert list(tmp_path.iterdir()) == [path]


def test_readable_key_file_is_loaded_with_a_warning(tmp_path: Path, keys: DevKeys) -> None:
    path = tmp_path / "dev-key.pem"
    DevKeys.load_or_create(path)
    path.chmod(0o644)
    with capture_logs() as logs:
        DevKeys.load_or_create(path)
    assert [entry["event"] for entry in logs] == ["dev signing key is readable by others"]
    path.chmod(0o600)
    with capture_logs() as quiet:
        DevKeys.load_or_create(path)
    assert quiet == []


def test_garbage_key_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dev-key.pem"
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        DevKeys.load_or_create(path)
    assert path.read_bytes() == b"not a key"  # never overwritten


def test_non_rsa_key_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dev-key.pem"
    path.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ValueError, match="must be an RSA key"):
        DevKeys.load_or_create(path)
