"""JwksCache against a real JWKS served over HTTP on 127.0.0.1 (SPEC §5, §6)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from structlog.testing import capture_logs

from callroom.auth.jwks import JwksCache, JwksError, parse_jwks

RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str | None, alg: str | None = "RS256") -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    jwk["use"] = "sig"
    return jwk


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class JwksServer:
    """A real HTTP JWKS endpoint whose keys and availability the test controls."""

    def __init__(self) -> None:
        self.keys: list[Any] = []
        self.raw: bytes | None = None  # served as-is instead of {"keys": ...}
        self.status = 200
        self.requests = 0
        self.url = ""
        self.gate = asyncio.Event()  # responses wait until set
        self.gate.set()
        self.arrived = asyncio.Event()  # set when a request arrives

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.arrived.set()
        await self.gate.wait()
        if self.status != 200:
            return web.Response(status=self.status, text="provider down")
        if self.raw is not None:
            return web.Response(body=self.raw, content_type="application/json")
        return web.json_response({"keys": self.keys})


@pytest.fixture
async def server() -> AsyncIterator[JwksServer]:
    jwks = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks.json", jwks.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    jwks.url = f"http://127.0.0.1:{port}/jwks.json"
    yield jwks
    jwks.gate.set()
    await runner.cleanup()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cache(server: JwksServer, clock: FakeClock) -> AsyncIterator[JwksCache]:
    jwks = JwksCache(server.url, clock=clock, refresh_seconds=600, http_timeout=2)
    yield jwks
    await jwks.close()


# -- start, readiness, failures ---------------------------------------------------------


async def test_start_loads_keys_by_kid(server: JwksServer, cache: JwksCache) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    assert cache.ready
    assert cache.last_error is None
    assert cache.key_ids == {"a"}
    key = await cache.get_key("a")
    assert key is not None
    assert key.algorithm_name == "RS256"
    assert key.key.public_numbers() == RSA_A.public_key().public_numbers()
    assert server.requests == 1


async def test_start_twice_fetches_once(server: JwksServer, cache: JwksCache) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    await cache.start()
    assert server.requests == 1


async def test_provider_down_at_start_does_not_raise_and_is_not_ready(
    server: JwksServer, cache: JwksCache
) -> None:
    server.status = 500
    with capture_logs() as logs:
        await cache.start()
    assert not cache.ready
    assert cache.last_error == "JwksError: HTTP 500"
    assert any(entry["event"].startswith("jwks unavailable at start") for entry in logs)
    server.status = 200
    server.keys = [rsa_jwk(RSA_A, "a")]
    assert await cache.refresh()
    assert cache.ready
    assert cache.last_error is None


async def test_connection_refused_is_a_failure_not_an_exception(clock: FakeClock) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    jwks = JwksCache(f"http://127.0.0.1:{port}/jwks.json", clock=clock)
    try:
        assert not await jwks.refresh()
        assert jwks.last_error is not None
        assert jwks.last_error.startswith("ConnectError")
        assert await jwks.get_key("a") is None
    finally:
        await jwks.close()


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"<html>oops</html>", "JwksError: JWKS document is not JSON"),
        (b'{"no_keys": []}', "JwksError: JWKS document has no 'keys' list"),
        (b"[1, 2]", "JwksError: JWKS document has no 'keys' list"),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "JwksError: JWKS document has no usable"),
        (b'{"keys": []}', "JwksError: JWKS document has no usable"),
        (b" " * (1024 * 1024 + 10), "JwksError: JWKS document larger than 1 MiB"),
    ],
)
async def test_unusable_document_keeps_cached_keys(
    server: JwksServer, cache: JwksCache, raw: bytes, error: str
) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    server.raw = raw
    assert not await cache.refresh()
    assert cache.last_error is not None
    assert cache.last_error.startswith(error)
    assert cache.key_ids == {"a"}
    assert await cache.get_key("a") is not None


async def test_failed_refresh_keeps_cached_keys(server: JwksServer, cache: JwksCache) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    server.status = 503
    assert not await cache.refresh()
    assert cache.ready
    assert await cache.get_key("a") is not None


# -- parsing --------------------------------------------------------------------------


def test_parse_skips_unusable_keys_and_keeps_the_rest() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (refused)
    ed = OKPAlgorithm.to_jwk(ed448.Ed448PrivateKey.generate().public_key(), as_dict=True)
    ec_jwk: dict[str, Any] = ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True)
    ec_jwk["kid"] = "ec"  # no alg: inferred from the curve
    private = RSAAlgorithm.to_jwk(RSA_B, as_dict=True)
    document = {
        "keys": [
            "not a key",
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {**rsa_jwk(RSA_B, "enc"), "use": "enc"},
            {**private, "kid": "private"},
            rsa_jwk(RSA_B, "hs", alg="HS256"),
            rsa_jwk(RSA_B, "none", alg="none"),
            {**rsa_jwk(RSA_B, "algnum"), "alg": 256},
            {**rsa_jwk(RSA_B, None), "kid": 5},
            {"kty": "XYZ", "kid": "weird"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {**ed, "kid": "ed448"},
            rsa_jwk(weak, "weak"),
            rsa_jwk(RSA_A, "good"),
            rsa_jwk(RSA_B, "good"),  # duplicate kid: the first one wins
            ec_jwk,
        ]
    }
    with capture_logs() as logs:
        keys = parse_jwks(json.dumps(document).encode())
    assert set(keys.by_kid) == {"good", "ec"}
    assert keys.anonymous == ()
    good = keys.by_kid["good"].key
    assert good.public_numbers() == RSA_A.public_key().public_numbers()
    assert keys.by_kid["ec"].algorithm_name == "ES256"
    assert any(entry.get("kid") == "weak" for entry in logs)
    assert any(entry["event"] == "jwks duplicate kid ignored" for entry in logs)


def test_parse_refuses_a_set_without_signing_keys() -> None:
    with pytest.raises(JwksError, match="no usable signing key"):
        parse_jwks(b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')


# -- lookup ------------------------------------------------------------------------------


async def test_no_kid_uses_the_only_key(server: JwksServer, cache: JwksCache) -> None:
    server.keys = [rsa_jwk(RSA_A, None)]
    await cache.start()
    assert cache.key_ids == frozenset()
    key = await cache.get_key(None)
    assert key is not None
    assert key.key.public_numbers() == RSA_A.public_key().public_numbers()
    assert await cache.get_key("a") is None


async def test_no_kid_uses_a_single_kid_key(server: JwksServer, cache: JwksCache) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    assert await cache.get_key(None) is await cache.get_key("a")


async def test_no_kid_with_several_keys_is_ambiguous(server: JwksServer, cache: JwksCache) -> None:
    server.keys = [rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b")]
    await cache.start()
    assert await cache.get_key(None) is None


# -- unknown kid refetch and rotation ---------------------------------------------------------


async def test_unknown_kid_refetches_and_picks_up_a_new_key(
    server: JwksServer, cache: JwksCache
) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    server.keys = [rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b")]
    key = await cache.get_key("b")  # the start fetch does not count against the limit
    assert key is not None
    assert server.requests == 2
    assert cache.key_ids == {"a", "b"}


async def test_unknown_kid_refetch_at_most_once_per_interval(
    server: JwksServer, cache: JwksCache, clock: FakeClock
) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    assert await cache.get_key("x") is None
    assert server.requests == 2
    clock.advance(29.9)
    server.keys = [rsa_jwk(RSA_B, "y")]
    assert await cache.get_key("y") is None  # within 30 s: no refetch
    assert server.requests == 2
    clock.advance(0.1)
    assert await cache.get_key("y") is not None
    assert server.requests == 3


async def test_known_kid_never_refetches(server: JwksServer, cache: JwksCache) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    for _ in range(5):
        assert await cache.get_key("a") is not None
    assert server.requests == 1


async def test_rotation_drops_removed_kids_and_bumps_generation(
    server: JwksServer, cache: JwksCache
) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    generation = cache.generation
    server.keys = [rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b")]
    assert await cache.refresh()
    assert cache.generation == generation  # a pure addition keeps cached verdicts
    server.keys = [rsa_jwk(RSA_B, "b")]
    assert await cache.refresh()
    assert cache.key_ids == {"b"}
    assert await cache.get_key("a") is None
    assert cache.generation == generation + 1


async def test_same_kid_with_new_material_bumps_generation(
    server: JwksServer, cache: JwksCache
) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    generation = cache.generation
    server.keys = [rsa_jwk(RSA_B, "a")]
    assert await cache.refresh()
    key = await cache.get_key("a")
    assert key is not None
    assert key.key.public_numbers() == RSA_B.public_key().public_numbers()
    assert cache.generation == generation + 1


async def test_concurrent_callers_share_one_fetch(server: JwksServer, cache: JwksCache) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    server.keys = [rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b")]
    server.gate.clear()
    server.arrived.clear()
    callers = [asyncio.create_task(cache.get_key(kid)) for kid in ("b", "b", "c", "b", "a")]
    await asyncio.wait_for(server.arrived.wait(), 5)
    refresh = asyncio.create_task(cache.refresh())  # joins the same in-flight fetch
    await asyncio.sleep(0)
    server.gate.set()
    keys = await asyncio.wait_for(asyncio.gather(*callers), 5)
    assert await refresh
    assert [key is not None for key in keys] == [True, True, False, True, True]
    assert server.requests == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(
    server: JwksServer, cache: JwksCache
) -> None:
    server.keys = [rsa_jwk(RSA_A, "a")]
    await cache.start()
    server.keys = [rsa_jwk(RSA_B, "b")]
    server.gate.clear()
    server.arrived.clear()
    impatient = asyncio.create_task(cache.get_key("b"))
    patient = asyncio.create_task(cache.get_key("b"))
    await asyncio.wait_for(server.arrived.wait(), 5)
    impatient.cancel()
    server.gate.set()
    assert await asyncio.wait_for(patient, 5) is not None
    assert impatient.cancelled()


# -- circuit breaker ----------------------------------------------------------------------


async def test_breaker_stops_fetching_after_failures_and_half_opens(
    server: JwksServer, clock: FakeClock
) -> None:
    jwks = JwksCache(server.url, clock=clock, breaker_cooldown=30, breaker_max_cooldown=60)
    try:
        server.keys = [rsa_jwk(RSA_A, "a")]
        await jwks.start()
        server.status = 500
        for _ in range(3):
            assert not await jwks.refresh()
        assert server.requests == 4
        assert jwks.breaker_open
        # Open: neither the schedule nor unknown kids reach the provider.
        assert not await jwks.refresh()
        assert await jwks.get_key("unknown") is None
        assert server.requests == 4
        # Cached keys keep working meanwhile (SPEC §5).
        assert await jwks.get_key("a") is not None
        clock.advance(30)  # half-open: one trial
        assert not jwks.breaker_open
        assert not await jwks.refresh()
        assert server.requests == 5
        clock.advance(59)  # the trial failed: cooldown doubled to 60
        assert not await jwks.refresh()
        assert server.requests == 5
        clock.advance(1)
        assert not await jwks.refresh()
        assert server.requests == 6
        clock.advance(60)  # capped at breaker_max_cooldown
        server.status = 200
        assert await jwks.refresh()
        assert server.requests == 7
        assert not jwks.breaker_open
        server.status = 500  # closed again: the next failure does not open it at once
        assert not await jwks.refresh()
        assert not await jwks.refresh()
        assert server.requests == 9
        assert not jwks.breaker_open
    finally:
        await jwks.close()


async def test_breaker_stays_short_while_no_key_was_ever_loaded(
    server: JwksServer, clock: FakeClock
) -> None:
    # SPEC §6: ready within 10 s of the provider coming back.
    jwks = JwksCache(server.url, clock=clock, breaker_cooldown=30)
    try:
        server.status = 500
        await jwks.start()
        assert not await jwks.refresh()
        assert not await jwks.refresh()
        assert jwks.breaker_open
        clock.advance(5)
        server.status = 200
        server.keys = [rsa_jwk(RSA_A, "a")]
        assert await jwks.refresh()
        assert jwks.ready
    finally:
        await jwks.close()


# -- background refresh -----------------------------------------------------------------------


class StepSleep:
    """Replaces asyncio.sleep in the refresh loop: the test sees each delay and releases it."""

    def __init__(self) -> None:
        self.delays: asyncio.Queue[float] = asyncio.Queue()
        self.go: asyncio.Queue[None] = asyncio.Queue()

    async def __call__(self, delay: float) -> None:
        await self.delays.put(delay)
        await self.go.get()

    async def next_delay(self) -> float:
        return await asyncio.wait_for(self.delays.get(), 5)

    def release(self) -> None:
        self.go.put_nowait(None)


async def test_background_loop_refreshes_retries_and_backs_off(
    server: JwksServer, clock: FakeClock
) -> None:
    sleep = StepSleep()
    jwks = JwksCache(
        server.url,
        clock=clock,
        refresh_seconds=600,
        retry_seconds=5,
        breaker_cooldown=30,
        sleep=sleep,
    )
    try:
        server.keys = [rsa_jwk(RSA_A, "a")]
        await jwks.start()
        assert await sleep.next_delay() == 600  # scheduled refresh after a success
        server.keys = [rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b")]
        sleep.release()
        assert await sleep.next_delay() == 600
        assert jwks.key_ids == {"a", "b"}  # the scheduled refresh picked up the new key
        server.status = 500
        sleep.release()
        assert await sleep.next_delay() == 5  # retry sooner after a failure
        sleep.release()
        assert await sleep.next_delay() == 5
        sleep.release()
        assert await sleep.next_delay() == 30  # breaker open: wait for the half-open
        assert server.requests == 5
        assert await jwks.get_key("a") is not None
        clock.advance(30)
        server.status = 200
        sleep.release()
        assert await sleep.next_delay() == 600
        assert server.requests == 6
        assert jwks.last_error is None
    finally:
        await jwks.close()


async def test_a_callers_failed_fetch_cuts_the_scheduled_wait_short(
    server: JwksServer, clock: FakeClock
) -> None:
    """The provider goes down and rotates its key meanwhile: a token naming the new kid
    fails to fetch it (the provider is down). The background task, waiting for its
    scheduled refresh (600 s), tries again after retry_seconds instead, so the new key
    is there soon after the provider is back, whatever the unknown-kid limit (30 s)."""
    sleep = StepSleep()
    jwks = JwksCache(server.url, clock=clock, refresh_seconds=600, retry_seconds=5, sleep=sleep)
    try:
        server.keys = [rsa_jwk(RSA_A, "a")]
        await jwks.start()
        assert await sleep.next_delay() == 600
        server.status = 500
        assert await jwks.get_key("b") is None  # fetched, failed
        assert await sleep.next_delay() == 5  # the 600 s wait was cut short
        server.status = 200
        server.keys = [rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b")]
        sleep.release()
        assert await sleep.next_delay() == 600
        assert jwks.key_ids == {"a", "b"}
        assert await jwks.get_key("b") is not None  # no refetch needed, no 30 s wait
        assert server.requests == 3
    finally:
        await jwks.close()


async def test_background_loop_makes_a_node_ready_when_the_provider_comes_back(
    server: JwksServer, clock: FakeClock
) -> None:
    sleep = StepSleep()
    jwks = JwksCache(server.url, clock=clock, retry_seconds=5, sleep=sleep)
    try:
        server.status = 500
        await jwks.start()
        assert not jwks.ready
        assert await sleep.next_delay() == 5
        server.status = 200
        server.keys = [rsa_jwk(RSA_A, "a")]
        sleep.release()
        assert await sleep.next_delay() == 600
        assert jwks.ready
    finally:
        await jwks.close()


# -- close ---------------------------------------------------------------------------------


async def test_close_cancels_an_in_flight_fetch(server: JwksServer, clock: FakeClock) -> None:
    jwks = JwksCache(server.url, clock=clock)
    server.gate.clear()
    waiting = asyncio.create_task(jwks.get_key("a"))
    await asyncio.wait_for(server.arrived.wait(), 5)
    await jwks.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert not jwks.ready


async def test_close_leaves_a_borrowed_client_open(server: JwksServer, clock: FakeClock) -> None:
    async with httpx.AsyncClient() as client:
        jwks = JwksCache(server.url, clock=clock, client=client)
        server.keys = [rsa_jwk(RSA_A, "a")]
        await jwks.start()
        await jwks.close()
        assert not client.is_closed
        assert jwks.ready
