"""The identity provider's signing keys, fetched and cached without blocking (SPEC §5).

``JwksCache`` downloads the JWKS with httpx (async), keeps the usable signing keys by
``kid``, refreshes them on a schedule in a background task and on demand when a token
names an unknown ``kid`` (at most once per ``unknown_kid_min_interval``; the fetch at
start does not count). A circuit breaker stops hammering a provider that is down while
the cached keys keep working.

Failure handling, in one place:

- ``start()`` never raises: a provider that is down at start leaves ``ready`` False
  (``/readyz`` 503, SPEC §6) and the background task keeps retrying.
- After ``failure_threshold`` consecutive failed fetches the breaker opens: no fetch at
  all for ``breaker_cooldown`` seconds (doubling per failed half-open trial, up to
  ``breaker_max_cooldown``). When the cooldown is over the next fetch is a trial; one
  success closes the breaker.
- While no key was ever loaded the breaker never stays open longer than
  ``_NOT_READY_MAX_WAIT``: there is nothing cached to serve from, and SPEC §6 wants the
  node ready within 10 s of the provider coming back.
- A failed fetch never drops cached keys; a successful one replaces the whole set
  (standard key rotation: kids absent from the new set are dropped).
- After any failed fetch, the background task's next try is ``retry_seconds`` away
  (or the breaker's cooldown), also when a caller's fetch failed while the task waited
  for the scheduled refresh: a key rotated while the provider was down is fetched
  within ``retry_seconds`` of it coming back, not after the 30 s unknown-kid limit.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

log = structlog.get_logger(__name__)

_MAX_JWKS_BYTES = 1 << 20  # a real JWKS is a few KB; refuse to buffer more than 1 MiB
_NOT_READY_MAX_WAIT = 5.0  # SPEC §6: ready within 10 s of the provider coming back
_MIN_RSA_BITS = 2048  # RFC 7518 §3.3: RSA keys of 2048 bits or more


class JwksError(Exception):
    """A JWKS download or document that cannot be used (the cached keys stay)."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable signing keys of one JWKS document."""

    by_kid: dict[str, jwt.PyJWK] = field(default_factory=dict)
    anonymous: tuple[jwt.PyJWK, ...] = ()  # keys without a kid
    fingerprint: frozenset[str] = frozenset()  # canonical JSON of every usable key


def _parse_key(entry: Any) -> jwt.PyJWK | None:
    """One JWK, or None when it is not a public signing key we may use."""
    if not isinstance(entry, dict):
        return None
    alg = entry.get("alg")
    kid = entry.get("kid")
    if (
        entry.get("kty") == "oct"  # SPEC §5: HMAC keys are never used
        or entry.get("use", "sig") != "sig"  # encryption keys
        or "d" in entry  # private material has no business in a JWKS
        or (
            alg is not None and (not isinstance(alg, str) or alg.upper().startswith(("HS", "NONE")))
        )
        or (kid is not None and not isinstance(kid, str))
    ):
        return None
    try:
        key = jwt.PyJWK(entry)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        # Unsupported kty, crv or alg: skip this key, keep the rest of the set.
        log.warning("jwks key skipped", kid=kid, kty=entry.get("kty"), error=str(exc))
        return None
    if isinstance(key.key, RSAPublicKey) and key.key.key_size < _MIN_RSA_BITS:
        log.warning("jwks key skipped", kid=kid, kty="RSA", error="RSA key shorter than 2048 bits")
        return None
    return key


def parse_jwks(body: bytes) -> KeySet:
    """Parse a JWKS document; raises ``JwksError`` when it holds no usable signing key."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise JwksError("JWKS document is not JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError("JWKS document has no 'keys' list")
    by_kid: dict[str, jwt.PyJWK] = {}
    anonymous: list[jwt.PyJWK] = []
    fingerprint: set[str] = set()
    for entry in document["keys"]:
        key = _parse_key(entry)
        if key is None:
            continue
        kid = key.key_id
        if kid is None:
            anonymous.append(key)
        elif kid in by_kid:
            log.warning("jwks duplicate kid ignored", kid=kid)
            continue
        else:
            by_kid[kid] = key
        fingerprint.add(json.dumps(entry, sort_keys=True, separators=(",", ":")))
    if not by_kid and not anonymous:
        raise JwksError("JWKS document has no usable signing key")
    return KeySet(by_kid, tuple(anonymous), frozenset(fingerprint))


class JwksCache:
    """Signing keys by ``kid``, kept fresh in the background (SPEC §5)."""

    def __init__(
        self,
        url: str,
        *,
        refresh_seconds: float = 600,
        unknown_kid_min_interval: float = 30,
        http_timeout: float = 5,
        clock: Callable[[], float] = time.monotonic,
        client: httpx.AsyncClient | None = None,
        retry_seconds: float = 5,
        failure_threshold: int = 3,
        breaker_cooldown: float = 30,
        breaker_max_cooldown: float = 300,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_fetch: Callable[[bool], None] | None = None,
    ) -> None:
        """``on_fetch(ok)`` is told of every fetch's outcome (for metrics)."""
        self._url = url
        self._on_fetch = on_fetch
        self._refresh_seconds = refresh_seconds
        self._unknown_kid_min_interval = unknown_kid_min_interval
        self._clock = clock
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=http_timeout)
        self._retry_seconds = retry_seconds
        self._failure_threshold = failure_threshold
        self._breaker_base = breaker_cooldown
        self._breaker_max = breaker_max_cooldown
        self._sleep = sleep

        self._keys = KeySet()
        self._loaded = False
        self._generation = 0
        self._last_fetch_ok = False
        self._last_unknown_kid_fetch: float | None = None  # the start fetch does not count
        self._failures = 0
        self._cooldown = breaker_cooldown
        self._open_until: float | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._nap: asyncio.Future[None] | None = None  # the background loop's wait
        self._nap_long = False  # that wait is the scheduled refresh's, after a success
        self.last_error: str | None = None

    # -- state -----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once keys were loaded at least once (``/readyz``, SPEC §4)."""
        return self._loaded

    @property
    def key_ids(self) -> frozenset[str]:
        """The kids currently cached."""
        return frozenset(self._keys.by_kid)

    @property
    def generation(self) -> int:
        """Bumped whenever a fetch removed or changed a key (not on pure additions).

        A verifier that caches verified tokens drops its cache when this changes, so a
        key withdrawn by the provider stops being honoured at once.
        """
        return self._generation

    @property
    def breaker_open(self) -> bool:
        """True while the circuit breaker refuses to fetch."""
        return self._open_until is not None and self._clock() < self._open_until

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """First fetch (never raises), then the background refresh task."""
        if self._task is not None:
            return
        if not await self.refresh():
            log.warning("jwks unavailable at start: tokens refused until keys load", url=self._url)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="jwks-refresh")

    async def close(self) -> None:
        """Stop the background task and any in-flight fetch; close our HTTP client."""
        tasks = [task for task in (self._task, self._inflight, self._nap) if task is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()

    # -- keys ------------------------------------------------------------------------

    async def get_key(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for ``kid`` (``None``: the only key of the set, if there is exactly one).

        An unknown kid triggers a refetch, at most once per ``unknown_kid_min_interval``
        (SPEC §5) and never while the breaker is open; concurrent callers share one
        in-flight fetch.
        """
        key = self._lookup(kid)
        if key is not None:
            return key
        if self._inflight is None:
            now = self._clock()
            last = self._last_unknown_kid_fetch
            if last is not None and now - last < self._unknown_kid_min_interval:
                return None
            if not self._breaker_allows(now):
                return None
            self._last_unknown_kid_fetch = now
        await self._fetch_shared()
        return self._lookup(kid)

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        keys = self._keys
        if kid is not None:
            return keys.by_kid.get(kid)
        # No kid in the token: only unambiguous when the set holds a single key.
        if len(keys.by_kid) + len(keys.anonymous) != 1:
            return None
        return keys.anonymous[0] if keys.anonymous else next(iter(keys.by_kid.values()))

    async def refresh(self) -> bool:
        """Fetch now unless the breaker is open; True when keys were loaded."""
        if self._inflight is None and not self._breaker_allows(self._clock()):
            return False
        return await self._fetch_shared()

    # -- internals -------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            # A nap of its own, so that a failed fetch of a caller (a token naming an
            # unknown kid while the provider is down) can cut a long nap short: the
            # retry comes after ``retry_seconds``, not at the next scheduled refresh
            # (``_on_failure``). Otherwise a key rotated during an outage would wait for
            # the 30 s refetch limit even once the provider is back.
            self._nap_long = self._last_fetch_ok
            nap = self._nap = asyncio.ensure_future(self._sleep(self._next_delay()))
            await asyncio.wait({nap})
            if not nap.cancelled():
                await self.refresh()

    def _next_delay(self) -> float:
        if self._last_fetch_ok:
            return self._refresh_seconds
        delay = self._retry_seconds
        if self._open_until is not None:
            delay = max(delay, self._open_until - self._clock())
        return delay

    def _breaker_allows(self, now: float) -> bool:
        return self._open_until is None or now >= self._open_until

    async def _fetch_shared(self) -> bool:
        task = self._inflight
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(), name="jwks-fetch")
            self._inflight = task
        # shield: a caller that gives up (cancelled) does not cancel the others' fetch.
        return await asyncio.shield(task)

    async def _fetch(self) -> bool:
        try:
            keys = await self._download()
        except Exception as exc:  # any failure keeps the cached keys (SPEC §5)
            self._on_failure(f"{type(exc).__name__}: {exc}")
            if self._on_fetch is not None:
                self._on_fetch(False)
            return False
        finally:
            self._inflight = None
        self._on_success(keys)
        if self._on_fetch is not None:
            self._on_fetch(True)
        return True

    async def _download(self) -> KeySet:
        headers = {"Accept": "application/json"}
        async with self._client.stream("GET", self._url, headers=headers) as response:
            if response.status_code != 200:
                raise JwksError(f"HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_JWKS_BYTES:
                    raise JwksError("JWKS document larger than 1 MiB")
        return parse_jwks(bytes(body))

    def _on_success(self, keys: KeySet) -> None:
        old = self._keys
        if not keys.fingerprint >= old.fingerprint:
            self._generation += 1  # a key was removed or changed: cached verdicts are stale
        added = sorted(set(keys.by_kid) - set(old.by_kid))
        removed = sorted(set(old.by_kid) - set(keys.by_kid))
        if added or removed or not self._loaded:
            log.info(
                "jwks keys loaded",
                url=self._url,
                kids=sorted(keys.by_kid),
                added=added,
                removed=removed,
            )
        self._keys = keys
        self._loaded = True
        self._last_fetch_ok = True
        self.last_error = None
        self._failures = 0
        self._cooldown = self._breaker_base
        self._open_until = None

    def _on_failure(self, error: str) -> None:
        self.last_error = error
        self._last_fetch_ok = False
        self._failures += 1
        nap = self._nap
        if nap is not None and self._nap_long and not nap.done():
            nap.cancel()  # the background retries after retry_seconds (``_run``)
        if self._failures < self._failure_threshold:
            log.warning("jwks fetch failed", url=self._url, error=error, failures=self._failures)
            return
        cooldown = self._cooldown if self._loaded else min(self._cooldown, _NOT_READY_MAX_WAIT)
        self._open_until = self._clock() + cooldown
        self._cooldown = min(self._cooldown * 2, self._breaker_max)
        log.warning(
            "jwks circuit open",
            url=self._url,
            error=error,
            failures=self._failures,
            cooldown_seconds=cooldown,
            cached_kids=len(self._keys.by_kid),
        )
