"""The heartbeat's other half and what a closed connection leaves behind (SPEC §3.4).

The node pings (``server/heartbeat.py``; giving up on a silent peer is tested with the
sessions, in test_rooms_sessions.py); here a client's own ping is answered, and a closed
connection's objects are freed by reference counting alone: a reference cycle would keep
them until a full collection, which the node's collector settings make rare.
"""

from __future__ import annotations

import functools
import gc
import weakref
from typing import Any

import aiohttp

from callroom_testing import TokenFactory, join_room, room_url, wait_until


async def test_a_clients_ping_is_answered_with_its_payload(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(room_url(node, make_token("alice")), autoping=False)
        assert (await ws.receive_json())["event"] == "room_state"
        await ws.ping(b"are you there")
        pong = await ws.receive(timeout=5)
        assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"are you there")
        await ws.send_json({"event": "ping"})  # the connection goes on as before
        assert (await ws.receive_json(timeout=5))["event"] == "pong"
        await ws.close()


def freed(ref: weakref.ref[Any]) -> bool:
    return ref() is None


async def test_a_closed_connection_is_freed_without_the_cycle_collector(
    start_node: Any, make_token: TokenFactory
) -> None:
    node = await start_node()
    gc.collect()
    gc.disable()  # only reference counting may free what the connection held
    try:
        for how in ("abort", "close"):
            client, _ = await join_room(node, make_token("alice"))
            (conn,) = node.hub.connections
            held = weakref.ref(conn)
            transport = conn._transport
            assert transport is not None
            socket = weakref.ref(transport.get_protocol())  # the member's MemberSocket
            del conn, transport
            if how == "close":
                await client.close()
            else:
                client.ws.transport.abort()
            await wait_until(lambda: not node.hub.connections)
            await wait_until(functools.partial(freed, held))
            await wait_until(functools.partial(freed, socket))
    finally:
        gc.enable()
