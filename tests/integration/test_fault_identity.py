"""The identity provider down and back (issue 21; SPEC §5, §6).

The provider's key endpoint is a real HTTP server on 127.0.0.1 (tests/callroom_testing.py
``JwksServer``) on a port of its own; "down" is that server stopped, its port refusing
connections, and "back" the same server started again on the same port. A node verifies
tokens against it.

- While it is down, tokens signed with the cached key keep working: a member joins, the
  node stays ready (SPEC §5: cached keys keep working).
- The provider rotates its key while it is down: a token signed with the new key is
  refused before the upgrade, 401 ``unauthorized``, with a message that says the key is
  unknown (the node could not fetch it), and the failed fetch is counted.
- Once it is back, the new key works within seconds: the failed fetch made the node's
  key refresher try again after its retry delay (5 s), not at its next scheduled
  refresh, so nobody waits for SPEC §5's 30 s limit on unknown-kid refetches; the old
  key's members never noticed anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from callroom_testing import (
    JwksServer,
    SigningKey,
    TokenFactory,
    http_call,
    join_admitted,
    join_room,
    metric_value,
    open_client,
    refused,
    room_url,
)
from ports import free_port

RETRY_SECONDS = 5.0  # JwksCache's retry after a failed fetch
BACK_SECONDS = RETRY_SECONDS + 10.0  # and the fetch, on a busy machine (the refetch
# limit of SPEC §5 would be 30 s: the test tells the two apart)
POLL_SECONDS = 0.25  # a join attempt at most this often (under the rate per address)


@pytest.fixture
async def provider(signing_key: SigningKey) -> AsyncIterator[JwksServer]:
    server = JwksServer([signing_key], port=free_port())
    await server.start()
    yield server
    await server.stop()


async def joins(node: Any, token: str) -> bool:
    """Whether a connection with ``token`` gets in (its first frame is room_state)."""
    try:
        client = await open_client(room_url(node, token, "idp"))
    except InvalidStatus as exc:
        status = exc.response.status_code
    else:
        first = await client.next()
        await client.close()
        assert first["event"] == "room_state", first
        return True
    assert status == 401, status
    return False


async def test_cached_keys_work_while_the_provider_is_down_and_a_rotation_works_once_it_is_back(
    provider: JwksServer,
    start_node: Callable[..., Awaitable[Any]],
    make_token: TokenFactory,
) -> None:
    node = await start_node(AUTH_JWKS_URL=provider.url)
    alice, _ = await join_room(node, make_token("alice", "Alice"))

    await provider.stop()  # down: connections to its port are refused
    bob, _ = await join_admitted(alice, node, make_token("bob", "Bob"))
    status, body, _ = await http_call(node, "GET", "/readyz")
    assert (status, body) == (200, {"status": "ready"})

    rotated = SigningKey.generate("rotated-key")
    new_token = make_token("carol", "Carol", key=rotated)
    failed_before = await metric_value(node, "callroom_jwks_fetches_total", '{outcome="error"}')
    status, answer = await refused(room_url(node, new_token, "idp"))
    assert status == 401
    assert answer == {"error": "unauthorized", "message": "the token is signed with an unknown key"}
    refused_at = time.monotonic()
    failed_after = await metric_value(node, "callroom_jwks_fetches_total", '{outcome="error"}')
    assert failed_after == failed_before + 1  # it tried the provider, which was down

    provider.keys.append(rotated)
    await provider.start()  # back, same port, with the new key
    assert provider.port == int(provider.url.split(":")[2].split("/")[0])
    back_at = time.monotonic()
    while not await joins(node, new_token):
        assert time.monotonic() - back_at < BACK_SECONDS, "the rotated key never worked"
        await asyncio.sleep(POLL_SECONDS)  # polling a state with a deadline
    accepted_at = time.monotonic()
    assert accepted_at - refused_at < BACK_SECONDS
    assert await joins(node, make_token("dave", "Dave"))  # the old key still works
    # alice and bob never noticed: still connected, still answered.
    for client in (alice, bob):
        await client.drain()
        assert client.ws.close_code is None
    print(
        f"\nrotated key refused while down, accepted {accepted_at - back_at:.1f} s after the "
        f"provider came back ({accepted_at - refused_at:.1f} s after the first refusal)"
    )
