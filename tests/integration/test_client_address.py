"""The client address behind a proxy, over real sockets (SPEC §9 "Client address").

The tests connect from 127.0.0.1: a node with ``TRUSTED_PROXIES=127.0.0.1/32`` takes
that peer for a proxy and believes its forwarded headers; a node with the default (no
proxies) ignores them. ``MAX_CONNECTIONS_PER_IP=1`` shows which address each connection
was counted under.
"""

from __future__ import annotations

from typing import Any

from callroom_testing import Client, TokenFactory, join_room, refused, room_url


async def _join(node: Any, make_token: TokenFactory, sub: str, **headers: str) -> Client:
    client, _ = await join_room(node, make_token(sub), additional_headers=headers)
    return client


async def test_forwarded_addresses_from_a_trusted_peer_are_counted_apart(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node(TRUSTED_PROXIES="127.0.0.1/32", MAX_CONNECTIONS_PER_IP=1)
    alice = await _join(node, make_token, "alice", **{"X-Forwarded-For": "203.0.113.7"})
    # Another client behind the same proxy: its own address, its own limit.
    bob = await _join(node, make_token, "bob", **{"X-Forwarded-For": "203.0.113.8"})
    # RFC 7239 Forwarded is read too (and wins over X-Forwarded-For).
    carol = await _join(
        node,
        make_token,
        "carol",
        Forwarded='for="[2001:db8::5]:4711";proto=https',
        **{"X-Forwarded-For": "203.0.113.7"},
    )
    assert node.limiter.open_count("203.0.113.7") == 1
    assert node.limiter.open_count("203.0.113.8") == 1
    assert node.limiter.open_count("2001:db8::5") == 1
    assert node.limiter.open_count("127.0.0.1") == 0
    # A second connection of the first client is over its limit, whatever it forged
    # on the left of the chain.
    status, body = await refused(
        room_url(node, make_token("dave")),
        additional_headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"},
    )
    assert (status, body["error"]) == (429, "too_many_connections")
    for client in (alice, bob, carol):
        await client.close()


async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node(MAX_CONNECTIONS_PER_IP=1)  # TRUSTED_PROXIES empty (default)
    alice = await _join(node, make_token, "alice", **{"X-Forwarded-For": "203.0.113.7"})
    assert node.limiter.open_count("127.0.0.1") == 1
    assert node.limiter.open_count("203.0.113.7") == 0
    # Claiming another address does not get a client a second connection.
    status, body = await refused(
        room_url(node, make_token("bob")),
        additional_headers={"X-Forwarded-For": "203.0.113.8", "Forwarded": "for=203.0.113.9"},
    )
    assert (status, body["error"]) == (429, "too_many_connections")
    await alice.close()


async def test_a_trusted_peer_that_is_not_this_peer_changes_nothing(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node(TRUSTED_PROXIES="10.0.0.0/8", MAX_CONNECTIONS_PER_IP=1)
    alice = await _join(node, make_token, "alice", **{"X-Forwarded-For": "203.0.113.7"})
    assert node.limiter.open_count("127.0.0.1") == 1
    await alice.close()
