"""The operating metrics of SPEC §9, scraped from a real node's /metrics: each one moves
when its cause happens (docs/operations.md "Metrics")."""

from __future__ import annotations

import json
from typing import Any

from callroom import __version__
from callroom_testing import (
    TokenFactory,
    http_call,
    join_admitted,
    join_room,
    metric_value,
    refused,
    room_url,
    wait_until,
)


async def metric(node: Any, name: str, labels: str = "") -> float:
    return await metric_value(node, name, labels)


async def test_build_capacity_and_readiness_gauges(start_node: Any) -> None:
    node = await start_node(MAX_CONNECTIONS=77)
    assert await metric(node, "callroom_build_info", f'{{version="{__version__}"}}') == 1
    assert await metric(node, "callroom_max_connections") == 77
    for part in ("store", "keys", "bus"):
        assert await metric(node, "callroom_ready", f'{{part="{part}"}}') == 1, part
    # Without REDIS_URL the Redis link is not exported at all.
    status, text, _ = await http_call(node, "GET", "/metrics")
    assert status == 200
    assert "callroom_redis_up" not in text
    assert await metric(node, "callroom_jwks_fetches_total", '{outcome="ok"}') >= 1
    assert await metric(node, "callroom_jwks_breaker_open") == 0


async def test_a_store_that_is_down_is_counted_and_not_ready(start_node: Any) -> None:
    node = await start_node(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing")
    await wait_until(lambda: _positive(node, "callroom_chat_store_failures_total"))
    assert await metric(node, "callroom_ready", '{part="store"}') == 0
    assert await metric(node, "callroom_ready", '{part="keys"}') == 1
    # /readyz names it, and refreshes the gauge too.
    status, body, _ = await http_call(node, "GET", "/readyz")
    assert (status, body["failing"]) == (503, ["store"])


async def test_jwks_fetch_failures_and_the_breaker(start_node: Any) -> None:
    # Nothing listens on port 1: every fetch fails.
    node = await start_node(AUTH_JWKS_URL="http://127.0.0.1:1/jwks.json")
    assert await metric(node, "callroom_jwks_fetches_total", '{outcome="error"}') >= 1
    assert await metric(node, "callroom_jwks_fetches_total", '{outcome="ok"}') == 0
    assert await metric(node, "callroom_ready", '{part="keys"}') == 0
    assert await metric(node, "callroom_jwks_breaker_open") == 0
    # The breaker opens after three failed fetches in a row (the node's own retries come
    # every 5 s; these are asked for at once).
    jwks = node._jwks
    while not jwks.breaker_open:
        assert not await jwks.refresh()
    assert await metric(node, "callroom_jwks_breaker_open") == 1
    assert await metric(node, "callroom_jwks_fetches_total", '{outcome="error"}') >= 3


async def test_http_requests_by_route_method_and_status(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node()
    admin = make_token("root", roles=["admin"])
    for _ in range(2):
        assert (await http_call(node, "GET", "/api/v1/rooms", admin))[0] == 200
    assert (await http_call(node, "GET", "/api/v1/rooms"))[0] == 401
    assert (await http_call(node, "GET", "/api/v1/rooms/zoom/r1", admin))[0] == 404
    assert (await http_call(node, "GET", "/no/such/route?token=x"))[0] == 404
    ok = '{route="/api/v1/rooms",method="GET",status="200"}'
    assert await metric(node, "callroom_http_requests_total", ok) == 2
    unauthorized = '{route="/api/v1/rooms",method="GET",status="401"}'
    assert await metric(node, "callroom_http_requests_total", unauthorized) == 1
    # The route's template, never the path the client sent.
    one_room = '{route="/api/v1/rooms/{kind}/{room_id}",method="GET",status="404"}'
    assert await metric(node, "callroom_http_requests_total", one_room) == 1
    unmatched = '{route="unmatched",method="GET",status="404"}'
    assert await metric(node, "callroom_http_requests_total", unmatched) == 1
    count = await metric(node, "callroom_http_request_seconds_count", '{route="/api/v1/rooms"}')
    assert count == 3
    _, text, _ = await http_call(node, "GET", "/metrics")
    assert "/no/such/route" not in text
    assert "/api/v1/rooms/zoom/r1" not in text


async def test_join_latency_and_handshakes(start_node: Any, make_token: TokenFactory) -> None:
    node = await start_node()
    assert await metric(node, "callroom_join_seconds_count") == 0
    alice, _ = await join_room(node, make_token("alice"))
    assert await metric(node, "callroom_join_seconds_count") == 1
    assert 0 < await metric(node, "callroom_join_seconds_sum") < 5
    upgraded = '{route="/ws/{kind}/{room_id}",method="GET",status="101"}'
    assert await metric(node, "callroom_http_requests_total", upgraded) == 1
    status, _ = await refused(room_url(node, make_token("bob", ttl=-120)))
    assert status == 401
    refused_401 = '{route="/ws/{kind}/{room_id}",method="GET",status="401"}'
    assert await metric(node, "callroom_http_requests_total", refused_401) == 1
    assert await metric(node, "callroom_join_seconds_count") == 1  # a refusal is no join
    await alice.close()


async def _closes(node: Any, code: int) -> float:
    return await metric(node, "callroom_ws_closes_total", f'{{code="{code}"}}')


async def test_closes_are_counted_by_code(start_node: Any, make_token: TokenFactory) -> None:
    node = await start_node(MAX_MESSAGE_BYTES=1024)
    alice, _ = await join_room(node, make_token("alice", "Alice"), room="r")
    bob, _ = await join_admitted(alice, node, make_token("bob", "Bob"), room="r")
    await alice.send("kick_participant", {"clientId": "bob"})
    assert await bob.closed_with() == 4004
    await wait_until(lambda: _equals(node, 4004, 1))

    big, _ = await join_room(node, make_token("big"), room="b")
    await big.send_raw(json.dumps({"event": "add_chat", "payload": {"chatContent": "x" * 2000}}))
    assert await big.closed_with() == 1009
    await wait_until(lambda: _equals(node, 1009, 1))

    binary, _ = await join_room(node, make_token("bin"), room="c")
    await binary.send_raw(b"\x00")
    assert await binary.closed_with() == 1003
    await wait_until(lambda: _equals(node, 1003, 1))

    strict = await start_node(RATE_LIMIT_PER_SECOND=1, RATE_LIMIT_BURST=2)
    flood, _ = await join_room(strict, make_token("flood"), room="d")
    flood.send_burst(*[json.dumps({"event": "ping"})] * 5)  # 2 answered, 2 refused, closed
    assert await flood.closed_with() == 1008
    await wait_until(lambda: _equals(strict, 1008, 1))

    await node.stop()  # members are closed with 1001 (SPEC §8)
    assert await alice.closed_with() == 1001
    await wait_until(lambda: 'callroom_ws_closes_total{code="1001"} 1.0' in _render(node))


def _render(node: Any) -> str:
    return str(node.metrics.render().decode())


async def _equals(node: Any, code: int, value: float) -> bool:
    return await _closes(node, code) == value


async def _positive(node: Any, name: str) -> bool:
    return await metric(node, name) > 0
